"""A representative rehearsal result (the shape run_rehearsal collects) for tests and the README picture.

    python -m trackerdb.rehearse.sample OUT_DIR     writes OUT_DIR/report.json and OUT_DIR/report.html

The numbers are labelled as a sample in the report's title; they are not a measurement.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .report import build_report, to_json
from .report_html import render_html

T0 = 1_767_000_000.0  # a fixed clock keeps the sample deterministic


def _e(phase, start, end, outcome="ok", **facts):
    return {
        "phase": phase,
        "start": T0 + start,
        "end": None if end is None else T0 + end,
        "outcome": outcome,
        "facts": facts,
    }


def sample_result() -> dict:
    counts = {
        "public.devices": (1_200, 1_200),
        "public.trips": (18_400, 18_400),
        "public.tracker_reports": (1_250_000, 1_250_000),
        "public.geofences": (310, 310),
    }
    return {
        "title": "tracker cutover rehearsal (SAMPLE DATA)",
        "started": T0,
        "finished": T0 + 312.0,
        "meta": {
            "environment": "lab",
            "lab": "sample",
            "scale": 2,
            "postgres": "16.10",
            "timescaledb": "2.18.2",
            "postgis": "3.5.2",
        },
        "journals": [
            {
                "label": "prepare",
                "entries": [
                    _e("lab.up", 0, 21.4),
                    _e("dataset", 21.5, 64.0, rows=1_269_910),
                    _e("provision", 64.1, 118.2),
                    _e("backrest.setup", 118.3, 139.9),
                ],
            },
            {
                "label": "cutover",
                "entries": [
                    _e("preflight", 140.0, 146.2),
                    _e("freeze", 146.3, 148.1, final_lsn="0/3A000060"),
                    _e("dump", 148.2, 171.0, dump_bytes=96_468_992),
                    _e("restore", 171.1, 214.6),
                    _e("verify", 214.7, 226.3),
                    _e("switch", 226.4, 237.0, old="10.77.0.12", new="10.77.0.11", ttl=10),
                    _e("post", 237.2, 281.5, backup="full"),
                ],
            },
        ],
        "outage": {
            "start": T0 + 146.4,
            "end": T0 + 237.3,
            "source": "writer",
            "detail": "first refused write -> first accepted write on the target",
        },
        "verification": [
            {
                "name": "row counts",
                "ok": True,
                "observed": "4/4 tables equal",
                "expected": "equal",
                "evidence": "count(*) per table",
            },
            {
                "name": "timescaledb version",
                "ok": True,
                "observed": "2.19.3",
                "expected": "2.19.3",
                "evidence": "pg_extension",
            },
            {
                "name": "hypertables",
                "ok": True,
                "observed": "1",
                "expected": "1",
                "evidence": "timescaledb_information.hypertables",
            },
            {
                "name": "max(recorded_at)",
                "ok": True,
                "observed": "2026-01-01 00:00:00+00",
                "expected": "2026-01-01 00:00:00+00",
                "evidence": "tracker_reports",
            },
        ],
        "counts": {k: {"source": s, "target": t} for k, (s, t) in counts.items()},
        "sizes": {"source_db_bytes": 412_090_368, "dump_bytes": 96_468_992},
        "writer": {"acknowledged": 5_412, "on_target": 5_412, "lost": 0, "refused": 88},
        "signoff": {
            "items": [
                {
                    "name": "New EC2 exists and is reachable",
                    "status": "pass",
                    "evidence": "ssh admin@target: uname -n = target",
                },
                {
                    "name": "App cutover time is scheduled",
                    "status": "human",
                    "evidence": "needs a human decision: agree the window with the application owners",
                },
                {"name": "WAL archiving is healthy", "status": "pass", "evidence": "pg_stat_archiver: failed_count 0"},
            ]
        },
    }


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(sample_result(), generated_at=T0 + 312.0)
    (out / "report.json").write_text(to_json(report))
    (out / "report.html").write_text(render_html(report))
    print(out / "report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
