"""The lab as its tests, benchmarks and the rehearsal reach it: Settings as `TRACKERDB_ENV=lab invoke …` builds
them, and psql sessions that see the dataset as the application does (the database's own settings, not our
pinned ones). Shared here so that benchmarks never import tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from trackerdb.psql import Psql
from trackerdb.session import cluster, connect
from trackerdb.settings import Settings

if TYPE_CHECKING:
    from trackerdb.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
#: the lab's clusters (tests/lab/test_55_port.py moves them to other ports on its own instance)
LAB_PORT = 5432


def lab_env(name: str | None = None) -> dict:
    """This process's environment for the lab instance ``name`` (default ``$TRACKERDB_LAB``)."""
    from trackerdb.settings import lab_name

    env = dict(os.environ, TRACKERDB_ENV="lab", TRACKERDB_LAB=name or lab_name())
    env.pop("TRACKERDB_SETTINGS", None)
    return env


def load_lab_settings(name: str | None = None):
    """Settings exactly as `TRACKERDB_ENV=lab invoke ...` builds them (invoke.yaml + the lab overlay)."""
    from trackerdb.settings import Settings

    cfg = (yaml.safe_load((ROOT / "invoke.yaml").read_text()) or {}).get("trackerdb", {})
    return Settings.load(cfg, env=lab_env(name))


def app_psql(remote, port: int = LAB_PORT) -> Psql:
    """psql on ``remote``'s cluster at ``port`` with the database's own settings (not pinned): the dataset as the
    application sees it (PostGIS types by name). The lab's one maker of a cluster (``trackerdb.session.cluster``)."""
    return cluster(remote, port, pinned=False)


def run_sql(remote, sql: str, database: str = "postgres", check: bool = True, timeout=None):
    return app_psql(remote).run(sql, database, check=check, timeout=timeout)


def query_json(remote, sql: str, database: str = "postgres"):
    return app_psql(remote).json(sql, database)


def ensure_app_password_on_source(settings: Settings) -> None:
    """The old host is where the application logs in today: its `tracker` role has the password
    from Secrets Manager (the dataset generator leaves it unset). Sent on stdin, never argv."""
    from trackerdb.secrets import fetch_secret
    from trackerdb.sql import ident, literal

    secret = fetch_secret(settings, settings.app_secret_name)
    with connect(settings.require_source(), [secret]) as s:
        run_sql(s, f"ALTER ROLE {ident(settings.owner_role)} LOGIN PASSWORD {literal(secret.reveal())};")
