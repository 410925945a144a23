"""`run_rollback`: back to the source, from the cutover journal, without losing a row.

Order (runbook §7, plus "nothing lost"):
1. stop writes on the target (read-only + end its sessions), if a tracker database is there;
2. switch the application back to the value the journal recorded as old (same mechanism);
3. read the source's key maxima while it is still frozen, then make it writable again;
4. export every row written on the target after the switch to a psql script: hypertables by
   their time column (and ``received_at``-style columns) after the freeze time, other tables with
   a single integer key above the source's maximum, and whole small tables whose count grew
   without such a key (replay skips what is already there);
5. with ``replay``: run that script on the source in one transaction. Inserts use
   ``ON CONFLICT DO NOTHING`` where a unique index exists, and otherwise skip rows whose full
   text is already present, so replaying twice adds nothing.

Every step reads the host first and is safe to run again. Updates and deletes made on the target
after the switch are not carried back (say so loudly: the report lists the tables).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import OpsError
from . import freeze as fz
from . import phases as ph
from . import switch as sw
from .journal import Journal
from .pg import ident, literal, qualified, query_json, run_sql

ROLLBACK = "rollback"
INSERT_TIME_COLUMNS = ("received_at", "created_at", "inserted_at", "ingested_at")

TABLES_SQL = r"""
SELECT coalesce(json_agg(t ORDER BY t.schema, t.name), '[]'::json) FROM (
  SELECT n.nspname AS schema, c.relname AS name,
    (SELECT d.column_name FROM timescaledb_information.dimensions d
      WHERE d.hypertable_schema = n.nspname AND d.hypertable_name = c.relname AND d.dimension_number = 1
        AND d.column_type IN ('timestamp with time zone'::regtype, 'timestamp without time zone'::regtype, 'date'::regtype)) AS time_column,
    (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        AND a.atttypid = 'timestamptz'::regtype AND a.attname = ANY (%(insert_cols)s)) AS insert_time_columns,
    (SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1
        AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) AS int_key,
    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indpred IS NULL) AS has_unique,
    (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        AND a.attgenerated <> '') AS generated_columns
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND n.nspname !~ '^(pg_|_timescaledb|timescaledb_|information_schema$|toolkit_experimental$|_prom)'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
) t;
"""


def tables_sql() -> str:
    cols = "ARRAY[" + ",".join(literal(c) for c in INSERT_TIME_COLUMNS) + "]::name[]"
    return TABLES_SQL.replace("%(insert_cols)s", cols)


def maxima_sql(tables: list[dict]) -> str:
    """Source's maximum of each table's integer key, read while the source is still frozen."""
    parts = [f"{literal(t['schema'] + '.' + t['name'])}, (SELECT max({ident(t['int_key'])}) FROM {qualified(t['schema'], t['name'])})"
             for t in tables if t.get("int_key") and not t.get("time_column")]
    return f"SELECT json_build_object({', '.join(parts)});" if parts else "SELECT '{}'::json;"


def selection(table: dict, frozen_at: str, source_max: dict, manifest_counts: dict) -> tuple[str | None, str]:
    """The WHERE clause that selects rows written on the target after the switch, and why."""
    fq = f"{table['schema']}.{table['name']}"
    if table.get("time_column"):
        cols = [table["time_column"]] + [c for c in (table.get("insert_time_columns") or []) if c != table["time_column"]]
        cond = " OR ".join(f"{ident(c)} > {literal(frozen_at)}::timestamptz" for c in cols)
        return cond, f"time > freeze ({', '.join(cols)})"
    if table.get("int_key"):
        mx = source_max.get(fq)
        return (f"{ident(table['int_key'])} > {int(mx)}" if mx is not None else "true"), f"{table['int_key']} > source max {mx}"
    if table.get("insert_time_columns"):
        cond = " OR ".join(f"{ident(c)} > {literal(frozen_at)}::timestamptz" for c in table["insert_time_columns"])
        return cond, "insert time > freeze"
    if fq in manifest_counts:
        return "COUNT_GREW", "no key: whole table if it grew (replay skips existing rows)"
    return "true", "not in the manifest: new table, all rows"


def export_sql(table: dict, where: str) -> str:
    return f"COPY (SELECT * FROM {qualified(table['schema'], table['name'])} WHERE {where}) TO STDOUT;"


def replay_block(table: dict, alias: str, copy_data: str) -> str:
    """psql text that loads ``copy_data`` into a temp table and inserts what the source lacks."""
    fq = qualified(table["schema"], table["name"])
    tmp = ident(alias)
    if table.get("has_unique"):
        insert = f"INSERT INTO {fq} OVERRIDING SYSTEM VALUE SELECT * FROM {tmp} ON CONFLICT DO NOTHING;"
    else:
        match = "(t.*)::text = (s.*)::text"
        if table.get("time_column"):
            tc = ident(table["time_column"])
            match = f"t.{tc} = s.{tc} AND {match}"
        insert = (f"INSERT INTO {fq} OVERRIDING SYSTEM VALUE SELECT s.* FROM {tmp} s "
                  f"WHERE NOT EXISTS (SELECT 1 FROM {fq} t WHERE {match});")
    seq = ""
    if table.get("int_key"):
        k = literal(table["int_key"])
        seq = (f"SELECT setval(pg_get_serial_sequence({literal(fq)}, {k}), "
               f"GREATEST((SELECT max({ident(table['int_key'])}) FROM {fq}), "
               f"(SELECT last_value FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename) = "
               f"pg_get_serial_sequence({literal(fq)}, {k})))) WHERE pg_get_serial_sequence({literal(fq)}, {k}) IS NOT NULL;\n")
    data = copy_data if copy_data.endswith("\n") or not copy_data else copy_data + "\n"
    return (f"-- {table['schema']}.{table['name']}\n"
            f"CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT * FROM {fq} WITH NO DATA;\n"
            f"COPY {tmp} FROM STDIN;\n{data}\\.\n{insert}\n{seq}")


def replay_script(blocks: list[str]) -> str:
    return "\\set ON_ERROR_STOP on\nBEGIN;\n" + "".join(blocks) + "COMMIT;\n"


def _count_lines(copy_data: str) -> int:
    return len([ln for ln in copy_data.split("\n") if ln != ""])


# ---- executor --------------------------------------------------------------------------------
def run_rollback(settings, journal_path, replay: bool = False, progress=None, out_dir=None) -> dict:
    say = progress or (lambda m: None)
    journal = Journal(journal_path)
    states = journal.states()
    if settings.source_decommissioned:
        raise OpsError("the source is decommissioned (settings.source_decommissioned): there is nothing to roll back to",
                       hint="restore from the target's pgBackRest backups instead")
    freeze_st = states.get(ph.FREEZE)
    if freeze_st is None or "prior_read_only" not in freeze_st.facts:
        raise OpsError(f"journal {journal.path} shows no freeze of the source: nothing to roll back",
                       hint="the source was never changed; if a cutover is running, use its --journal")
    ctx = ph.Ctx(settings=settings, journal=journal, dump_dir=Path("."), progress=progress)
    facts: dict = {"replay": replay}
    journal.begin(ROLLBACK, {"replay": replay})
    try:
        db = settings.database
        src, tgt = ctx.remote("source"), ctx.remote("target")
        switch_st = states.get(ph.SWITCH)
        switched = switch_st is not None and "old" in switch_st.facts
        # 1. stop writes on the target (a dead target must not block the way back)
        target_ok = True
        try:
            tfacts = query_json(tgt, fz.facts_sql(db))
            if tfacts["exists"] and states.get(ph.RESTORE) is not None:
                say(f"making {db} on the target read-only")
                facts["target_freeze"] = fz.freeze(tgt, db, grace_s=5, progress=say)
        except OpsError as exc:
            target_ok, tfacts = False, {"exists": False}
            facts["target_unreachable"] = exc.one_line()
            say(f"target unreachable, going on without it: {exc.one_line()}")
        # 2. the application back to the recorded old value
        if switched:
            old, new = switch_st.facts["old"], switch_st.facts["new"]
            switcher = sw.make(settings)
            say(f"switching {switcher.describe()} back: {new} -> {old}")
            facts["switch"] = switcher.apply(new, old, progress=say)
        # 3. source maxima while frozen, then writable again
        tables = query_json(tgt, tables_sql(), database=db) if (switched and tfacts["exists"]) else []
        recorded = journal.state(ROLLBACK).facts
        if "source_max" in recorded:
            source_max = recorded["source_max"]
        else:
            source_max = query_json(src, maxima_sql(tables), database=db) or {}
            journal.note(ROLLBACK, {"source_max": source_max})
        say(f"making {db} on the source writable again")
        facts["source"] = fz.unfreeze(src, db, prior=freeze_st.facts["prior_read_only"])
        # 4. export what the target received after the switch
        if switched and tfacts["exists"]:
            facts.update(export_rows(settings, journal, tgt, tables, freeze_st.facts["frozen_at"], source_max, out_dir, say))
            # 5. replay
            if replay and facts["exported_rows"]:
                say(f"replaying {facts['exported_rows']} row(s) on the source")
                before = _counts(src, db, tables)
                run_sql(src, Path(facts["export_file"]).read_text(), database=db, timeout=3600)
                after = _counts(src, db, tables)
                facts["replayed"] = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
                # rows the source already had (an earlier replay) or that collide with a key the source
                # handed out after it became writable again: listed, never silently merged
                facts["not_replayed"] = {k: n - facts["replayed"].get(k, 0) for k, n in facts["exported"].items()
                                         if n != facts["replayed"].get(k, 0)}
        elif switched and not target_ok:
            facts["exported_rows"] = None
            facts["warning"] = ("the target was unreachable: rows written there after the switch were NOT exported; "
                                "re-run `invoke rollback` once it answers (every step is safe to repeat)")
        else:
            facts["exported_rows"] = 0
            facts["note"] = "the application was never switched: no rows can have been written on the target"
    except BaseException as exc:
        journal.end(ROLLBACK, "failed", error=exc.one_line() if isinstance(exc, OpsError) else type(exc).__name__)
        raise
    finally:
        ctx.close()
    journal.end(ROLLBACK, "ok", facts)
    return facts


def export_rows(settings, journal, tgt, tables, frozen_at, source_max, out_dir, say) -> dict:
    manifest_counts = {}
    dump_facts = journal.state(ph.DUMP).facts
    if dump_facts.get("row_counts"):
        manifest_counts = dump_facts["row_counts"]
    blocks, counts, how, skipped = [], {}, {}, []
    live = _counts(tgt, settings.database, tables)
    for i, t in enumerate(tables):
        fq = f"{t['schema']}.{t['name']}"
        where, why = selection(t, frozen_at, source_max, manifest_counts)
        if where == "COUNT_GREW":
            if live.get(fq, 0) <= manifest_counts.get(fq, 0):
                continue
            where = "true"
        if t.get("generated_columns"):
            skipped.append(f"{fq}: has generated columns; export by hand")
            continue
        data = run_sql(tgt, export_sql(t, where), database=settings.database, timeout=3600).stdout
        n = _count_lines(data)
        if n:
            counts[fq], how[fq] = n, why
            blocks.append(replay_block(t, f"_trackerdb_rollback_{i}", data))
    out = Path(out_dir) if out_dir else journal.path.parent
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"rollback-rows-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.sql"
    path.write_text(replay_script(blocks))
    path.chmod(0o600)
    say(f"exported {sum(counts.values())} row(s) written on the target after the switch to {path}")
    return {"export_file": str(path), "exported": counts, "exported_rows": sum(counts.values()), "selection": how,
            "not_exported": skipped,
            "warning": "updates and deletes made on the target after the switch are not carried back"}


def _counts(remote, db: str, tables: list[dict]) -> dict:
    if not tables:
        return {}
    parts = ", ".join(f"{literal(t['schema'] + '.' + t['name'])}, (SELECT count(*) FROM {qualified(t['schema'], t['name'])})"
                      for t in tables)
    return query_json(remote, f"SELECT json_build_object({parts});", database=db) or {}
