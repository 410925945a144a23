"""Lab fixture for provisioning: run `provision` once against the lab's bare target (session scope)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MEASURED: dict = {}


def lab_env(name: str | None = None) -> dict:
    from trackerdb.settings import lab_name

    env = dict(os.environ, TRACKERDB_ENV="lab", TRACKERDB_LAB=name or lab_name())
    env.pop("TRACKERDB_SETTINGS", None)
    return env


def load_lab_settings(name: str | None = None):
    """Settings exactly as `TRACKERDB_ENV=lab invoke ...` builds them (invoke.yaml + the lab overlay)."""
    from trackerdb.settings import Settings

    cfg = (yaml.safe_load((ROOT / "invoke.yaml").read_text()) or {}).get("trackerdb", {})
    return Settings.load(cfg, env=lab_env(name))


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
