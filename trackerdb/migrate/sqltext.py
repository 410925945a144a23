"""Pure SQL text builders for restore: quoting, database settings, grants, roles.

Everything here is a function of the manifest and facts; nothing touches a host.
"""

from __future__ import annotations

import re

from ..errors import PreflightError
from ..sql import ident, literal  # noqa: F401  (re-exported: ownership/privileges/restore use sq.ident)

_GUC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# Settings whose value is a list of names: each element is quoted on its own (as pg_dumpall does),
# otherwise `SET search_path = 'a, b'` would become one schema called "a, b".
LIST_GUCS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
             "shared_preload_libraries", "unix_socket_directories"}
DB_PRIVILEGES = {"CONNECT", "TEMPORARY", "CREATE"}


def split_guc_list(value: str) -> list[str]:
    """Split a list GUC as stored in setconfig (``"$user", public``) into elements, unquoting "…"."""
    items, cur, in_q, i = [], "", False, 0
    while i < len(value):
        ch = value[i]
        if in_q:
            if ch == '"' and i + 1 < len(value) and value[i + 1] == '"':
                cur += '"'
                i += 1
            elif ch == '"':
                in_q = False
            else:
                cur += ch
        elif ch == '"':
            in_q = True
        elif ch == ",":
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    if cur.strip() or items:
        items.append(cur.strip())
    return items


def guc_assignment(entry: str) -> str:
    """``name=value`` from pg_db_role_setting -> ``name = <sql value>``."""
    if "=" not in entry:
        raise PreflightError(f"database setting {entry!r} is not name=value", hint="fix the manifest's db_settings")
    name, value = entry.split("=", 1)
    if not _GUC_NAME.fullmatch(name):
        raise PreflightError(
            f"database setting name {name!r} is not a valid parameter name", hint="fix the manifest's db_settings"
        )
    if name.lower() in LIST_GUCS:
        parts = split_guc_list(value)
        rendered = ", ".join(literal(p) for p in parts) if parts else "''"
    else:
        rendered = literal(value)
    return f"{name} = {rendered}"


def db_settings_sql(database: str, settings: dict[str, list[str]]) -> list[str]:
    """``ALTER DATABASE … SET`` (role "" = every role) and ``ALTER ROLE … IN DATABASE … SET``."""
    stmts = []
    for role in sorted(settings):
        for entry in settings[role]:
            assign = guc_assignment(entry)
            if role:
                stmts.append(f"ALTER ROLE {ident(role)} IN DATABASE {ident(database)} SET {assign};")
            else:
                stmts.append(f"ALTER DATABASE {ident(database)} SET {assign};")
    return stmts


def db_grants_sql(database: str, grants: list[dict], acl_is_default: bool) -> list[str]:
    """Database privileges as on the source. A non-default ACL starts by revoking PUBLIC's defaults."""
    if acl_is_default:
        return []
    stmts = [f"REVOKE ALL ON DATABASE {ident(database)} FROM PUBLIC;"]
    for g in grants:
        priv = g["privilege"].upper()
        if priv not in DB_PRIVILEGES:
            raise PreflightError(f"database privilege {priv!r} is unknown", hint="fix the manifest's db_grants")
        who = "PUBLIC" if g["grantee"] == "PUBLIC" else ident(g["grantee"])
        stmts.append(
            f"GRANT {priv} ON DATABASE {ident(database)} TO {who}"
            + (" WITH GRANT OPTION;" if g.get("grantable") else ";")
        )
    return stmts


def missing_roles_sql(roles: list[dict], existing: set[str]) -> list[str]:
    """Roles the dump refers to that the target lacks: created NOLOGIN (passwords are not ours to copy).

    Login roles (the application's) are provisioned with their password from Secrets Manager; if one
    is missing here, restore still creates it NOLOGIN so ownership can be assigned, and verify's login
    check says so.
    """
    return [f"CREATE ROLE {ident(r['name'])} NOLOGIN;" for r in roles if r["name"] not in existing]


OBJECT_PRIVILEGES = {
    "TABLE": {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"},
    "SEQUENCE": {"SELECT", "USAGE", "UPDATE"},
    "SCHEMA": {"USAGE", "CREATE"},
    "FUNCTION": {"EXECUTE"},
    "PROCEDURE": {"EXECUTE"},
}
DEFAULT_ACL_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}


def _grantee(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else ident(name)


def object_grants_sql(grants: list[dict]) -> list[str]:
    """Object privileges of other roles (e.g. a read-only role), which ``--no-privileges`` drops.

    ``name`` is already a quoted, qualified name from the source's catalog (format('%I.%I'),
    regprocedure), so it is used as is; kind and privilege are checked against fixed lists.
    """
    stmts = []
    for g in grants:
        kind, priv = g["kind"].upper(), g["privilege"].upper()
        if priv not in OBJECT_PRIVILEGES.get(kind, ()):
            raise PreflightError(f"privilege {priv!r} on {kind!r} is unknown", hint="fix the manifest's object_grants")
        if ";" in g["name"]:
            raise PreflightError(
                f"object name {g['name']!r} is not a catalog name", hint="fix the manifest's object_grants"
            )
        stmts.append(f"GRANT {priv} ON {kind} {g['name']} TO {_grantee(g['grantee'])}"
                     + (" WITH GRANT OPTION;" if g.get("grantable") else ";"))
    return stmts


def default_acl_sql(entries: list[dict]) -> list[str]:
    """``ALTER DEFAULT PRIVILEGES`` so objects created later get the same grants as on the source."""
    stmts = []
    for e in entries:
        objects = DEFAULT_ACL_OBJECTS.get(e["objtype"])
        priv = e["privilege"].upper()
        if objects is None or not re.fullmatch(r"[A-Z]+", priv):
            raise PreflightError(
                f"default privilege {priv!r} on {e['objtype']!r} is unknown", hint="fix the manifest's default_acls"
            )
        scope = f" IN SCHEMA {ident(e['schema'])}" if e.get("schema") else ""
        stmts.append(f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(e['role'])}{scope} GRANT {priv} ON {objects} "
                     f"TO {_grantee(e['grantee'])}" + (" WITH GRANT OPTION;" if e.get("grantable") else ";"))
    return stmts
