"""Small executors shared by the lab modules: run a command, retry, progress lines, PID bookkeeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trackerdb.errors import OpsError


class LabError(OpsError):
    """A lab step failed (one line, with a hint)."""


_T0 = time.monotonic()


def progress(msg: str) -> None:
    """One progress line on stderr with the seconds since the process started."""
    print(f"lab [{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, check: bool = True, input: str | bytes | None = None, timeout: float | None = None,
        env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    data = input.encode() if isinstance(input, str) else input
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, env=env, cwd=cwd)
    if check and p.returncode != 0:
        tail = (p.stderr.decode(errors="replace").strip() or p.stdout.decode(errors="replace").strip()).splitlines()[
            -3:
        ]
        raise LabError(f"`{' '.join(cmd)[:200]}` exited {p.returncode}: {' | '.join(tail)[:400]}")
    return p


def out(cmd: list[str], **kw) -> str:
    return run(cmd, **kw).stdout.decode(errors="replace")


def retry(fn, *, attempts: int = 3, what: str = "", delay: float = 5.0):
    """Call ``fn`` up to ``attempts`` times (for mirror fetches: a network hiccup must not fail CI)."""
    for i in range(1, attempts + 1):
        try:
            return fn()
        except LabError as exc:
            if i == attempts:
                raise
            progress(f"{what or 'step'} failed (attempt {i}/{attempts}): {exc.one_line()[:200]}; retrying")
            time.sleep(delay * i)


def proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: with the PID it identifies a process (PIDs get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = Path(f"/proc/{pid}/stat")
    try:
        return st.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_and_wait(pids, timeout: float = 10.0) -> list[int]:
    """SIGKILL each pid and wait until gone. Returns the pids still alive (should be none)."""
    pids = [p for p in set(pids) if p and p != os.getpid()]
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        for p in left:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        left = [p for p in left if alive(p)]
        if left:
            time.sleep(0.05)
    return left
