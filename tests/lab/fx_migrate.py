"""Lab fixtures for dump/restore/verify: the source's tracker dumped once, restored on the target once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

MEASURED: dict = {}


@pytest.fixture(scope="session")
def dumped(provisioned, tmp_path_factory):
    """`invoke dump` over SSH from the lab's source into a local directory."""
    from trackerdb.migrate.dump import run_dump

    t0 = time.monotonic()
    # a directory the dump creates itself (inside a fresh tmp dir): created 0700, like the operator's state dir
    art = run_dump(provisioned, str(tmp_path_factory.mktemp("dump") / "artifacts" / "dump"))
    MEASURED["dump_s"] = round(time.monotonic() - t0, 2)
    return art


@pytest.fixture(scope="session")
def restored(provisioned, dumped):
    """`invoke restore` of that dump on the provisioned target (replacing a tracker left by an earlier fixture)."""
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    t0 = time.monotonic()
    outcome = restore(provisioned, LocalDump(Path(dumped.dump_path)), dumped.manifest_path,
                      RestoreOptions(replace=True))
    MEASURED["restore_s"] = round(time.monotonic() - t0, 2)
    return {"settings": provisioned, "dump": dumped, "outcome": outcome}
