"""The application role: SQL and a SCRAM-SHA-256 verifier computed here, so the password itself
never reaches the server, argv, a log line or psql's history. Pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata

from ..sql import ident  # noqa: F401  (role_sql quotes with it; tests import it from here)

ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _prep(password: str) -> bytes:
    # SASLprep is the identity for ASCII; NFKC is the part of it that matters for everything else
    return (password if password.isascii() else unicodedata.normalize("NFKC", password)).encode()


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _prep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def verifier_matches(verifier: str | None, password: str) -> bool:
    """Does the stored ``rolpassword`` belong to ``password``? (Recomputed with its own salt.)"""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, _keys = verifier[len("SCRAM-SHA-256$"):].split("$", 1)
        iterations, salt = head.split(":", 1)
        expected = scram_verifier(password, base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, verifier)


#: Session settings sent before the role statement. Statement logging off keeps a successful
#: statement out of the log; ``log_min_error_statement = panic`` keeps a *failed* one out too (by
#: default PostgreSQL logs the text of any statement that raises an error, verifier included).
#: All three are superuser settings: the session is postgres's, and ON_ERROR_STOP means a refused SET
#: stops the script before the verifier is sent.
QUIET_SESSION = (
    ("log_statement", "'none'"),
    ("log_min_duration_statement", "-1"),
    ("log_min_error_statement", "panic"),
)


def role_sql(role: str, verifier: str, create: bool) -> str:
    """Run through psql's stdin (with ON_ERROR_STOP). Nothing in this session logs the verifier,
    whether the statement succeeds or fails."""
    verb = "CREATE" if create else "ALTER"
    quiet = "".join(f"SET {k} = {v};\n" for k, v in QUIET_SESSION)
    return quiet + f"{verb} ROLE {ident(role)} WITH LOGIN PASSWORD '{verifier}';\n"
