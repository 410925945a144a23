"""Issue 17 in the lab: the application's side of the window and phase notifications.

The application stand-in is the live writer (lab/writer.py, through the Route53-switched endpoint)
plus a worker with a queue (lab/worker.py). Hooks from config stop the writer, then the worker once
its queue has drained, before the freeze; after the switch they start the worker and the writer
again, and a health check waits for the writer's first write acknowledged by the target. A webhook
receiver on loopback (started and stopped here) records every phase event; its URL is a Secrets
Manager secret in the lab's moto, referenced by name.

First, a probe that never drains must stop the cutover before the freeze with the source untouched.
Runs after test_50 (whose rollback leaves the source serving) or on its own.
"""

from __future__ import annotations

import http.server
import json
import shlex
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest

from lab import writer as lw
from trackerdb.cutover import phases as ph
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.ops import run_cutover
from trackerdb.psql import Psql
from trackerdb.session import source_cluster
from trackerdb.errors import PreflightError
from trackerdb.remote import Remote
from trackerdb.window_config import parse_application

from tests.tlsutil import tls_files

from .test_50_cutover import ensure_app_password_on_source

pytestmark = [pytest.mark.lab]
ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "trackerdb/lab/notify-webhook"
DEVICE = 2


class Receiver(http.server.BaseHTTPRequestHandler):
    events: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.events.append({"path": self.path, "at": time.time(), **body})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    """An HTTPS receiver on 127.0.0.1 (webhooks must be https://); its CA file is ``srv.ca_file``."""
    Receiver.events = []
    ca, cert, key = tls_files(tmp_path_factory.mktemp("webhook-tls"))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.ca_file = ca
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _py(module: str, *args: str) -> str:
    return f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m {module} " + " ".join(shlex.quote(a) for a in args)


def app_config(work: Path, order: Path, never_drains: bool = False) -> dict:
    """The hooks as an operator would write them in invoke.yaml, for this stand-in."""
    wlog, queue = work / "writer.jsonl", work / "queue"
    rec = lambda what: f"echo {what} $(date +%s.%N) >> {shlex.quote(str(order))}"  # noqa: E731
    start_bg = _start_bg
    wait_gone = lambda pidfile: (f"p=$(cat {shlex.quote(str(pidfile))}); for i in $(seq 300); do "  # noqa: E731
                                 "case \"$(ps -o stat= -p $p 2>/dev/null)\" in ''|Z*) exit 0;; esac; sleep 0.1; done; exit 1")
    probe = "echo 5" if never_drains else f"cat {shlex.quote(str(queue))}"
    return {
        "stop": [
            {"name": "writer", "run": f"{rec('stop-writer')}; touch {shlex.quote(str(wlog))}.stop; {wait_gone(work / 'writer.pid')}"},
            {"name": "worker", "run": f"{rec('stop-worker')}; touch {shlex.quote(str(queue))}.stop; {wait_gone(work / 'worker.pid')}",
             "drain": {"probe": probe, "every_s": 0.5, "threshold": 0, "window_s": 1.5, "timeout_s": 4 if never_drains else 120}},
        ],
        "start": [
            {"name": "worker", "run": f"{rec('start-worker')}; rm -f {shlex.quote(str(queue))}.stop; "
                                      + start_bg(_py("lab.worker", "--queue", str(queue), "--interval", "0.05"), work / "worker.pid")},
            {"name": "writer", "run": f"{rec('start-writer')}; rm -f {shlex.quote(str(wlog))}.stop; "
                                      + start_bg(_py("lab.writer", "--log", str(wlog), "--seconds", "300", "--interval", "0.05",
                                                     "--device", str(DEVICE)), work / "writer.pid")},
        ],
        "health": [{"name": "writer acknowledged by the target", "run": "TARGET_ACK"}],
        "health_every_s": 0.5, "health_timeout_s": 90,
    }


def start_app(settings, work: Path, jobs: int) -> None:
    """The application as it runs before the window: worker, producer (the application making jobs
    faster than the worker does them, until the writer's stop file appears) and the writer. Started
    detached like the start hooks do (not children of this process, so a stopped one is gone, not a zombie)."""
    import subprocess

    from tests.lab.fx_provision import lab_env

    q, wlog = str(work / "queue"), str(work / "writer.jsonl")
    subprocess.run([sys.executable, "-m", "lab.worker", "--queue", q, "--enqueue", str(jobs)], cwd=ROOT, check=True)
    for cmd, pidfile in ((_py("lab.worker", "--queue", q, "--interval", "0.05"), "worker.pid"),
                         (_py("lab.worker", "--queue", q, "--interval", "0.04", "--produce", wlog + ".stop"), "producer.pid"),
                         (_py("lab.writer", "--log", wlog, "--seconds", "300", "--interval", "0.05", "--device", str(DEVICE)),
                          "writer.pid")):
        subprocess.run(["bash", "-c", _start_bg(cmd, work / pidfile)], env=lab_env(), check=True)


def _start_bg(cmd: str, pidfile: Path) -> str:
    return f"(setsid nohup bash -c {shlex.quote(cmd)} </dev/null >/dev/null 2>&1 & echo $! > {shlex.quote(str(pidfile))})"


def stop_app(work: Path) -> None:
    import os
    import signal

    for pidfile in ("writer.pid", "worker.pid", "producer.pid"):
        f = work / pidfile
        if f.exists():
            try:
                os.killpg(int(f.read_text()), signal.SIGTERM)  # its own session and process group (setsid)
            except (ProcessLookupError, ValueError, PermissionError):
                pass


def wait_for(cond, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def source_state(settings) -> dict:
    with Remote(settings.require_source()) as s:
        return source_cluster(s, settings).json(f"SELECT json_build_object('ro', (SELECT count(*) FROM pg_db_role_setting r JOIN pg_database d "
                             f"ON d.oid = r.setdatabase WHERE d.datname = '{settings.database}' AND r.setrole = 0 "
                             "AND array_to_string(r.setconfig, ',') LIKE '%default_transaction_read_only=on%'));")


@pytest.fixture(scope="module")
def window(backrest_ready, receiver, tmp_path_factory):
    from trackerdb.aws import client
    from trackerdb.cutover import switch as sw

    settings = backrest_ready
    ensure_app_password_on_source(settings)
    url = f"https://127.0.0.1:{receiver.server_port}/services/LAB/HOOK/t0ken-{time.time_ns()}"
    sm = client(settings, "secretsmanager")
    try:
        sm.create_secret(Name=WEBHOOK_SECRET, SecretString=url)
    except sm.exceptions.ResourceExistsException:
        sm.put_secret_value(SecretId=WEBHOOK_SECRET, SecretString=url)
    res: dict = {"settings": settings, "url": url, "ca_file": receiver.ca_file}

    # 1. a probe that never drains: stopped before the freeze, source untouched, nothing switched
    work1 = tmp_path_factory.mktemp("never")
    order1 = work1 / "order"
    start_app(settings, work1, 0)
    try:
        wait_for(lambda: any(r["event"] == "ack" for r in lw.load(work1 / "writer.jsonl")) if (work1 / "writer.jsonl").exists()
                 else False, what="the writer's first ack")
        switch_before = sw.make(settings).current()
        s1 = settings.with_(application=app_config(work1, order1, never_drains=True),
                            notify={"webhook_secret_name": WEBHOOK_SECRET, "ca_file": receiver.ca_file})
        j1 = work1 / "journal.jsonl"
        with pytest.raises(PreflightError) as e:
            run_cutover(s1, work1 / "dump", journal_path=j1, progress=print, full=True)
        res["never"] = {"error": e.value.one_line(), "journal": j1, "order": order1.read_text().split(),
                        "source": source_state(settings), "switch_before": switch_before,
                        "switch_after": sw.make(settings).current(), "events": list(Receiver.events)}
    finally:
        stop_app(work1)
    Receiver.events.clear()

    # 2. the whole window with hooks, drain, health and notifications
    work = tmp_path_factory.mktemp("window")
    order = work / "order"
    start_app(settings, work, 0)
    try:
        wait_for(lambda: (work / "writer.jsonl").exists() and any(r["event"] == "ack" for r in lw.load(work / "writer.jsonl")),
                 what="the writer's first ack")
        app = app_config(work, order)
        tgt = settings.target.address
        app["health"][0]["run"] = (f"grep -q '\"event\": \"ack\"' {shlex.quote(str(work / 'writer.jsonl'))} && "
                                   f"grep '\"event\": \"ack\"' {shlex.quote(str(work / 'writer.jsonl'))} | grep -q '{tgt}'")
        s2 = settings.with_(application=app, notify={"webhook_secret_name": WEBHOOK_SECRET, "ca_file": receiver.ca_file})
        j2 = work / "journal.jsonl"
        # restore-time settings a SIGKILLed restore job could not remove: the cutover's preflight removes them
        tuning = f"/etc/postgresql/{settings.postgres_major}/main/conf.d/90-trackerdb-restore.conf"
        with Remote(settings.target) as t:
            t.write_file(tuning, "autovacuum = 'off'\n", owner="postgres")
        lines: list[str] = []
        res["summary"] = run_cutover(s2, work / "dump", journal_path=j2, progress=lambda m: (lines.append(m), print(m)), full=True)
        res.update(journal=j2, order=[ln.split()[0] for ln in order.read_text().splitlines()],
                   order_t={ln.split()[0]: float(ln.split()[1]) for ln in order.read_text().splitlines()},
                   lines=lines, events=list(Receiver.events), queue_at_stop=(work / "queue").read_text().strip(),
                   writer=lw.load(work / "writer.jsonl"))
        with Remote(settings.target) as t:
            res["tuning_left"] = t.exists(tuning)
            res["autovacuum"] = t.run(["sh", "-c", f"cd / && sudo -u postgres psql -XAtqc 'SHOW autovacuum' -p {settings.pg_port}"],
                                      sudo=True).stdout.strip()
    finally:
        stop_app(work)
    return res


def test_a_probe_that_never_drains_stops_before_the_freeze_with_the_source_untouched(window):
    n = window["never"]
    assert "did not drain within 4s" in n["error"] and "nothing frozen, nothing switched" in n["error"], n["error"]
    st = Journal(n["journal"]).states()
    assert st[ph.APP_STOP].status == "failed"
    assert ph.FREEZE not in st and ph.SWITCH not in st, list(st)
    # the writer was stopped (first step), the worker was not: its drain never completed
    assert [x for x in n["order"] if not x[0].isdigit()] == ["stop-writer"], n["order"]
    assert n["source"]["ro"] == 0, "the source was frozen"
    assert n["switch_after"] == n["switch_before"] == window["settings"].source.address
    ev = [(e["trackerdb"]["phase"], e["trackerdb"]["event"]) for e in n["events"]]
    assert ev[-1] == (ph.APP_STOP, "failed") and (ph.FREEZE, "start") not in ev, ev
    assert "invoke rollback --journal" in n["events"][-1]["trackerdb"]["rollback"]


def test_hooks_ran_in_order_around_the_freeze_and_switch_after_the_queue_drained(window):
    s = window["summary"]
    assert s["complete"], s
    assert window["order"] == ["stop-writer", "stop-worker", "start-worker", "start-writer"], window["order"]
    st = Journal(window["journal"]).states()
    t = window["order_t"]
    # stopped before the freeze began, started only after the switch ended
    assert t["stop-worker"] < st[ph.FREEZE].start and t["start-worker"] > st[ph.SWITCH].end
    stop = st[ph.APP_STOP].facts
    samples = [v for _, v in stop["steps"]["worker"]["drain_samples"]]
    assert samples[0] > 0 and samples[-1] == 0, samples  # the probe waited for the worker's queue
    assert window["queue_at_stop"] == "0"
    # the writer was stopped before the freeze: no write of it was refused
    assert not [r for r in window["writer"] if r["event"] == "refused"]
    acks = [r for r in window["writer"] if r["event"] == "ack"]
    src, tgt = window["settings"].source.address, window["settings"].target.address
    assert max(r["t"] for r in acks if r["endpoint"] == src) < st[ph.FREEZE].start
    assert any(r["endpoint"] == tgt for r in acks)
    assert st[ph.HEALTH].status == "ok" and st[ph.HEALTH].facts["checks"]
    assert st[ph.HEALTH].start >= st[ph.APP_START].end


def test_every_phase_was_notified_in_order_without_the_url_in_the_journal(window):
    ev = [(e["trackerdb"]["phase"], e["trackerdb"]["event"]) for e in window["events"]]
    assert ev == [x for p in ph.PHASES for x in ((p, "start"), (p, "ok"))], ev
    assert all(e["path"].startswith("/services/LAB/HOOK/") and e["text"] for e in window["events"])
    token = window["url"].rsplit("/", 1)[1]
    assert token not in Path(window["journal"]).read_text()


def test_stale_restore_settings_removed_by_the_preflight(window):
    assert any("removed" in ln and "90-trackerdb-restore.conf" in ln for ln in window["lines"]), window["lines"][:20]
    assert not window["tuning_left"] and window["autovacuum"] == "on"


def test_dry_run_shows_the_hooks(window):
    from trackerdb.cutover.ops import dry_run_details

    app = app_config(Path("/nonexistent"), Path("/nonexistent/order"))
    lines = dry_run_details(window["settings"].with_(application=app, notify={"webhook_secret_name": WEBHOOK_SECRET,
                                                                               "ca_file": window["ca_file"]}))
    assert any(ln.startswith("app stop 2 worker: wait until `cat ") for ln in lines)
    assert any(ln.startswith("app start 1 worker:") for ln in lines)
    assert any(ln.startswith("health: TARGET_ACK -> exit 0") for ln in lines)
    assert any(WEBHOOK_SECRET in ln for ln in lines) and not any(window["url"] in ln for ln in lines)
    assert parse_application(app).stop[1].drain.threshold == 0
