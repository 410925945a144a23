"""Long steps that outlive the operator's SSH session: a job runs on its host, detached, and the
operator's side only starts it, watches it and reads its result.

A job is a private directory on the host (0700, owned by the user the job runs as) holding:
``job.sh`` (the work, written by us), ``wrapper.sh`` (records ``pid``, ``started``, runs ``job.sh``
with its output in ``log`` and writes the exit status to ``rc`` last), ``launched`` (when we started
it) and whatever the job itself writes (``phase``, per-step stderr files). Nothing secret is in any
argv: a job that needs a secret reads it from an environment file in that directory (0600).

It starts as a transient systemd unit where the host runs systemd, else as a ``setsid``'d process
with no terminal and no inherited descriptors (the lab's hosts have no systemd): either way the
SSH session ending (the operator's laptop sleeping, its network dropping, invoke killed) does not
reach it. A re-run finds the job by its name and attaches to it instead of starting it over.

Everything inside the job's directory happens as the job's user, never as root (issue 23): the
directory and every file in it are the user's, so root reading, writing or evaluating any of it
would hand that user root (``launched`` was once shell arithmetic run by root). Root only makes the
jobs base (``safe_paths.ensure_dir``: no link followed) and launches the wrapper as the user. The
status command prints facts; this side decides (``launched`` must be digits, nothing is evaluated).

Pure builders (paths, scripts, the status command and its parser) are separate from ``Job``, the
small executor.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass

from .errors import HostError
from .limits import JOB_DEADLINE_S
from .safe_paths import ensure_dir

STARTING_GRACE_S = 30  # between launching and the wrapper writing its pid
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,80}$")


# ---- pure builders ----------------------------------------------------------------------------

def jobs_base(home: str) -> str:
    """Where a host's jobs live: ``<postgres home>/trackerdb-jobs``."""
    return f"{home.rstrip('/')}/trackerdb-jobs"


def home_of(host, user: str = "postgres") -> str:
    """``user``'s home on ``host`` (the jobs live under postgres's); Debian's default when getent says nothing."""
    return (
        host.run(["sh", "-c", f"getent passwd {shlex.quote(user)} | cut -d: -f6"]).stdout.strip()
        or "/var/lib/postgresql"
    )


def job_dir(base: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"bad job name {name!r}")
    return f"{base.rstrip('/')}/{name}"


def unit_name(name: str) -> str:
    return f"trackerdb-job-{name}"


def wrapper_text(d: str) -> str:
    q = shlex.quote
    return ("#!/bin/sh\n"
            "# trackerdb detached job: runs job.sh, records its pid, log and exit status here\n"
            f"cd {q(d)} || exit 111\n"
            "echo $$ > pid.tmp && mv pid.tmp pid\n"
            "date +%s.%N > started\n"
            "[ -f env ] && set -a && . ./env && set +a\n"
            "/bin/sh ./job.sh > log 2>&1 < /dev/null\n"
            "rc=$?\n"
            "date +%s.%N > ended\n"
            "echo $rc > rc.tmp && mv rc.tmp rc\n")


def prepare_line(d: str) -> str:
    """Shell line (run as the job's user) that empties the job's directory: a fresh one, 0700."""
    q = shlex.quote(d)
    return f"rm -rf -- {q} && mkdir -m 0700 -- {q}"


def launched_line(d: str) -> str:
    """Shell line (run as the job's user) that records when we launched it (the starting grace)."""
    return f"date +%s > {shlex.quote(d + '/launched')}"


def start_line(d: str, name: str, user: str) -> str:
    """Shell line (run as root) that starts ``wrapper.sh`` as ``user``, detached from this session.
    It reads nothing in the job's directory: the wrapper is opened by the shell running as ``user``."""
    q = shlex.quote
    w = f"{d}/wrapper.sh"
    systemd = (
        f"systemd-run --quiet --collect --unit {q(unit_name(name))} --uid {q(user)} --gid {q(user)} /bin/sh {q(w)}"
    )
    plain = f"setsid -f runuser -u {q(user)} -- /bin/sh {q(w)} < /dev/null > /dev/null 2>&1"
    return (f"if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; "
            f"then {systemd} && echo systemd; else {plain} && echo setsid; fi")


def status_line(d: str) -> str:
    """Run as the job's user. Prints ``absent`` | ``running <pid>`` | ``done <rc>`` | ``dead`` | ``nopid``,
    then the job's ``phase`` (may be empty), ``started`` (may be empty), ``launched`` (as written, may be
    empty) and the host's clock, one a line. Nothing read from the directory is evaluated: whether a
    ``nopid`` job is still starting is :func:`parse_status`'s call."""
    q = shlex.quote
    return (
        f"d={q(d)}; "
        'if [ ! -d "$d" ]; then echo absent; '
        'elif [ -f "$d/rc" ]; then echo "done $(head -n 1 "$d/rc")"; '
        'elif [ -f "$d/pid" ] && p=$(head -n 1 "$d/pid") && grep -qas -- "$d/wrapper.sh" "/proc/$p/cmdline"; '
        'then echo "running $p"; '
        'elif [ ! -f "$d/pid" ]; then echo nopid; '
        # the wrapper may have written rc and exited between the first test and the pid's: look again
        'elif [ -f "$d/rc" ]; then echo "done $(head -n 1 "$d/rc")"; '
        "else echo dead; fi; "
        "for f in phase started launched; do printf '%s\\n' \"$(head -c 4096 \"$d/$f\" 2>/dev/null | head -n 1 | tr -d "
        "'\\r')\"; done; "
        "date +%s"
    )


def stop_line(d: str, name: str, pid: int, user: str) -> str:
    """Shell line (run as root) that ends a running job: its systemd unit, else every process of ``user`` in
    the session ``setsid`` gave the wrapper (``pid``, which must still run this job's wrapper: a pid
    reused by something else is left alone)."""
    q = shlex.quote
    p = str(int(pid))
    return (f"if [ -d /run/systemd/system ] && systemctl is-active --quiet {q(unit_name(name))} 2>/dev/null; "
            f"then systemctl stop {q(unit_name(name))}; "
            f"elif grep -qas -- {q(d + '/wrapper.sh')} /proc/{p}/cmdline; then "
            f"sid=$(awk '{{print $6}}' /proc/{p}/stat); "
            f"for q in /proc/[0-9]*; do [ \"$(awk '{{print $6}}' $q/stat 2>/dev/null)\" = \"$sid\" ] && "
            f"[ \"$(stat -c %U $q)\" = {q(user)} ] && kill -TERM \"${{q#/proc/}}\" 2>/dev/null; done; fi; true")


@dataclass
class Status:
    state: str            # absent | starting | running | done | dead
    rc: int | None = None
    pid: int | None = None
    phase: str = ""
    started: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")


def _epoch(text: str) -> int | None:
    """Whole seconds since the epoch, strictly: digits only (a job's user wrote it)."""
    t = text.strip()
    return int(t) if re.fullmatch(r"[0-9]{1,12}", t) else None


def parse_status(stdout: str, grace_s: float = STARTING_GRACE_S) -> Status:
    lines = stdout.split("\n")
    line = lambda i: lines[i] if len(lines) > i else ""  # noqa: E731
    head = line(0).split()
    state = head[0] if head else "dead"
    phase = line(1).strip()
    started = float(line(2).strip()) if re.fullmatch(r"\d{1,12}(\.\d{1,9})?", line(2).strip()) else None
    if state == "nopid":  # launched, no pid yet: starting within the grace, else it never started
        launched, now = _epoch(line(3)), _epoch(line(4))
        state = "starting" if launched is not None and now is not None and abs(now - launched) < grace_s else "dead"
    if state == "done":
        rc = int(head[1]) if len(head) > 1 and head[1].lstrip("-").isdigit() else 255
        return Status("done", rc=rc, phase=phase, started=started)
    if state == "running":
        return Status(
            "running", pid=int(head[1]) if len(head) > 1 and head[1].isdigit() else None, phase=phase, started=started
        )
    if state in ("absent", "starting"):
        return Status(state, phase=phase, started=started)
    return Status("dead", phase=phase, started=started)


# ---- executor ---------------------------------------------------------------------------------

class Job:
    """One named job on one host, run as ``user``. ``Job.start`` refuses to start over an active one."""

    def __init__(self, remote, base: str, name: str, user: str = "postgres"):
        self.remote, self.base, self.name, self.user = remote, base, name, user
        self.dir = job_dir(base, name)

    def status(self) -> Status:
        return parse_status(self.remote.run(status_line(self.dir), user=self.user).stdout)

    def read(self, filename: str) -> str:
        return self.remote.read_file(f"{self.dir}/{filename}", user=self.user) or ""

    def start(self, script: str, env: dict[str, str] | None = None, files: dict[str, str] | None = None) -> str:
        """(Re)create the job's private directory and start it detached. Returns how (systemd|setsid)."""
        st = self.status()
        if st.active:
            raise HostError(f"{self.remote.name}: job {self.name} is already running (pid {st.pid})",
                            hint="wait for it (re-run attaches to it) or stop it on the host")
        u = self.user
        ensure_dir(self.remote, self.base, "0700", u, u)  # root, refusing a link planted in the user's home
        self.remote.run(prepare_line(self.dir), user=u)  # the rest as the user: nothing here is root's to touch
        self.remote.write_file(f"{self.dir}/job.sh", script, mode="0700", owner=u, user=u)
        self.remote.write_file(f"{self.dir}/wrapper.sh", wrapper_text(self.dir), mode="0700", owner=u, user=u)
        for fname, text in (files or {}).items():  # e.g. a bash script job.sh execs
            self.remote.write_file(f"{self.dir}/{fname}", text, mode="0600", owner=u, user=u)
        if env:  # secrets by file (0600), never argv
            body = "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
            self.remote.write_file(f"{self.dir}/env", body, mode="0600", owner=u, user=u)
        self.remote.run(launched_line(self.dir), user=u)
        how = self.remote.run(start_line(self.dir, self.name, u), sudo=True).stdout.strip().splitlines()
        return how[-1] if how else "setsid"

    def stop(self, pid: int) -> None:
        """End the job's processes (``stop_line``)."""
        self.remote.run(stop_line(self.dir, self.name, pid, self.user), sudo=True, check=False, timeout=60)

    def wait(self, progress=None, poll_s: float = 2.0, timeout_s: float | None = JOB_DEADLINE_S) -> Status:
        """Poll until the job is done (or dead); ``progress(phase, elapsed_s)`` on every phase change
        and at most every 30 s. The SSH connection may drop in between: each poll is its own command.
        ``timeout_s`` (default ``limits.JOB_DEADLINE_S``, counted by this machine's clock from this call): past it
        the job's processes are ended (``stop``) and a HostError names the job; None waits for ever."""
        t0 = time.monotonic()
        last_phase, last_say = None, 0.0
        while True:
            st = self.status()
            if st.state in ("done", "dead"):
                return st
            if st.state == "absent":
                raise HostError(f"{self.remote.name}: job {self.name} disappeared ({self.dir})",
                                hint="someone removed its directory; re-run to start it again")
            now = time.monotonic()
            if progress and (st.phase != last_phase or now - last_say >= 30):
                progress(st.phase, (time.time() - st.started) if st.started else 0.0)
                last_phase, last_say = st.phase, now
            if timeout_s is not None and now - t0 > timeout_s:
                if st.pid is not None:
                    self.stop(st.pid)
                raise HostError(
                    f"{self.remote.name}: job {self.name} (phase {st.phase or '?'}, pid {st.pid}) still running "
                    f"after its deadline of {timeout_s:.0f}s: its processes were ended",
                    hint=f"find why it stalled in {self.dir}/log on the host, then re-run (it starts again)",
                )
            time.sleep(poll_s)
