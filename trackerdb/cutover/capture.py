"""Change capture on the target for a lossless rollback (issue 16): a logical slot, its decoding, the replay.

Decoder: PostgreSQL's built-in ``test_decoding``. It ships with the server (no package to build for
the lab's flat apt repository, nothing extra to provision or pin on production), it is read with
plain SQL (``pg_logical_slot_peek_changes``: no replication connection, no publication to keep in
step with tables the application creates), and its text is stable and documented. It prints every
value in its type's own output form, which the source's input functions read back exactly. wal2json
would give JSON but needs packaging and provisioning on both the lab and production; pgoutput is a
binary protocol that needs a publication and a replication-protocol client.

Lifecycle: the cutover's switch phase sets ``REPLICA IDENTITY FULL`` on tables without a usable
key, then creates the slot (its name is noted in the journal *before*, its start LSN after), and
only then switches. The slot is only ever *peeked*, never consumed: every rollback decodes
everything since the switch. ``invoke cutover-finish`` drops it, and so do a rollback that exported every
change, the next restore and the next cutover's preflight once a journal shows its window over (``leftover``).

What is replayed: committed INSERT/UPDATE/DELETE on the tracker database's own tables. Changes
to chunk tables map to their hypertable. TimescaleDB 2.18 brackets every compression and
decompression (policy or transparent, DML into a compressed chunk's range) with transactional
logical messages ``::timescaledb-[de]compression-start/-end``
(``timescaledb.enable_compression_wal_markers``, on by default, set explicitly by provisioning):
changes to chunks between those markers only move rows between the compressed and uncompressed
storage and are skipped; the user's own UPDATE/DELETE after a transparent decompression lies outside
the markers and is replayed on the uncompressed chunk's hypertable. TimescaleDB writes the markers
from C (``LogLogicalMessage``, tsl/src/compression/wal_utils.h), but any role may write the same
message with ``pg_logical_emit_message``: a span therefore hides only changes in TimescaleDB's
schemas, never a regular table's (those are replayed wherever they fall). Changes to compressed chunks
(``compress_hyper_*``) and to TimescaleDB's internal tables (catalog, materialized cagg data) are
never replayed: the source recomputes its own. A TRUNCATE of the application's tables (``TRUNCATE a, b``,
and CASCADE's, which the decoder names one by one) is replayed as one TRUNCATE of them all, in commit
order; a chunk truncated on its own (a compression) is not, and is counted and named.

Replay: the same program text for every export; changes travel as COPY data (names, rows as JSON
of the values' text forms), the server quotes every name with ``format('%I')``; each change runs
as its table's owner; all in one transaction, which also advances a replication origin on the
source to the last applied commit LSN (``pg_replication_origin_xact_setup``): a second replay
skips everything already applied, atomically with the first one's commit.
"""

from __future__ import annotations

import json
import re

from ..errors import HostError, OpsError
from .decoding import (Change, Decoded, ParseError, copy_rows, copy_unescape, counts, decode, map_table,  # noqa: F401
                       parse_change, parse_tuple)
from ..psql import Psql
from ..sql import literal
from ..slot_watch import FAIL_SHARE, SLOTS_SQL, WARN_SHARE, retained_check, watched_slots  # noqa: F401  (the capture's)
from ..tsdb_api import INTERNAL_SCHEMAS_RE

PLUGIN = "test_decoding"
JOURNAL_PHASE = "capture"
FINISH_PHASE = "finish"
SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
OPTIONS = ("'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1'")


def slot_name(stamp: float) -> str:
    return f"trackerdb_rollback_{int(stamp)}"


def origin_name(slot: str) -> str:
    return f"trackerdb_{check_slot(slot)}"


def check_slot(slot: str) -> str:
    if not SLOT_RE.match(slot or ""):
        raise OpsError(f"bad replication slot name {slot!r}", hint="lower-case letters, digits and _ only (at most 63)")
    return slot


# ---- builders (pure) -------------------------------------------------------------------------
# Tables of the tracker database an UPDATE or DELETE could not be applied to without a key:
# relreplident 'd' (default) without a primary key, 'n' (nothing), or 'i' on a dropped index.
IDENTITY_SQL = r"""
SELECT coalesce(json_agg(t ORDER BY t.schema, t.name), '[]'::json) FROM (
  SELECT n.nspname AS schema, c.relname AS name, c.relreplident AS replident,
    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ri_index
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND n.nspname !~ {INTERNAL_RE}
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
      AND d.deptype = 'e')
) t;
"""
IDENTITY_SQL = IDENTITY_SQL.replace("{INTERNAL_RE}", literal(INTERNAL_SCHEMAS_RE))


def needs_identity(tables: list[dict]) -> list[str]:
    """``schema.name`` of the tables whose UPDATE/DELETE the decoder could not identify."""
    out = []
    for t in tables:
        usable = (t["replident"] == "f" or (t["replident"] == "d" and t["has_pk"])
                  or (t["replident"] == "i" and t["has_ri_index"]))
        if not usable:
            out.append(f"{t['schema']}.{t['name']}")
    return out


# Fixed program: the same tables as IDENTITY_SQL that lack a usable identity get REPLICA IDENTITY
# FULL; names are quoted by the server. TimescaleDB refuses it on a chunk and carries a hypertable's
# setting to its chunks itself (existing and new ones; the lab test reads the chunks' relreplident).
# Prints one JSON list of what it changed.
SET_IDENTITY_PROGRAM = r"""
CREATE TEMP TABLE _trackerdb_identity (schema text, name text);
DO $trackerdb_identity$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname, c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
        AND n.nspname !~ {INTERNAL_RE}
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.deptype = 'e')
        AND NOT (c.relreplident = 'f'
                 OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                   AND i.indisprimary))
                 OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                   AND i.indisreplident)))
  LOOP
    EXECUTE format('ALTER TABLE %I.%I REPLICA IDENTITY FULL', r.nspname, r.relname);
    INSERT INTO _trackerdb_identity VALUES (r.nspname, r.relname);
  END LOOP;
END
$trackerdb_identity$;
SELECT coalesce(json_agg(schema || '.' || name ORDER BY schema, name), '[]'::json) FROM _trackerdb_identity;
"""
SET_IDENTITY_PROGRAM = SET_IDENTITY_PROGRAM.replace("{INTERNAL_RE}", literal(INTERNAL_SCHEMAS_RE))


def slot_facts_sql(slot: str) -> str:
    s = literal(check_slot(slot))
    return f"""SELECT json_build_object(
  'wal_level', current_setting('wal_level'),
  'markers', current_setting('timescaledb.enable_compression_wal_markers', true),
  'current_lsn', pg_current_wal_lsn()::text,
  'exists', EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {s}),
  'slot', (SELECT json_build_object('plugin', plugin, 'database', database, 'restart_lsn', restart_lsn::text,
                                    'confirmed_flush_lsn', confirmed_flush_lsn::text, 'wal_status', wal_status,
                                    'active', active, 'conflicting', conflicting,
                                    'retained_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint)
           FROM pg_replication_slots WHERE slot_name = {s}));"""


#: every slot of ours on the host (for the watch in backrest.check / signoff)
def create_slot_sql(slot: str) -> str:
    return (f"SELECT json_build_object('lsn', lsn::text) FROM "
            f"pg_create_logical_replication_slot({literal(check_slot(slot))}, {literal(PLUGIN)});")


def drop_slot_sql(slot: str) -> str:
    s = literal(check_slot(slot))
    return (f"SELECT json_build_object('dropped', count(pg_drop_replication_slot(slot_name))) "
            f"FROM pg_replication_slots WHERE slot_name = {s};")


def drop_origin_sql(slot: str) -> str:
    """The replay's bookkeeping on the source (cluster-wide), once rollback is over."""
    o = literal(origin_name(slot))
    return (f"SELECT json_build_object('dropped', count(pg_replication_origin_drop(roname))) "
            f"FROM pg_replication_origin WHERE roname = {o};")


def changes_copy_sql(slot: str, upto_lsn: str) -> str:
    """The decoded changes up to ``upto_lsn`` as COPY text (lsn, xid, data), without consuming them."""
    if not re.match(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$", upto_lsn or "", re.I):
        raise OpsError(f"bad LSN {upto_lsn!r}", hint="an LSN looks like 0/16B3748")
    return (f"COPY (SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes("
            f"{literal(check_slot(slot))}, {literal(upto_lsn)}::pg_lsn, NULL, {OPTIONS})) TO STDOUT;")


#: chunk tables -> their hypertable (by name, and hypertable by id for chunks no longer in the catalog)
CHUNK_MAP_SQL = r"""
SELECT json_build_object(
  'chunks', (SELECT coalesce(json_object_agg(c.schema_name || '.' || c.table_name,
                 json_build_object('schema', h.schema_name, 'name', h.table_name,
                                   'compressed_storage', h.compression_state = 2)), '{}'::json)
             FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id),
  'hypertables', (SELECT coalesce(json_object_agg(h.id, json_build_object('schema', h.schema_name, 'name', h.table_name,
                                   'compressed_storage', h.compression_state = 2)), '{}'::json)
                  FROM _timescaledb_catalog.hypertable h));
"""


# ---- the replay script (fixed program + COPY data) -------------------------------------------
def _copy_escape(value: str | None) -> str:
    if value is None:
        return "\\N"
    if "\x00" in value:
        raise ValueError("COPY field contains NUL")
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def change_lines(changes: list[Change]) -> list[str]:
    """COPY data lines ``seq, lsn, op, schema, table, old json, new json`` in commit order."""
    lines = []
    for seq, ch in enumerate(changes):
        fields = [str(seq), ch.lsn, ch.op, ch.schema, ch.table,
                  None if ch.old is None else json.dumps(ch.old, ensure_ascii=False),
                  None if ch.new is None else json.dumps(ch.new, ensure_ascii=False)]
        lines.append("\t".join(_copy_escape(f) for f in fields))
    return lines


# One change at a time, in commit order, as the table's owner. Rows are rebuilt by the source's own
# input functions (each column's text form from the decoder cast to the source's column type; not
# jsonb_populate_record, which would keep a json/jsonb column's text as a JSON string). A row is identified by the
# source table's primary key when it has one, otherwise by every column the target logged (REPLICA
# IDENTITY FULL; TimescaleDB's time dimension compared typed so chunks are excluded, other columns by
# their text form). A change whose row is not on the source (or an INSERT that collides) aborts
# everything: the source and the target disagree about a row, and that is for a person to decide.
# Without a key, an UPDATE is a DELETE + INSERT and duplicates are kept (n matched, n-1 put back).
REPLAY_PROGRAM = r"""CREATE TEMP TABLE _trackerdb_replay_result (nspname text, relname text, op text, n bigint,
  missing boolean) ON COMMIT DROP;
DO $trackerdb_replay$
DECLARE
  origin text; done pg_lsn; last pg_lsn; c record; rel regclass; owner name; pk text[]; tcol name;
  keyj jsonb; newj jsonb; cond text; cols text; vals text; n bigint; sql text;
  skipped bigint := 0; col record; touched regclass[] := '{}'; hts text[];
BEGIN
  -- as a logical replication subscriber applies: the decoded rows already carry what the target's
  -- triggers did (updated_at, cascades arrive as their own changes), so the source's ordinary and
  -- foreign-key triggers must not run again
  PERFORM set_config('session_replication_role', 'replica', true);
  SELECT m.origin INTO origin FROM _trackerdb_replay_meta m;
  IF pg_replication_origin_oid(origin) IS NULL THEN
    PERFORM pg_replication_origin_create(origin);
  END IF;
  PERFORM pg_replication_origin_session_setup(origin);
  done := pg_replication_origin_session_progress(false);
  SELECT count(*) INTO skipped FROM _trackerdb_changes WHERE done IS NOT NULL AND lsn <= done;
  INSERT INTO _trackerdb_replay_result VALUES ('', '', 'already_applied', skipped, false);
  FOR c IN SELECT * FROM _trackerdb_changes WHERE done IS NULL OR lsn > done ORDER BY seq LOOP
    last := c.lsn;
    rel := to_regclass(format('%I.%I', c.nspname, c.relname));
    IF rel IS NULL THEN
      INSERT INTO _trackerdb_replay_result VALUES (c.nspname, c.relname, lower(c.op), 1, true);
      CONTINUE;
    END IF;
    SELECT pg_get_userbyid(k.relowner) INTO owner FROM pg_class k WHERE k.oid = rel;
    IF c.op = 'TRUNCATE' THEN
      -- every table the target's TRUNCATE named, in one statement (foreign keys among them hold); a
      -- hypertable with its chunks, any other table ONLY (the decoder named each inheritance child itself)
      IF EXISTS (SELECT 1 FROM jsonb_array_elements(c.new_row->'tables') x
                  WHERE to_regclass(format('%I.%I', x->>0, x->>1)) IS NULL) THEN
        INSERT INTO _trackerdb_replay_result SELECT x->>0, x->>1, 'truncate', 1, true
          FROM jsonb_array_elements(c.new_row->'tables') x WHERE to_regclass(format('%I.%I', x->>0, x->>1)) IS NULL;
        CONTINUE;
      END IF;
      IF hts IS NULL THEN
        hts := '{}';
        IF to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL THEN
          EXECUTE 'SELECT coalesce(array_agg(format(''%I.%I'', schema_name, table_name)), ''{}'') '
                  'FROM _timescaledb_catalog.hypertable'
            INTO hts;
        END IF;
      END IF;
      SELECT string_agg(CASE WHEN format('%I.%I', x->>0, x->>1) = ANY (hts) THEN '' ELSE 'ONLY ' END
                        || format('%I.%I', x->>0, x->>1), ', ') INTO sql
                          FROM jsonb_array_elements(c.new_row->'tables') x;
      EXECUTE format('SET LOCAL ROLE %I', owner);
      EXECUTE 'TRUNCATE ' || sql;
      RESET ROLE;
      INSERT INTO _trackerdb_replay_result SELECT x->>0, x->>1, 'truncate', 1, false
        FROM jsonb_array_elements(c.new_row->'tables') x;
      CONTINUE;
    END IF;
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO pk FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) WHERE i.indrelid = rel
        AND i.indisprimary;
    tcol := NULL;
    IF to_regclass('_timescaledb_catalog.dimension') IS NOT NULL THEN
      EXECUTE 'SELECT d.column_name FROM _timescaledb_catalog.dimension d '
              'JOIN _timescaledb_catalog.hypertable h ON h.id = d.hypertable_id '
              'WHERE h.schema_name = $1 AND h.table_name = $2 ORDER BY d.id LIMIT 1' INTO tcol USING c.nspname,
                c.relname;
    END IF;
    keyj := coalesce(c.old_row, c.new_row);
    IF pk IS NOT NULL THEN
      keyj := (SELECT jsonb_object_agg(k, v) FROM jsonb_each(keyj) e(k, v) WHERE k = ANY (pk));
    END IF;
    -- the row's identity as constants (so chunk exclusion and compressed-batch filtering apply): typed
    -- equality for keys, time dimensions and plain scalar types, text form through the source's type otherwise
    SELECT string_agg(CASE WHEN keyj->>a.attname::text IS NULL THEN format('t.%1$I IS NULL', a.attname)
                           WHEN a.attname::text = ANY (coalesce(pk, '{}')) OR a.attname = tcol
                                OR a.atttypid = ANY
                                  ('{int2,int4,int8,text,varchar,bool,timestamptz,timestamp,date,uuid,numeric}'::regtype[])
                           THEN format('t.%1$I = %2$L::%3$s', a.attname, keyj->>a.attname::text,
                             format_type(a.atttypid, NULL))
                           ELSE format('t.%1$I::text = (%2$L::%3$s)::text', a.attname, keyj->>a.attname::text,
                                       format_type(a.atttypid, a.atttypmod)) END, ' AND ' ORDER BY a.attnum)
      INTO cond FROM pg_attribute a
      WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND keyj ? a.attname::text;
    newj := CASE WHEN pk IS NULL THEN coalesce(c.old_row, '{}') || coalesce(c.new_row, '{}') ELSE c.new_row END;
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum), string_agg(format('(r.j->>%L)::%s', a.attname,
      format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
      INTO cols, vals FROM pg_attribute a
      WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND newj ? a.attname::text;
    EXECUTE format('SET LOCAL ROLE %I', owner);
    IF c.op = 'INSERT' THEN
      EXECUTE format('INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM (SELECT $1 AS j) r',
                     c.nspname, c.relname, cols, vals) USING newj;
    ELSIF cond IS NULL THEN
      RAISE EXCEPTION 'change % (%) on %.%: no identity columns logged', c.seq, c.op, c.nspname, c.relname;
    ELSIF c.op = 'UPDATE' AND pk IS NOT NULL THEN
      EXECUTE format('UPDATE %I.%I t SET (%s) = (SELECT %s FROM (SELECT $1 AS j) r) WHERE %s',
                     c.nspname, c.relname, cols, vals, cond) USING newj;
      GET DIAGNOSTICS n = ROW_COUNT;
      IF n <> 1 THEN
        RAISE EXCEPTION 'change % (UPDATE) on %.%: % row(s) on the source match the target''s key %, expected 1',
          c.seq, c.nspname, c.relname, n, left(keyj::text, 300);
      END IF;
    ELSE
      EXECUTE format('DELETE FROM %I.%I t WHERE %s', c.nspname, c.relname, cond);
      GET DIAGNOSTICS n = ROW_COUNT;
      IF n = 0 OR (pk IS NOT NULL AND n <> 1) THEN
        RAISE EXCEPTION 'change % (%) on %.%: % row(s) on the source match the target''s row %, expected 1', c.seq,
          c.op, c.nspname, c.relname, n, left(keyj::text, 300);
      END IF;
      sql := format('INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM (SELECT $1 AS j) r',
                    c.nspname, c.relname, cols, vals);
      IF n > 1 THEN  -- identical rows without a key: only one of them was changed on the target
        EXECUTE sql || ' CROSS JOIN generate_series(2, $2)' USING keyj, n;
      END IF;
      IF c.op = 'UPDATE' THEN
        EXECUTE sql USING newj;
      END IF;
    END IF;
    RESET ROLE;
    IF NOT rel = ANY (touched) THEN touched := touched || rel; END IF;
    INSERT INTO _trackerdb_replay_result VALUES (c.nspname, c.relname, lower(c.op), 1, false);
  END LOOP;
  -- serial and identity sequences past the highest replayed key
  FOR col IN SELECT a.attrelid::regclass AS rel, a.attname, pg_get_serial_sequence(a.attrelid::regclass::text,
    a.attname) AS seq
               FROM pg_attribute a WHERE a.attrelid = ANY (touched) AND a.attnum > 0 AND NOT a.attisdropped LOOP
    CONTINUE WHEN col.seq IS NULL;
    EXECUTE format('SELECT setval(%1$L, m) FROM (SELECT max(%2$I) AS m FROM %3$s) s '
                   'WHERE m > (SELECT last_value FROM %4$s)',
                   col.seq, col.attname, col.rel, col.seq);
  END LOOP;
  -- continuous aggregates: TimescaleDB's invalidation trigger is an ordinary trigger, which
  -- session_replication_role = replica keeps from firing, so the replayed rows' time range is logged here
  -- as the trigger would have (one range per hypertable with aggregates): the next refresh recomputes it
  IF to_regclass('_timescaledb_catalog.continuous_agg') IS NOT NULL THEN
    FOR col IN SELECT DISTINCT ON (h.id) h.id, h.schema_name, h.table_name, d.column_name, d.column_type
                 FROM _timescaledb_catalog.hypertable h JOIN _timescaledb_catalog.dimension d ON d.hypertable_id = h.id
                WHERE EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg a WHERE a.raw_hypertable_id = h.id)
                  AND to_regclass(format('%I.%I', h.schema_name, h.table_name)) = ANY (touched)
                ORDER BY h.id, d.id LOOP
      EXECUTE format('INSERT INTO _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log '
                     '(hypertable_id, lowest_modified_value, greatest_modified_value) '
                     'SELECT $1, min(_timescaledb_functions.time_to_internal(v)), '
                     'max(_timescaledb_functions.time_to_internal(v)) '
                     'FROM (SELECT (x->>%L)::%s AS v FROM _trackerdb_changes c, '
                     'LATERAL (VALUES (c.old_row), (c.new_row)) r(x) '
                     'WHERE c.nspname = $2 AND c.relname = $3 AND x ? %L) q HAVING count(v) > 0',
                     col.column_name, col.column_type, col.column_name)
        USING col.id, col.schema_name, col.table_name;
    END LOOP;
  END IF;
  IF last IS NOT NULL THEN
    -- committed with this transaction or not at all: the next replay starts after it
    PERFORM pg_replication_origin_xact_setup(last, clock_timestamp());
  END IF;
END
$trackerdb_replay$;
SELECT json_build_object('already_applied', (SELECT sum(n) FROM _trackerdb_replay_result WHERE op = 'already_applied'),
  'applied', (SELECT coalesce(json_agg(json_build_object('table', nspname || '.' || relname, 'op', op, 'n', n,
    'missing', missing)), '[]'::json)
              FROM (SELECT nspname, relname, op, missing, sum(n) AS n FROM _trackerdb_replay_result
                WHERE op <> 'already_applied'
                    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3) r));
"""

REPLAY_HEADER = """-- trackerdb rollback export: every change committed on the target after the switch
-- (logical decoding).
-- Replayed by `invoke rollback --replay` (or: psql -X -d <database> -f <this file>, as a superuser) in one transaction.
-- Names and rows are data (COPY blocks); applied changes advance a replication origin, so a second run changes nothing.
"""


def replay_script(origin: str, changes: list[Change]) -> str:
    data = "".join(ln + "\n" for ln in change_lines(changes))
    return (REPLAY_HEADER + "\\set ON_ERROR_STOP on\nBEGIN;\n"
            "CREATE TEMP TABLE _trackerdb_replay_meta (origin text) ON COMMIT DROP;\n"
            "COPY _trackerdb_replay_meta (origin) FROM STDIN;\n"
            f"{_copy_escape(origin)}\n\\.\n"
            "CREATE TEMP TABLE _trackerdb_changes (seq bigint, lsn pg_lsn, op text, nspname text, relname text, "
            "old_row jsonb, new_row jsonb) ON COMMIT DROP;\n"
            "COPY _trackerdb_changes (seq, lsn, op, nspname, relname, old_row, new_row) FROM STDIN;\n"
            f"{data}\\.\n{REPLAY_PROGRAM}COMMIT;\n")


def replay_result(result: dict) -> dict:
    """The program's JSON into per-table/op counts, tables missing on the source, already applied."""
    applied: dict = {}
    missing: dict = {}
    for r in result.get("applied") or []:
        target = missing if r["missing"] else applied
        target.setdefault(r["table"], {})[r["op"]] = r["n"]
    return {"applied": applied, "missing_on_source": missing,
            "already_applied": int(result.get("already_applied") or 0)}


# ---- executors (each takes the target's ``Psql``, or the source's for its replay origin) -------------
def slot_facts(psql: Psql, db: str, slot: str) -> dict:
    return psql.json(slot_facts_sql(slot), db)


def prepare_identity(psql: Psql, db: str) -> list[str]:
    """REPLICA IDENTITY FULL where needed; returns the tables it was set on."""
    return psql.json(SET_IDENTITY_PROGRAM, db) or []


def ensure_slot(psql: Psql, db: str, slot: str) -> dict:
    """The slot, created if missing (a re-run after a kill finds it). Refuses when wal_level is not logical."""
    name = psql.host.name
    f = slot_facts(psql, db, slot)
    if f["wal_level"] != "logical":
        raise HostError(f"{name}: wal_level is {f['wal_level']}, logical decoding needs 'logical'",
                        hint="run `invoke provision` (it sets wal_level = logical and restarts, outside the window)")
    if f["exists"]:
        if f["slot"]["plugin"] != PLUGIN or f["slot"]["database"] != db:
            raise HostError(f"{name}: slot {slot} exists for {f['slot']['plugin']}/{f['slot']['database']}",
                            hint="it is not this cutover's: inspect pg_replication_slots")
        return {"slot": slot, "lsn": f["slot"]["confirmed_flush_lsn"], "created": False}
    lsn = psql.json(create_slot_sql(slot), db)["lsn"]
    return {"slot": slot, "lsn": lsn, "created": True}


def read_changes(psql: Psql, db: str, slot: str, upto_lsn: str) -> Decoded:
    data = psql.run(changes_copy_sql(slot, upto_lsn), db, timeout=3600).stdout
    try:
        chunk_map = psql.json(CHUNK_MAP_SQL, db) if _has_timescaledb(psql, db) else {}
    except OpsError:
        chunk_map = {}
    return decode(copy_rows(data), chunk_map)


def _has_timescaledb(psql: Psql, db: str) -> bool:
    return psql.run("SELECT to_regclass('_timescaledb_catalog.chunk') IS NOT NULL;", db).stdout.strip() == "t"


def drop_slot(psql: Psql, db: str, slot: str) -> int:
    return int(psql.json(drop_slot_sql(slot), db)["dropped"])


def drop_origin(psql: Psql, slot: str) -> int:
    return int(psql.json(drop_origin_sql(slot))["dropped"])
