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
from . import binding as bd
from . import freeze as fz
from .decoding import ParseError
from . import leftover as lo
from . import lossless as ll
from . import phases as ph
from . import switch as sw
from ..files import write_private
from .journal import Journal
from .journal import PhaseState as ph_state
from .. import limits
from ..psql import Psql
from ..settings import Settings
from ..sql import ident, literal, qualified

ROLLBACK = "rollback"
INSERT_TIME_COLUMNS = ("received_at", "created_at", "inserted_at", "ingested_at")

TABLES_SQL = r"""
SELECT coalesce(json_agg(t ORDER BY t.schema, t.name), '[]'::json) FROM (
  SELECT n.nspname AS schema, c.relname AS name,
    (SELECT d.column_name FROM timescaledb_information.dimensions d
      WHERE d.hypertable_schema = n.nspname AND d.hypertable_name = c.relname AND d.dimension_number = 1
        AND d.column_type IN ('timestamp with time zone'::regtype, 'timestamp without time zone'::regtype,
          'date'::regtype)) AS time_column,
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
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
      AND d.deptype = 'e')
) t;
"""


def tables_sql() -> str:
    cols = "ARRAY[" + ",".join(literal(c) for c in INSERT_TIME_COLUMNS) + "]::name[]"
    return TABLES_SQL.replace("%(insert_cols)s", cols)


def existing_sql(tables: list[dict]) -> str:
    """Which of ``tables`` exist on the host (a table created on the target after the switch may not)."""
    if not tables:
        return "SELECT '{}'::json;"
    rows = ", ".join(f"({literal(t['schema'] + '.' + t['name'])}, {literal(qualified(t['schema'], t['name']))})"
                     for t in tables)
    return f"SELECT json_object_agg(k, to_regclass(q) IS NOT NULL) FROM (VALUES {rows}) v(k, q);"


def maxima_sql(tables: list[dict]) -> str:
    """Source's maximum of each table's integer key, read while the source is still frozen."""
    parts = [f"{literal(t['schema'] + '.' + t['name'])}, (SELECT max({ident(t['int_key'])}) FROM "
             f"{qualified(t['schema'], t['name'])})"
             for t in tables if t.get("int_key") and not t.get("time_column")]
    return f"SELECT json_build_object({', '.join(parts)});" if parts else "SELECT '{}'::json;"


def selection(table: dict, frozen_at: str, source_max: dict, manifest_counts: dict) -> tuple[str, str]:
    """The WHERE clause that selects rows written on the target after the switch, and why."""
    fq = f"{table['schema']}.{table['name']}"
    if table.get("time_column"):
        cols = [table["time_column"]] + [c for c in (table.get("insert_time_columns") or [])
                                         if c != table["time_column"]]
        cond = " OR ".join(f"{ident(c)} > {literal(frozen_at)}::timestamptz" for c in cols)
        return cond, f"time > freeze ({', '.join(cols)})"
    if table.get("int_key"):
        mx = source_max.get(fq)
        cond = f"{ident(table['int_key'])} > {int(mx)}" if mx is not None else "true"
        return cond, f"{table['int_key']} > source max {mx}"
    if table.get("insert_time_columns"):
        cond = " OR ".join(f"{ident(c)} > {literal(frozen_at)}::timestamptz" for c in table["insert_time_columns"])
        return cond, "insert time > freeze"
    if fq in manifest_counts:
        return "COUNT_GREW", "no key: whole table if it grew (replay skips existing rows)"
    return "true", "not in the manifest: new table, all rows"


def export_sql(table: dict, where: str) -> str:
    """Each selected row as one text value (the row type's own output), so the replay never names a column."""
    return f"COPY (SELECT (t.*)::text FROM {qualified(table['schema'], table['name'])} t WHERE {where}) TO STDOUT;"


def copy_escape(value: str) -> str:
    """One field of COPY's text format: backslash, tab, newline and carriage return escaped."""
    if "\x00" in value:
        raise ValueError("COPY field contains NUL")
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def replay_rows(seq0: int, table: dict, copy_lines: str) -> tuple[list[str], int]:
    """COPY data lines ``seq, schema, name, row`` for one table's exported rows (``copy_lines`` is the
    output of :func:`export_sql`, each line already one COPY-escaped field). Names travel as data."""
    prefix = f"\t{copy_escape(table['schema'])}\t{copy_escape(table['name'])}\t"
    out = [f"{seq0 + i}{prefix}{ln}" for i, ln in enumerate(ln for ln in copy_lines.split("\n") if ln != "")]
    return out, seq0 + len(out)


# The replay program. It is the same text for every export: table names, column names and rows arrive
# only as COPY data (psql reads COPY data verbatim up to the terminator line, and seq is digits, so no
# data line can be that terminator or a psql meta-command), and the server quotes every name itself
# with format('%I'). Rows are inserted as the table's owner (SET LOCAL ROLE), not as the superuser
# that runs psql; generated columns are left to the source to compute; rows already on the source
# (an earlier replay) are skipped: through ON CONFLICT DO NOTHING where a unique index exists,
# otherwise by comparing whole rows (on the hypertable's time column first). Serial and identity
# sequences are moved past the highest replayed key. A table that does not exist on the source is
# not created: it is listed in the result (``missing``) and its rows stay in this file.
REPLAY_PROGRAM = r"""CREATE TEMP TABLE _trackerdb_replay_result (nspname text, relname text, rows bigint,
  inserted bigint, missing boolean) ON COMMIT DROP;
DO $trackerdb_replay$
DECLARE
  r record; rel regclass; owner name; rs text[]; n bigint; tcol name; uniq boolean;
  target_cols text; select_cols text; sql text; col record;
BEGIN
  FOR r IN SELECT nspname, relname, min(seq) AS first_seq, count(*) AS rows FROM _trackerdb_replay GROUP BY 1, 2
    ORDER BY 3 LOOP
    rel := to_regclass(format('%I.%I', r.nspname, r.relname));
    IF rel IS NULL THEN
      INSERT INTO _trackerdb_replay_result VALUES (r.nspname, r.relname, r.rows, 0, true);
      CONTINUE;
    END IF;
    SELECT array_agg(row_text ORDER BY seq) INTO rs FROM _trackerdb_replay WHERE nspname = r.nspname
      AND relname = r.relname;
    SELECT pg_get_userbyid(c.relowner) INTO owner FROM pg_class c WHERE c.oid = rel;
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum),
           string_agg(format('(s.v).%I', a.attname), ', ' ORDER BY a.attnum)
      INTO target_cols, select_cols
      FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    uniq := EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisunique AND i.indimmediate
      AND i.indpred IS NULL);
    tcol := NULL;
    IF to_regclass('_timescaledb_catalog.dimension') IS NOT NULL THEN
      EXECUTE 'SELECT d.column_name FROM _timescaledb_catalog.dimension d '
              'JOIN _timescaledb_catalog.hypertable h ON h.id = d.hypertable_id '
              'WHERE h.schema_name = $1 AND h.table_name = $2 ORDER BY d.id LIMIT 1' INTO tcol USING r.nspname,
                r.relname;
    END IF;
    sql := format('INSERT INTO %1$I.%2$I (%3$s) OVERRIDING SYSTEM VALUE SELECT %4$s FROM '
                  '(SELECT x::%1$I.%2$I AS v FROM unnest($1::text[]) AS x OFFSET 0) s',
                  r.nspname, r.relname, target_cols, select_cols);
    IF uniq THEN
      sql := sql || ' ON CONFLICT DO NOTHING';
    ELSIF tcol IS NOT NULL THEN
      sql := sql ||
        format(' WHERE NOT EXISTS (SELECT 1 FROM %1$I.%2$I t WHERE t.%3$I = (s.v).%3$I AND (t.*)::text = (s.v)::text)',
                           r.nspname, r.relname, tcol);
    ELSE
      sql := sql || format(' WHERE NOT EXISTS (SELECT 1 FROM %1$I.%2$I t WHERE (t.*)::text = (s.v)::text)', r.nspname,
        r.relname);
    END IF;
    EXECUTE format('SET LOCAL ROLE %I', owner);
    EXECUTE sql USING rs;
    GET DIAGNOSTICS n = ROW_COUNT;
    RESET ROLE;
    INSERT INTO _trackerdb_replay_result VALUES (r.nspname, r.relname, r.rows, n, false);
    FOR col IN SELECT a.attname, pg_get_serial_sequence(format('%I.%I', r.nspname, r.relname), a.attname) AS seq
                 FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped LOOP
      CONTINUE WHEN col.seq IS NULL;
      EXECUTE format('SELECT setval(%1$L, m) FROM (SELECT max(%2$I) AS m FROM %3$I.%4$I) s '
                     'WHERE m > (SELECT last_value FROM %5$s)', col.seq, col.attname, r.nspname, r.relname, col.seq);
    END LOOP;
  END LOOP;
END
$trackerdb_replay$;
SELECT coalesce(json_agg(json_build_object('table', nspname || '.' || relname, 'rows', rows, 'inserted', inserted,
                                           'missing', missing) ORDER BY nspname, relname), '[]'::json)
  FROM _trackerdb_replay_result;
"""

REPLAY_HEADER = """-- trackerdb rollback export: rows written on the target after the switch.
-- Replayed by `invoke rollback --replay` (or: psql -X -d <database> -f <this file>) in one transaction.
-- Table names and rows are data (the COPY block: seq, schema, table, row as the table's text form).
"""


def replay_script(rows: list[str]) -> str:
    """The whole export file: fixed program text around COPY data lines from :func:`replay_rows`."""
    data = "".join(ln + "\n" for ln in rows)
    return (REPLAY_HEADER + "\\set ON_ERROR_STOP on\nBEGIN;\n"
            "CREATE TEMP TABLE _trackerdb_replay (seq bigint, nspname text, relname text, row_text text) ON "
            "COMMIT DROP;\n"
            "COPY _trackerdb_replay (seq, nspname, relname, row_text) FROM STDIN;\n"
            f"{data}\\.\n{REPLAY_PROGRAM}COMMIT;\n")


def _count_lines(copy_data: str) -> int:
    return len([ln for ln in copy_data.split("\n") if ln != ""])


# ---- executor --------------------------------------------------------------------------------
def run_rollback(settings: Settings, journal_path, replay: bool = False, progress=None, out_dir=None) -> dict:
    """Roll back the cutover of ``journal_path`` (see the module's steps); every SQL session runs with the
    rollback's time limits (``limits.ROLLBACK``)."""
    with limits.phase(limits.for_phase(settings, limits.ROLLBACK)):
        return _rollback(settings, journal_path, replay, progress, out_dir)


def _rollback(settings: Settings, journal_path, replay: bool, progress, out_dir) -> dict:
    say = progress or (lambda m: None)
    journal = Journal(journal_path)
    states = journal.states()
    if settings.source_decommissioned:
        raise OpsError("the source is decommissioned (settings.source_decommissioned): "
                       "there is nothing to roll back to", hint="restore from the target's pgBackRest backups instead")
    bd.check(journal.path, (states.get(ph.PREFLIGHT) or ph_state(ph.PREFLIGHT)).facts.get(bd.KEY), settings)
    freeze_st = states.get(ph.FREEZE)
    if freeze_st is None or "prior_read_only" not in freeze_st.facts:
        raise OpsError(f"journal {journal.path} shows no freeze of the source: nothing to roll back",
                       hint="the source was never changed; if a cutover is running, use its --journal")
    ended = ll.finished(journal)
    if ended:
        raise OpsError(f"journal {journal.path} records the end of the rollback window ({ended.get('finished_at')}): "
                       "the change capture was dropped",
                       hint="rollback is no longer possible; restore from backups instead")
    ctx = ph.Ctx(settings=settings, journal=journal, dump_dir=Path("."), progress=progress)
    facts: dict = {"replay": replay}
    journal.begin(ROLLBACK, {"replay": replay})
    undo: list = []  # what this run changed before the switch back, undone if a later step fails
    try:
        db = settings.database
        src, tgt = ctx.psql("source"), ctx.psql("target")  # each cluster on its own port
        switch_st = states.get(ph.SWITCH)
        switched = switch_st is not None and "old" in switch_st.facts
        # 1. stop writes on the target (a dead target must not block the way back)
        target_ok = True
        try:
            # the cluster this journal's preflight saw, or none of its business (a dead target is checked when it
            # answers)
            bound = (states.get(ph.PREFLIGHT) or ph_state(ph.PREFLIGHT)).facts.get(bd.KEY) or {}
            if bound.get(bd.SYSTEM_ID):
                bd.check_target(journal.path, bound, bd.target_system_identifier(tgt))
            tfacts = tgt.json(fz.facts_sql(db))
            if tfacts["exists"] and states.get(ph.RESTORE) is not None:
                say(f"making {db} on the target read-only")
                was_read_only = fz.is_read_only(tgt, db)
                facts["target_freeze"] = tf = fz.freeze(tgt, db, grace_s=5, progress=say)
                if not was_read_only:
                    undo.append(("target", tf["prior_read_only"]))
        except bd.BindingError:
            raise
        except OpsError as exc:
            target_ok, tfacts = False, {"exists": False}
            facts["target_unreachable"] = exc.one_line()
            say(f"target unreachable, going on without it: {exc.one_line()}")
        # 2. what the target received after the switch, read while both sides are frozen
        tables = tgt.json(tables_sql(), db) if (switched and tfacts["exists"]) else []
        recorded = journal.state(ROLLBACK).facts
        if "source_max" in recorded:
            source_max = recorded["source_max"]
        else:
            keyed = [t for t in tables if t.get("int_key") and not t.get("time_column")]
            there = src.json(existing_sql(keyed), db) or {}
            keyed = [t for t in keyed if there.get(f"{t['schema']}.{t['name']}")]
            source_max = src.json(maxima_sql(keyed), db) or {}
            journal.note(ROLLBACK, {"source_max": source_max})
        cap, prior = None, lo.ended_export(states)
        if switched and prior:  # exported by an earlier run, then its slot ended: that file holds every change
            cap = prior
            facts.update(prior)
            say(f"the capture slot was ended after its export: using {prior['export_file']}")
        elif switched and tfacts["exists"]:
            # every committed change since the slot (issue 16); the heuristic export only when it cannot be read
            cap, why = ll.capture_problem(journal, tgt, settings)
            if cap is not None:
                try:
                    facts.update(ll.export_changes(settings, journal, tgt, cap, out_dir, say))
                except ParseError as exc:  # a record the decoder cannot read: named, then the heuristic export
                    cap, why = None, f"the decoder could not read a record: {exc}"
            if cap is None:
                facts["capture_problem"] = why
                say("WARNING: " + ll.FALLBACK_WARNING.format(why=why))
                facts.update(export_rows(settings, journal, tgt, tables, freeze_st.facts["frozen_at"], source_max,
                                         out_dir, say))
                facts["warning"] = ll.FALLBACK_WARNING.format(why=why)
        elif switched and not target_ok:
            facts["exported_rows"] = None
            facts["warning"] = ("the target was unreachable: rows written there after the switch were NOT exported; "
                                "re-run `invoke rollback` once it answers (every step is safe to repeat)")
        else:
            facts["exported_rows"] = 0
            facts["note"] = "the application was never switched: no rows can have been written on the target"
        # 3. the source writable again; 4. the rows replayed there, before any client can reach it
        say(f"making {db} on the source writable again")
        facts["source"] = fz.unfreeze(src, db, prior=freeze_st.facts["prior_read_only"])
        if facts["source"]["changed"]:
            undo.append(("source", None))
        if replay and cap is not None and facts.get("export_file"):
            say(f"replaying {facts['exported_rows']} change(s) on the source in commit order, as their tables' owners, "
                "in one transaction")
            facts.update(ll.replay_changes(src, facts["export_file"], db))
        elif replay and facts.get("exported_rows"):
            say(f"replaying {facts['exported_rows']} row(s) on the source as their tables' owners, in one transaction")
            facts.update(replay_export(src, facts["export_file"], db))
        # 5. only now the application back to the recorded old value: it never points at a read-only database
        if switched and switch_st is not None:
            old, new = switch_st.facts["old"], switch_st.facts["new"]
            switcher = sw.make(settings)
            say(f"switching {switcher.describe()} back: {new} -> {old}")
            facts["switch"] = switcher.apply(new, old, progress=say)
        _note_reusable(settings, tgt, facts, switched, cap is not None and replay, target_ok and tfacts.get("exists"),
                       journal.path, say)
    except BaseException as exc:
        facts_undo = _undo(undo, src if undo else None, tgt if undo else None, settings, say)
        journal.end(ROLLBACK, "failed", facts={"undone": facts_undo, **({"limit_hit": exc.limit} if isinstance(
                        exc, limits.TimeLimitError) else {})},
                    error=exc.one_line() if isinstance(exc, OpsError) else type(exc).__name__)
        if isinstance(exc, OpsError) and facts_undo:
            exc.hint = ((exc.hint + "; ") if exc.hint else "") + (
                "nothing was switched: the application stays on the target, which is writable again; "
                "fix the cause and re-run, or roll back without --replay and replay the export by hand")
        raise
    finally:
        ctx.close()
    journal.end(ROLLBACK, "ok", facts)
    if cap is not None and facts.get("capture") == "logical decoding" and not lo.ended_export(journal.states()):
        facts["capture_end"] = lo.after_rollback(settings, journal, say)  # every change exported: the slot goes
    from .hooks import rollback_start

    # the application this cutover stopped comes back only now, pointing at the writable source
    started = rollback_start(settings, journal, progress=say)
    if started:
        facts["application_started"] = started["done"]
    return facts


def _note_reusable(settings: Settings, tgt: Psql, facts: dict, switched: bool, replayed: bool, target_there: bool,
                   journal_path, say) -> None:
    """Every change the target took is back on the source (replayed from the capture), or it took none: the
    frozen target stays a valid pre-copy for the next window (``schema_print.note_rollback``)."""
    from ..migrate import schema_print as sp

    if not target_there or (switched and not (replayed and facts.get("export_file"))):
        return
    db = settings.database
    fz.write_through(tgt, db, allow=False)  # a window abandoned before its switch left it
    how = "every change replayed from the capture" if switched else "never switched: nothing written there"
    if sp.note_rollback(settings.state_dir, db, tgt.json(sp.identity_sql(db)), str(journal_path), how):
        facts["reusable_precopy"] = how
        say(f"the target's {db} stays a pre-copy for the next window ({how}): `invoke cutover` can take "
            "the pre-copy path")


def _undo(undo: list, src: Psql | None, tgt: Psql | None, settings: Settings, say) -> list[str]:
    """Put back what this run changed before the switch back: the target writable, the source frozen."""
    done = []
    for which, prior in reversed(undo):
        try:
            if which == "target" and tgt is not None:
                fz.unfreeze(tgt, settings.database, prior=prior)
                done.append("target writable again")
            elif which == "source" and src is not None:
                fz.freeze(src, settings.database, grace_s=5)
                done.append("source read-only again")
            say(f"undone: {done[-1]}")
        except OpsError as exc:  # report, keep undoing the rest
            done.append(f"could not undo ({which}): {exc.one_line()}")
    return done


def replay_export(src: Psql, export_file: str, db: str) -> dict:
    """Run the export file on the source's cluster; returns per-table counts from the replay program."""
    result = src.json(Path(export_file).read_text(), db, timeout=3600) or []
    replayed = {r["table"]: r["inserted"] for r in result if r["inserted"]}
    missing = [r["table"] for r in result if r["missing"]]
    out: dict = {"replayed": replayed,
                 # rows the source already had (an earlier replay) or that collide with a key the source handed
           # out itself: listed, never silently merged
                 "not_replayed": {r["table"]: r["rows"] - r["inserted"] for r in result if r["rows"] != r["inserted"]}}
    if missing:
        out["missing_on_source"] = missing
        out["warning_missing"] = (f"{len(missing)} table(s) exist only on the target; their rows were NOT carried back "
                                  f"and stay in {export_file}: create the tables on the source and re-run")
    return out


def export_rows(settings: Settings, journal, tgt: Psql, tables, frozen_at, source_max, out_dir, say) -> dict:
    manifest_counts = {}
    dump_facts = journal.state(ph.DUMP).facts
    if not dump_facts.get("row_counts"):  # the pre-copy path takes its final dump after the switch (phase 8)
        dump_facts = journal.state(ph.FINAL_DUMP).facts
    if dump_facts.get("row_counts"):
        manifest_counts = dump_facts["row_counts"]
    rows: list[str] = []
    counts: dict[str, int] = {}
    how: dict[str, str] = {}
    skipped: list[str] = []
    seq = 0
    live = _counts(tgt, settings.database, tables)
    for t in tables:
        fq = f"{t['schema']}.{t['name']}"
        where, why = selection(t, frozen_at, source_max, manifest_counts)
        if where == "COUNT_GREW":
            if live.get(fq, 0) <= manifest_counts.get(fq, 0):
                continue
            where = "true"
        data = tgt.run(export_sql(t, where), settings.database, timeout=3600).stdout
        lines, seq = replay_rows(seq, t, data)
        if lines:
            counts[fq], how[fq] = len(lines), why
            rows.extend(lines)
    out = Path(out_dir) if out_dir else journal.path.parent
    path = out / f"rollback-rows-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.sql"
    write_private(path, replay_script(rows))
    say(f"exported {sum(counts.values())} row(s) written on the target after the switch to {path}")
    return {"export_file": str(path), "exported": counts, "exported_rows": sum(counts.values()), "selection": how,
            "not_exported": skipped,
            "warning": "updates and deletes made on the target after the switch are not carried back"}


def _counts(psql: Psql, db: str, tables: list[dict]) -> dict:
    if not tables:
        return {}
    parts = ", ".join(f"{literal(t['schema'] + '.' + t['name'])}, (SELECT count(*) FROM "
                      f"{qualified(t['schema'], t['name'])})"
                      for t in tables)
    return psql.json(f"SELECT json_build_object({parts});", db) or {}
