"""Prove that TimescaleDB's objects still *work* on the target, not only that they exist, leaving
nothing behind:

- insert into a compressed chunk's range: inside a transaction that is rolled back;
- continuous aggregates (``cagg_check``): their buckets against their own query over the raw rows and
  their refresh state against the source's, in READ ONLY transactions.

No refresh and no ``run_job`` here: both write (materialization, invalidation logs, job history) and a
refresh on the target can leave it different from the source. Jobs are proven by the scheduler itself
(``job_proof``). Pure SQL builders here; ``run_probes`` is the executor.
"""

from __future__ import annotations

from .. import tsdb_api as api
from ..errors import OpsError
from ..steps import Check
from . import cagg_check as cc
from . import sqltext as sq


def _rel(schema: str, name: str) -> str:
    return f"{sq.ident(schema)}.{sq.ident(name)}"


def columns_sql(schema: str, table: str) -> str:
    return (
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        f"WHERE attrelid = {sq.literal(_rel(schema, table))}::regclass AND attnum > 0 AND "
        "NOT attisdropped AND attgenerated = '';"
    )


def chunk_sql(schema: str, table: str, compressed: bool) -> str:
    """The first compressed chunk, or the newest uncompressed one, of a hypertable ('' when none)."""
    order = "range_start" if compressed else "range_end DESC NULLS LAST"
    return ("SELECT coalesce((SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
            f"WHERE hypertable_schema = {sq.literal(schema)} AND hypertable_name = {sq.literal(table)} "
            f"AND {'' if compressed else 'NOT '}is_compressed ORDER BY {order} LIMIT 1), '');")


def time_type_sql(schema: str, table: str, column: str) -> str:
    return ("SELECT format_type(atttypid, NULL) FROM pg_attribute "
            f"WHERE attrelid = {sq.literal(_rel(schema, table))}::regclass AND attname = {sq.literal(column)};")


def step(time_type: str) -> str:
    """The smallest later time of a column's type: 1 for integers and dates, 1 microsecond for timestamps."""
    return "interval '1 microsecond'" if time_type.startswith("timestamp") else "1"


def compressed_insert_sql(
    ht: str, chunk: str, cols: str, tcol: str, time_type: str = "timestamp with time zone"
) -> str:
    """A copy of one row of a compressed chunk, one step later (``step``), inserted and read back; rolled back.
    As the hypertable's owner (the role is part of the rolled-back transaction): the owner's triggers
    never fire as superuser."""
    t = sq.ident(tcol)
    return f"""BEGIN;
{api.as_owner_of_sql(ht)}
CREATE TEMP TABLE trackerdb_probe ON COMMIT DROP AS SELECT {cols} FROM {chunk} LIMIT 1;
UPDATE trackerdb_probe SET {t} = {t} + {step(time_type)};
INSERT INTO {ht} ({cols}) SELECT {cols} FROM trackerdb_probe;
SELECT json_build_object('at', (SELECT {t}::text FROM trackerdb_probe),
  'read_back', (SELECT count(*) FROM {ht} h WHERE h.{t} = (SELECT {t} FROM trackerdb_probe)));
ROLLBACK;
"""


def _time_column(facts: dict, schema: str, table: str) -> str | None:
    for h in facts.get("hypertables") or []:
        if (h["schema"], h["name"]) == (schema, table):
            for d in h.get("dimensions") or []:
                if d.get("type") == "Time":
                    return d["column"]
    return None




def run_probes(psql, db: str, facts: dict, expected: dict | None = None, source_label: str = "source") -> list[Check]:
    """All probes against ``db`` (facts: the target's, as collected; ``expected``: the source's, for the
    continuous aggregates' refresh state)."""
    checks: list[Check] = []
    for h in facts.get("hypertables") or []:
        if not h.get("compressed_chunks"):
            continue
        name = f"{h['schema']}.{h['name']}"
        label = f"insert into a compressed chunk of {name}"
        try:
            chunk = psql.value(chunk_sql(h["schema"], h["name"], True), db)
            cols = psql.value(columns_sql(h["schema"], h["name"]), db)
            tcol = _time_column(facts, h["schema"], h["name"])
            if tcol is None:
                checks.append(
                    Check(
                        label, False, "no time dimension in the facts", "insert succeeds and reads back (rolled back)"
                    )
                )
                continue
            ttype = psql.value(time_type_sql(h["schema"], h["name"], tcol), db)
            res = psql.json(compressed_insert_sql(_rel(h["schema"], h["name"]), chunk, cols, tcol, ttype), db)
            ok = bool(res) and int(res.get("read_back") or 0) >= 1
            checks.append(
                Check(
                    label,
                    ok,
                    f"row at {res.get('at')} in {chunk} read back {res.get('read_back')}x, rolled back"
                    if res
                    else "no result",
                    "insert succeeds and reads back (rolled back)",
                )
            )
        except OpsError as exc:
            checks.append(Check(label, False, exc.one_line()[:200], "insert succeeds and reads back (rolled back)"))
    if facts.get("continuous_aggregates"):
        checks += cc.run_cagg_checks(psql, db, expected, source_label)
    return checks
