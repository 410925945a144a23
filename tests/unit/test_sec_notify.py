"""Security issue 23 (notifications): the webhook must be https://, and what is posted is scrubbed as
the journal is (secrets the session knows, secret-named keys) plus credential shapes, before any
shortening. The receiver here is a local HTTPS server on 127.0.0.1 with its own CA (notify.ca_file)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading

import pytest

from trackerdb import notify as nt
from trackerdb import window_config as wc
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.errors import ConfigError, OpsError
from trackerdb.secrets import Secret

from tests.tlsutil import tls_files

APP_PW = "Xy9-app-pass-8c1f"
TOKEN = "T000/B000/tok3n-5ecret"


# ---- a local HTTPS receiver ---------------------------------------------------------------------

class Receiver(http.server.BaseHTTPRequestHandler):
    got: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append((self.path, json.loads(body)))
        self.send_response(Receiver.status)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def https_receiver(tmp_path):
    """(server, CA file): an HTTPS receiver on 127.0.0.1 whose certificate the CA file verifies."""
    Receiver.got, Receiver.status = [], 200
    ca, cert, key = tls_files(tmp_path)
    srv = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, ca
    srv.shutdown()
    srv.server_close()


class S:
    """The few Settings fields a cutover with stand-in phases reads."""

    def __init__(self, ca_file=None, application=None):
        self.notify = wc.NotifyConfig("hook", ca_file)
        self.application = wc.parse_application(application)
        self.switch = wc.parse_switch({"mode": "command", "command": "true {old} {new}"})
        self.environment = "test"
        self.app_secret_name = self.cipher_secret_name = "x"
        self.window_limits: dict = {}
        self.outputs: dict = {}
        self.source, self.source_port, self.database = None, 5432, "tracker"


def _ok(ctx, resume):
    return {}


def _run(tmp_path, monkeypatch, url, funcs, ca_file=None, application=None):
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, settings: None)
    monkeypatch.setattr("trackerdb.secrets.fetch_secret", lambda s, name: Secret(name, url))
    return ops.run_cutover(S(ca_file, application), tmp_path / "d", journal_path=tmp_path / "j.jsonl",
                           funcs={p: _ok for p in ph.PHASES} | funcs)


# ---- https only ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url, ok", [
    ("https://hooks.slack.com/services/T/B/x", True),
    ("HTTPS://hooks.example/x", True),
    ("https://127.0.0.1:8443/x", True),
    ("http://hooks.slack.com/services/T/B/x", False),   # the token in clear on the network
    ("http://127.0.0.1:9000/x", False),
    ("HTTP://hooks.example/x", False),
    ("hooks.slack.com/services/T/B/x", False),
    ("ftp://x/y", False),
    ("https:///tok3n", False),
    ("https://[::1/x", False),
    ("not a url", False),
])
def test_webhook_url_must_be_https(url, ok):
    if ok:
        assert nt.check_url(url) == url
        return
    with pytest.raises(ConfigError) as e:
        nt.check_url(url)
    line = e.value.one_line()
    assert "https://" in line and e.value.hint and "\n" not in line and url not in line


def test_an_http_webhook_refuses_the_cutover_before_anything_runs(tmp_path, monkeypatch):
    calls = []
    with pytest.raises(ConfigError) as e:
        _run(tmp_path, monkeypatch, f"http://127.0.0.1:9/services/{TOKEN}",
             {p: (lambda ctx, resume, p=p: calls.append(p)) for p in ph.PHASES})
    assert "http:// URL" in e.value.message and TOKEN not in e.value.one_line()
    assert calls == [] and not (tmp_path / "j.jsonl").exists()  # no phase ran, no journal written


def test_an_unreadable_secret_still_only_turns_notifications_off():
    lines = []

    def fetch(settings, name):
        raise OpsError(f"Secrets Manager secret {name!r} not found", hint="create it")
    n = nt.Notifier(S(), say=lines.append, fetch=fetch)
    assert not n.enabled and lines[0].startswith("notifications off: ")


def test_a_missing_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        nt.Notifier(S(ca_file=str(tmp_path / "nope.pem")), fetch=lambda s, name: Secret(name, "https://h/x"))
    assert "notify.ca_file" in e.value.message and e.value.hint


def test_a_receiver_whose_certificate_does_not_verify_gets_nothing(tmp_path, monkeypatch, https_receiver):
    srv, _ca = https_receiver
    lines = []
    n = nt.Notifier(S(), say=lines.append, fetch=lambda s, name: Secret(name, f"https://127.0.0.1:{srv.server_port}/x"))
    assert n.phase("preflight", "start", "t") is True  # queued
    assert n.close()["failed"] == 1  # the system CAs do not know the test CA
    assert Receiver.got == [] and any("not delivered" in ln for ln in lines)


# ---- scrubbing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, secrets, gone, kept", [
    (f"FATAL: password authentication failed; dsn host=h password={APP_PW} user=tracker", (), [APP_PW], ["host=h"]),
    (f"could not connect to postgresql://tracker:{APP_PW}@10.0.0.2:5432/tracker", (), [APP_PW], ["10.0.0.2:5432"]),
    (f"curl: -H 'Authorization: Bearer {APP_PW}'", (), [APP_PW], ["curl"]),
    (f"the app said {APP_PW} twice: {APP_PW}", (APP_PW,), [APP_PW], ["the app said"]),
    (f"cipher {APP_PW}xyz", (Secret("c", APP_PW + "xyz"), APP_PW), [APP_PW], ["cipher"]),  # the longer secret first
    ("queue size 12, nothing secret", (APP_PW,), [], ["queue size 12, nothing secret"]),
])
def test_scrub_payload_masks_known_secrets_and_credential_shapes(text, secrets, gone, kept):
    out = nt.scrub_payload({"text": text, "trackerdb": {"error": text, "token": "abc"}}, secrets)
    for s in gone:
        assert s not in json.dumps(out)
    for s in kept:
        assert s in out["text"]
    assert out["trackerdb"]["token"] == "***"  # a secret-named key, as in the journal


def test_a_long_error_is_scrubbed_before_it_is_shortened():
    n = nt.Notifier(S(), fetch=lambda s, name: Secret(name, "https://h.invalid/x"), secrets=lambda: (APP_PW,))
    sent = []
    n.post = sent.append
    n.phase("verify", "failed", "t", error="x" * 495 + APP_PW)  # message() keeps 500 characters
    n.close()
    body = json.dumps(sent[0])
    assert APP_PW[:5] not in body and "***" in body


def test_unexpected_exceptions_and_hook_output_are_scrubbed_in_what_is_posted(tmp_path, monkeypatch, https_receiver):
    srv, ca = https_receiver
    url = f"https://127.0.0.1:{srv.server_port}/services/{TOKEN}"

    def preflight(ctx, resume):
        ctx.session.add_masked(APP_PW)  # a secret the session learnt mid-run (as session.secret() does)
        return {}

    def freeze(ctx, resume):  # an unexpected exception whose text carries the password, past 300 characters
        raise RuntimeError("y" * 290 + f" connect failed: password={APP_PW} at {url}")

    with pytest.raises(RuntimeError):
        _run(tmp_path, monkeypatch, url, {ph.PREFLIGHT: preflight, ph.FREEZE: freeze}, ca_file=ca)
    failed = Receiver.got[-1][1]
    assert failed["trackerdb"]["phase"] == ph.FREEZE and failed["trackerdb"]["event"] == "failed"
    posted = json.dumps([b for _, b in Receiver.got])
    assert APP_PW[:6] not in posted and "tok3n" not in posted and "RuntimeError" in failed["trackerdb"]["error"]
    journal = (tmp_path / "j.jsonl").read_text()
    assert APP_PW[:6] not in journal and "tok3n" not in journal

    # a hook's last output line (a failing stop step echoing a credential) reaches the notification scrubbed
    Receiver.got.clear()
    app = {"stop": [{"name": "proxy", "run": f"echo 'login failed for postgresql://tracker:{APP_PW}@db'; "
                                             f"echo 'retry with {APP_PW}' >&2; exit 3"}]}
    with pytest.raises(OpsError) as e:
        _run(tmp_path / "2", monkeypatch, url, {ph.PREFLIGHT: preflight, ph.APP_STOP: ph.BY_ID[ph.APP_STOP].fn},
             ca_file=ca, application=app)
    assert "application step 'proxy' failed (exit 3)" in e.value.message
    failed = Receiver.got[-1][1]
    assert failed["trackerdb"]["phase"] == ph.APP_STOP and "failed (exit 3)" in failed["trackerdb"]["error"]
    assert APP_PW not in json.dumps([b for _, b in Receiver.got])


def test_redact_leaves_ordinary_text_alone():
    from trackerdb.secrets import redact

    text = "verify against the manifest: 1 of 9 checks failed (hint: fix it); rollback: invoke rollback --journal /x/j"
    assert redact(text) == text


def test_the_journal_and_the_notifications_share_one_scrub():
    from trackerdb.cutover import journal
    from trackerdb import secrets

    assert journal.scrub is secrets.scrub
