"""Prove that TimescaleDB's objects still *work* on the target, not only that they exist.

Each probe leaves nothing behind, or only what a refresh or a policy would write anyway:

- insert into a compressed chunk's range: inside a transaction that is rolled back;
- a continuous aggregate refresh over new data: on the last day the aggregate has materialized (below
  its watermark; refreshed first, as a policy would), one row copied (time + 1 microsecond), the
  aggregate and the ones built on it refreshed over that day: their content for that day must change;
  then the row is deleted (by its ctid) and the same refreshes must bring the content back;
- ``CALL run_job()`` of every compression and refresh policy (what the scheduler does on its own).

They run after the facts were compared, so what a policy run might materialize later does not blur that
comparison. Pure SQL builders here; ``run_probes`` is the executor.
"""

from __future__ import annotations

from .. import tsdb_api as api
from ..errors import OpsError
from ..steps import Check
from . import sqltext as sq

PROBED_POLICIES = ("policy_compression", "policy_refresh_continuous_aggregate")


def _rel(schema: str, name: str) -> str:
    return f"{sq.ident(schema)}.{sq.ident(name)}"


def columns_sql(schema: str, table: str) -> str:
    return ("SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
            f"WHERE attrelid = {sq.literal(_rel(schema, table))}::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';")


def chunk_sql(schema: str, table: str, compressed: bool) -> str:
    """The first compressed chunk, or the newest uncompressed one, of a hypertable ('' when none)."""
    order = "range_start" if compressed else "range_end DESC NULLS LAST"
    return ("SELECT coalesce((SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
            f"WHERE hypertable_schema = {sq.literal(schema)} AND hypertable_name = {sq.literal(table)} "
            f"AND {'' if compressed else 'NOT '}is_compressed ORDER BY {order} LIMIT 1), '');")


def compressed_insert_sql(ht: str, chunk: str, cols: str, tcol: str) -> str:
    """A copy of one row of a compressed chunk, 1 microsecond later, inserted and read back; rolled back.
    As the hypertable's owner (the role is part of the rolled-back transaction): the owner's triggers
    never fire as superuser."""
    t = sq.ident(tcol)
    return f"""BEGIN;
{api.as_owner_of_sql(ht)}
CREATE TEMP TABLE trackerdb_probe ON COMMIT DROP AS SELECT {cols} FROM {chunk} LIMIT 1;
UPDATE trackerdb_probe SET {t} = {t} + interval '1 microsecond';
INSERT INTO {ht} ({cols}) SELECT {cols} FROM trackerdb_probe;
SELECT json_build_object('at', (SELECT {t}::text FROM trackerdb_probe),
  'read_back', (SELECT count(*) FROM {ht} h WHERE h.{t} = (SELECT {t} FROM trackerdb_probe)));
ROLLBACK;
"""


def source_day_sql(ht: str, tcol: str, watermark: int) -> str:
    """The last whole day below a continuous aggregate's watermark that has data ('' when none): it is
    materialized already, so refreshing it writes nothing a refresh policy would not write anyway."""
    t = sq.ident(tcol)
    wm = f"_timescaledb_functions.to_timestamp({int(watermark)})"
    return (f"SELECT coalesce((SELECT date_trunc('day', max({t}))::text FROM {ht} "
            f"WHERE {t} < date_trunc('day', {wm}) AND {t} >= date_trunc('day', {wm}) - interval '1 day'), '');")


def probe_row_insert_sql(ht: str, cols: str, tcol: str, day: str) -> str:
    """Insert (committed) a copy of the newest row of ``day``, 1 microsecond later, as the hypertable's
    owner; returns where it went."""
    t = sq.ident(tcol)
    d = sq.literal(day)
    return f"""BEGIN;
{api.as_owner_of_sql(ht)}
CREATE TEMP TABLE trackerdb_probe ON COMMIT DROP AS SELECT {cols} FROM {ht}
  WHERE {t} >= {d}::timestamptz AND {t} < {d}::timestamptz + interval '1 day' ORDER BY {t} DESC LIMIT 1;
UPDATE trackerdb_probe SET {t} = {t} + interval '1 microsecond';
WITH ins AS (INSERT INTO {ht} ({cols}) SELECT {cols} FROM trackerdb_probe RETURNING tableoid::regclass::text AS rel, ctid::text AS ctid)
SELECT json_build_object('rel', rel, 'ctid', ctid) FROM ins;
COMMIT;
RESET ROLE;
"""


def probe_row_delete_sql(rel: str, ctid: str) -> str:
    # rel comes from regclass::text (already quoted); ctid from the INSERT's RETURNING
    return f"{api.as_owner_of_sql(rel)}\nDELETE FROM {rel} WHERE ctid = {sq.literal(ctid)}::tid;\nRESET ROLE;"


def refresh_sql(schema: str, cagg: str, day: str) -> str:
    """TimescaleDB's procedure by its schema (``tsdb_api``), impostors refused just before the call, as the
    aggregate's owner (its query runs with the caller's rights)."""
    args = f"{sq.literal(cagg)}::regclass, {sq.literal(day)}::timestamptz, {sq.literal(day)}::timestamptz + interval '1 day'"
    return (f"{api.guard_sql(schema, [api.REFRESH])};\n{api.as_owner_of_sql(cagg)}\n"
            f"CALL {api.call(schema, api.REFRESH, args)};\nRESET ROLE;")


def digest_sql(cagg_schema: str, cagg: str, time_column: str | None = None, day: str | None = None) -> str:
    """rows:checksum of an aggregate, of one day's buckets when its time column is known (cheap at any size)."""
    where = ""
    if time_column and day:
        c, d = sq.ident(time_column), sq.literal(day)
        where = f" WHERE {c} >= {d}::timestamptz AND {c} < {d}::timestamptz + interval '1 day'"
    return (f"SELECT count(*)::text || ':' || coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text "
            f"FROM {_rel(cagg_schema, cagg)} t{where};")


def run_job_sql(schema: str, job_id: int, owner: str | None = None) -> str:
    """``run_job`` by its schema, as the job's owner (as the scheduler would run it), never as superuser."""
    role = f"SET ROLE {sq.ident(owner)};\n" if owner else ""
    return f"{api.guard_sql(schema, [api.RUN_JOB])};\n{role}CALL {api.call(schema, api.RUN_JOB, str(int(job_id)))};\nRESET ROLE;"


def dependents(facts: dict, cagg: dict) -> list[dict]:
    """The aggregates built on ``cagg`` (hierarchical), parents before children."""
    caggs = facts.get("continuous_aggregates") or []
    out, frontier = [], [cagg]
    while frontier:
        parent = frontier.pop(0)
        kids = [c for c in caggs if parent.get("materialization_hypertable")
                and f"{c.get('hypertable_schema')}.{c.get('hypertable_name')}" == parent["materialization_hypertable"]]
        out += kids
        frontier += kids
    return out


def _time_column(facts: dict, schema: str, table: str) -> str | None:
    for h in facts.get("hypertables") or []:
        if (h["schema"], h["name"]) == (schema, table):
            for d in h.get("dimensions") or []:
                if d.get("type") == "Time":
                    return d["column"]
    return None


def run_probes(psql, db: str, facts: dict) -> list[Check]:
    """All probes against ``db`` (facts: the target's, as collected)."""
    checks: list[Check] = []
    try:
        schema = api.api_schema(psql, db, [api.REFRESH, api.RUN_JOB]) if facts.get("continuous_aggregates") or facts.get("jobs") else None
    except api.ApiImpostor as exc:
        return [Check("TimescaleDB's API is TimescaleDB's", False, exc.one_line()[:300], "no impostor routine (nothing called)")]
    for h in facts.get("hypertables") or []:
        if not h.get("compressed_chunks"):
            continue
        name = f"{h['schema']}.{h['name']}"
        label = f"insert into a compressed chunk of {name}"
        try:
            chunk = psql.value(chunk_sql(h["schema"], h["name"], True), db)
            cols = psql.value(columns_sql(h["schema"], h["name"]), db)
            tcol = _time_column(facts, h["schema"], h["name"])
            res = psql.json(compressed_insert_sql(_rel(h["schema"], h["name"]), chunk, cols, tcol), db)
            ok = bool(res) and int(res.get("read_back") or 0) >= 1
            checks.append(Check(label, ok, f"row at {res.get('at')} in {chunk} read back {res.get('read_back')}x, rolled back"
                                if res else "no result", "insert succeeds and reads back (rolled back)"))
        except OpsError as exc:
            checks.append(Check(label, False, exc.one_line()[:200], "insert succeeds and reads back (rolled back)"))

    caggs = facts.get("continuous_aggregates") or []
    hts = {(h["schema"], h["name"]) for h in facts.get("hypertables") or []}
    mats = {c.get("materialization_hypertable") for c in caggs}
    for c in caggs:
        on = (c.get("hypertable_schema"), c.get("hypertable_name"))
        if on not in hts or f"{on[0]}.{on[1]}" in mats:
            continue  # built on another aggregate: probed through its parent's chain
        checks.append(_refresh_probe(psql, db, facts, c, dependents(facts, c), schema))

    for j in facts.get("jobs") or []:
        proc = (j.get("proc") or "").rsplit(".", 1)[-1]
        if proc not in PROBED_POLICIES:
            continue
        label = f"job {j['proc']}" + (f" on {j['hypertable']}" if j.get("hypertable") else "") + " runs (run_job)"
        r = psql.run(run_job_sql(schema, j["id"], j.get("owner")), db, check=False)
        err = (r.stderr or "").strip().splitlines()
        checks.append(Check(label, r.ok, "succeeded" if r.ok else (err[-1] if err else f"exit {r.exit_code}")[:200], "succeeds"))
    return checks


def _refresh_probe(psql, db: str, facts: dict, cagg: dict, deps: list[dict], schema: str) -> Check:
    name = f"{cagg['schema']}.{cagg['name']}"
    chain = [cagg] + deps
    label = f"continuous aggregate {name} refreshes new data" + (
        f" (and {', '.join(d['schema'] + '.' + d['name'] for d in deps)})" if deps else "")
    expected = "content changes with a new row and returns after it is removed"
    ht_schema, ht_name = cagg["hypertable_schema"], cagg["hypertable_name"]
    ht = _rel(ht_schema, ht_name)

    def refresh_all(day):
        for x in chain:  # parents first: a hierarchical aggregate reads its parent's materialization
            psql.run(refresh_sql(schema, _rel(x["schema"], x["name"]), day), db)

    def digests():
        return [psql.value(digest_sql(x["schema"], x["name"], x.get("time_column"), day), db) for x in chain]

    try:
        tcol = _time_column(facts, ht_schema, ht_name)
        if cagg.get("watermark") is None or not tcol:
            return Check(label, False, "no watermark or time column recorded", expected)
        day = psql.value(source_day_sql(ht, tcol, int(cagg["watermark"])), db)
        if not day:
            return Check(label, True, "skipped: no materialized day with data below the watermark", expected)
        cols = psql.value(columns_sql(ht_schema, ht_name), db)
        refresh_all(day)  # baseline: whatever was pending for that day, as a policy would do
        before = digests()
        row = psql.json(probe_row_insert_sql(ht, cols, tcol, day), db)
        try:
            refresh_all(day)
            during = digests()
        finally:
            psql.run(probe_row_delete_sql(row["rel"], row["ctid"]), db)
            refresh_all(day)
        after = digests()
    except OpsError as exc:
        return Check(label, False, exc.one_line()[:200], expected)
    unchanged = [x["name"] for x, b, d in zip(chain, before, during) if b == d]
    not_back = [x["name"] for x, b, a in zip(chain, before, after) if b != a]
    ok = not unchanged and not not_back
    observed = (f"new row on {day[:10]} in {row['rel']}: " +
                ("refreshed, seen, removed, back as before" if ok else
                 "; ".join(x for x in ((f"no change in {', '.join(unchanged)}" if unchanged else ""),
                                       (f"not back in {', '.join(not_back)}" if not_back else "")) if x)))
    return Check(label, ok, observed, expected)
