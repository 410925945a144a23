"""Notifications: Slack-compatible payloads, every phase's start/end/failure posted in order by the
cutover, the URL (a secret) never in the journal, and a failed post never fails the cutover."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from trackerdb import notify as nt
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover.journal import Journal
from trackerdb.errors import OpsError, VerifyError
from trackerdb.secrets import Secret


def test_message_is_slack_compatible_and_carries_error_and_rollback():
    m = nt.message("verify", "failed", "5 verify", environment="lab", error="3 of 9\nchecks failed",
                   rollback="invoke rollback --journal j", elapsed_s=2.04)
    assert m["text"].startswith(":x: trackerdb cutover [lab]: verify FAILED after 2.0s")
    assert "error: 3 of 9 checks failed" in m["text"] and "rollback: `invoke rollback --journal j`" in m["text"]
    assert m["blocks"][0]["type"] == "section" and m["blocks"][0]["text"]["type"] == "mrkdwn"
    assert m["trackerdb"]["phase"] == "verify" and m["trackerdb"]["event"] == "failed"
    json.dumps(m)


@pytest.mark.parametrize("url", ["not a url", "ftp://x/y", "https:///tok3n"])
def test_bad_webhook_url_turns_notifications_off_in_one_line(url):
    lines = []
    S = type("S", (), {"notify": {"webhook_secret_name": "hook"}, "environment": "lab"})
    n = nt.Notifier(S(), say=lines.append, fetch=lambda s, name: Secret(name, url))
    assert not n.enabled and lines and lines[0].startswith("notifications off: ") and url not in lines[0]


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.got.append((self.path, json.loads(body)))
        self.send_response(_Receiver.status)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def receiver():
    _Receiver.got = []
    _Receiver.status = 200
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _settings(url):
    class S:
        notify = {"webhook_secret_name": "hook"}
        application: dict = {}
        environment = "test"
        app_secret_name = cipher_secret_name = "x"
    return S(), url


def _run(tmp_path, monkeypatch, url, funcs):
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, settings: None)
    monkeypatch.setattr("trackerdb.secrets.fetch_secret", lambda s, name: Secret(name, url))
    s, _ = _settings(url)
    return ops.run_cutover(s, tmp_path / "d", journal_path=tmp_path / "j.jsonl", funcs=funcs)


def _ok(ctx, resume):
    return {}


def test_every_phase_start_end_and_failure_posted_in_order(tmp_path, monkeypatch, receiver):
    url = f"http://127.0.0.1:{receiver.server_port}/services/T000/B000/tok3n"

    def bad_verify(ctx, resume):
        raise VerifyError("verify against the manifest: 1 of 9 checks failed", hint="fix it")

    funcs = {p: _ok for p in ph.PHASES}
    funcs[ph.VERIFY] = bad_verify
    with pytest.raises(OpsError):
        _run(tmp_path, monkeypatch, url, funcs)
    events = [(b["trackerdb"]["phase"], b["trackerdb"]["event"]) for _, b in _Receiver.got]
    upto = ph.PHASES[:ph.PHASES.index(ph.VERIFY)]
    assert events == [e for p in upto for e in ((p, "start"), (p, "ok"))] + [(ph.VERIFY, "start"), (ph.VERIFY, "failed")]
    failed = _Receiver.got[-1][1]
    assert "1 of 9 checks failed" in failed["trackerdb"]["error"]
    assert failed["trackerdb"]["rollback"] == f"invoke rollback --journal {tmp_path / 'j.jsonl'}"
    assert all(path == "/services/T000/B000/tok3n" for path, _ in _Receiver.got)
    assert "tok3n" not in (tmp_path / "j.jsonl").read_text()


def test_a_webhook_that_fails_never_fails_the_cutover(tmp_path, monkeypatch, receiver):
    _Receiver.status = 500
    out = _run(tmp_path, monkeypatch, f"http://127.0.0.1:{receiver.server_port}/x", {p: _ok for p in ph.PHASES})
    assert out["complete"] and len(_Receiver.got) == 2 * len(ph.PHASES)
    # nobody listening at all
    port = receiver.server_port
    receiver.shutdown()
    receiver.server_close()
    out = _run(tmp_path / "2", monkeypatch, f"http://127.0.0.1:{port}/x", {p: _ok for p in ph.PHASES})
    assert out["complete"]
    assert Journal(tmp_path / "2" / "j.jsonl").state(ph.POST).status == "ok"
