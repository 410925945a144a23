"""Time limits in the window (issue 28, item 6): per-phase lock/statement limits on every psql session,
the one line when one is hit (phase, statement kind, limit, blocking sessions), the journal's record, and
the deadlines of streams and detached jobs (processes ended by pid)."""

import getpass
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import prod_outputs
from trackerdb import detached as dj
from trackerdb import limits, pids
from trackerdb.cutover import delta as dl
from trackerdb.migrate import delta_sql as dq
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover.journal import Journal
from trackerdb.errors import ConfigError, HostError
from trackerdb.migrate import content
from trackerdb.psql import PIN, Psql, PsqlError, pin_line
from trackerdb.remote import Result
from trackerdb.settings import Settings

BLOCKER = {"pid": 4242, "user": "ops", "app": "psql", "state": "idle in transaction", "query_start": "12:00:01",
           "query": "LOCK TABLE public.a IN ACCESS EXCLUSIVE MODE;", "modes": "AccessExclusiveLock"}


class Host:
    """Answers psql scripts in turn: ``answers`` is a list of (code, stdout, stderr)."""

    name = "target"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.secrets = []
        self.sent = []

    def run(self, cmd, **kw):
        self.sent.append(kw.get("stdin"))
        code, out, err = self.answers.pop(0)
        return Result(" ".join(cmd), code, out, err)


# ---- the limits and how they are set ---------------------------------------------------------------

def test_defaults_and_overrides_per_phase():
    assert limits.parse(None) == limits.DEFAULTS
    got = limits.parse({"delta": {"lock_timeout_s": 5}, "switch": {"statement_timeout_s": 60}})
    assert got["delta"] == (5, limits.DEFAULTS["delta"][1]) and got["switch"] == (limits.DEFAULTS["switch"][0], 60)
    assert all(lock <= 30 and stmt <= 1800 for p, (lock, stmt) in limits.DEFAULTS.items() if p != limits.ROLLBACK)
    assert limits.DEFAULTS[limits.ROLLBACK] == (10, 4 * 3600)


@pytest.mark.parametrize("raw, says", [
    ({"dump": {"lock_timeout_s": 5}}, "unknown phase 'dump'"),
    ({"delta": {"lock_timeout": 5}}, "is not {lock_timeout_s, statement_timeout_s}"),
    ({"delta": {"lock_timeout_s": 0}}, "window_limits.delta.lock_timeout_s 0 is not a whole number"),
    ({"delta": {"statement_timeout_s": "5s; DROP"}}, "statement_timeout_s '5s; DROP' is not a whole number"),
    ({"delta": {"lock_timeout_s": True}}, "is not a whole number"),
    ("5s", "is not a mapping"),
])
def test_a_bad_limit_is_one_line_from_the_settings(raw, says):
    with pytest.raises(ConfigError) as e:
        Settings.from_parts({"window_limits": raw}, prod_outputs())
    assert says in e.value.one_line() and "window_limits:" in e.value.hint


def test_sessions_carry_the_phase_limits_only_inside_a_phase():
    assert pin_line() == PIN
    with limits.phase(limits.Limits("freeze", 10, 1800)):
        line = pin_line()
        assert line == (PIN + " SET lock_timeout = '10s'; SET statement_timeout = '1800s'; "
                              "SET application_name = 'trackerdb-freeze';")
        with limits.phase(None):
            assert pin_line() == PIN
        assert "\n" not in line  # one line: psql's line numbers in errors stay right
        head, _ = dq.copy_in_script(["DELETE FROM ONLY public.a", "COPY public.a (x) FROM STDIN"])
        assert head.decode().splitlines()[0] == line  # the delta's receivers too
        digest = content.digest_script([], {}, {})
        assert digest.index("statement_timeout = 0") < digest.index("statement_timeout = '1800s'")  # set again after
    assert pin_line() == PIN
    with pytest.raises(ValueError):
        limits.set_sql(limits.Limits("anything; DROP", 1, 1))


@pytest.mark.parametrize("stmt, kind", [
    ("COPY public.a (x) FROM STDIN;", "COPY"),
    ("SET LOCAL session_replication_role = replica; DELETE FROM ONLY public.a;", "DELETE"),
    ("ALTER DATABASE tracker SET default_transaction_read_only = on;", "ALTER DATABASE"),
    ("CALL public.refresh_continuous_aggregate('x'::regclass, NULL, NULL);", "CALL"),
    ("", "statement"),
])
def test_the_statement_is_named_by_its_kind_without_its_arguments(stmt, kind):
    assert limits.statement_kind(stmt) == kind


# ---- a limit hit ----------------------------------------------------------------------------------

LOCK_ERR = "psql:<stdin>:2: ERROR:  canceling statement due to lock timeout\n"


def test_a_lock_timeout_names_the_phase_the_statement_the_limit_and_the_blocking_session():
    host = Host((3, "", LOCK_ERR), (0, json.dumps([BLOCKER]), ""))
    with limits.phase(limits.Limits("delta", 30, 1800)):
        with pytest.raises(limits.TimeLimitError) as e:
            Psql(host, 5432).run("DELETE FROM ONLY public.a;", "tracker")
    line = e.value.one_line()
    assert line.startswith("phase delta: a DELETE statement on target port 5432 (database tracker) hit lock_timeout 30s; ")
    assert "pid 4242 (user ops, application_name 'psql', idle in transaction, query started 12:00:01 UTC, " \
           "query 'LOCK TABLE public.a IN ACCESS EXCLUSIVE MODE;', holds AccessExclusiveLock)" in line
    assert "pg_terminate_backend" in line and "the phase resumes" in line and "\n" not in line
    assert e.value.limit["blockers"][0]["pid"] == 4242 and e.value.limit["limit"] == "lock_timeout"
    assert "pg_locks" in host.sent[1] and "lock_timeout = '2s'" in host.sent[1]  # the blockers, read bounded


def test_a_statement_timeout_says_so_and_how_to_raise_it_and_outside_a_phase_it_is_a_plain_error():
    err = "psql:<stdin>:2: ERROR:  canceling statement due to statement timeout\n"
    with limits.phase(limits.Limits("verify", 30, 1800)):
        with pytest.raises(limits.TimeLimitError) as e:
            Psql(Host((3, "", err), (0, "[]", "")), 5432).run("SELECT 1;", "tracker")
    assert "hit statement_timeout 1800s; no other session holds a lock" in e.value.one_line()
    assert "window_limits.verify.statement_timeout_s" in e.value.hint
    with pytest.raises(PsqlError) as plain:
        Psql(Host((3, "", err)), 5432).run("SELECT 1;", "tracker")
    assert not isinstance(plain.value, limits.TimeLimitError)


def test_a_delta_copy_cancelled_on_the_target_is_the_limit_line_not_a_copy_failure():
    header, _ = dq.copy_in_script(["SET LOCAL session_replication_role = replica", "DELETE FROM ONLY public.a",
                                   "COPY public.a (x) FROM STDIN"])
    tgt = Psql(Host((0, json.dumps([BLOCKER]), "")), 5432)
    with limits.phase(limits.Limits("delta", 30, 1800)):
        with pytest.raises(limits.TimeLimitError) as e:
            dl._limit_hit("tracker", (tgt, "psql:<stdin>:4: ERROR:  canceling statement due to lock timeout", header.decode()),
                          (None, "", "COPY"))
        dl._limit_hit("tracker", (tgt, "ERROR: something else", header.decode()))  # not a limit: the copy's own error
    assert "a DELETE statement" in e.value.one_line() and "pid 4242" in e.value.one_line()


def FakeSettings():
    """Real Settings (production stack outputs) with a switch command and one phase's limit changed."""
    return Settings.from_parts({"state_dir": "unused", "source": {"address": "10.0.0.1"},
                                "switch": {"mode": "command", "command": "true {old} {new}"},
                                "window_limits": {"switch": {"lock_timeout_s": 3}}},
                               prod_outputs(private_ip="10.0.0.2", app_secret_name="nope"))


def test_every_window_phase_runs_under_its_limits_and_a_hit_is_journaled_and_resumed(tmp_path, monkeypatch):
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, s: None)
    seen, hit = {}, {"left": 1}

    def fn_for(phase):
        def fn(ctx, resume):
            seen[phase] = limits.active()
            if phase == ph.VERIFY and hit["left"]:
                hit["left"] -= 1
                raise limits.error(limits.active(), limits.LOCK, "target", "tracker", "SELECT 1", [BLOCKER])
            return {"old": "a", "new": "b"} if phase == ph.SWITCH else {}
        return fn

    j = tmp_path / "j.jsonl"
    funcs = {p: fn_for(p) for p in ph.PHASES}
    with pytest.raises(limits.TimeLimitError):
        ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=funcs)
    st = Journal(j).state(ph.VERIFY)
    assert st.status == "failed" and "hit lock_timeout 30s" in st.error and "pid 4242" in st.error
    assert Journal(j).state(ph.VERIFY).facts["limit_hit"]["blockers"][0]["pid"] == 4242
    out = ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=funcs)
    assert out["complete"] and out["phases"][ph.VERIFY]["attempts"] == 2
    assert {p: (v.lock_timeout_s, v.statement_timeout_s) for p, v in seen.items() if v} == {
        ph.FREEZE: (10, 1800), ph.DELTA: (30, 1800), ph.VERIFY: (30, 1800), ph.SWITCH: (3, 300)}
    assert all(seen[p] is None for p in (ph.PREFLIGHT, ph.PREPARE, ph.RESTORE, ph.POST, ph.FINAL_DUMP))
    assert limits.active() is None


# ---- deadlines: streams and detached jobs ----------------------------------------------------------

def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _children(pid: int, n: int, timeout: float = 15.0) -> list[int]:
    """The process's children once ``n`` of them run (a loaded machine may take a while to fork them)."""
    deadline = time.monotonic() + timeout
    while True:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if len(kids) >= n or time.monotonic() > deadline:
            return kids
        time.sleep(0.05)


def _all_gone(pids_: list[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not all(_gone(c) for c in pids_):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_stream_command_reports_its_pid_and_is_ended_with_what_it_started_by_that_pid():
    p = subprocess.Popen(["sh", "-c", pids.reporting("sleep 300; echo never")], stderr=subprocess.PIPE)
    first = p.stderr.readline()
    pid, rest = pids.reported(first + b"other\n")
    assert pid == p.pid and rest == b"other\n"
    children = _children(pid, 1)
    assert children, "bash runs the compound line's sleep as its child"
    subprocess.run(pids.end_line(pid), check=True)
    p.wait(timeout=10)
    assert _all_gone(children)


def test_an_overdue_stream_ends_both_commands_by_pid_and_names_the_stream():
    class Chan:
        def recv_stderr_ready(self):
            return False

        def exit_status_ready(self):
            return False

    class H:
        def __init__(self, name):
            self.name, self.ran = name, []

        def run(self, cmd, **kw):
            self.ran.append((cmd, kw))

    src, dst = H("source"), H("target")
    pids.check(pids.deadline(60), (Chan(), bytearray(b"trackerdb-pid 11\n"), src), (Chan(), bytearray(), dst), 5)  # in time
    pids.check(None, (Chan(), bytearray(), src), (Chan(), bytearray(), dst), 5)  # no deadline
    with pytest.raises(HostError) as e:
        pids.check((2, time.monotonic() - 1), (Chan(), bytearray(b"trackerdb-pid 11\n"), src),
                   (Chan(), bytearray(b"x\ntrackerdb-pid 22\n"), dst), 5)
    assert e.value.one_line().startswith("source -> target: stream still running after its deadline of 2s (5 bytes moved): "
                                         "ended pid(s) 11, 22")
    assert src.ran[0][0] == pids.end_line(11) and src.ran[0][1]["sudo"] and dst.ran[0][0] == pids.end_line(22)
    assert limits.STREAM_DEADLINE_S == 3600


def test_a_job_past_its_deadline_is_stopped_and_named(tmp_path):
    class R:
        name = "target"

        def __init__(self):
            self.ran = []

        def run(self, cmd, **kw):
            self.ran.append((cmd, kw))
            return Result("", 0, "running 4321\nrestore data\n\n\n", "")

    r = R()
    job = dj.Job(r, "/var/lib/postgresql/trackerdb-jobs", "restore-abc")
    with pytest.raises(HostError) as e:
        job.wait(poll_s=0, timeout_s=0)
    assert "job restore-abc (phase restore data, pid 4321) still running after its deadline of 0s: its processes were ended" \
        in e.value.one_line()
    stop = [c for c, kw in r.ran if kw.get("sudo")]
    assert stop == [dj.stop_line(job.dir, "restore-abc", 4321, "postgres")]
    assert limits.JOB_DEADLINE_S == 3 * 3600


def test_stop_line_ends_the_wrapper_and_its_children_and_leaves_a_reused_pid_alone(tmp_path):
    d = tmp_path / "job"
    d.mkdir()
    (d / "wrapper.sh").write_text("sleep 300 &\nsleep 300\n")
    me = getpass.getuser()
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)  # not the wrapper: never ended
    p = subprocess.Popen(["/bin/sh", str(d / "wrapper.sh")], start_new_session=True)
    try:
        children = _children(p.pid, 2)
        subprocess.run(["sh", "-c", dj.stop_line(str(d), "x", other.pid, me)], check=True)
        assert not _gone(other.pid)
        subprocess.run(["sh", "-c", dj.stop_line(str(d), "x", p.pid, me)], check=True)
        p.wait(timeout=10)
        assert len(children) == 2 and _all_gone(children)
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("stderr, kind", [
    # psql on stdin names no line; PostgreSQL quotes the statement's line (measured in the lab)
    ("ERROR:  canceling statement due to lock timeout\nLINE 2:  (SELECT count(*) FROM tracker.devices));\n", "SELECT"),
    ("psql:<stdin>:5: ERROR:  canceling statement due to lock timeout\n", "DELETE"),
    ("ERROR:  canceling statement due to lock timeout\n", "SELECT"),
])
def test_the_blocked_statement_is_found_in_a_script_that_starts_with_settings(stderr, kind):
    from trackerdb.psql import blocked_statement

    sent = (pin_line() + "\nSET LOCAL x = 1;\nSELECT json_build_object('n',\n (SELECT count(*) FROM tracker.devices));\n"
            "DELETE FROM ONLY tracker.a;\n")
    assert limits.statement_kind(blocked_statement(sent, stderr)) == kind


def test_the_dry_run_says_the_limits_each_phase_will_run_with():
    line = limits.plan_line(FakeSettings())
    assert "freeze 10s/1800s" in line and "switch 3s/300s" in line and "streams 3600s, detached jobs 10800s" in line
    from trackerdb.cutover import ops as o

    assert line in o.dry_run_details(FakeSettings())
