"""Ending what we started on a host, by its pid, when a stream's deadline passes (``Remote.pipe_to``).

A command started over SSH reports its pid first (``reporting``: ``trackerdb-pid <pid>`` on stderr, then
``exec``), so the deadline ends that process and the processes it started (``end_line``), never
anything found by name. Pure builders, and ``end_reported`` (one command on the host).
"""

from __future__ import annotations

import re
import shlex
import time

from .errors import HostError

_PID_LINE = re.compile(rb"^trackerdb-pid (\d+)\n", re.M)


def reporting(line: str) -> str:
    """``line`` run so that its first stderr line is ``trackerdb-pid <pid>``: the login shell's pid, which
    ``exec``s bash (a simple command keeps that pid; a compound one runs as its children)."""
    return f"echo trackerdb-pid $$ >&2; exec bash -c {shlex.quote(line)}"


def reported(err: bytes | bytearray) -> tuple[int | None, bytes]:
    """(the pid ``reporting`` printed, the stderr without that line)."""
    m = _PID_LINE.search(bytes(err))
    if not m:
        return None, bytes(err)
    return int(m.group(1)), bytes(err[: m.start()] + err[m.end():])


def end_line(pid: int) -> list[str]:
    """Run as root: TERM to ``pid`` and every process under it, all collected before any is signalled
    (a shell's child outlives its parent, re-parented: ended here too)."""
    p = str(int(pid))
    return [
        "sh",
        "-c",
        'tree() { for c in $(cat /proc/$1/task/*/children 2>/dev/null); do tree "$c"; done; echo "$1"; }; '
        f"kill -TERM $(tree {p}) 2>/dev/null; true",
    ]


def end_reported(chan, err: bytearray, host, chunk: int = 65536) -> int | None:
    """End the command running on the SSH channel ``chan`` by the pid it reported in ``err`` (what is still
    buffered is read first); returns that pid (None: it never reported one, or it had ended)."""
    try:
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(chunk)
    except OSError:
        pass
    pid, _ = reported(err)
    if pid is None or chan.exit_status_ready():
        return None
    try:
        host.run(end_line(pid), sudo=True, check=False, timeout=30)
    except (OSError, HostError):
        pass
    return pid


def overdue(sender: tuple, receiver: tuple, deadline_s: float, moved: int) -> HostError:
    """Both commands of a stream past its deadline ended (each ``(channel, stderr so far, host)``); the
    error to raise, naming the stream."""
    ended = [end_reported(*sender), end_reported(*receiver)]
    return HostError(
        f"{sender[2].name} -> {receiver[2].name}: stream still running after its deadline of "
        f"{deadline_s:.0f}s ({moved} bytes moved): ended pid(s) {', '.join(str(p) for p in ended if p) or 'none'}",
        hint="the receiver committed nothing (its COMMIT follows a complete stream); find why it stalled "
        "(locks, load, network), then re-run",
    )


def deadline(seconds: float | None) -> tuple[float, float] | None:
    """(seconds, when on this machine's monotonic clock) or None: no deadline."""
    return None if seconds is None else (seconds, time.monotonic() + seconds)


def check(end_at, sender: tuple, receiver: tuple, moved: int) -> None:
    """Raise ``overdue``'s error once ``end_at`` (``deadline``) has passed."""
    if end_at is not None and time.monotonic() > end_at[1]:
        raise overdue(sender, receiver, end_at[0], moved)
