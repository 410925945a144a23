"""Application hooks: config refused in one line, the drain verdict as a table, steps run in order,
journaled and resumed, a probe that never drains stops before anything else runs, health checks."""

from __future__ import annotations

import http.server
import threading

import pytest

from trackerdb import window_config as wc
from trackerdb.cutover import hooks as hk
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover.journal import Journal
from trackerdb.errors import ConfigError, PreflightError, VerifyError


@pytest.mark.parametrize("raw,message", [
    ({"stop": "x"}, "application.stop must be a list"),
    ({"stop": [{"run": "true"}]}, "application.stop[0].name is missing"),
    ({"stop": [{"name": "a"}]}, "run must be a command"),
    ({"stop": [{"name": "a", "run": "true", "drain": {}}]}, "needs a probe command"),
    ({"stop": [{"name": "a", "run": "true", "drain": {"probe": "echo 1", "every_s": "often"}}]}, "every_s must be a number"),
    ({"stop": [{"name": "a", "run": "true"}, {"name": "a", "run": "true"}]}, "duplicate step names"),
    ({"stop": [{"name": "a", "run": "true", "stop_after": 1}]}, "unknown key(s) stop_after"),
    ({"health": [{"url": "ftp://x"}]}, "must be http:// or https://"),
    ({"health": [{"url": "http://x", "run": "true"}]}, "exactly one of url or run"),
    ({"workers": []}, "unknown key(s) workers"),
])
def test_bad_config_is_one_line_with_a_hint(raw, message):
    with pytest.raises(ConfigError) as e:
        wc.parse_application(raw)
    assert message in e.value.message and e.value.hint and "\n" not in e.value.one_line()


def test_config_parses_with_defaults():
    h = wc.parse_application({"stop": [{"name": "proxy", "run": "echo p"},
                                  {"name": "worker", "run": "echo w", "drain": {"probe": "echo 0", "every_s": 1}}],
                         "start": [{"name": "worker", "run": "echo w"}], "health": ["http://127.0.0.1:1/health", {"run": "true"}]})
    assert [s.name for s in h.stop] == ["proxy", "worker"] and h.stop[1].drain.window_s == 120
    assert h.health[0].url and h.health[1].run == "true"
    lines = hk.dry_run_lines(h)
    assert lines[0] == "app stop 1 proxy: echo p" and "wait until `echo 0` <= 0" in lines[1]
    assert hk.dry_run_lines(wc.parse_application({}))[0].startswith("application: no hooks configured")


@pytest.mark.parametrize("samples,threshold,window,verdict", [
    ([], 0, 10, "waiting"),
    ([(0, 5)], 0, 10, "waiting"),                              # above the threshold
    ([(0, 0)], 0, 10, "waiting"),                              # at 0 but the window is not covered yet
    ([(0, 0)], 0, 0, "drained"),                               # no window asked for
    ([(0, 3), (5, 2), (10, 0)], 0, 10, "drained"),             # falling to 0 over the whole window
    ([(0, 3), (5, 0), (10, 1)], 1, 10, "waiting"),             # <= threshold but rose inside the window
    ([(0, 9), (5, 9), (10, 0), (15, 0), (20, 0)], 0, 10, "drained"),  # the rise was before the window
    ([(0, 0), (5, 2), (10, 0)], 0, 10, "waiting"),             # a spike inside the window
    ([(0, 2), (10, 2)], 2, 10, "drained"),                     # flat at the threshold
])
def test_drain_verdict(samples, threshold, window, verdict):
    assert hk.drain_verdict(samples, threshold, window) == verdict


@pytest.mark.parametrize("out,value", [("3\n", 3.0), ("queue=default size 12\n", 12.0), ('[{"size": 4}]', None)])
def test_parse_number(out, value):
    if value is None:
        with pytest.raises(ValueError):
            hk.parse_number("no digits here")
    else:
        assert hk.parse_number(out) == value


class Ctx:
    def __init__(self, journal, application):
        self.journal = journal
        self.settings = type("S", (), {"application": wc.parse_application(application)})()
        self.lines = []

    def say(self, msg):
        self.lines.append(msg)

    def facts(self, phase):
        return self.journal.state(phase).facts


def test_stop_steps_run_in_order_after_their_drain_and_resume_after_the_last_done(tmp_path):
    log = tmp_path / "order"
    q = tmp_path / "queue"
    q.write_text("3\n")
    # each probe sample empties the queue by one
    probe = f"n=$(cat {q}); echo $n; [ $n -gt 0 ] && echo $((n-1)) > {q}; true"
    app = {"stop": [{"name": "proxy", "run": f"echo proxy >> {log}"},
                    {"name": "worker", "run": f"echo worker >> {log}",
                     "drain": {"probe": probe, "every_s": 0.1, "window_s": 0.2, "timeout_s": 20}},
                    {"name": "runner", "run": f"echo runner >> {log}; exit 3"}]}
    j = Journal(tmp_path / "j.jsonl")
    ctx = Ctx(j, app)
    j.begin(hk.APP_STOP)
    with pytest.raises(Exception) as e:
        hk.app_stop(ctx, False)
    assert "'runner' failed (exit 3)" in str(e.value)
    assert log.read_text().split() == ["proxy", "worker", "runner"]
    samples = j.state(hk.APP_STOP).facts["steps"]["worker"]["drain_samples"]
    assert [v for _, v in samples][:4] == [3, 2, 1, 0]
    # fixed, the re-run resumes: proxy and worker are not run again
    app["stop"][2]["run"] = f"echo runner-fixed >> {log}"
    facts = hk.app_stop(Ctx(j, app), True)
    assert log.read_text().split() == ["proxy", "worker", "runner", "runner-fixed"]
    assert facts["done"] == ["proxy", "worker", "runner"]


def test_a_probe_that_never_drains_stops_before_the_step_and_before_the_freeze(tmp_path, monkeypatch):
    log = tmp_path / "order"
    app = {"stop": [{"name": "proxy", "run": f"echo proxy >> {log}"},
                    {"name": "worker", "run": f"echo worker >> {log}",
                     "drain": {"probe": "echo 5", "every_s": 0.1, "window_s": 0.1, "timeout_s": 0.5}}]}
    calls = []

    def fake(phase):
        def fn(ctx, resume):
            calls.append(phase)
            return {}
        return fn

    funcs = {p: fake(p) for p in ph.PHASES if p != ph.APP_STOP}

    class S:
        application = wc.parse_application(app)
        notify = wc.NotifyConfig()
        switch = wc.parse_switch({"mode": "command", "command": "true {old} {new}"})
        environment = "test"
        app_secret_name = cipher_secret_name = "x"
        window_limits: dict = {}
        outputs: dict = {}
        source, source_port, database = None, 5432, "tracker"
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, settings: None)
    with pytest.raises(PreflightError) as e:
        ops.run_cutover(S(), tmp_path / "d", journal_path=tmp_path / "j.jsonl", funcs=funcs)
    assert "did not drain within 0.5s (last 5" in e.value.message and "nothing frozen" in e.value.message
    assert calls == [ph.PREFLIGHT, ph.PREPARE], calls  # nothing after: no freeze, no switch (prepare only reads)
    assert log.read_text().split() == ["proxy"]


class _Health(http.server.BaseHTTPRequestHandler):
    codes: list = []

    def do_GET(self):  # noqa: N802
        code = self.codes.pop(0) if self.codes else 200
        self.send_response(code)
        self.end_headers()

    def log_message(self, *a):
        pass


def _server():
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_health_waits_until_every_check_passes_and_fails_with_the_rollback_command(tmp_path):
    srv = _server()
    try:
        _Health.codes = [503, 503]
        url = f"http://127.0.0.1:{srv.server_port}/health"
        j = Journal(tmp_path / "j.jsonl")
        app = {"health": [url, {"run": "true"}], "health_every_s": 0.1, "health_timeout_s": 10}
        facts = hk.health(Ctx(j, app), False)
        assert facts["attempts"] == 3 and facts["checks"][url] == "HTTP 200"
        _Health.codes = [503] * 100
        app = {"health": [url], "health_every_s": 0.1, "health_timeout_s": 0.3}
        with pytest.raises(VerifyError) as e:
            hk.health(Ctx(j, app), False)
        assert "1 of 1 check(s) fail" in e.value.message and "invoke rollback --journal" in e.value.hint
    finally:
        srv.shutdown()


def test_rollback_starts_the_application_once_if_this_cutover_stopped_it(tmp_path):
    log = tmp_path / "order"
    app = {"stop": [{"name": "a", "run": "true"}], "start": [{"name": "w", "run": f"echo w >> {log}"},
                                                            {"name": "a", "run": f"echo a >> {log}"}]}
    S = type("S", (), {"application": wc.parse_application(app)})
    j = Journal(tmp_path / "j.jsonl")
    assert hk.rollback_start(S(), j) is None  # nothing stopped by this cutover: nothing started
    j.begin(hk.APP_STOP)
    j.note(hk.APP_STOP, {"done": ["a"]})
    hk.rollback_start(S(), j)
    hk.rollback_start(S(), j)
    assert log.read_text().split() == ["w", "a"]


def test_the_report_timeline_draws_each_hook_step_and_the_drain_wait():
    from trackerdb.rehearse import report

    steps = {"writer": {"started": 100.0, "end": 101.0, "exit": 0},
             "worker": {"started": 101.0, "drain_samples": [[0, 7], [1, 3], [2, 0]], "drained_at": 104.0, "end": 104.5, "exit": 0}}
    entries = [{"phase": "preflight", "start": 90.0, "end": 99.0, "outcome": "ok", "facts": {}},
               {"phase": "app_stop", "start": 100.0, "end": 104.6, "outcome": "ok", "facts": {"steps": steps}},
               {"phase": "freeze", "start": 105.0, "end": 106.0, "outcome": "ok", "facts": {}},
               {"phase": "switch", "start": 110.0, "end": 111.0, "outcome": "ok", "facts": {}}]
    phases, t0 = report.build_phases([{"label": "cutover", "entries": entries}])
    names = [p["phase"] for p in phases]
    assert names.index("app_stop: writer") < names.index("app_stop: worker drain (last 0)") < names.index("app_stop: worker")
    from trackerdb.rehearse import report_html

    svg = report_html.timeline_svg(phases, None)
    assert "app_stop: worker drain (last 0)" in svg
    window = report.outage_window(phases, None, t0)
    assert window["start"] == 100.0  # the application's stop starts the outage, not the freeze
