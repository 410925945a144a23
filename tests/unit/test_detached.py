"""Detached jobs: the status parser, the wrapper and the restore job's script (run for real with sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from trackerdb import detached as dj
from trackerdb.migrate import restore as r
from trackerdb.migrate import restore_job as rj


@pytest.mark.parametrize("out,state,rc,pid,phase,started", [
    ("absent\n\n\n", "absent", None, None, "", None),
    ("starting\n\n\n", "starting", None, None, "", None),
    ("running 4242\ndata\n1700000000.250000000\n", "running", None, 4242, "data", 1700000000.25),
    ("done 0\ndone\n1700000000\n", "done", 0, None, "done", 1700000000.0),
    ("done 1\nschema\n\n", "done", 1, None, "schema", None),
    ("dead\ncatalog\n1700000000\n", "dead", None, None, "catalog", 1700000000.0),
    ("", "dead", None, None, "", None),
])
def test_parse_status(out, state, rc, pid, phase, started):
    st = dj.parse_status(out)
    assert (st.state, st.rc, st.pid, st.phase, st.started) == (state, rc, pid, phase, started)
    assert st.active == (state in ("starting", "running"))


def test_job_names_are_checked_and_start_line_prefers_systemd_else_setsid():
    with pytest.raises(ValueError):
        dj.job_dir("/var/lib/postgresql/trackerdb-jobs", "../etc")
    d = dj.job_dir("/var/lib/postgresql/trackerdb-jobs", "restore-0123456789abcdef")
    line = dj.start_line(d, "restore-0123456789abcdef", "postgres")
    assert "systemd-run" in line and "--uid postgres" in line and "/run/systemd/system" in line
    assert "setsid -f runuser -u postgres -- /bin/sh" in line and "< /dev/null > /dev/null 2>&1" in line


def _run_wrapper(tmp_path: Path, job: str) -> Path:
    d = tmp_path / "job"
    d.mkdir()
    (d / "job.sh").write_text(job)
    (d / "wrapper.sh").write_text(dj.wrapper_text(str(d)))
    subprocess.run(["/bin/sh", str(d / "wrapper.sh")], check=True, timeout=30)
    return d


def test_wrapper_records_pid_log_and_exit_status_and_reads_secrets_from_its_env_file(tmp_path):
    d = tmp_path / "job"
    d.mkdir()
    (d / "env").write_text("TOKEN='s3cr3t value'\n")
    (d / "job.sh").write_text('echo "out $TOKEN"; echo err >&2; exit 7\n')
    (d / "wrapper.sh").write_text(dj.wrapper_text(str(d)))
    subprocess.run(["/bin/sh", str(d / "wrapper.sh")], check=True, timeout=30)
    assert (d / "rc").read_text().strip() == "7"
    assert (d / "log").read_text() == "out s3cr3t value\nerr\n"
    assert (d / "pid").read_text().strip().isdigit() and float((d / "started").read_text()) > 1.7e9
    st = dj.parse_status(subprocess.run(["bash", "-c", dj.status_line(str(d))], capture_output=True, text=True).stdout)
    assert st.state == "done" and st.rc == 7
    # a directory without rc whose pid is not our wrapper is dead, not running
    (d / "rc").unlink()
    (d / "pid").write_text("1\n")
    st = dj.parse_status(subprocess.run(["bash", "-c", dj.status_line(str(d))], capture_output=True, text=True).stdout)
    assert st.state == "dead"


def test_restore_script_runs_every_phase_in_order_and_removes_the_tuning_file_when_it_ends(tmp_path):
    tuning = tmp_path / "90-trackerdb-restore.conf"
    tuning.write_text("autovacuum = 'off'\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "psql").write_text("#!/bin/sh\necho reload >> \"$(dirname \"$0\")/reloads\"\n")
    (bindir / "psql").chmod(0o755)
    phases = [("schema", ["sh", "-c", "echo schema >> order; echo 'pg_restore: warning: x' >&2; exit 1"]),
              ("catalog", ["sh", "-c", "echo catalog >> order"]),
              ("data", ["sh", "-c", f"test -e {tuning} && echo data-with-tuning >> order"])]
    d = _run_wrapper(tmp_path, rj.restore_script(phases, str(tuning), str(bindir), 5432))
    assert (d / "order").read_text().split() == ["schema", "catalog", "data-with-tuning"]
    assert [(d / rj.rc_file(p)).read_text().strip() for p, _ in phases] == ["1", "0", "0"]
    assert "warning: x" in (d / rj.stderr_file("schema")).read_text()
    assert not tuning.exists(), "the restore-time settings outlived the restore job"
    assert (bindir / "reloads").read_text().split() == ["reload"]
    assert (d / "phase").read_text().strip() == "done" and (d / "rc").read_text().strip() == "0"


def test_restore_script_removes_the_tuning_file_when_the_job_is_terminated(tmp_path):
    tuning = tmp_path / "90-trackerdb-restore.conf"
    tuning.write_text("x = 'y'\n")
    script = rj.restore_script([("data", ["sleep", "30"])], str(tuning), "/nonexistent", 5432)
    (tmp_path / "job.sh").write_text(script)
    import os
    import signal
    import time

    p = subprocess.Popen(["/bin/sh", str(tmp_path / "job.sh")], cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 15  # until the step runs (its trap is set by then), however loaded the machine
    while time.monotonic() < deadline and not any(
            b"sleep" in Path(f"/proc/{c}/cmdline").read_bytes()
            for c in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split() if Path(f"/proc/{c}").exists()):
        time.sleep(0.05)
    assert tuning.exists()
    os.killpg(p.pid, signal.SIGTERM)  # as `systemctl stop` or a kill of the job's process group would
    p.wait(timeout=10)
    assert not tuning.exists()


def test_stale_tuning_line_keeps_the_file_while_a_restore_job_runs(tmp_path):
    base = tmp_path / "jobs"
    tuning = tmp_path / "t.conf"
    tuning.write_text("x\n")
    line = rj.stale_tuning_line(str(base), str(tuning), "/nonexistent", 5432)
    job = base / "restore-0123456789abcdef"
    job.mkdir(parents=True)
    (job / "wrapper.sh").write_text("sleep 20\n")
    p = subprocess.Popen(["/bin/sh", str(job / "wrapper.sh")])
    try:
        (job / "pid").write_text(f"{p.pid}\n")
        out = subprocess.run(["bash", "-c", line], capture_output=True, text=True).stdout.strip()
        assert out == "running" and tuning.exists()
    finally:
        p.kill()
        p.wait()
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True).stdout.strip()
    assert out == "removed" and not tuning.exists()


def test_attachable_only_to_our_loading_staging_of_this_dump_with_a_live_or_ended_job():
    sha = "ab" * 32
    marker = {"sha256": sha, "state": "loading"}
    assert rj.attachable(marker, sha, dj.Status("running", pid=3))
    assert rj.attachable(marker, sha, dj.Status("done", rc=0))
    assert not rj.attachable(marker, sha, dj.Status("dead"))
    assert not rj.attachable(marker, sha, dj.Status("absent"))
    assert not rj.attachable({"sha256": sha, "state": "failed"}, sha, dj.Status("done", rc=1))
    assert not rj.attachable({"sha256": "cd" * 32, "state": "loading"}, sha, dj.Status("running", pid=3))
    assert not rj.attachable(None, sha, dj.Status("running", pid=3))


def test_space_check_counts_our_own_unfinished_staging_as_reclaimable():
    """The measured case: 1.2 GiB free, about 1.4 GiB needed, 353 MB held by the killed run's staging."""
    m = {"facts": {"database": {"size_bytes": 350 << 20}}, "dump": {"size_bytes": 60 << 20}}
    need = r.check_space(m, 100 << 30, 60 << 20, 5)
    avail = need - (200 << 20)
    with pytest.raises(r.PreflightError):
        r.check_space(m, avail, 60 << 20, 5)
    target = {"databases": [{"name": "tracker_restore_staging", "size": 353 << 20,
                             "comment": r.marker_comment("ab" * 32, "loading")}]}
    assert r.reclaimable_bytes(target, "tracker") == 353 << 20
    assert r.check_space(m, avail, 60 << 20, 5, reclaim=r.reclaimable_bytes(target, "tracker")) == need
    # somebody else's staging database is not ours to reclaim
    target["databases"][0]["comment"] = "not ours"
    assert r.reclaimable_bytes(target, "tracker") == 0


def test_dump_job_is_named_by_the_cutover_and_fetch_resumes_at_the_offset(tmp_path):
    from trackerdb.migrate import dump_job as dj2

    a = dj2.job_key("/x/journal.jsonl", "2026-12-01T09:00:00Z")
    assert a == dj2.job_key("/x/journal.jsonl", "2026-12-01T09:00:00Z")
    assert a != dj2.job_key("/y/journal.jsonl", "2026-12-01T09:00:00Z") and len(a) == 16
    f = tmp_path / "d.dump"
    f.write_bytes(b"0123456789")
    line = dj2.fetch_line(str(f), 4).replace("sudo -n -- ", "")
    assert subprocess.run(["bash", "-c", line], capture_output=True).stdout == b"456789"
    assert dj.jobs_base("/var/lib/postgresql/") == "/var/lib/postgresql/trackerdb-jobs"


def test_stale_tuning_line_reads_a_planted_pid_as_data_and_runs_as_postgres(tmp_path):
    """A job's ``pid`` is written by the job's user: words, globs or substitutions in it are never run,
    and the clean-up itself is postgres's (no sudo, no runuser): root never acts in postgres's directories."""
    base = tmp_path / "jobs"
    tuning = tmp_path / "t.conf"
    tuning.write_text("x\n")
    marker = tmp_path / "pwned"
    job = base / "restore-0123456789abcdef"
    job.mkdir(parents=True)
    (job / "wrapper.sh").write_text("sleep 20\n")
    line = rj.stale_tuning_line(str(base), str(tuning), "/nonexistent", 5432)
    assert "runuser" not in line and "sudo" not in line
    for planted in (f"$(touch {marker})", f"x[$(touch {marker})]", f"1 {job}/wrapper.sh", "* /etc/shadow"):
        (job / "pid").write_text(planted + "\n")
        tuning.write_text("x\n")
        out = subprocess.run(["bash", "-c", line], capture_output=True, text=True).stdout.strip()
        assert out == "removed" and not marker.exists(), planted


def test_clear_stale_tuning_runs_as_postgres_not_root():
    calls = []

    class R:
        def run(self, cmd, **kw):
            calls.append(kw)
            return SimpleNamespace(stdout="absent\n")

    s = SimpleNamespace(data_mount="/var/lib/postgresql", pg_bin="/usr/lib/postgresql/16/bin", pg_port=5432)
    rj.clear_stale_tuning(R(), s, "/etc/postgresql/16/main/conf.d/90-trackerdb-restore.conf")
    assert calls == [{"user": "postgres"}]


def test_a_job_that_ends_between_the_two_looks_reads_as_done_not_dead(tmp_path):
    """The wrapper writes rc and exits: a status line that found no rc, then no live pid, looks for rc again."""
    d = tmp_path / "job"
    d.mkdir()
    (d / "pid").write_text("999999999\n")  # no such process: the wrapper is gone
    (d / "rc").write_text("0\n")
    line = dj.status_line(str(d)).replace('elif [ -f "$d/rc" ]; then echo "done', 'elif false; then echo "done', 1)
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True).stdout
    assert dj.parse_status(out).state == "done" and dj.parse_status(out).rc == 0


def test_a_restore_job_without_exit_status_on_a_full_volume_says_the_volume_is_full():
    """Found by the lab's full-volume fault: the job's directory is on the data volume, so the job could not
    write its log or ``rc``, and the error said "killed?" with no output."""
    from types import SimpleNamespace

    t = SimpleNamespace(name="target")
    s = SimpleNamespace(database="tracker", data_mount="/var/lib/postgresql")
    assert rj.df_avail("    Avail\n4096\n") == 4096 and rj.df_avail("") is None and rj.df_avail("Avail\n-\n") is None
    full = rj.dead_job_error(t, s, "restore", "(no output)", 4096).one_line()
    assert "data volume /var/lib/postgresql is full (4096 bytes free" in full and "killed" not in full, full
    assert "'tracker' was not touched" in full and "\n" not in full
    killed = rj.dead_job_error(t, s, "restore", "pg_restore: processing item 12", 5 << 30).one_line()
    assert "ended without an exit status (killed?)" in killed and "processing item 12" in killed
    assert "killed?" in rj.dead_job_error(t, s, "restore", "x", None).one_line()  # free space unknown: as before
