"""Who may do what: owners, ACLs, row-level security and SECURITY DEFINER, object by object.

Pure parts: the query that reads them (one JSON document), the comparison that turns two captures
into checks, and the explicit owner mapping (``owner_map`` in Settings) with the ALTER statements it
needs. The manifest records the capture at dump time (same snapshot as the dump); verify reads the
target (and, with ``--against-source``, the live source) with the same query.

Captured, each under a readable key (``view reporting.visible_notes``):
- schemas, relations (tables, partitioned tables, views, materialized views, sequences, foreign
  tables): owner, ACL, RLS enabled/forced; columns with a column ACL;
- functions, procedures, aggregates: owner, ACL, SECURITY DEFINER, per-function settings (proconfig);
- types: enums, domains, ranges, standalone composites (owner, ACL); large objects (owner, ACL);
- the database (owner, ACL), default ACLs (``ALTER DEFAULT PRIVILEGES``), RLS policies.

ACLs are compared as effective privileges: a NULL ACL is shown as ``acldefault()`` of the owner, so
"never granted" and "granted back to the default" compare equal, and a REVOKE from PUBLIC shows as
the missing ``=X/owner`` item. Grantors are part of each item (``role=r/grantor``).

TimescaleDB: chunks, compressed chunks and materialization hypertables live in
``_timescaledb_internal`` and get owner and grants from their hypertable; they are compared too,
chunk by chunk (the catalog restore keeps their names), so a grant that did not propagate shows.
The extension's own schemas and objects (``_timescaledb_catalog``, ``_timescaledb_config``,
``_timescaledb_functions``, …) are extension members created by ``CREATE EXTENSION`` on the target;
what the DBA changed in them comes with the dump and is compared (issue 25): each of TimescaleDB's
schemas (owner, ACL: ``GRANT USAGE ON SCHEMA _timescaledb_internal TO reporting``), default ACLs in
them (like every default ACL), and the extension's member tables, views, sequences and functions
there whose ACL differs from ``pg_init_privs`` (what pg_dump emits: ``GRANT SELECT ON
_timescaledb_catalog.hypertable …``); a member as the extension created it is not listed, so a
grant missing on either side shows as "the extension's initial privileges". Extension-member
functions and types elsewhere (PostGIS's hundreds in ``public``) are not compared; extension-member
*relations* in the application's schemas (``spatial_ref_sys``, ``geometry_columns``) are, because a
grant on them is the DBA's.
Comparing ACL text: a pre-17 source restored on 17+ leaves MAINTAIN (``m``) out on both sides.

``owner_map`` changes owners of schemas, relations, routines, types and large objects owned by its
``from`` role (ACL entries of that role follow, as ALTER … OWNER does); never the database's owner,
default privileges, columns or policies.
"""

from __future__ import annotations

import re

from ..errors import ConfigError, PreflightError
from ..steps import Check

SYSTEM_SCHEMA_RE = r"^(pg_|_timescaledb|timescaledb_|information_schema$|toolkit_experimental$|_prom)"
INTERNAL_SCHEMA = "_timescaledb_internal"
# TimescaleDB's own schemas (the TimescaleDB part of ``tsdb_api.INTERNAL_SCHEMAS_RE``): their ACLs and
# the DBA's grants on their members are compared (module docstring)
TSDB_SCHEMA_RE = (
    r"^(_timescaledb_(catalog|internal|config|cache|functions|debug)|timescaledb_(information|experimental))$"
)

_EXT = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{c}'::regclass AND d.objid = {o} AND d.deptype = 'e')"
_MEMBER = "EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{c}'::regclass AND d.objid = {o} AND d.deptype = 'e')"


def _acl(expr: str, kind: str | None = None, owner: str | None = None) -> str:
    """Sorted aclitem texts of ``expr``; with ``kind`` (SQL of a "char") NULL means acldefault(kind, owner)."""
    src = f"coalesce({expr}, acldefault({kind}, {owner}))" if kind else expr
    return f"(SELECT coalesce(json_agg(a::text ORDER BY a::text), '[]'::json) FROM unnest({src}) a)"


_REL_ACL_KIND = "(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::\"char\""
_REL_KIND = ("CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view' "
             "WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'foreign table' END")


def _acl_changed(expr: str, kind: str, owner: str, catalog: str, oid: str) -> str:
    """SQL: the object's ACL differs from the one its extension created (``pg_init_privs``, NULL = acldefault)."""
    def items(acl):
        return (
            f"(SELECT array_agg(a::text ORDER BY a::text) FROM unnest(coalesce({acl}, acldefault({kind}, {owner}))) a)"
        )

    init = (f"(SELECT ip.initprivs FROM pg_init_privs ip WHERE ip.classoid = '{catalog}'::regclass "
            f"AND ip.objoid = {oid} AND ip.objsubid = 0)")
    return f"{items(expr)} IS DISTINCT FROM {items(init)}"

# One document; run with search_path = pg_catalog so every name (regprocedure, policy expressions)
# comes out schema-qualified whatever the database's search_path says.
PRIVILEGES_SQL = f"""SET search_path = pg_catalog, pg_temp;
WITH ns AS (
  SELECT n.oid, n.nspname FROM pg_namespace n
  WHERE n.nspname !~ '{SYSTEM_SCHEMA_RE}' AND {_EXT.format(c='pg_namespace', o='n.oid')}),
rel_ns AS (SELECT oid, nspname FROM ns UNION ALL SELECT oid, nspname FROM pg_namespace
    WHERE nspname = '{INTERNAL_SCHEMA}'),
tsdb_ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname ~ '{TSDB_SCHEMA_RE}'),
objs AS (
  SELECT 'schema' AS kind, quote_ident(n.nspname) AS name, n.nspname AS schema, n.nspowner AS owner,
         json_build_object('owner', pg_get_userbyid(n.nspowner), 'acl', {_acl('n.nspacl', "'n'", 'n.nspowner')}) AS v
    FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM ns UNION ALL SELECT oid FROM tsdb_ns)
  UNION ALL
  SELECT {_REL_KIND}, quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname, c.relowner,
         json_build_object('owner', pg_get_userbyid(c.relowner), 'acl', {_acl('c.relacl', _REL_ACL_KIND, 'c.relowner')},
                           'extension_member', true)
    FROM pg_class c JOIN tsdb_ns n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND {_MEMBER.format(c='pg_class', o='c.oid')}
      AND {_acl_changed('c.relacl', _REL_ACL_KIND, 'c.relowner', 'pg_class', 'c.oid')}
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
         p.oid::regprocedure::text, n.nspname, p.proowner,
         json_build_object('owner', pg_get_userbyid(p.proowner), 'acl', {_acl('p.proacl', "'f'", 'p.proowner')},
                           'extension_member', true)
    FROM pg_proc p JOIN tsdb_ns n ON n.oid = p.pronamespace
    WHERE {_MEMBER.format(c='pg_proc', o='p.oid')} AND
        {_acl_changed('p.proacl', "'f'", 'p.proowner', 'pg_proc', 'p.oid')}
  UNION ALL
  SELECT {_REL_KIND}, quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname, c.relowner,
         json_build_object('owner', pg_get_userbyid(c.relowner),
                           'acl', {_acl('c.relacl', _REL_ACL_KIND, 'c.relowner')},
                           'rls', c.relrowsecurity, 'rls_forced', c.relforcerowsecurity,
                           'owned_by_column', c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
    FROM pg_class c JOIN rel_ns n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND (n.nspname <> '{INTERNAL_SCHEMA}' OR {_EXT.format(c='pg_class', o='c.oid')})
  UNION ALL
  SELECT 'column', quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(a.attname), n.nspname,
      NULL,
         json_build_object('acl', {_acl('a.attacl')})
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN rel_ns n ON n.oid = c.relnamespace
    WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
         p.oid::regprocedure::text, n.nspname, p.proowner,
         json_build_object('owner', pg_get_userbyid(p.proowner), 'acl', {_acl('p.proacl', "'f'", 'p.proowner')},
                           'security_definer', p.prosecdef, 'config', coalesce(array_to_json(p.proconfig), '[]'::json))
    FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace WHERE {_EXT.format(c='pg_proc', o='p.oid')}
  UNION ALL
  SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, quote_ident(n.nspname) || '.' || quote_ident(t.typname),
         n.nspname, t.typowner,
         json_build_object('owner', pg_get_userbyid(t.typowner), 'acl', {_acl('t.typacl', "'T'", 't.typowner')})
    FROM pg_type t JOIN ns n ON n.oid = t.typnamespace LEFT JOIN pg_class c ON c.oid = t.typrelid
    WHERE (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
        AND {_EXT.format(c='pg_type', o='t.oid')}
  UNION ALL
  SELECT 'large object', l.oid::text, NULL, l.lomowner,
         json_build_object('owner', pg_get_userbyid(l.lomowner), 'acl', {_acl('l.lomacl', "'L'", 'l.lomowner')})
    FROM pg_largeobject_metadata l
  UNION ALL
  SELECT 'database', '', NULL, d.datdba,
         json_build_object('owner', pg_get_userbyid(d.datdba), 'acl', {_acl('d.datacl', "'d'", 'd.datdba')})
    FROM pg_database d WHERE d.datname = current_database()
  UNION ALL
  SELECT 'default privileges', 'for role ' || quote_ident(pg_get_userbyid(da.defaclrole))
           || coalesce(' in schema ' || quote_ident(n.nspname), '') || ' on '
           || CASE da.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                                    WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE da.defaclobjtype::text END,
         n.nspname, NULL, json_build_object('acl', {_acl('da.defaclacl')})
    FROM pg_default_acl da LEFT JOIN pg_namespace n ON n.oid = da.defaclnamespace
  UNION ALL
  SELECT 'policy', quote_ident(pol.polname) || ' on ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname),
      n.nspname, NULL,
         json_build_object('command', CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w'
             THEN 'UPDATE'
                                                      WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                           'permissive', pol.polpermissive,
                           'roles', (SELECT json_agg(x ORDER BY x) FROM (SELECT CASE WHEN r = 0 THEN 'PUBLIC'
                                     ELSE pg_get_userbyid(r)::text END AS x FROM unnest(pol.polroles) r) q),
                           'using', pg_get_expr(pol.polqual, pol.polrelid), 'with_check', pg_get_expr(pol.polwithcheck,
                               pol.polrelid))
    FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN rel_ns n ON n.oid = c.relnamespace),
role_refs(oid) AS (
  SELECT owner FROM objs WHERE owner IS NOT NULL
  UNION SELECT (aclexplode(n.nspacl)).grantee FROM pg_namespace n JOIN ns ON ns.oid = n.oid WHERE n.nspacl IS NOT NULL
  UNION SELECT (aclexplode(n.nspacl)).grantee FROM pg_namespace n JOIN tsdb_ns t ON t.oid = n.oid WHERE n.nspacl
      IS NOT NULL
  UNION SELECT (aclexplode(c.relacl)).grantee FROM pg_class c JOIN tsdb_ns n ON n.oid = c.relnamespace WHERE c.relacl
      IS NOT NULL
  UNION SELECT (aclexplode(p.proacl)).grantee FROM pg_proc p JOIN tsdb_ns n ON n.oid = p.pronamespace WHERE p.proacl
      IS NOT NULL
  UNION SELECT (aclexplode(c.relacl)).grantee FROM pg_class c JOIN rel_ns n ON n.oid = c.relnamespace WHERE c.relacl
      IS NOT NULL
  UNION SELECT (aclexplode(a.attacl)).grantee FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN rel_ns n ON n.oid = c.relnamespace WHERE a.attacl IS NOT NULL
  UNION SELECT (aclexplode(p.proacl)).grantee FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace WHERE p.proacl
      IS NOT NULL
  UNION SELECT (aclexplode(t.typacl)).grantee FROM pg_type t JOIN ns n ON n.oid = t.typnamespace WHERE t.typacl
      IS NOT NULL
  UNION SELECT (aclexplode(l.lomacl)).grantee FROM pg_largeobject_metadata l WHERE l.lomacl IS NOT NULL
  UNION SELECT da.defaclrole FROM pg_default_acl da
  UNION SELECT (aclexplode(da.defaclacl)).grantee FROM pg_default_acl da
  UNION SELECT unnest(pol.polroles) FROM pg_policy pol)
SELECT json_build_object('privileges', json_build_object(
  'objects', (SELECT coalesce(json_object_agg(kind || CASE WHEN name = '' THEN '' ELSE ' ' || name END,
                 v::jsonb || jsonb_build_object('kind', kind, 'name', name, 'schema', schema)), '{{}}'::json)
                     FROM objs),
  'roles', (SELECT coalesce(json_agg(json_build_object('name', r.rolname, 'login', r.rolcanlogin, 'superuser',
      r.rolsuper)
                 ORDER BY r.rolname), '[]'::json) FROM pg_roles r WHERE r.oid IN (SELECT oid FROM role_refs))));
"""

# What a value is made of, in the order differences are printed.
ATTRS = ("owner", "acl", "rls", "rls_forced", "security_definer", "config", "command", "permissive", "roles", "using",
         "with_check")
META = ("kind", "name", "schema", "owned_by_column", "extension_member")


# ---- the explicit owner mapping -----------------------------------------------------------------

from ..owner_map import OwnerMapping, parse_owner_map  # noqa: E402,F401  (settings parse it; restore and verify apply it)


OWNER_MAP_ROLE_HINT = ("create the role on the target (CREATE ROLE …) or fix owner_map in invoke.yaml; "
                       "nothing was changed")
#: the target's roles, for the owner_map check before a restore (the restore's own facts carry them too)
TARGET_ROLES_SQL = "SELECT coalesce(json_agg(rolname ORDER BY rolname), '[]'::json) FROM pg_roles;"


def roles_the_restore_creates(facts: dict, owner_role: str | None) -> set[str]:
    """Roles a restore creates before pg_restore when the target lacks them: every role the dump's
    owners, grants and policies name, and the database's owner role (``restore._restore_into_staging``)."""
    return {r["name"] for r in facts.get("roles") or []} | ({owner_role} if owner_role else set())


def owner_map_role_problems(mapping, target_roles, created=()) -> list[str]:
    """One line per ``to`` role of ``mapping`` that will not exist when the mapping's ``ALTER … OWNER
    TO`` runs (after the whole pg_restore): neither on the target now nor created by the restore.
    A ``from`` role needs nothing: objects it owns come from the dump with their roles."""
    have = set(target_roles or ()) | set(created or ())
    return [f"owner_map entry {m.describe()}: role {m.to!r} does not exist on the target "
            "(create it there, or fix owner_map)" for m in mapping if m.to not in have]


def check_owner_map_roles(mapping, target_roles, facts: dict, owner_role: str | None) -> None:
    """Before a restore changes anything (its ``owner_map`` step runs only after the whole pg_restore):
    ``owner_map_role_problems`` as one ``PreflightError``."""
    problems = owner_map_role_problems(mapping, target_roles, roles_the_restore_creates(facts, owner_role))
    if problems:
        raise PreflightError("; ".join(problems), hint=OWNER_MAP_ROLE_HINT)


def _in_scope(obj: dict, m: OwnerMapping) -> bool:
    if obj.get("owner") != m.frm or obj.get("kind") in ("database", "default privileges", "column", "policy"):
        return False
    if obj.get("extension_member") or (obj.get("kind") == "schema" and re.match(TSDB_SCHEMA_RE, obj.get("name") or "")):
        return False  # TimescaleDB's own: the extension's, never the application's
    if not m.schemas:
        return True
    schema = obj.get("schema")
    return schema in m.schemas or (schema == INTERNAL_SCHEMA and INTERNAL_SCHEMA in m.schemas)


def _rename_in_acl(item: str, frm: str, to: str) -> str:
    """``frm=r/frm`` -> ``to=r/to`` (what ALTER … OWNER does to the old owner's own entries)."""
    grantee, _, rest = item.partition("=")
    privs, _, grantor = rest.partition("/")
    grantee = to if grantee == frm else grantee
    grantor = to if grantor == frm else grantor
    return f"{grantee}={privs}/{grantor}"


def mapped_objects(objects: dict, mapping) -> dict:
    """Objects the mapping changes: key -> (from, to)."""
    out = {}
    for key, obj in objects.items():
        for m in mapping:
            if _in_scope(obj, m):
                out[key] = (m.frm, m.to)
    return out


def apply_owner_map(objects: dict, mapping) -> dict:
    """The source's objects as they must look on the target after the mapping (pure)."""
    changes = mapped_objects(objects, mapping)
    out = {}
    for key, obj in objects.items():
        if key in changes:
            frm, to = changes[key]
            obj = dict(obj, owner=to, acl=sorted(_rename_in_acl(a, frm, to) for a in obj.get("acl") or []))
        out[key] = obj
    return out


_ALTER = {
    "schema": "SCHEMA",
    "table": "TABLE",
    "partitioned table": "TABLE",
    "view": "VIEW",
    "materialized view": "MATERIALIZED VIEW",
    "sequence": "SEQUENCE",
    "foreign table": "FOREIGN TABLE",
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
    "aggregate": "AGGREGATE",
    "type": "TYPE",
    "domain": "DOMAIN",
    "large object": "LARGE OBJECT",
}
_CATALOG_NAME = re.compile(r'^[^;]+$')


def owner_map_sql(objects: dict, mapping) -> list[str]:
    """``ALTER … OWNER TO`` for every object the mapping changes. Sequences owned by a column follow
    their table (ALTER SEQUENCE on an identity sequence is refused); names are the catalog's
    quoted forms (quote_ident, regprocedure), roles are quoted here."""
    from .sqltext import ident

    stmts = []
    for key, (frm, to) in sorted(mapped_objects(objects, mapping).items(), key=lambda kv: _order(objects[kv[0]])):
        obj = objects[key]
        if obj.get("owned_by_column"):
            continue
        kind = _ALTER.get(obj["kind"])
        if kind is None or not _CATALOG_NAME.match(obj["name"]):
            raise ConfigError(f"cannot change the owner of {key}", hint="remove it from owner_map's scope")
        stmts.append(f"ALTER {kind} {obj['name']} OWNER TO {ident(to)};")
    return stmts


def owner_map_plan(facts: dict, mapping) -> list[tuple[str, str]]:
    """(step, detail) lines saying what the configured owner_map changes (dry run and restore output)."""
    if not mapping:
        return [("owner map", "none configured: every owner as on the source")]
    objects = (facts.get("privileges") or {}).get("objects") or {}
    changed = mapped_objects(objects, mapping)
    return [("owner map", f"{m.describe()}: {sum(1 for v in changed.values() if v == (m.frm, m.to))} object(s) "
             f"({', '.join(sorted(k for k, v in changed.items() if v == (m.frm, m.to))[:5]) or 'none'})")
            for m in mapping]


def _order(obj: dict) -> tuple:
    # schemas first, then tables (their chunks and owned sequences follow), then the rest
    rank = {"schema": 0, "table": 1, "partitioned table": 1, "materialized view": 2, "view": 3, "sequence": 4}
    return (rank.get(obj["kind"], 5), obj["kind"], obj["name"])


# ---- comparison ---------------------------------------------------------------------------------

def _value_text(obj: dict | None, attrs, other: dict | None = None) -> str:
    if obj is None:
        # an extension member is listed only where its ACL is not the extension's own
        return "the extension's initial privileges" if (other or {}).get("extension_member") else "absent"
    parts = []
    for a in attrs:
        v = obj.get(a)
        if isinstance(v, list):
            v = "{" + ",".join(str(x) for x in v) + "}"
        parts.append(f"{a}={v}")
    return " ".join(parts)


def diff_objects(expected: dict, observed: dict) -> list[tuple[str, str, str]]:
    """(object, source value, target value) for every object whose owner, ACL, flags or policy differ."""
    out = []
    for key in sorted(set(expected) | set(observed)):
        want, have = expected.get(key), observed.get(key)
        if want is None or have is None:
            attrs = [a for a in ATTRS if a in (want or have or {})]
        else:
            attrs = [a for a in ATTRS if (a in want or a in have) and want.get(a) != have.get(a)]
            if not attrs:
                continue
        out.append((key, _value_text(want, attrs, have), _value_text(have, attrs, want)))
    return out


_RELATION_KINDS = {"table", "partitioned table", "view", "materialized view", "foreign table"}


def without_privilege(objects: dict, letter: str) -> dict:
    """Relations' ACL items with one privilege letter removed (``m``, MAINTAIN, which PostgreSQL 17
    added: a 16 -> 17 restore grants it to every owner, and nothing on 16 can show it)."""
    out = {}
    for key, obj in objects.items():
        is_rel = obj.get("kind") in _RELATION_KINDS or (
            obj.get("kind") == "default privileges" and key.endswith(" on tables")
        )
        if is_rel and obj.get("acl"):
            items = []
            for a in obj["acl"]:
                grantee, _, rest = a.partition("=")
                privs, _, grantor = rest.partition("/")
                privs = privs.replace(letter + "*", "").replace(letter, "")
                if privs.replace("*", ""):
                    items.append(f"{grantee}={privs}/{grantor}")
            obj = dict(obj, acl=sorted(items))
        out[key] = obj
    return out


def maintain_gap(source_major: int | None, target_major: int | None) -> bool:
    return bool(source_major and target_major and source_major < 17 <= target_major)


def compare_privileges(expected: dict | None, observed: dict | None, source_label: str = "manifest",
                       mapping=(), ignore_maintain: bool = False) -> list[Check]:
    """One check per differing object (named, with both values) plus a summary check.

    ``expected``/``observed`` are ``privileges`` documents. The explicit ``mapping`` is applied to the
    source's side first, and the summary says how many owners it changed. ``ignore_maintain`` (a
    source older than 17 restored on 17+) leaves MAINTAIN out of relations' ACLs on both sides.
    """
    if not expected or not isinstance(expected.get("objects"), dict):
        return [Check("owners and privileges equal to the source", False, "the manifest has no privilege capture",
                      "a manifest from this version of `invoke dump`", source_label)]
    want_raw = expected["objects"]
    want = apply_owner_map(want_raw, mapping)
    have = (observed or {}).get("objects") or {}
    if ignore_maintain:
        want, have = without_privilege(want, "m"), without_privilege(have, "m")
    diffs = diff_objects(want, have)
    checks = [
        Check(f"owner/privileges of {key}", False, f"source: {s}, target: {t}", "equal to the source", source_label)
        for key, s, t in diffs
    ]
    mapped = len(mapped_objects(want_raw, mapping))
    note = f"; {mapped} owner(s) changed on purpose by owner_map" if mapped else ""
    checks.append(Check("owners and privileges equal to the source", not diffs,
                        f"{len(want)} objects compared, {len(diffs)} differ"
                        + (f" (first: {diffs[0][0]})" if diffs else "") + note,
                        "0 differ", source_label))
    return checks


def job_owner_checks(expected: dict, observed: dict) -> list[Check]:
    """TimescaleDB jobs run as their owner (bgw_job.owner): it must be the source's."""
    have = {(j["proc"], j.get("hypertable")): j for j in observed.get("jobs") or []}
    checks = []
    for j in expected.get("jobs") or []:
        got = have.get((j["proc"], j.get("hypertable")))
        if got is None or not j.get("owner"):
            continue  # a missing job is the scheduling check's failure
        label = f"job {j['proc']}" + (f" on {j['hypertable']}" if j.get("hypertable") else "")
        ok = got.get("owner") == j["owner"]
        checks.append(Check(f"{label} owner", ok, f"source: {j['owner']}, target: {got.get('owner')}" if not ok
                            else str(got.get("owner")), j["owner"]))
    return checks


def summary_check(checks: list[Check]) -> Check | None:
    for c in checks:
        if c.name == "owners and privileges equal to the source":
            return c
    return None


def role_names(privileges: dict | None) -> set[str]:
    return {r["name"] for r in (privileges or {}).get("roles") or []}
