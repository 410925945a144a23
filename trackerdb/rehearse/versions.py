"""The rehearsal report's version header: every version of the lab next to production's, each marked
as a match or a deviation (the lab runs production's engine, PostgreSQL 16.10 included, so none is
expected). Pure: production's versions are read from the production stack config."""

from __future__ import annotations

import re
from pathlib import Path

PROD_STACK = Path(__file__).resolve().parents[2] / "Pulumi.prod.yaml"
KEYS = (("postgres_major", "PostgreSQL major", "postgresMajor"),
        ("postgres_version", "PostgreSQL", "postgresVersion"),
        ("timescaledb", "TimescaleDB", "timescaledbVersion"),
        ("postgis", "PostGIS", "postgisVersion"))


def production_versions(text: str) -> dict:
    """``<project>:postgresMajor: 16`` etc. from the production stack's YAML -> {key: "value"}."""
    out = {}
    for key, _label, cfg in KEYS:
        m = re.search(rf"^\s*[\w-]+:{cfg}:\s*\"?([^\s\"#]+)", text, re.M)
        if m:
            out[key] = m.group(1)
    return out


def version_rows(lab: dict, production: dict) -> list[dict]:
    rows = []
    for key, label, _cfg in KEYS:
        have, want = lab.get(key), production.get(key)
        same = have is not None and str(have) == str(want)
        rows.append(
            {
                "name": label,
                "lab": "" if have is None else str(have),
                "production": "" if want is None else str(want),
                "status": "match" if same else "DEVIATION",
                "note": "",
            }
        )
    return rows


def load_rows(lab: dict, path: Path = PROD_STACK) -> list[dict]:
    text = path.read_text() if path.is_file() else ""
    return version_rows(lab, production_versions(text))


#: measured on the hosts (rehearsal/run.py): what runs, not what the config says
MEASURED = (
    ("source_server", "PostgreSQL running on the source"),
    ("target_server", "PostgreSQL running on the target"),
    ("pg_dump", "pg_dump the dump runs (source)"),
    ("pg_restore", "pg_restore the restore runs (target)"),
)


def measured_rows(measured: dict, production: dict) -> list[dict]:
    """One row per measured binary or server, its version text against production's PostgreSQL version
    (the numeric version at the start of the text: "pg_dump (PostgreSQL) 16.10" -> 16.10)."""
    want = production.get("postgres_version")
    rows = []
    for key, label in MEASURED:
        text = str(measured.get(key) or "")
        m = re.search(r"(\d+\.\d+)", text)
        same = m is not None and want is not None and m.group(1) == str(want)
        rows.append({"name": label, "lab": text, "production": "" if want is None else str(want),
                     "status": "match" if same else "DEVIATION", "note": "measured"})
    return rows


def load_measured_rows(measured: dict, path: Path = PROD_STACK) -> list[dict]:
    return measured_rows(measured, production_versions(path.read_text() if path.is_file() else ""))
