"""The manifest: facts about the tracker database that restore and verify rely on.

Pure parts only: the SQL that reads the facts (one JSON document per query) and the functions that
turn psql's output into the manifest dict. ``collect_facts`` is the small executor used by dump
(on the source, inside the dump's snapshot) and verify (on the target, or live on the source).

Why each fact is here:
- versions: pg_restore of a TimescaleDB dump needs *exactly* the same TimescaleDB version;
- tables + exact row counts, hypertables (dimensions, chunk counts), caggs, jobs: what verify compares;
- caggs' refresh state (watermark, invalidation threshold, pending invalidations; ``cagg_check``): verify
  compares the target's with it;
- sequences: after restore each must be at least the source's value or the next insert collides;
- roles: must exist before restore (and ownership/grants refer to them);
- database settings (``ALTER DATABASE … SET``) and database grants (``datacl``): ``pg_dump`` without
  ``--create`` leaves them out, so restore reapplies them from here;
- dump size + SHA-256: restore refuses a truncated or different file;
- privileges (``privileges.py``): owners, ACLs, RLS, policies, SECURITY DEFINER of every object, so
  verify compares them object by object (the dump carries them and restore applies them);
- frozen: a manifest read while the cutover's freeze held the source read-only says so, and its
  ``default_transaction_read_only`` is not a setting of the source database (restore never applies it).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from ..errors import PreflightError
from . import privileges as pv
from .cagg_check import REFRESH_STATE_SQL

# 2: the dump carries owners and ACLs (no --no-owner/--no-privileges) and the manifest captures them.
MANIFEST_FORMAT = 2

# Schemas that belong to PostgreSQL or to extensions; everything else is the application's.
SYSTEM_SCHEMA_RE = r"^(pg_|_timescaledb|timescaledb_|information_schema$|toolkit_experimental$|_prom)"

# Database-level settings we never carry over: restore state of TimescaleDB itself.
SKIP_DB_SETTINGS = ("timescaledb.restoring",)
# Set by the cutover's freeze next to default_transaction_read_only, so a manifest taken during the
# freeze can tell our read-only flag from a source database that really is read-only.
FREEZE_MARKER = "trackerdb.frozen"
READ_ONLY_SETTING = "default_transaction_read_only"

_USER_NS = f"n.nspname !~ '{SYSTEM_SCHEMA_RE}'"
_NOT_EXT_MEMBER = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{cat}'::regclass "
                   "AND d.objid = {obj} AND d.deptype = 'e')")

# ---- queries ---------------------------------------------------------------------------------

BASE_FACTS_SQL = f"""
SELECT json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'shared_preload_libraries', current_setting('shared_preload_libraries'),
  'timescaledb_license', current_setting('timescaledb.license', true),
  'database', (SELECT json_build_object(
      'name', d.datname, 'owner', pg_get_userbyid(d.datdba),
      'encoding', pg_encoding_to_char(d.encoding), 'collate', d.datcollate, 'ctype', d.datctype,
      'size_bytes', pg_database_size(d.oid), 'acl_is_default', d.datacl IS NULL,
      'comment', shobj_description(d.oid, 'pg_database'))
    FROM pg_database d WHERE d.datname = current_database()),
  'extensions', (SELECT coalesce(json_agg(json_build_object('name', e.extname, 'version', e.extversion,
      'schema', n.nspname) ORDER BY e.extname), '[]'::json)
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'),
  'schemas', (SELECT coalesce(json_agg(n.nspname ORDER BY n.nspname), '[]'::json) FROM pg_namespace n
    WHERE {_USER_NS} AND {_NOT_EXT_MEMBER.format(cat='pg_namespace', obj='n.oid')}),
  'tables', (SELECT coalesce(json_agg(json_build_object('schema', n.nspname, 'name', c.relname,
      'rows', (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname),
                                                    false, true, '')))[1]::text::bigint)
      ORDER BY n.nspname, c.relname), '[]'::json)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND {_USER_NS} AND {_NOT_EXT_MEMBER.format(cat='pg_class', obj='c.oid')}),
  'sequences', (SELECT coalesce(json_agg(json_build_object('schema', s.schemaname, 'name', s.sequencename,
      'last_value', s.last_value) ORDER BY s.schemaname, s.sequencename), '[]'::json)
    FROM pg_sequences s WHERE s.schemaname !~ '{SYSTEM_SCHEMA_RE}'),
  'db_settings', (SELECT coalesce(json_agg(json_build_object('role', r.rolname, 'settings', s.setconfig)
      ORDER BY r.rolname NULLS FIRST), '[]'::json)
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole
    WHERE d.datname = current_database()),
  'db_grants', (SELECT coalesce(json_agg(json_build_object('grantee',
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
        'privilege', a.privilege_type, 'grantable', a.is_grantable)), '[]'::json)
    FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database()),
  'object_grants', (SELECT coalesce(json_agg(json_build_object('kind', x.kind, 'name', x.name, 'grantee', x.grantee,
      'privilege', x.privilege, 'grantable', x.grantable) ORDER BY x.kind, x.name, x.grantee, x.privilege), '[]'::json)
          FROM (
      SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, format('%I.%I', n.nspname, c.relname)
          AS name,
             CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
             a.privilege_type AS privilege, a.is_grantable AS grantable
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
        WHERE c.relacl IS NOT NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND a.grantee <> c.relowner
          AND {_USER_NS} AND {_NOT_EXT_MEMBER.format(cat='pg_class', obj='c.oid')}
      UNION ALL
      SELECT 'SCHEMA', format('%I', n.nspname), CASE WHEN a.grantee = 0 THEN 'PUBLIC'
          ELSE pg_get_userbyid(a.grantee) END,
             a.privilege_type, a.is_grantable
        FROM pg_namespace n, aclexplode(n.nspacl) a
        WHERE n.nspacl IS NOT NULL AND a.grantee <> n.nspowner AND {_USER_NS}
      UNION ALL
      SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.oid::regprocedure::text,
             CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
        WHERE p.proacl IS NOT NULL AND p.prokind <> 'a' AND a.grantee <> p.proowner
          AND {_USER_NS} AND {_NOT_EXT_MEMBER.format(cat='pg_proc', obj='p.oid')}) x),
  'default_acls', (SELECT coalesce(json_agg(json_build_object('role', pg_get_userbyid(d.defaclrole), 'schema',
      n.nspname,
      'objtype', d.defaclobjtype, 'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
      'privilege', a.privilege_type, 'grantable', a.is_grantable)
      ORDER BY pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype, a.grantee, a.privilege_type), '[]'::json)
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a
    WHERE a.grantee <> d.defaclrole),
  'roles', (WITH refs(oid) AS (
        SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_NS}
        UNION SELECT n.nspowner FROM pg_namespace n WHERE {_USER_NS}
        UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_NS}
        UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {_USER_NS}
        UNION SELECT (aclexplode(c.relacl)).grantee FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relacl IS NOT NULL AND {_USER_NS}
        UNION SELECT (aclexplode(n.nspacl)).grantee FROM pg_namespace n WHERE n.nspacl IS NOT NULL AND {_USER_NS}
        UNION SELECT unnest(pol.polroles) FROM pg_policy pol
        UNION SELECT da.defaclrole FROM pg_default_acl da
        UNION SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()
        UNION SELECT (aclexplode(d.datacl)).grantee FROM pg_database d WHERE d.datname = current_database() AND d.datacl
            IS NOT NULL
        UNION SELECT s.setrole FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
              WHERE d.datname = current_database())
    SELECT coalesce(json_agg(json_build_object('name', r.rolname, 'login', r.rolcanlogin, 'superuser', r.rolsuper)
        ORDER BY r.rolname), '[]'::json)
    FROM pg_roles r WHERE r.oid IN (SELECT oid FROM refs))
);
"""

# count(*) / an order-independent content checksum of any relation, in one plain query (no PL/pgSQL):
# the checksum sums the first 60 bits of md5(row::text), so it streams at any size (see dataset.checksum_sql)
_COUNT = ("(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', {s}, {n}), false, true, "
          "'')))[1]::text::bigint")
_DIGEST = (
    "(xpath('/row/d/text()', query_to_xml(format('SELECT coalesce(sum((''x'' || left(md5(t::text), "
    "15))::bit(60)::bigint), 0) AS d FROM %I.%I t', {s}, {n}), false, true, '')))[1]::text"
)

# a continuous aggregate's materialized content: the rows below its watermark (what a refresh has written;
# a real-time aggregate's rows above it are the raw table's, compared as such)
_CAGG_Q = ("(xpath('/row/v/text()', query_to_xml(format('SELECT {what} AS v FROM %I.%I t' || "
           "CASE WHEN cw.tcol IS NULL THEN '' ELSE ' WHERE %I < _timescaledb_functions.to_timestamp(%s)' END, "
           "a.view_schema, a.view_name, cw.tcol, cw.wm), false, true, '')))[1]::text")


def cagg_content_sql(schema: str, name: str, time_column: str | None, watermark: int | None) -> str:
    """rows + checksum of a continuous aggregate below ``watermark`` (another side's watermark, when they differ)."""
    from .sqltext import ident, literal  # noqa: F401

    where = (
        f" WHERE {ident(time_column)} < _timescaledb_functions.to_timestamp({int(watermark)})"
        if time_column and watermark is not None
        else ""
    )
    return (
        "SELECT json_build_object('rows', count(*), 'digest', coalesce(sum(('x' || left(md5(t::text), "
        f"15))::bit(60)::bigint), 0)::text) FROM {ident(schema)}.{ident(name)} t{where};"
    )


TIMESCALE_FACTS_SQL = f"""
SELECT json_build_object(
  'hypertables', (SELECT coalesce(json_agg(json_build_object('schema', h.hypertable_schema, 'name', h.hypertable_name,
      'num_chunks', h.num_chunks, 'compression_enabled', h.compression_enabled,
      'rows', {_COUNT.format(s='h.hypertable_schema', n='h.hypertable_name')},
      'compressed_chunks', (SELECT count(*) FROM timescaledb_information.chunks ch
          WHERE ch.hypertable_schema = h.hypertable_schema
                            AND ch.hypertable_name = h.hypertable_name AND ch.is_compressed),
      'uncompressed_chunks', (SELECT count(*) FROM timescaledb_information.chunks ch
          WHERE ch.hypertable_schema = h.hypertable_schema
                              AND ch.hypertable_name = h.hypertable_name AND NOT ch.is_compressed),
      'compressed_rows', (SELECT coalesce(sum({_COUNT.format(s='ch.chunk_schema', n='ch.chunk_name')}), 0)
                          FROM timescaledb_information.chunks ch WHERE ch.hypertable_schema = h.hypertable_schema
                            AND ch.hypertable_name = h.hypertable_name AND ch.is_compressed),
      'compressed_chunk_rows', (SELECT coalesce(json_object_agg(ch.chunk_name,
          {_COUNT.format(s='ch.chunk_schema', n='ch.chunk_name')}), '{{}}'::json)
                                FROM timescaledb_information.chunks ch WHERE ch.hypertable_schema = h.hypertable_schema
                                  AND ch.hypertable_name = h.hypertable_name AND ch.is_compressed),
      'dimensions', (SELECT coalesce(json_agg(json_build_object('column', d.column_name, 'type', d.dimension_type,
            'time_interval', d.time_interval::text, 'integer_interval', d.integer_interval,
            'num_partitions', d.num_partitions) ORDER BY d.dimension_number), '[]'::json)
          FROM timescaledb_information.dimensions d
          WHERE d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name))
      ORDER BY h.hypertable_schema, h.hypertable_name), '[]'::json)
    FROM timescaledb_information.hypertables h),
  'continuous_aggregates', (SELECT coalesce(json_agg(json_build_object('schema', a.view_schema, 'name', a.view_name,
      'materialized_only', a.materialized_only, 'hypertable_schema', a.hypertable_schema,
      'hypertable_name', a.hypertable_name, 'definition', a.view_definition,
      'materialization_hypertable', a.materialization_hypertable_schema || '.' || a.materialization_hypertable_name,
      'watermark', cw.wm, 'time_column', cw.tcol,
      'rows', {_CAGG_Q.format(what="count(*)")}::bigint,
      'digest', {_CAGG_Q.format(what="coalesce(sum((''x'' || left(md5(t::text), 15))::bit(60)::bigint), 0)")},
      'refresh_policy', (SELECT json_build_object('schedule_interval', j.schedule_interval::text,
            'start_offset', j.config->'start_offset', 'end_offset', j.config->'end_offset', 'scheduled', j.scheduled)
          FROM timescaledb_information.jobs j
          WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
              AND j.hypertable_schema = a.materialization_hypertable_schema
            AND j.hypertable_name = a.materialization_hypertable_name LIMIT 1))
      ORDER BY a.view_schema, a.view_name), '[]'::json)
    FROM timescaledb_information.continuous_aggregates a
    JOIN _timescaledb_catalog.continuous_agg ca ON ca.user_view_schema = a.view_schema
        AND ca.user_view_name = a.view_name
    CROSS JOIN LATERAL (SELECT _timescaledb_functions.cagg_watermark(ca.mat_hypertable_id) AS wm,
        (SELECT d.column_name FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = ca.mat_hypertable_id
           AND d.column_type = 'timestamptz'::regtype ORDER BY d.id LIMIT 1) AS tcol) cw),
  'jobs', (SELECT coalesce(json_agg(json_build_object('id', j.job_id, 'proc', j.proc_schema || '.' || j.proc_name,
      'hypertable', CASE WHEN j.hypertable_name IS NULL THEN NULL
          ELSE j.hypertable_schema || '.' || j.hypertable_name END,
      'schedule_interval', j.schedule_interval::text, 'scheduled', j.scheduled, 'owner', j.owner::text,
      'config', j.config)
      ORDER BY j.job_id), '[]'::json)
    FROM timescaledb_information.jobs j WHERE j.job_id >= 1000),
  'cagg_refresh_state', {REFRESH_STATE_SQL}
);
"""


def facts_sql(with_timescaledb: bool) -> list[str]:
    """The queries that read the facts: base, TimescaleDB's views when the extension is there, privileges last."""
    return [BASE_FACTS_SQL] + ([TIMESCALE_FACTS_SQL] if with_timescaledb else []) + [pv.PRIVILEGES_SQL]


def merge_facts(base: dict, timescale: dict | None, privileges: dict | None = None) -> dict:
    facts = dict(base)
    facts.setdefault("hypertables", [])
    facts.setdefault("continuous_aggregates", [])
    facts.setdefault("jobs", [])
    if timescale:
        facts.update({k: v or [] for k, v in timescale.items()})
    if privileges:
        facts["privileges"] = privileges.get("privileges", privileges)
        # every role an owner, grant or policy names must exist before pg_restore applies them
        known = {r["name"] for r in facts.get("roles") or []}
        extra = [r for r in facts["privileges"].get("roles") or [] if r["name"] not in known]
        facts["roles"] = sorted(list(facts.get("roles") or []) + extra, key=lambda r: r["name"])
    return normalise(facts)


def normalise(facts: dict) -> dict:
    """Stable shape: db settings as {role or "": [name=value, ...]} minus restore state; sorted lists."""
    out = dict(facts)
    settings = {}
    for entry in facts.get("db_settings") or []:
        if isinstance(entry, dict):
            key = entry.get("role") or ""
            vals = [s for s in (entry.get("settings") or []) if s.split("=", 1)[0] not in SKIP_DB_SETTINGS]
        else:  # already normalised
            continue
        if vals:
            settings[key] = vals
    if isinstance(facts.get("db_settings"), dict):
        settings = {
            k: [s for s in v if s.split("=", 1)[0] not in SKIP_DB_SETTINGS] for k, v in facts["db_settings"].items()
        }
        settings = {k: v for k, v in settings.items() if v}
    frozen = _frozen(settings)
    if frozen:
        out["frozen"] = frozen
    elif facts.get("frozen"):
        out["frozen"] = facts["frozen"]
    out["db_settings"] = settings
    out["db_grants"] = sorted(facts.get("db_grants") or [], key=lambda g: (g["grantee"], g["privilege"]))
    return out


def _frozen(settings: dict) -> dict | None:
    """Strip the freeze's marker and read-only flag from the database-wide settings (in place) and
    describe them; None when the source was not frozen by us."""
    everyone = settings.get("") or []
    marker = [s for s in everyone if s.split("=", 1)[0] == FREEZE_MARKER]
    if not marker:
        return None
    read_only = [s for s in everyone if s.split("=", 1)[0] == READ_ONLY_SETTING]
    kept = [s for s in everyone if s not in marker and s not in read_only]
    if kept:
        settings[""] = kept
    else:
        settings.pop("", None)
    return {"marker": marker[0].split("=", 1)[1], "read_only_setting": read_only[0] if read_only else None,
            "note": "taken while the cutover's freeze held the source read-only; that flag is not restored"}


def read_only_setting(facts: dict) -> str | None:
    """The source database's own default_transaction_read_only=on (a really read-only source), if any."""
    for s in (facts.get("db_settings") or {}).get("", []):
        name, _, value = s.partition("=")
        if name == READ_ONLY_SETTING and value.lower() in ("on", "true", "1", "yes"):
            return s
    return None


def extension_version(facts: dict, name: str) -> str | None:
    for e in facts.get("extensions") or []:
        if e["name"] == name:
            return e["version"]
    return None


def server_major(facts: dict) -> int:
    return int(facts["server_version_num"]) // 10000


def collect_facts(psql, database: str) -> dict:
    """Read every fact from ``database`` through a ``Psql`` (one snapshot per query)."""
    base = psql.json(BASE_FACTS_SQL, database)
    ts = None
    if extension_version(base, "timescaledb"):
        ts = psql.json(TIMESCALE_FACTS_SQL, database)
    return merge_facts(base, ts, psql.json(pv.PRIVILEGES_SQL, database))


# ---- the manifest document -------------------------------------------------------------------

def build_manifest(facts: dict, *, source_host: str, database: str, dump_file: str, dump_size: int,
                   dump_sha256: str, pg_dump_version: str, consistency: str, created_at: str | None = None) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "created_at": created_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_host": source_host,
        "database": database,
        "versions": {
            "postgresql": facts["server_version"],
            "postgresql_major": server_major(facts),
            "timescaledb": extension_version(facts, "timescaledb"),
            "postgis": extension_version(facts, "postgis"),
        },
        "consistency": consistency,
        "dump": {"file": dump_file, "format": "custom", "size_bytes": dump_size, "sha256": dump_sha256,
                 "pg_dump_version": pg_dump_version,
                 "flags": ["-Fc"]},
        "facts": facts,
    }


REQUIRED_KEYS = ("format", "versions", "dump", "facts")


def validate_manifest(doc, where: str = "manifest") -> dict:
    if not isinstance(doc, dict) or any(k not in doc for k in REQUIRED_KEYS):
        raise PreflightError(
            f"{where} is not a trackerdb dump manifest",
            hint="use the .manifest.json that `invoke dump` wrote beside the dump",
        )
    if doc["format"] != MANIFEST_FORMAT:
        raise PreflightError(
            f"{where} has format {doc['format']}, expected {MANIFEST_FORMAT}",
            hint="re-run `invoke dump` with this version of the tool",
        )
    dump = doc["dump"]
    if not re.fullmatch(r"[0-9a-f]{64}", str(dump.get("sha256", ""))) or not isinstance(dump.get("size_bytes"), int):
        raise PreflightError(f"{where} has no valid dump size/sha256", hint="re-run `invoke dump`")
    return doc


def manifest_path_for(dump_path: str | Path) -> Path:
    """``tracker.dump`` -> ``tracker.manifest.json`` (beside it)."""
    p = Path(dump_path)
    return p.with_name(p.stem + ".manifest.json")


def load_manifest(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise PreflightError(
            f"manifest {p} does not exist",
            hint="pass --manifest, or keep the manifest `invoke dump` wrote beside the dump",
        )
    try:
        doc = json.loads(p.read_text())
    except ValueError:
        raise PreflightError(
            f"manifest {p} is not JSON", hint="use the .manifest.json that `invoke dump` wrote"
        ) from None
    return validate_manifest(doc, str(p))


def write_manifest(doc: dict, path: str | Path) -> None:
    from ..files import write_private

    write_private(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


LAST_RESTORE = "last-restore.json"


def record_restored(state_dir: str | Path, database: str, manifest_path: str | Path, sha256: str) -> Path:
    """Remember which manifest the last successful restore used, so `invoke verify` finds it."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    rec = {"database": database, "manifest": str(Path(manifest_path).resolve()), "sha256": sha256,
           "restored_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    p = d / LAST_RESTORE
    p.write_text(json.dumps(rec, indent=2) + "\n")
    return p


def find_manifest(state_dir: str | Path, database: str) -> tuple[str | None, str]:
    """(path, where it came from): the last restore's manifest, else <state_dir>/dump, else <state_dir>."""
    d = Path(state_dir)
    rec_path = d / LAST_RESTORE
    if rec_path.is_file():
        try:
            rec = json.loads(rec_path.read_text())
        except ValueError:
            rec = {}
        if rec.get("database") == database and rec.get("manifest"):
            if Path(rec["manifest"]).is_file():
                return rec["manifest"], f"the last restore ({rec_path})"
            raise PreflightError(f"the last restore used {rec['manifest']}, which no longer exists",
                                 hint=f"pass --manifest, or remove {rec_path}")
    for p in (d / "dump" / f"{database}.manifest.json", d / f"{database}.manifest.json"):
        if p.is_file():
            return str(p), f"the state directory ({d})"
    return None, f"none: no {LAST_RESTORE} and no {database}.manifest.json in {d}/dump or {d}"


# ---- content digests (lab tests and --against-source spot checks) ---------------------------

def content_digest_sql(schema: str, table: str, geometry_columns: list[str] | None = None) -> str:
    """md5 over a table's rows in a stable order; geometry columns compared as ST_AsText."""
    from .sqltext import ident, literal  # noqa: F401  (local import keeps this module's header small)

    rel = f"{ident(schema)}.{ident(table)}"
    if geometry_columns:
        expr = " || '|' || ".join(f"coalesce(ST_AsText({ident(c)}), '<null>')" for c in geometry_columns)
        return (
            f"SELECT json_build_object('md5', md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')), 'rows', count(*)) "
            f"FROM (SELECT t::text || '#' || {expr} AS x FROM {rel} t) s;"
        )
    return (
        "SELECT json_build_object('md5', md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')), 'rows', "
        f"count(*)) FROM {rel} t;"
    )
