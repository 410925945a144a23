"""The rehearsal report's version header: every version of the lab next to production's, each marked
as a match, the one expected deviation (PostgreSQL's major: 16 cannot be had from the registries the
lab reaches), or a deviation. Pure: production's versions are read from the production stack config."""

from __future__ import annotations

import re
from pathlib import Path

PROD_STACK = Path(__file__).resolve().parents[2] / "Pulumi.prod.yaml"
KEYS = (("postgres_major", "PostgreSQL major", "postgresMajor"),
        ("timescaledb", "TimescaleDB", "timescaledbVersion"),
        ("postgis", "PostGIS", "postgisVersion"))
EXPECTED = {"postgres_major": "expected: PostgreSQL 16 cannot be had from the registries the lab reaches"}


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
        status = "match" if same else ("expected deviation" if key in EXPECTED else "DEVIATION")
        rows.append({"name": label, "lab": "" if have is None else str(have), "production": "" if want is None else str(want),
                     "status": status, "note": EXPECTED.get(key, "") if not same else ""})
    return rows


def load_rows(lab: dict, path: Path = PROD_STACK) -> list[dict]:
    text = path.read_text() if path.is_file() else ""
    return version_rows(lab, production_versions(text))
