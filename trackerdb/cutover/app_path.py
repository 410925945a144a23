"""After the switch: the application's path, as the application takes it (phase 7, ``post``).

Connect as the application does (endpoint, application role, password from Secrets Manager, TLS)
and prove it reaches a writable primary with that role's own privileges: not in recovery, not
read-only, a transaction id taken, and a row written where the role may write (``migrate.app_probe``:
a table it has INSERT on, decided by the target, else a temporary table), all rolled back. The
session must be TLS by the server's own account (``pg_stat_ssl``), not only the client's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import VerifyError
from ..migrate import app_probe

if TYPE_CHECKING:
    from ..session import Session
    from ..settings import Settings

_SERVER_SQL = "SELECT inet_server_addr()::text, pg_is_in_recovery(), current_setting('transaction_read_only')"


def app_path_check(settings: Settings, endpoint: str, timeout: float = 10, session: Session | None = None,
                   facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """``facts`` (optional: the manifest's) rank the tables the probe may write by their row counts."""
    import psycopg

    from .. import tls
    from ..secrets import fetch_secret

    client_tls = tls.client_kwargs(settings)
    secret = session.secret(settings.app_secret_name) if session else fetch_secret(settings, settings.app_secret_name)
    try:
        with psycopg.connect(host=endpoint, port=settings.pg_port, dbname=settings.database, user=settings.owner_role,
                             password=secret.reveal(), connect_timeout=int(timeout), **client_tls) as conn:
            server_tls = tls.session_tls(conn)  # VerifyError when the server sees no TLS
            row = conn.execute(_SERVER_SQL).fetchone()
            if row is None or row[1] or row[2] != "off":
                raise VerifyError(f"{endpoint} reaches a read-only server "
                                  f"(in recovery={row and row[1]}, read_only={row and row[2]})",
                                  hint="the switch points at the wrong host, or the target is still frozen")
            with conn.transaction(force_rollback=True):
                taken = conn.execute("SELECT txid_current()").fetchone()
                with conn.cursor() as cur:
                    evidence = app_probe.write_probe(cur, facts, settings.owner_role)
    except psycopg.Error as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise VerifyError(f"the application's path ({endpoint}) fails: {type(exc).__name__}: {first}"
                          .replace(secret.reveal(), "***"),
                          hint="check pg_hba/listen_addresses on the target, the switch, "
                               f"and what {settings.owner_role} may write there") from None
    return {"endpoint": endpoint, "server_addr": row[0], "writable": True,
            "probe_xid": int(taken[0]) if taken else None, "write": evidence,
            "tls": f"{server_tls} (sslmode={client_tls['sslmode']})"}
