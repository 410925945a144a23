"""The schema fingerprint: everything about the tracker database except its rows, as one document.

The pre-copy path of the cutover (``cutover/delta.py``) moves only rows. It is sound only while the
schema is the one the pre-copy restored: tables, columns and their types, defaults, indexes,
constraints, triggers, views, routines, owners, ACLs and policies (the manifest's privileges
capture, minus chunks and large objects, which follow their data; with TimescaleDB's own schemas'
ACLs and default ACLs), hypertables and their
dimensions, compression settings, continuous aggregates, jobs and extension versions.

``invoke restore`` records the restored target's fingerprint (``record_precopy``) in the state
directory, with the identity of the database it describes (cluster system identifier + database
OID): the window compares the frozen source and the target with it and takes the full dump path,
loudly, on any difference. Pure parts: the SQL, the digest, the difference text, the record check.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from . import privileges as pv
from . import sqltext as sq

if TYPE_CHECKING:
    from ..settings import Settings

PRECOPY_RECORD = "precopy.json"
FORMAT = 1

_USER = f"n.nspname !~ '{pv.SYSTEM_SCHEMA_RE}'"
_NOT_EXT = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{c}'::regclass AND d.objid = {o} AND d.deptype = 'e')"

SCHEMA_SQL = f"""SET search_path = pg_catalog, pg_temp;
SELECT json_build_object(
  'extensions', (SELECT coalesce(json_agg(e.extname || ' ' || e.extversion ORDER BY e.extname), '[]'::json) FROM pg_extension e),
  'relations', (SELECT coalesce(json_agg(format('%s %I.%I', c.relkind::text, n.nspname, c.relname)
                  || coalesce(' ' || pg_get_partkeydef(c.oid), '') ORDER BY n.nspname, c.relname), '[]'::json)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND {_USER} AND {_NOT_EXT.format(c='pg_class', o='c.oid')}),
  'columns', (SELECT coalesce(json_agg(format('%I.%I.%I %s%s%s%s%s', n.nspname, c.relname, a.attname,
                  format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                  coalesce(' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                  CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END,
                  CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text ELSE '' END)
                  ORDER BY n.nspname, c.relname, a.attnum), '[]'::json)
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
      WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND {_USER}
        AND {_NOT_EXT.format(c='pg_class', o='c.oid')}),
  'indexes', (SELECT coalesce(json_agg(pg_get_indexdef(i.indexrelid) ORDER BY 1), '[]'::json)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE {_USER} AND {_NOT_EXT.format(c='pg_class', o='c.oid')}),
  'constraints', (SELECT coalesce(json_agg(format('%I.%I %I %s', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid))
                  ORDER BY 1), '[]'::json)
      FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE {_USER} AND {_NOT_EXT.format(c='pg_class', o='c.oid')}),
  'triggers', (SELECT coalesce(json_agg(pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text ORDER BY 1), '[]'::json)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE NOT t.tgisinternal AND {_USER}),
  'views', (SELECT coalesce(json_agg(format('%I.%I %s', n.nspname, c.relname, md5(pg_get_viewdef(c.oid))) ORDER BY 1), '[]'::json)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {_USER}),
  'routines', (SELECT coalesce(json_agg(p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid)) ORDER BY 1), '[]'::json)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE p.prokind IN ('f', 'p') AND {_USER} AND {_NOT_EXT.format(c='pg_proc', o='p.oid')}),
  'sequences', (SELECT coalesce(json_agg(format('%I.%I %s %s %s %s %s %s', s.schemaname, s.sequencename, s.data_type::text,
                  s.start_value, s.increment_by, s.min_value, s.max_value, s.cycle) ORDER BY 1), '[]'::json)
      FROM pg_sequences s WHERE s.schemaname !~ '{pv.SYSTEM_SCHEMA_RE}'),
  'database', (SELECT json_build_object('owner', pg_get_userbyid(d.datdba), 'acl', d.datacl::text,
                  'settings', (SELECT json_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c
                               WHERE s.setdatabase = d.oid AND c !~ '^(timescaledb[.]restoring|default_transaction_read_only|trackerdb[.]frozen)='))
      FROM pg_database d WHERE d.datname = current_database()),
  'hypertables', (SELECT coalesce(json_agg(format('%I.%I %s', h.schema_name, h.table_name,
                  (SELECT string_agg(format('%s %s %s %s', d.column_name, d.column_type::regtype, d.interval_length, d.num_slices),
                                     ', ' ORDER BY d.id) FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = h.id))
                  ORDER BY 1), '[]'::json)
      FROM _timescaledb_catalog.hypertable h WHERE h.schema_name !~ '{pv.SYSTEM_SCHEMA_RE}'),
  'compression', (SELECT coalesce(json_agg(format('%s %s %s %s %s', s.hypertable_schema, s.hypertable_name, s.attname,
                  s.segmentby_column_index, s.orderby_column_index) || ' ' || s.orderby_asc || ' ' || s.orderby_nullsfirst
                  ORDER BY 1), '[]'::json) FROM timescaledb_information.compression_settings s),
  'caggs', (SELECT coalesce(json_agg(format('%I.%I %s %s %s', a.view_schema, a.view_name, a.materialized_only, a.compression_enabled,
                  md5(a.view_definition)) ORDER BY 1), '[]'::json) FROM timescaledb_information.continuous_aggregates a),
  'jobs', (SELECT coalesce(json_agg(format('%s.%s %s %s %s %s %s', j.proc_schema, j.proc_name, j.hypertable_schema, j.hypertable_name,
                  j.schedule_interval, j.scheduled, j.owner) || ' ' || coalesce(j.config::text, '') ORDER BY 1), '[]'::json)
      FROM timescaledb_information.jobs j WHERE j.job_id >= 1000)
);
"""


def canonical(doc) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)


def schema_doc(base: dict, privileges: dict | None) -> dict:
    """The fingerprint document: ``SCHEMA_SQL``'s result plus the privileges capture without the
    objects that come and go with data (chunks, large objects: the delta moves those)."""
    doc = {k: sorted(v, key=canonical) if isinstance(v, list) else v for k, v in (base or {}).items()}
    objs = ((privileges or {}).get("privileges", privileges or {}) or {}).get("objects") or {}
    doc["privileges"] = sorted(f"{k} {canonical({a: v for a, v in o.items() if a not in ('kind', 'name', 'schema')})}"
                               for k, o in objs.items() if not _follows_data(o))
    return doc


def _follows_data(obj: dict) -> bool:
    """Chunks and large objects (the delta moves them with their rows). ``_timescaledb_internal``'s own
    ACL, default privileges in it and grants on the extension's members there are schema: a change on
    the source after the pre-copy sends the window to the full path, where the restore carries it."""
    if str(obj.get("kind", "")).startswith("large object"):
        return True
    return (obj.get("schema") == pv.INTERNAL_SCHEMA and obj.get("kind") not in ("schema", "default privileges")
            and not obj.get("extension_member"))


def digest(doc: dict) -> str:
    return hashlib.sha256(canonical(doc).encode()).hexdigest()


def differences(want: dict, have: dict, limit: int = 4) -> list[str]:
    """Readable differences, section by section: ``columns: + tracker.t.c integer; - ...`` (``have`` vs ``want``)."""
    out = []
    for key in sorted(set(want) | set(have)):
        a, b = want.get(key), have.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            added = sorted(set(map(str, b)) - set(map(str, a)))
            gone = sorted(set(map(str, a)) - set(map(str, b)))
            items = [f"+ {x[:120]}" for x in added[:limit]] + [f"- {x[:120]}" for x in gone[:limit]]
            out.append(f"{key}: " + "; ".join(items))
        else:
            out.append(f"{key}: {str(b)[:120]} (was {str(a)[:120]})")
    return out


def collect(psql, database: str) -> dict:
    """The fingerprint document of ``database`` through a ``Psql``."""
    return schema_doc(psql.json(SCHEMA_SQL, database), psql.json(pv.PRIVILEGES_SQL, database))


def identity_sql(database: str) -> str:
    """Which database this is: the cluster's system identifier and the database's OID."""
    return ("SELECT json_build_object('system_identifier', (SELECT system_identifier::text FROM pg_control_system()), "
            f"'database_oid', (SELECT oid::bigint FROM pg_database WHERE datname = {sq.literal(database)}));")


def precopy_record(database: str, identity: dict, doc: dict, dump_sha256: str | None, recorded_at: str | None = None) -> dict:
    return {"format": FORMAT, "database": database, "identity": identity, "schema_digest": digest(doc), "schema": doc,
            "dump_sha256": dump_sha256,
            "recorded_at": recorded_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def record_path(state_dir) -> Path:
    return Path(state_dir) / PRECOPY_RECORD


def record_precopy(settings: Settings, psql, dump_sha256: str | None) -> Path:
    """After a restore: the target's schema fingerprint and identity, for the cutover's pre-copy path."""
    from ..files import write_private

    db = settings.database
    rec = precopy_record(db, psql.json(identity_sql(db)), collect(psql, db), dump_sha256)
    p = record_path(settings.state_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_private(p, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return p


def load_record(state_dir) -> dict | None:
    p = record_path(state_dir)
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == FORMAT else None


def frozen(read_only_setting: str | None) -> bool:
    return bool(read_only_setting) and read_only_setting.split("=", 1)[-1].lower() in ("on", "true", "1", "yes")


def note_rollback(state_dir, database: str, identity: dict, journal: str, how: str) -> bool:
    """A completed rollback (every change the target took carried back to the source, or none taken) leaves
    the target a valid pre-copy, frozen: the next window may take the pre-copy path from it (the delta makes
    it equal to the source again). Recorded only for the database the record is of; True when recorded."""
    from ..files import write_private

    rec = load_record(state_dir)
    if rec is None or rec.get("database") != database or rec.get("identity") != identity:
        return False
    rec["rolled_back"] = {"journal": journal, "how": how,
                          "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    write_private(record_path(state_dir), json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return True


def guard(record: dict | None, database: str, target_identity: dict, source_doc: dict, target_doc: dict,
          target_read_only: str | None = None) -> list[str]:
    """Why the pre-copy path may NOT be taken (empty: it may). Pure. ``target_read_only``: the target
    database's own ``default_transaction_read_only`` setting (a rolled-back cutover leaves it frozen: the
    pre-copy path writes through that freeze only after a completed rollback, ``note_rollback``)."""
    if record is None:
        return ["no pre-copy is recorded (run `invoke restore` and `invoke verify` before the window)"]
    if record.get("database") != database:
        return [f"the recorded pre-copy is of database {record.get('database')!r}, not {database!r}"]
    if record.get("identity") != target_identity:
        return [f"the target's {database} is not the recorded pre-copy (identity {target_identity}, recorded {record.get('identity')})"]
    reasons = []
    if frozen(target_read_only) and not record.get("rolled_back"):
        reasons.append(f"the target's {database} is read-only ({target_read_only}; a rolled-back cutover freezes it) and "
                       "no completed rollback recorded that every change it took is back on the source: "
                       "`invoke restore` for a fresh pre-copy")
    want = record.get("schema") or {}
    if digest(source_doc) != record.get("schema_digest"):
        reasons.append("the source's schema changed since the pre-copy: " + " | ".join(differences(want, source_doc)))
    if digest(target_doc) != record.get("schema_digest"):
        reasons.append("the target's schema changed since the pre-copy: " + " | ".join(differences(want, target_doc)))
    return reasons
