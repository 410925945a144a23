"""Issue 23 (items 1-2 and the direct transfer's trust): root never evaluates, reads, writes or re-owns
what a less trusted user controls. The shell and Python that run on hosts run here for real (these
tests run as root, like the lab: the refusals are checked on real files, links and owners)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from trackerdb import detached as dj
from trackerdb import safe_paths as sp
from trackerdb.errors import HostError
from trackerdb.migrate import direct
from trackerdb.remote import LocalHost, Result

ROOT = os.geteuid() == 0
as_root = pytest.mark.skipif(not ROOT, reason="owners and refusals need root (as on the hosts)")
NOBODY = "nobody"


def bash(line: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=cwd, timeout=30)


# ---- item 1: the status line evaluates nothing the job's user wrote ---------------------------

def test_a_planted_launched_file_is_never_evaluated_by_the_status_line(tmp_path):
    d = tmp_path / "job"
    d.mkdir()
    marker = tmp_path / "pwned"
    (d / "launched").write_text(f"x[$(touch {marker})]\n")  # what a job's user could write
    out = bash(dj.status_line(str(d))).stdout
    assert not marker.exists(), "the status line ran a command written into launched"
    assert dj.parse_status(out).state == "dead"  # not digits: never "starting"


@pytest.mark.parametrize("launched,now,state", [
    ("1700000000", "1700000010", "starting"),
    ("1700000000", "1700000031", "dead"),       # past the grace: it never started
    ("", "1700000000", "dead"),
    ("x[$(id)]", "1700000000", "dead"),
    ("1700000000 ", "1700000001", "starting"),   # a trailing blank is still digits
    ("17e8", "1700000000", "dead"),
    ("-1", "1700000000", "dead"),
    ("1700000000", "", "dead"),
])
def test_whether_a_job_is_still_starting_is_decided_here_from_digits_only(launched, now, state):
    assert dj.parse_status(f"nopid\n\n\n{launched}\n{now}\n").state == state


def test_status_output_lines_are_positional(tmp_path):
    d = tmp_path / "job"
    d.mkdir()
    (d / "phase").write_text("data\nsecond line ignored\n")
    (d / "started").write_text("1700000000.5\n")
    (d / "launched").write_text("1700000000\n")
    (d / "rc").write_text("0\n")
    st = dj.parse_status(bash(dj.status_line(str(d))).stdout)
    assert (st.state, st.rc, st.phase, st.started) == ("done", 0, "data", 1700000000.5)
    st = dj.parse_status(bash(dj.status_line(str(tmp_path / "none"))).stdout)
    assert st.state == "absent"


class Recorder:
    """A host that records how each command would run (as root, or as which user)."""

    name = "target"

    def __init__(self):
        self.calls: list[tuple[str, str]] = []  # (who, command)
        self.writes: list[tuple[str, str | None]] = []
        self.reads: list[tuple[str, str | None]] = []

    def run(self, cmd, *, sudo=False, user=None, stdin=None, check=True, timeout=None, cwd=None):
        line = cmd if isinstance(cmd, str) else " ".join(cmd)
        who = user or ("root" if sudo else "ssh-user")
        self.calls.append((who, line))
        if "opendir(" in line:
            return Result(line, 0, "ok\n", "")
        if "echo systemd" in line:
            return Result(line, 0, "setsid\n", "")
        if line.startswith("d="):
            return Result(line, 0, "absent\n\n\n\n1700000000\n", "")
        return Result(line, 0, "", "")

    def read_file(self, path, *, user=None):
        self.reads.append((path, user))
        return None

    def write_file(self, path, content, *, mode="0644", owner="root", group=None, user=None):
        self.writes.append((path, user))
        return True


def test_a_job_is_watched_read_prepared_and_written_as_its_user_and_root_only_makes_the_base_and_launches():
    h = Recorder()
    job = dj.Job(h, "/var/lib/postgresql/trackerdb-jobs", "dump-0123456789abcdef")
    job.start("echo hi\n", env={"TOKEN": "x"}, files={"dump.bash": "true\n"})
    job.read("log")
    root = [c for who, c in h.calls if who == "root"]
    assert len(root) == 2, root
    assert "opendir(" in root[0] and root[0].endswith("/var/lib/postgresql/trackerdb-jobs 0700 postgres postgres")
    assert root[1] == dj.start_line(job.dir, job.name, "postgres")
    assert "launched" not in root[1] and "chown" not in root[1] and "$((" not in root[1]
    assert all(who == "postgres" for who, c in h.calls if c.startswith("d="))  # every status as the user
    assert ("postgres", dj.prepare_line(job.dir)) in h.calls and ("postgres", dj.launched_line(job.dir)) in h.calls
    assert h.writes and all(u == "postgres" for _, u in h.writes)
    assert h.reads == [(f"{job.dir}/log", "postgres")]


# ---- item 2: root makes directories without following a planted link --------------------------

def ensure(path, mode="0700", owner="root", group=None):
    return subprocess.run(sp.ensure_dir_argv(str(path), mode, owner, group or owner), capture_output=True, text=True)


def fingerprint(p: Path):
    st = os.stat(p)
    return st.st_uid, st.st_gid, st.st_mode, sorted(os.listdir(p)) if p.is_dir() else p.read_bytes()


def user_dir(tmp_path: Path, name: str = "home") -> Path:
    """A directory a non-root user owns (as postgres owns its home)."""
    d = tmp_path / name
    d.mkdir()
    os.chown(d, pwd.getpwnam(NOBODY).pw_uid, -1)
    return d


@as_root
def test_install_d_follows_a_planted_link_and_ensure_dir_refuses_it(tmp_path):
    """The old call re-owned the link's target; the new one refuses and changes nothing."""
    precious = tmp_path / "sbin"
    precious.mkdir(mode=0o755)
    home = user_dir(tmp_path)
    (home / "trackerdb-jobs").symlink_to(precious)
    before = fingerprint(precious)
    r = ensure(home / "trackerdb-jobs", "0700", NOBODY)
    assert r.returncode == sp.UNSAFE_EXIT and "is a symlink" in r.stderr, r.stderr
    assert fingerprint(precious) == before
    # what `install -d -o … -m …` (the old code) does to the same link
    subprocess.run(["install", "-d", "-m", "0700", "-o", NOBODY, str(home / "trackerdb-jobs")], check=True)
    assert fingerprint(precious) != before


@as_root
def test_ensure_dir_makes_owns_and_is_idempotent(tmp_path):
    home = user_dir(tmp_path)
    d = home / "a" / "b"
    r = ensure(d, "2750", NOBODY, "root")
    assert r.returncode == 0 and r.stdout.strip() == "changed"
    st = os.stat(d)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (pwd.getpwnam(NOBODY).pw_uid, 0, 0o2750)
    assert ensure(d, "2750", NOBODY, "root").stdout.strip() == "ok"
    (home / "file").write_text("x")
    r = ensure(home / "file")
    assert r.returncode == sp.UNSAFE_EXIT and "not a directory" in r.stderr


@as_root
def test_ensure_dir_refuses_a_link_anywhere_on_the_path_but_follows_an_administrators(tmp_path):
    home = user_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "link").symlink_to(elsewhere)
    assert ensure(home / "link" / "sub").returncode == sp.UNSAFE_EXIT
    assert not (elsewhere / "sub").exists()
    # a link in a directory only root can write is the administrator's: followed
    admin = tmp_path / "admin"
    admin.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)  # pytest's tmp dir: root-owned, not writable by others
    (admin / "data").symlink_to(elsewhere)
    r = ensure(admin / "data" / "made", "0755", "root")
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "made").is_dir()


def test_ensure_dir_executor_turns_a_refusal_into_one_line_with_a_hint():
    class H:
        name = "source"

        def run(self, cmd, **kw):
            return Result("x", 4, "", "Traceback\ntrackerdb-unsafe-path: /var/lib/postgresql/trackerdb-jobs is a symlink\n")

    with pytest.raises(sp.UnsafePathError) as e:
        sp.ensure_dir(H(), "/var/lib/postgresql/trackerdb-jobs", "0700", "postgres")
    line = e.value.one_line()
    assert "refusing /var/lib/postgresql/trackerdb-jobs" in line and "is a symlink" in line and "hint:" in line
    assert isinstance(e.value, HostError) and "\n" not in line


# ---- item 2: the pulled dump is moved and re-owned through one descriptor -----------------------

def adopt(src, dst, sha=""):
    return subprocess.run(sp.adopt_file_argv(str(src), str(dst), "0640", NOBODY, "root", sha), capture_output=True, text=True)


@as_root
def test_adopt_moves_owns_and_hashes_the_same_file(tmp_path):
    import hashlib

    jobs, up = user_dir(tmp_path, "jobs"), tmp_path / "up"
    up.mkdir()
    (jobs / "d.partial").write_bytes(b"dump bytes")
    sha = hashlib.sha256(b"dump bytes").hexdigest()
    r = adopt(jobs / "d.partial", up / "d.dump", sha)
    assert r.returncode == 0 and r.stdout.split() == ["10", sha]
    st = os.stat(up / "d.dump")
    assert (st.st_uid, st.st_mode & 0o777) == (pwd.getpwnam(NOBODY).pw_uid, 0o640) and not (jobs / "d.partial").exists()
    (jobs / "e.partial").write_bytes(b"other")
    r = adopt(jobs / "e.partial", up / "e.dump", sha)
    assert r.returncode == sp.MISMATCH_EXIT and not (up / "e.dump").exists()


@as_root
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_adopt_refuses_a_swapped_partial_and_touches_nothing_it_points_at(tmp_path, kind):
    """The old `mv && chown && chmod` after the checksum re-owned a link's target."""
    jobs, up = user_dir(tmp_path, "jobs"), tmp_path / "up"
    up.mkdir()
    secret = tmp_path / "shadow"
    secret.write_text("root:$y$hash\n")
    os.chmod(secret, 0o600)
    before = fingerprint(secret)
    if kind == "symlink":
        (jobs / "d.partial").symlink_to(secret)
    else:
        os.link(secret, jobs / "d.partial")
    r = adopt(jobs / "d.partial", up / "d.dump")
    assert r.returncode == sp.UNSAFE_EXIT, (r.stdout, r.stderr)
    assert fingerprint(secret) == before and not (up / "d.dump").exists()


# ---- as-user reads and writes -------------------------------------------------------------------

def test_read_and_write_as_a_user_never_run_as_root(monkeypatch):
    lines = []

    def run(self, cmd, *, sudo=False, user=None, stdin=None, check=True, timeout=None, cwd=None, echo=False):
        from trackerdb.remote import wrap

        lines.append(wrap(cmd, sudo=sudo, user=user))
        return Result(lines[-1], 3 if len(lines) == 1 else 0, "", "")

    monkeypatch.setattr(LocalHost, "run", run)
    h = LocalHost()
    assert h.read_file("/var/lib/postgresql/.ssh/known_hosts", user="postgres") is None
    assert h.write_file("/var/lib/postgresql/.ssh/known_hosts", "x\n", owner="postgres", user="postgres")
    assert lines and all(ln.startswith("sudo -n -H -u postgres -- ") for ln in lines), lines
    lines.clear()
    h.read_file("/etc/pgbackrest/pgbackrest.conf")  # root's own file: unchanged, as root
    assert lines[0].startswith("sudo -n -- ")


def test_the_dump_is_fetched_as_the_jobs_user():
    from trackerdb.migrate.dump_job import fetch_line

    assert fetch_line("/var/lib/postgresql/trackerdb-jobs/dump-x/tracker.dump", 5, user="postgres").startswith(
        "sudo -n -H -u postgres -- bash -c 'tail -c +6 ")


# ---- the direct transfer's trust: installed as postgres, removed by cutover-finish ------------

LINE = f'restrict,from="10.0.0.5",command="{direct.READER_PATH}" ssh-ed25519 AAAAKEY {direct.MARK}'


@pytest.mark.parametrize("current,want,changed", [
    (None, "", False),
    ("", "", False),
    ("ssh-ed25519 AAAAOTHER admin\n", "ssh-ed25519 AAAAOTHER admin\n", False),
    (f"ssh-ed25519 AAAAOTHER admin\n{LINE}\n", "ssh-ed25519 AAAAOTHER admin\n", True),
    (f"{LINE}\n# keep me\nssh-rsa AAAAB a@b", "# keep me\nssh-rsa AAAAB a@b", True),
    # the mark without our forced command is not ours to remove
    (f"ssh-ed25519 AAAAOTHER {direct.MARK}\n", f"ssh-ed25519 AAAAOTHER {direct.MARK}\n", False),
])
def test_authorized_keys_without_ours_keeps_every_other_line_exactly(current, want, changed):
    assert direct.authorized_keys_without_ours(current) == (want, changed)


def test_reader_and_key_removal_lines(tmp_path):
    files = [tmp_path / "k", tmp_path / "k.pub"]
    files[0].write_text("x")
    line = direct.remove_files_line([str(f) for f in files])
    assert bash(line).stdout.strip() == "removed" and not files[0].exists()
    assert bash(line).stdout.strip() == "absent"
    assert "rm -f -- /usr/local/lib/trackerdb/dump-read" in direct.remove_reader_line()


class TrustHost(Recorder):
    def __init__(self, name, files):
        super().__init__()
        self.name, self.files = name, files
        self.spec = type("S", (), {"address": "10.0.0.5"})()

    def run(self, cmd, *, sudo=False, user=None, stdin=None, check=True, timeout=None, cwd=None):
        line = cmd if isinstance(cmd, str) else " ".join(cmd)
        if line.startswith("sh -c getent"):
            return Result(line, 0, "/var/lib/postgresql\n", "")
        if line.startswith("cat ") and line.endswith(".pub"):
            self.calls.append((user or ("root" if sudo else "ssh-user"), line))
            return Result(line, 0, "ssh-ed25519 AAAAKEY trackerdb-transfer\n", "")
        if "ssh_host_" in line:
            return Result(line, 0, "ssh-ed25519 AAAAHOST root@source\n", "")
        if "rm -f" in line:
            self.calls.append((user or ("root" if sudo else "ssh-user"), line))
            return Result(line, 0, "removed\n", "")
        return super().run(cmd, sudo=sudo, user=user, stdin=stdin, check=check, timeout=timeout, cwd=cwd)

    def exists(self, path):
        return False

    def read_file(self, path, *, user=None):
        self.reads.append((path, user))
        return self.files.get(path)

    def write_file(self, path, content, *, mode="0644", owner="root", group=None, user=None):
        self.writes.append((path, user))
        self.files[path] = content
        return True


def test_trust_is_installed_and_removed_as_postgres_in_postgres_home():
    from types import SimpleNamespace

    ak = "/var/lib/postgresql/.ssh/authorized_keys"
    src = TrustHost("source", {ak: "ssh-ed25519 AAAAOTHER admin\n"})
    tgt = TrustHost("target", {})
    s = SimpleNamespace(transfer_source_address="10.0.0.4", database="tracker", outputs={"private_ip": "10.0.0.5"})
    direct.ensure_trust(s, src, tgt, "/var/lib/postgresql/trackerdb-jobs")
    assert (ak, "postgres") in src.reads and (ak, "postgres") in src.writes
    assert src.files[ak].startswith("ssh-ed25519 AAAAOTHER admin\n") and direct.MARK in src.files[ak]
    assert all(u == "postgres" for p, u in tgt.writes) and all(u == "postgres" for p, u in src.writes if p == ak)
    assert not any(who == "root" and "install -d" in c for h in (src, tgt) for who, c in h.calls)
    removed = direct.remove_trust(s, src, tgt)
    assert src.files[ak] == "ssh-ed25519 AAAAOTHER admin\n"
    assert any(direct.READER_PATH in c and who == "root" for who, c in src.calls)
    assert any("trackerdb_transfer" in c and who == "postgres" for who, c in tgt.calls)
    assert len(removed) == 3
    tgt.run = lambda cmd, **kw: Result("", 0, "absent\n", "") if "rm -f" in str(cmd) else TrustHost.run(tgt, cmd, **kw)
    src.run = lambda cmd, **kw: Result("", 0, "absent\n", "") if "rm -f" in str(cmd) else TrustHost.run(src, cmd, **kw)
    assert direct.remove_trust(s, src, tgt) == []  # idempotent


class _NullRemote:
    """A Remote that connects nowhere: cutover-finish's host work is replaced in these tests."""

    def __init__(self, spec, secrets=()):
        self.spec = spec

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass

    def close(self):
        pass


def test_cutover_finish_removes_the_trust_as_a_journaled_idempotent_step(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from trackerdb.cutover import capture as cp
    from trackerdb.cutover import lossless
    from trackerdb.cutover.journal import Journal
    from trackerdb import remote, session

    calls = []
    monkeypatch.setattr(remote, "Remote", _NullRemote)
    monkeypatch.setattr(session, "Remote", _NullRemote)
    monkeypatch.setattr(cp, "drop_slot", lambda *a: True)
    monkeypatch.setattr(lossless.hold, "release", lambda *a: {})
    monkeypatch.setattr(lossless, "_drop_origin", lambda s, slot: "none")
    monkeypatch.setattr(direct, "remove_trust", lambda s, src, tgt: calls.append((src, tgt)) or ["reader", "line"])
    j = Journal(tmp_path / "journal.jsonl")
    j.note(cp.JOURNAL_PHASE, {"slot": "trackerdb_rollback_1", "lsn": "0/1"})
    s = SimpleNamespace(target="T", source="S", source_decommissioned=False, database="tracker", pg_port=5432, source_port=5432,
                        pg_bin="/usr/lib/postgresql/16/bin", require_source=lambda: "S")
    res = lossless.finish(s, j.path)
    assert res["transfer_trust"]["removed"] == ["reader", "line"] and res["transfer_trust"]["changed"]
    assert len(calls) == 1 and calls[0][0] is not None
    st = Journal(j.path).states()[lossless.TRUST_PHASE]
    assert st.done and st.facts["removed"] == ["reader", "line"]
    again = lossless.finish(s, j.path)  # finished earlier: the step is not repeated
    assert len(calls) == 1 and again["transfer_trust"]["changed"] is False


def test_a_failed_trust_removal_is_journaled_and_retried(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from trackerdb.cutover import lossless
    from trackerdb.cutover.journal import Journal
    from trackerdb import remote, session

    monkeypatch.setattr(remote, "Remote", _NullRemote)
    monkeypatch.setattr(session, "Remote", _NullRemote)

    def unreachable(s, src, tgt):
        raise HostError("source (10.0.0.4:22) is unreachable: TimeoutError", hint="check")

    monkeypatch.setattr(direct, "remove_trust", unreachable)
    j = Journal(tmp_path / "journal.jsonl")
    s = SimpleNamespace(target="T", source="S", source_decommissioned=False, require_source=lambda: "S")
    with pytest.raises(HostError) as e:
        lossless.end_transfer_trust(s, j, lambda m: None)
    assert "trust was not removed" in e.value.one_line() and "re-run" in e.value.one_line()
    assert Journal(j.path).states()[lossless.TRUST_PHASE].status == "failed"
    monkeypatch.setattr(direct, "remove_trust", lambda s, src, tgt: [])
    assert lossless.end_transfer_trust(s, j, lambda m: None) == {"removed": [], "source_checked": True, "changed": False}
    assert Journal(j.path).states()[lossless.TRUST_PHASE].done
