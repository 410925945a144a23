"""Generate the tracker dataset on the lab's `source` host and print rows, bytes, seconds and rates.

    TRACKERDB_ENV=lab TRACKERDB_LAB=<name> .venv/bin/python benchmarks/generate_dataset.py --scale 50

The generator refuses a `tracker` database that already holds data, so this is for a fresh source
cluster (or a lab whose tracker database you removed yourself). Production is never a target: the
script refuses unless the settings say environment=lab.
"""

from __future__ import annotations

import argparse
import json
import sys

from lab import dataset
from trackerdb.errors import OpsError
from trackerdb.remote import Remote
from trackerdb.settings import Settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args(argv)
    try:
        s = Settings.load()
        if not s.is_lab:
            raise OpsError("benchmarks/generate_dataset.py runs against the lab only", hint="set TRACKERDB_ENV=lab")
        with Remote(s.require_source()) as host:
            r = dataset.run(host, a.scale, a.seed, port=s.source_port)
    except OpsError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    rows = sum(r["rows"].values())
    r["rows_per_s"] = round(rows / r["seconds"]) if r["seconds"] else None
    r["mb_per_s"] = round(r["bytes"] / 1e6 / r["seconds"], 1) if r["seconds"] else None
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
