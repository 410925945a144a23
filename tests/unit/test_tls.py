"""TLS: the operator's certificate bundle, the client parameters, and our app-path checks refusing a
server that does not speak TLS (against a real socket that answers libpq's SSLRequest with "N")."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest

from tests.conftest import prod_outputs
from tests.unit.test_provision_ops import make_bundle
from trackerdb import tls
from trackerdb.errors import ConfigError, VerifyError
from trackerdb.secrets import Secret
from trackerdb.settings import Settings

PROD = Settings.from_parts({}, prod_outputs())
LAB = Settings.from_parts({"package_source": "debian"}, prod_outputs(environment="lab"))
CERT, KEY = make_bundle()


def test_bundle_round_trip():
    assert tls.parse_bundle("s", json.dumps({"certificate": CERT, "private_key": KEY})) == (CERT, KEY)


@pytest.mark.parametrize("text, needle", [
    ("-----BEGIN CERTIFICATE-----", "is not JSON"),
    (json.dumps({"certificate": CERT}), "needs string keys certificate and private_key"),
    (json.dumps({"certificate": "hello", "private_key": KEY}), "certificate is not a PEM certificate"),
    (json.dumps({"certificate": CERT, "private_key": "nope"}), "private_key is not an unencrypted PEM private key"),
    (json.dumps({"certificate": CERT, "private_key": make_bundle()[1]}), "does not belong to the (first) certificate"),
])
def test_bad_bundle_is_one_line_naming_the_secret_not_its_content(text, needle):
    with pytest.raises(ConfigError) as err:
        tls.parse_bundle("tracker/db/tls", text)
    line = err.value.one_line()
    assert needle in line and "tracker/db/tls" in line and "\n" not in line
    assert "BEGIN" not in line and KEY.splitlines()[1] not in line


def test_only_the_lab_may_go_without_a_certificate():
    tls.require_configured(LAB)
    tls.require_configured(PROD.with_(tls_secret_name="tracker/db/tls"))
    with pytest.raises(ConfigError, match="no TLS certificate configured"):
        tls.require_configured(PROD)
    assert tls.server_files(LAB) == tls.SNAKEOIL
    assert tls.server_files(PROD.with_(tls_secret_name="x")) == ("/etc/postgresql/16/main/tls/server.crt",
                                                                  "/etc/postgresql/16/main/tls/server.key")


def test_client_never_prefers(tmp_path):
    assert tls.client_kwargs(PROD) == {"sslmode": "require"}
    ca = tmp_path / "ca.pem"
    ca.write_text(CERT)
    assert tls.client_kwargs(PROD.with_(tls_ca_file=str(ca))) == {"sslmode": "verify-full", "sslrootcert": str(ca)}
    with pytest.raises(ConfigError, match="does not exist"):
        tls.client_kwargs(PROD.with_(tls_ca_file=str(tmp_path / "missing.pem")))


@pytest.mark.parametrize("row", [None, (False, None, None), (None, None, None)])
def test_a_session_the_server_does_not_see_as_tls_fails(row):
    with pytest.raises(VerifyError, match="not TLS"):
        tls.describe_session(row)
    assert tls.describe_session((True, "TLSv1.3", "TLS_AES_256_GCM_SHA384")) == "TLSv1.3 TLS_AES_256_GCM_SHA384"


# ---- against a server without TLS --------------------------------------------------------------

SSL_REQUEST, GSS_REQUEST, PROTOCOL_3 = 80877103, 80877104, 196608


class ClearTextServer:
    """Speaks just enough of PostgreSQL's protocol to refuse TLS ("N") and record what follows."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.ssl_requests = 0
        self.startup_packets: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                try:
                    while True:
                        head = conn.recv(8)
                        if len(head) < 8:
                            break
                        length, code = struct.unpack("!II", head)
                        if code in (SSL_REQUEST, GSS_REQUEST):
                            self.ssl_requests += code == SSL_REQUEST
                            conn.sendall(b"N")
                            continue
                        body = conn.recv(length - 8) if length > 8 else b""
                        self.startup_packets.append(head + body)
                        msg = b"SFATAL\x00C28000\x00Mclear text refused by the test server\x00\x00"
                        conn.sendall(b"E" + struct.pack("!I", len(msg) + 4) + msg)
                        break
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture()
def clear_text_server(monkeypatch):
    server = ClearTextServer()
    import trackerdb.secrets as secrets

    monkeypatch.setattr(secrets, "fetch_secret", lambda settings, name: Secret(name, "pw-not-for-the-wire"))
    yield server
    server.close()


def test_post_cutover_check_refuses_a_server_without_tls(clear_text_server):
    from trackerdb.cutover.phases import app_path_check

    s = PROD.with_(pg_port=clear_text_server.port)
    with pytest.raises(VerifyError) as err:
        app_path_check(s, "127.0.0.1", timeout=5)
    assert "SSL" in err.value.one_line() and "pw-not-for-the-wire" not in err.value.one_line()
    assert clear_text_server.ssl_requests >= 1
    assert clear_text_server.startup_packets == []  # nothing (user, database, then the password) sent in clear


def test_verify_login_probe_refuses_a_server_without_tls(clear_text_server):
    from trackerdb.migrate.verify import app_login_check

    s = PROD.with_(pg_port=clear_text_server.port, target=PROD.target.__class__("target", "127.0.0.1"))
    check = app_login_check(s, {})
    assert check.ok is False and "SSL" in check.observed
    assert clear_text_server.startup_packets == []
