"""Notifications: Slack-compatible payloads, every phase's start/end/failure posted in order by the
cutover, the URL (a secret) never in the journal, and a failed post never fails the cutover. The
receiver is HTTPS (an http:// webhook is refused: tests/unit/test_sec_notify.py)."""

from __future__ import annotations

import json

import pytest

from trackerdb import notify as nt
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover.journal import Journal
from trackerdb.errors import ConfigError, OpsError, VerifyError
from trackerdb.secrets import Secret
from tests.unit.test_sec_notify import Receiver, https_receiver  # noqa: F401  (the HTTPS receiver fixture)


def test_message_is_slack_compatible_and_carries_error_and_rollback():
    m = nt.message("verify", "failed", "5 verify", environment="lab", error="3 of 9\nchecks failed",
                   rollback="invoke rollback --journal j", elapsed_s=2.04)
    assert m["text"].startswith(":x: trackerdb cutover [lab]: verify FAILED after 2.0s")
    assert "error: 3 of 9 checks failed" in m["text"] and "rollback: `invoke rollback --journal j`" in m["text"]
    assert m["blocks"][0]["type"] == "section" and m["blocks"][0]["text"]["type"] == "mrkdwn"
    assert m["trackerdb"]["phase"] == "verify" and m["trackerdb"]["event"] == "failed"
    json.dumps(m)


@pytest.mark.parametrize("url", ["not a url", "ftp://x/y", "https:///tok3n", "http://hooks.example/tok3n"])
def test_bad_webhook_url_is_refused_in_one_line(url):
    S = type("S", (), {"notify": {"webhook_secret_name": "hook"}, "environment": "lab"})
    with pytest.raises(ConfigError) as e:
        nt.Notifier(S(), fetch=lambda s, name: Secret(name, url))
    assert "https://" in e.value.one_line() and url not in e.value.one_line()


@pytest.fixture
def receiver(https_receiver):
    srv, ca = https_receiver
    srv.ca_file = ca
    yield srv


_Receiver = Receiver


def _settings(url, ca_file):
    class S:
        notify = {"webhook_secret_name": "hook", "ca_file": ca_file}
        application: dict = {}
        switch = {"mode": "command", "command": "true {old} {new}"}
        environment = "test"
        app_secret_name = cipher_secret_name = "x"
    return S(), url


def _run(tmp_path, monkeypatch, url, funcs, ca_file):
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, settings: None)
    monkeypatch.setattr("trackerdb.secrets.fetch_secret", lambda s, name: Secret(name, url))
    s, _ = _settings(url, ca_file)
    return ops.run_cutover(s, tmp_path / "d", journal_path=tmp_path / "j.jsonl", funcs=funcs)


def _ok(ctx, resume):
    return {}


def test_every_phase_start_end_and_failure_posted_in_order(tmp_path, monkeypatch, receiver):
    url = f"https://127.0.0.1:{receiver.server_port}/services/T000/B000/tok3n"

    def bad_verify(ctx, resume):
        raise VerifyError("verify against the manifest: 1 of 9 checks failed", hint="fix it")

    funcs = {p: _ok for p in ph.PHASES}
    funcs[ph.VERIFY] = bad_verify
    with pytest.raises(OpsError):
        _run(tmp_path, monkeypatch, url, funcs, receiver.ca_file)
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
    ca = receiver.ca_file
    out = _run(tmp_path, monkeypatch, f"https://127.0.0.1:{receiver.server_port}/x", {p: _ok for p in ph.PHASES}, ca)
    assert out["complete"] and len(_Receiver.got) == 2 * len(ph.PHASES)
    # nobody listening at all
    port = receiver.server_port
    receiver.shutdown()
    receiver.server_close()
    out = _run(tmp_path / "2", monkeypatch, f"https://127.0.0.1:{port}/x", {p: _ok for p in ph.PHASES}, ca)
    assert out["complete"]
    assert Journal(tmp_path / "2" / "j.jsonl").state(ph.POST).status == "ok"
