"""Notifications: Slack-compatible payloads, every phase's start/end/failure posted in order by the
cutover, the URL (a secret) never in the journal, and a failed post never fails the cutover. The
receiver is HTTPS (an http:// webhook is refused: tests/unit/test_sec_notify.py)."""

from __future__ import annotations

import json

import pytest

from trackerdb import window_config as wc
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
    S = type("S", (), {"notify": wc.NotifyConfig("hook"), "environment": "lab"})
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
        notify = wc.NotifyConfig("hook", ca_file)
        application = wc.AppHooks()
        switch = wc.parse_switch({"mode": "command", "command": "true {old} {new}"})
        environment = "test"
        app_secret_name = cipher_secret_name = "x"
        window_limits: dict = {}
        outputs: dict = {}
        source, source_port, database = None, 5432, "tracker"
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


@pytest.fixture
def hanging_receiver(tmp_path):
    """(port, CA file, received): a real HTTPS endpoint that completes TLS, reads the request and never answers
    (the webhook that "accepts the connection and never answers")."""
    import socket
    import ssl
    import threading

    from tests.tlsutil import tls_files

    ca, cert, key = tls_files(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    lsock = socket.create_server(("127.0.0.1", 0))
    held, stop, received = [], threading.Event(), []

    def serve():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            try:
                tls = ctx.wrap_socket(conn, server_side=True)
                tls.settimeout(2)
                received.append(tls.recv(65536))
                held.append(tls)  # kept open, never answered
            except OSError:
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield lsock.getsockname()[1], ca, received
    stop.set()
    t.join(5)
    for s in held:
        s.close()
    lsock.close()


def test_a_webhook_that_hangs_costs_the_whole_cutover_at_most_its_timeout(tmp_path, monkeypatch, hanging_receiver):
    """README: "a webhook that is down costs at most 5 s". 13 phases, 26 events, a receiver that takes every
    request and never answers: the cutover completes within the notifier's 5 s budget (plus the stand-in
    phases' own time), the first post is really sent, and the rest is named as not delivered."""
    import time

    port, ca, received = hanging_receiver
    lines = []
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, settings: None)
    monkeypatch.setattr("trackerdb.secrets.fetch_secret", lambda s, name: Secret(name, f"https://127.0.0.1:{port}/hook"))
    s, _ = _settings("", ca)
    t0 = time.monotonic()
    out = ops.run_cutover(s, tmp_path / "d", journal_path=tmp_path / "j.jsonl", funcs={p: _ok for p in ph.PHASES},
                          progress=lines.append)
    took = time.monotonic() - t0
    assert out["complete"]
    assert took < 5.0 + 2.0, took  # the budget, plus the stand-in run's own second or so
    assert received and received[0].startswith(b"POST /hook")
    assert any("not delivered" in ln and "did not wait" in ln for ln in lines), lines[-5:]


def test_after_a_post_got_no_answer_only_failures_are_still_posted(https_receiver):
    """The breaker: once the webhook did not answer at all, queued start/ok events are dropped, a failure is
    still tried (the one message with the rollback command)."""
    srv, ca = https_receiver
    n = nt.Notifier(_settings("", ca)[0], fetch=lambda s, name: Secret(name, f"https://127.0.0.1:{srv.server_port}/x"))
    n.unreachable = True  # as after a post that timed out
    for ev in ("ok", "start", "failed"):
        n.phase("verify", ev, "t")
    res = n.close()
    assert [b["trackerdb"]["event"] for _, b in Receiver.got] == ["failed"]
    assert res["dropped"] == 2 and res["sent"] == 1
