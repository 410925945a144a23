"""Lab fixture for provisioning: run `provision` once against the lab's bare target (session scope)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab.client import lab_env, load_lab_settings  # noqa: F401  (the fixtures' and the modules' names)

ROOT = Path(__file__).resolve().parents[2]
MEASURED: dict = {}


@pytest.fixture(scope="session")
def provisioned(lab):
    """Settings of a lab whose target has been provisioned (PostgreSQL running from the data volume)."""
    from trackerdb.provision.ops import provision

    name = lab.get("name") if isinstance(lab, dict) else getattr(lab, "name", None)
    settings = load_lab_settings(name if isinstance(name, str) else None)
    t0 = time.monotonic()
    outcome = provision(settings)
    MEASURED["first_run_s"] = round(time.monotonic() - t0, 1)
    MEASURED["first_run_changed"] = [s.name for s in outcome.steps if s.changed]
    return settings
