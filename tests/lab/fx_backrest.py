"""Lab fixtures for pgBackRest: `backrest_ready` = a provisioned target with backrest.setup applied."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def backrest_first_setup(provisioned):
    """The Outcome of the first backrest.setup against the provisioned target."""
    from trackerdb.backrest import ops

    return ops.setup(provisioned)


@pytest.fixture(scope="session")
def backrest_ready(backrest_first_setup, provisioned):
    """Settings of a target whose WAL archives to repo3 (SSH) and repo2 (S3), stanza created, check passed."""
    assert not getattr(backrest_first_setup, "waiting", None), backrest_first_setup.waiting
    return provisioned
