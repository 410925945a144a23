"""After the switch: the application's path, as the application takes it (phase 7, ``post``).

Connect as the application does (endpoint, application role, password from Secrets Manager, TLS)
and prove it reaches a writable primary with that role's own privileges: not in recovery, not
read-only, a transaction id taken, and a row written where the role may write (``migrate.app_probe``:
a table it has INSERT on, decided by the target, else a temporary table), all rolled back. The
session must be TLS by the server's own account (``pg_stat_ssl``), not only the client's.
"""

from __future__ import annotations

from ..errors import VerifyError
from ..migrate import app_probe


def app_path_check(settings, endpoint: str, timeout: float = 10, session=None, facts: dict | None = None) -> dict:
    """``facts`` (optional: the manifest's) rank the tables the probe may write by their row counts."""
    import psycopg

    from .. import tls
    from ..secrets import fetch_secret

    client_tls = tls.client_kwargs(settings)
    secret = session.secret(settings.app_secret_name) if session else fetch_secret(settings, settings.app_secret_name)
    try:
        with psycopg.connect(host=endpoint, port=settings.pg_port, dbname=settings.database, user=settings.owner_role,
                             password=secret.reveal(), connect_timeout=int(timeout), **client_tls) as conn:
            session = tls.session_tls(conn)  # VerifyError when the server sees no TLS
            row = conn.execute("SELECT inet_server_addr()::text, pg_is_in_recovery(), current_setting('transaction_read_only')").fetchone()
            if row[1] or row[2] != "off":
                raise VerifyError(f"{endpoint} reaches a read-only server (in recovery={row[1]}, read_only={row[2]})",
                                  hint="the switch points at the wrong host, or the target is still frozen")
            with conn.transaction(force_rollback=True):
                xid = conn.execute("SELECT txid_current()").fetchone()[0]
                with conn.cursor() as cur:
                    evidence = app_probe.write_probe(cur, facts, settings.owner_role)
    except psycopg.Error as exc:
        raise VerifyError(f"the application's path ({endpoint}) fails: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                          .replace(secret.reveal(), "***"), hint="check pg_hba/listen_addresses on the target, the switch, "
                                                                 f"and what {settings.owner_role} may write there") from None
    return {"endpoint": endpoint, "server_addr": row[0], "writable": True, "probe_xid": int(xid), "write": evidence,
            "tls": f"{session} (sslmode={client_tls['sslmode']})"}
