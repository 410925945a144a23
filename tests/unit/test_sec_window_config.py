"""Security issue 23 (low items): the window's config is refused when it is read, never found in a
phase with the source frozen; owner_map's roles are checked before pg_restore; an unauthenticated
TLS check of the application's path is said in the dry run and the report.

Tables of the pure parsers/builders, then the places that must call them before anything changes
(run_cutover, the cutover's preflight, restore) with stand-ins for hosts.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.conftest import prod_outputs
from trackerdb import window_config as wc
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover import switch as sw
from trackerdb.errors import ConfigError, PreflightError
from trackerdb.migrate import privileges as pv
from trackerdb.rehearse import report as R
from trackerdb.rehearse.report_html import render_html
from trackerdb.settings import Settings


# ---- switch.command: only {old} and {new} --------------------------------------------------------

@pytest.mark.parametrize("template, line", [
    ("./repoint {old} {new}", "./repoint 10.0.0.1 10.0.0.2"),
    ("""curl -d '{"db": "{new}", "was": "{old}"}' https://cfg/app""",
     """curl -d '{"db": "10.0.0.2", "was": "10.0.0.1"}' https://cfg/app"""),     # JSON braces stay as written
    ("kubectl patch cm app -p '{\"data\":{\"DB_HOST\":\"{new}\"}}'",
     "kubectl patch cm app -p '{\"data\":{\"DB_HOST\":\"10.0.0.2\"}}'"),
    ("echo ${HOME} {a,b} {} {new}", "echo ${HOME} {a,b} {} 10.0.0.2"),           # the shell's own braces
    ("set {new} {new}", "set 10.0.0.2 10.0.0.2"),
])
def test_command_line_substitutes_only_old_and_new(template, line):
    s = SimpleNamespace(switch=wc.parse_switch({"mode": "command", "command": template}), source=None, target=None)
    assert sw.make(s).command_line("10.0.0.1", "10.0.0.2") == line


def test_substitution_quotes_values_and_never_substitutes_twice():
    assert sw.substitute("x {old} {new}", "{new}", "a b") == "x '{new}' 'a b'"


@pytest.mark.parametrize("template, needle", [
    (None, "has no {new} placeholder"),
    ("", "has no {new} placeholder"),
    ("./repoint {old}", "has no {new} placeholder"),
    (["./repoint", "{new}"], "has no {new} placeholder"),
    ("./repoint {old} {new} {target}", "unknown placeholder(s) {target}"),       # a typo, found now
    ("./repoint {Old} {new}", "unknown placeholder(s) {Old}"),
])
def test_bad_switch_command_is_one_line_with_a_hint(template, needle):
    with pytest.raises(ConfigError) as e:
        wc.parse_switch({"mode": "command", "command": template})
    assert needle in e.value.message and e.value.hint and "\n" not in e.value.one_line()


# ---- hooks: finite, bounded numbers; commands only as run: ---------------------------------------

def _stop(**kw):
    return {"stop": [{"name": "a", "run": "true", **kw}]}


def _drain(**kw):
    return {"stop": [{"name": "a", "run": "true", "drain": {"probe": "echo 0", **kw}}]}


@pytest.mark.parametrize("raw, needle", [
    (_stop(timeout_s=float("inf")), "timeout_s must be a number from 1 to 86400"),
    (_stop(timeout_s=float("nan")), "timeout_s must be a number from"),
    (_stop(timeout_s=10 ** 9), "timeout_s must be a number from"),
    (_stop(timeout_s=True), "timeout_s must be a number, not True"),
    (_stop(timeout_s="inf"), "timeout_s must be a number, not 'inf'"),
    (_stop(timeout_s="600"), "timeout_s must be a number, not '600'"),
    (_drain(timeout_s=float("inf")), "drain.timeout_s must be a number from"),
    (_drain(window_s=float("inf")), "drain.window_s must be a number from"),
    (_drain(every_s=float("inf")), "drain.every_s must be a number from 0.1 to 3600"),
    (_drain(threshold=float("-inf")), "drain.threshold must be a number from"),
    (_drain(threshold=float("nan")), "drain.threshold must be a number from"),
    ({"health_timeout_s": float("inf")}, "health_timeout_s must be a number from"),
    ({"health_every_s": 0}, "health_every_s must be a number from 0.1"),
])
def test_durations_are_finite_and_bounded(raw, needle):
    with pytest.raises(ConfigError) as e:
        wc.parse_application(raw)
    assert needle in e.value.message and e.value.hint and "\n" not in e.value.one_line()


def test_ordinary_durations_still_parse():
    h = wc.parse_application({**_drain(every_s=5, window_s=60, timeout_s=86400, threshold=-3),
                         "health_timeout_s": 600, "health_every_s": 2.5})
    assert h.stop[0].drain.timeout_s == 86400 and h.health_every_s == 2.5


@pytest.mark.parametrize("check", [
    "htps://app.internal/health",             # one letter off: used to become `bash -c htps://…`
    "app.internal:8080/health",
    "curl -fsS https://app.internal/health",  # a command needs run:
    "true",
    "https://",
    "http:///health",
    {"url": "app.internal/health"},
    {"url": " https://app.internal/health"},
    {"run": ""},
    {"run": ["curl", "x"]},
    {"url": "https://app.internal/health", "runs": "x"},
])
def test_a_health_check_is_a_url_or_an_explicit_run(check):
    with pytest.raises(ConfigError) as e:
        wc.parse_application({"health": [check]})
    assert "application.health[0]" in e.value.message and e.value.hint and "\n" not in e.value.one_line()


def test_health_urls_and_run_commands_parse():
    h = wc.parse_application({"health": ["https://app.internal/health",
                                         {"url": "http://10.0.0.5:8080/ok", "name": "api"},
                                         {"run": "curl -fsS https://app.internal/health", "name": "curl"}]})
    assert [(c.name, c.url, c.run) for c in h.health] == [
        ("https://app.internal/health", "https://app.internal/health", None),
        ("api", "http://10.0.0.5:8080/ok", None), ("curl", None, "curl -fsS https://app.internal/health")]


# ---- refused before anything runs ---------------------------------------------------------------

COMMAND = {"mode": "command", "command": "true {old} {new}"}


def _settings(tmp_path, switch=None, application=None, **cfg):
    """Real Settings, loaded as a task loads them (the window's config parsed and checked here)."""
    return Settings.from_parts({"switch": COMMAND if switch is None else switch, "application": application,
                                "state_dir": str(tmp_path / "state"), **cfg}, prod_outputs())


@pytest.mark.parametrize("config, needle", [
    ({"switch": {"mode": "command", "command": "./repoint {target}"}}, "switch.command"),
    ({"switch": {"mode": "command", "command": "./repoint {old} {new} {host}"}}, "unknown placeholder(s) {host}"),
    ({"switch": {"mode": "carrier-pigeon"}}, "not route53 or command"),
    ({"switch": {"mode": "route53", "ttl_wait": "no"}}, "switch.ttl_wait must be true or false"),
    ({"switch": ["route53"]}, "trackerdb.switch must be a mapping"),
    ({"application": _stop(timeout_s=float("inf"))}, "timeout_s"),
    ({"application": {"health": ["htps://app/health"]}}, "application.health[0]"),
    ({"application": {"stop": {"name": "x"}}}, "trackerdb.application.stop must be a list"),
    ({"notify": {"webhook_secret_name": 7}}, "notify.webhook_secret_name must be text"),
    ({"notify": {"webhook_secret": "hook"}}, "trackerdb.notify has unknown key(s) webhook_secret"),
    ({"notify": {"ca_file": ["a.pem"]}}, "notify.ca_file must be text"),
])
def test_bad_window_config_is_refused_when_the_settings_load(tmp_path, config, needle):
    """Refused when read, by every task (one line and a hint), never found in a phase with the source frozen."""
    with pytest.raises(ConfigError) as e:
        _settings(tmp_path, **config)
    assert needle in e.value.message and e.value.hint and "\n" not in e.value.one_line()


def test_good_window_config_is_typed_once(tmp_path):
    s = _settings(tmp_path, switch={"mode": "route53", "zone_id": "Z1", "record_name": "db.x", "ttl_wait": False},
                  application={"stop": [{"name": "app", "run": "true"}]},
                  notify={"webhook_secret_name": "hook", "ca_file": "/etc/ca.pem"})
    assert s.switch == wc.SwitchConfig(mode="route53", zone_id="Z1", record_name="db.x", ttl_wait=False)
    assert s.application.stop[0].name == "app" and s.application.stop[0].timeout_s == 600
    assert s.notify == wc.NotifyConfig("hook", "/etc/ca.pem")
    empty = _settings(tmp_path, switch={})
    assert empty.switch == wc.SwitchConfig() and empty.application.empty and empty.notify == wc.NotifyConfig()
    # a copy with a config mapping is parsed and checked the same way
    assert s.with_(switch=COMMAND).switch.command == COMMAND["command"]
    with pytest.raises(ConfigError, match="not route53 or command"):
        s.with_(switch={"mode": "dns"})


@pytest.mark.parametrize("switch, needle", [
    ({"mode": "route53"}, "zone_id or record_name"),          # what only the switch needs: when it is made
    ({"mode": "route53", "zone_id": "Z1"}, "zone_id or record_name"),
])
def test_bad_config_refuses_the_cutover_before_any_phase(tmp_path, monkeypatch, switch, needle):
    settings = _settings(tmp_path, switch=switch)
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, s: None)
    calls = []
    funcs = {p: (lambda ctx, resume, p=p: calls.append(p)) for p in ph.PHASES}
    for dry_run in (True, False):  # the dry run says so too, with the same one line and a non-zero exit
        with pytest.raises(ConfigError) as e:
            ops.run_cutover(settings, tmp_path / "d", journal_path=tmp_path / "j.jsonl", funcs=funcs, dry_run=dry_run)
        assert needle in e.value.message and e.value.hint and "\n" not in e.value.one_line()
    assert calls == [] and not (tmp_path / "j.jsonl").exists()


# ---- owner_map: its roles before pg_restore -----------------------------------------------------

MAP = pv.parse_owner_map([{"from": "postgres", "to": "tracker_app", "schemas": ["reporting"]}])
FACTS = {"roles": [{"name": "tracker_reporting", "login": False, "superuser": False}]}


@pytest.mark.parametrize("mapping, target_roles, owner_role, missing", [
    ((), [], "tracker", []),
    (MAP, ["postgres", "tracker_app"], "tracker", []),                  # on the target
    (MAP, ["postgres"], "tracker_app", []),                             # the owner role: the restore creates it
    (pv.parse_owner_map([{"from": "postgres", "to": "tracker_reporting"}]), ["postgres"], "tracker", []),  # from the dump
    (MAP, ["postgres"], "tracker", ["tracker_app"]),
    (pv.parse_owner_map([{"from": "postgres", "to": "nobody"}, {"from": "x", "to": "ghost"}]), [], "tracker",
     ["nobody", "ghost"]),
])
def test_owner_map_role_problems(mapping, target_roles, owner_role, missing):
    problems = pv.owner_map_role_problems(mapping, target_roles, pv.roles_the_restore_creates(FACTS, owner_role))
    assert len(problems) == len(missing)
    for line, role in zip(problems, missing):
        assert f"role {role!r} does not exist on the target" in line and "\n" not in line


def test_check_owner_map_roles_is_one_line_naming_the_role_with_a_hint():
    with pytest.raises(PreflightError) as e:
        pv.check_owner_map_roles(MAP, ["postgres"], FACTS, "tracker")
    assert "'tracker_app'" in e.value.message and "nothing was changed" in e.value.hint
    assert "\n" not in e.value.one_line()


class FakeRemote:
    """Records every command: a refused restore must not have run one (no tuning cleared, no upload,
    no pg_restore, no CREATE ROLE)."""

    name = "target"

    def __init__(self):
        self.ran = []

    def run(self, *a, **kw):
        self.ran.append(a)
        raise AssertionError(f"a command ran on the target: {a}")

    feed_stdin = stream_stdout = append_file = write_file = run


class FakePsql:
    def __init__(self, tf):
        self.tf, self.sql = tf, []

    def json(self, sql, *a, **kw):
        self.sql.append(sql)
        return self.tf

    def run(self, sql, *a, **kw):
        self.sql.append(sql)
        raise AssertionError(f"SQL ran on the target: {sql[:80]}")


def test_restore_refuses_a_missing_owner_map_role_before_anything_runs(tmp_path, monkeypatch):
    from tests.unit.test_migrate_restore import manifest, target
    from trackerdb.migrate import restore as rs

    mp = tmp_path / "tracker.manifest.json"
    mp.write_text(json.dumps(manifest()))
    remote, psql = FakeRemote(), FakePsql(target())
    monkeypatch.setattr(rs, "target_cluster", lambda t, s: psql)
    session = SimpleNamespace(remote=lambda which: remote)
    s = SimpleNamespace(database="tracker", target=SimpleNamespace(name="target"), pg_bin="/usr/lib/postgresql/16/bin",
                        owner_map=MAP, owner_role="tracker", postgres_major=16, data_mount="/var/lib/postgresql",
                        pg_port=5432)
    dump = rs.DumpOnTarget(str(tmp_path / "tracker.dump"))
    for dry_run in (True, False):
        with pytest.raises(PreflightError) as e:
            rs.restore(s, dump, str(mp), rs.RestoreOptions(replace=True, dry_run=dry_run), session=session)
        assert "role 'tracker_app' does not exist on the target" in e.value.message
    assert remote.ran == [] and len(psql.sql) == 2  # only the read-only facts query, once per run
    # with the role on the target the same restore gets past this check (and on to the host, stubbed here)
    psql.tf = dict(target(), roles=["postgres", "tracker_app"])
    with pytest.raises(AssertionError, match="a command ran on the target"):
        rs.restore(s, dump, str(mp), rs.RestoreOptions(replace=True), session=session)


def test_cutover_preflight_names_a_missing_owner_map_role(monkeypatch):
    from trackerdb.migrate import manifest as mf
    from trackerdb.migrate import restore as rs
    from trackerdb.migrate import restore_job as rj

    monkeypatch.setattr(mf, "collect_facts", lambda psql, db: {**FACTS, "database": {"size_bytes": 1}, "tables": []})
    monkeypatch.setattr(rj, "clear_stale_tuning", lambda *a: SimpleNamespace(detail="none"))
    monkeypatch.setattr(rs, "preflight_from_source", lambda *a, **kw: {"problems": []})
    asked = []

    class Session:
        def psql(self, which):
            return SimpleNamespace(json=lambda sql: asked.append((which, sql)) or ["postgres", "tracker"])

        def remote(self, which):
            return None

    def ctx(mapping):
        s = SimpleNamespace(database="tracker", postgres_major=16, owner_map=mapping, owner_role="tracker")
        return SimpleNamespace(settings=s, session=Session(), say=lambda m: None, remote=lambda w: None)

    pre = ph._restore_preflight(ctx(MAP))
    assert pre["problems"] == ["owner_map entry postgres -> tracker_app in schema(s) reporting: role 'tracker_app' "
                               "does not exist on the target (create it there, or fix owner_map)"]
    assert ("target", pv.TARGET_ROLES_SQL) in asked
    asked.clear()
    assert ph._restore_preflight(ctx(()))["problems"] == [] and asked == []  # no mapping: no extra query


# ---- sslmode=require is said ---------------------------------------------------------------------

@pytest.mark.parametrize("ca, needle", [
    (None, "sslmode=require -- encrypted, but the server is NOT authenticated (no tls_ca_file)"),
    ("/etc/ssl/tracker-ca.pem", "sslmode=verify-full against tls_ca_file /etc/ssl/tracker-ca.pem"),
])
def test_dry_run_says_how_the_application_path_is_checked(ca, needle):
    assert needle in ops.app_path_tls_line(SimpleNamespace(tls_ca_file=ca))


def test_dry_run_details_carry_the_tls_line(monkeypatch):
    from trackerdb.cutover import lossless
    from trackerdb.migrate import direct

    monkeypatch.setattr(lossless, "dry_run_lines", lambda s: [])
    monkeypatch.setattr(direct, "dry_run_lines", lambda s: [])
    s = SimpleNamespace(database="tracker",
                        switch=wc.parse_switch({"mode": "command", "command": "x {new}", "old": "a"}), source=None, target=SimpleNamespace(address="b"), application=wc.AppHooks(),
                        notify=wc.NotifyConfig(), tls_ca_file=None, window_limits={})
    lines = ops.dry_run_details(s)
    assert any("NOT authenticated" in ln and "tls_ca_file" in ln for ln in lines)


def _result(tls_fact: str, verify_observed: str) -> dict:
    return {"journals": [{"label": "cutover", "entries": [
        {"phase": "freeze", "start": 1.0, "end": 2.0, "outcome": "ok", "facts": {}},
        {"phase": "switch", "start": 3.0, "end": 4.0, "outcome": "ok", "facts": {}},
        {"phase": "post", "start": 5.0, "end": 6.0, "outcome": "ok",
         "facts": {"app_path": {"endpoint": "10.0.0.2", "tls": tls_fact}}}]}],
        "verification": [{"name": "application login over TLS", "ok": True, "observed": verify_observed,
                          "expected": "TLS", "evidence": ""}]}


@pytest.mark.parametrize("tls_fact, observed, noted", [
    ("TLSv1.3 TLS_AES_256_GCM_SHA384 (sslmode=require)", "10.0.0.2:5432 (TLSv1.3, sslmode=require)", True),
    ("TLSv1.3 TLS_AES_256_GCM_SHA384 (sslmode=verify-full)", "10.0.0.2:5432 (TLSv1.3, sslmode=require)", True),
    ("TLSv1.3 TLS_AES_256_GCM_SHA384 (sslmode=verify-full)", "10.0.0.2:5432 (TLSv1.3, sslmode=verify-full)", False),
])
def test_report_says_the_server_was_not_authenticated(tls_fact, observed, noted):
    rep = R.build_report(_result(tls_fact, observed), generated_at=10.0)
    assert (rep["notes"] == [R.TLS_UNAUTHENTICATED]) is noted and (rep["notes"] == []) is not noted
    page = render_html(rep)
    assert ("certificate was not verified (no tls_ca_file)" in page) is noted


