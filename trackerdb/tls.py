"""PostgreSQL over TLS: the server's certificate (supplied by the operator, by secret name) and what
our clients demand of a session. Pure, except ``session_tls`` which reads one row from a connection.

Server side: ``pg_hba`` admits network clients only through ``hostssl`` rules (provision/pgconf.py).
The certificate and key come from a Secrets Manager secret whose SecretString is JSON
``{"certificate": "<PEM, leaf first, then intermediates>", "private_key": "<PEM>"}``, fetched at use
and written to the host owner-only. Without one, only the lab falls back to Debian's snakeoil pair.

Client side: our app-path checks connect with ``sslmode=verify-full`` against the configured CA, or
``require`` when none is configured (encrypted, server not authenticated), and then ask the server
(``pg_stat_ssl``) whether *their* session is TLS: a TLS-terminating proxy in front of PostgreSQL
would satisfy the client and still carry the password in clear on the last hop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, VerifyError

if TYPE_CHECKING:
    from .settings import Settings

SNAKEOIL = ("/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/ssl/private/ssl-cert-snakeoil.key")
SESSION_SQL = "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
BUNDLE_HINT = ('store {"certificate": "<PEM chain>", "private_key": "<PEM key>"} as the secret\'s string value '
               "(the certificate's names must cover the address clients use)")


def server_dir(settings: Settings) -> str:
    return f"{settings.pg_conf_dir}/tls"


def server_files(settings: Settings) -> tuple[str, str]:
    """(ssl_cert_file, ssl_key_file) for postgresql.conf."""
    if settings.tls_secret_name:
        return f"{server_dir(settings)}/server.crt", f"{server_dir(settings)}/server.key"
    return SNAKEOIL


def require_configured(settings: Settings) -> None:
    """Production never serves the self-signed snakeoil certificate: a secret must be named."""
    if not settings.tls_secret_name and not settings.is_lab:
        raise ConfigError(
            "no TLS certificate configured for PostgreSQL",
            hint="put the server certificate and key in Secrets Manager and set trackerdb.tls_secret_name; "
                 + BUNDLE_HINT,
        )


def parse_bundle(name: str, text: str) -> tuple[str, str]:
    """(certificate PEM, private key PEM) from the secret's string, checked to belong together.

    Messages name the secret, never its content.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError(f"TLS secret {name!r} is not JSON", hint=BUNDLE_HINT) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("certificate"), str) or not isinstance(doc.get("private_key"), str):
        raise ConfigError(f"TLS secret {name!r} needs string keys certificate and private_key", hint=BUNDLE_HINT)
    cert, key = doc["certificate"].strip() + "\n", doc["private_key"].strip() + "\n"
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        chain = x509.load_pem_x509_certificates(cert.encode())
    except ValueError:
        raise ConfigError(f"TLS secret {name!r}: certificate is not a PEM certificate", hint=BUNDLE_HINT) from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"TLS secret {name!r}: private_key is not an unencrypted PEM private key",
                          hint="PostgreSQL cannot prompt for a passphrase; " + BUNDLE_HINT) from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(serialization.Encoding.DER, pub) != private.public_key().public_bytes(
            serialization.Encoding.DER, pub):
        raise ConfigError(f"TLS secret {name!r}: private_key does not belong to the (first) certificate",
                          hint="the leaf certificate comes first in the chain")
    return cert, key


def client_kwargs(settings: Settings) -> dict:
    """libpq TLS parameters for our app-path checks: never ``prefer`` (which falls back to clear text)."""
    ca = settings.tls_ca_file
    if not ca:
        return {"sslmode": "require"}
    if not Path(ca).is_file():
        raise ConfigError(f"tls_ca_file {ca} does not exist", hint="the CA bundle that signed the server certificate")
    return {"sslmode": "verify-full", "sslrootcert": ca}


def describe_session(row) -> str:
    """``pg_stat_ssl`` row of our own backend -> "TLSv1.3 TLS_AES_256_GCM_SHA384"; raises when not TLS."""
    if not row or row[0] is not True:
        raise VerifyError("the server reports this session is not TLS (pg_stat_ssl.ssl is false)",
                          hint="something between client and PostgreSQL terminates TLS, or pg_hba admits clear text; "
                               "connect to PostgreSQL itself and keep only hostssl rules")
    return f"{row[1]} {row[2]}"


def session_tls(conn) -> str:
    return describe_session(conn.execute(SESSION_SQL).fetchone())
