"""A deterministic tracker database: the shape of the real one, at any size.

`generate_sql(scale, seed)` builds one psql script (run as the postgres superuser against the
`postgres` database with ON_ERROR_STOP) that creates the roles `tracker` (owner, LOGIN, no password
here: provisioning sets it from Secrets Manager) and `tracker_readonly`, the database `tracker` if
absent, and fills it server-side with generate_series. It refuses a `tracker` database that already
holds relations: it never drops anything.

Randomness is `hashint8extended(key, seed)`: a pure function of a row's key, so the same scale and
seed give byte-identical rows whatever the plan or the order rows are produced in. `expected_counts`
computes the row counts in Python so a test can compare them with the database, and the checksums of
two generations (or of source and restored target) can be compared exactly.

Size is linear in scale: the time span (8 days, 1-day chunks for location reports) is fixed and the
number of devices grows with scale, so even the smallest scale has several chunks.

Measured with the Timescale-licensed block (PostgreSQL 17.12, TimescaleDB 2.18.2 community, PostGIS
3.5.2, 2 shared cores under load; 6 of 8 location_reports chunks and 2 of 5 device_events chunks
compressed, two caggs refreshed): scale 1 = 23.9 MB in 1.5 s, scale 20 = 85.6 MB in 8.8 s,
scale 100 = 333 MB in 29.7 s (~97k rows/s). Compression makes it ~3.1 MB per unit of scale instead of ~6.7 MB.
Earlier, without compression (TimescaleDB 2.19.3 Apache, PostgreSQL 17.11): 19.5 MB + 6.6-6.9 MB per
unit of scale: scale 1 = 27 MB in ~4-5 s, scale 50 = 367 MB in 56-78 s, scale 200 = 1.35 GB in 208 s.
"""


from __future__ import annotations

import argparse
import json
import sys
import time

from trackerdb.errors import HostError, OpsError
from .client import app_psql

from .dataset_shape import *  # noqa: F401,F403  (the dataset's names: TABLES, DB, expected_counts, ...)
from .dataset_shape import DB, REFUSAL, TABLES, expected_counts
from .dataset_sql import LARGE_OBJECT_OID, REPORTING, REPORTING_SCHEMA, generate_sql, privileges_block  # noqa: F401

#: The lab's clusters listen on PostgreSQL's default port unless a lab instance says otherwise.
LAB_PORT = 5432


# ---- executor ---------------------------------------------------------------------------------

COUNT_SQL = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)


def _error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no error output"


def run(remote, scale: float = 1.0, seed: int = 42, *, port: int = LAB_PORT, timeout: float | None = None,
        timescaledb_version: str | None = None, database: str = DB) -> dict:
    """Generate the dataset on ``remote`` (a trackerdb.remote.Remote or LocalHost) through psql.

    Returns ``{"rows": {table: n}, "bytes": pg_database_size, "seconds": float, "scale", "seed"}``.
    Raises OpsError if the tracker database already holds data (nothing changed then) or the
    counts differ from `expected_counts`.
    """
    sql = generate_sql(scale, seed, timescaledb_version=timescaledb_version, database=database)
    started = time.monotonic()
    res = app_psql(remote, port).run(sql, check=False, timeout=timeout)
    seconds = time.monotonic() - started
    if not res.ok:
        msg = _error_line(res.stderr)
        if REFUSAL in msg:
            raise OpsError(
                f"{remote.name}: {msg}",
                hint="the generator never drops data: use a fresh cluster, or drop that database yourself "
                     "if it is disposable",
            )
        raise HostError(
            f"{remote.name}: dataset generation failed (psql exit {res.exit_code}): {msg}",
            hint="check that postgresql, postgis and timescaledb (in shared_preload_libraries) are installed and "
                 "running",
        )
    rows = facts(remote, port, database)
    result = {"rows": rows["rows"], "bytes": rows["bytes"], "seconds": round(seconds, 2), "scale": scale, "seed": seed}
    expected = expected_counts(scale)
    if rows["rows"] != expected:
        raise HostError(f"{remote.name}: generated row counts {rows['rows']} differ from expected {expected}",
                        hint="the script or the server misbehaved; inspect the tracker database")
    return result


def facts(remote, port: int = LAB_PORT, database: str = DB) -> dict:
    """Rows per generated table and pg_database_size of the tracker database (or ``database``)."""
    sql = f"{COUNT_SQL} UNION ALL SELECT 'bytes', pg_database_size('{database}');"
    res = app_psql(remote, port).run(sql, database)
    out = dict(line.split("|") for line in res.stdout.strip().splitlines())
    return {"rows": {t: int(out[t]) for t in TABLES}, "bytes": int(out["bytes"])}


def checksum_sql() -> str:
    """One row per table: name, row count and an order-independent checksum of its rows.

    The checksum is the sum of the first 60 bits of md5(row::text) over all rows: it streams (no
    sort, no 1 GB string limit), so it works at any scale, and any changed, missing or extra row
    changes it. Compare source and target (or two generations) with identical output.
    """
    return " UNION ALL ".join(
        f"SELECT '{t}' AS tbl, count(*) AS n, "
        f"coalesce(sum(('x' || left(md5(x::text), 15))::bit(60)::bigint), 0)::text AS checksum FROM {t} x"
        for t in TABLES) + " ORDER BY 1"


def checksums(remote, port: int = LAB_PORT, database: str = DB) -> dict[str, dict]:
    """``{table: {"rows": n, "checksum": "..."}}`` of the generated tables in ``database`` on ``remote``."""
    res = app_psql(remote, port).run(checksum_sql() + ";", database)
    out = {}
    for line in res.stdout.strip().splitlines():
        table, n, checksum = line.split("|")
        out[table] = {"rows": int(n), "checksum": checksum}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.dataset", description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--print-sql", action="store_true", help="print the psql script")
    p.add_argument("--counts", action="store_true", help="print the expected row counts as JSON")
    p.add_argument("--checksum-sql", action="store_true", help="print the per-table checksum query")
    a = p.parse_args(argv)
    try:
        if a.print_sql:
            sys.stdout.write(generate_sql(a.scale, a.seed))
        if a.counts:
            print(json.dumps(expected_counts(a.scale), indent=2))
        if a.checksum_sql:
            print(checksum_sql() + ";")
        if not (a.print_sql or a.counts or a.checksum_sql):
            p.error("choose --print-sql, --counts or --checksum-sql")
    except OpsError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
