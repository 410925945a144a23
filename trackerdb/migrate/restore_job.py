"""The restore's long steps as detached jobs on the target (see ``trackerdb.detached``), and the
restore-time settings that must never outlive them.

The three pg_restore phases run as *one* job whose script writes the restore-time settings file's
removal (and a reload) into its EXIT trap: the settings are in effect exactly while that job runs,
whether the operator is still connected or not. A job killed with SIGKILL (or a host that loses
power) cannot run its trap, so the file is also removed at the start of any later restore, by the
cutover's preflight, and whenever no restore job is running (``clear_stale_tuning``).

ANALYZE (vacuumdb) is a second job. Jobs are named by the dump's SHA-256, so a re-run of the same
restore finds them and attaches instead of starting over.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from .. import detached
from ..errors import HostError
from ..steps import Step

if TYPE_CHECKING:
    from ..settings import Settings

RESTORE_JOB = "restore"
ANALYZE_JOB = "analyze"


# a job's directory is on the data volume: with less than this free, a job that left no exit status is
# taken to have been unable to write it (pg_restore, the log and the wrapper's ``rc`` all fail there)
FULL_BELOW = 64 << 20


# ---- pure builders ----------------------------------------------------------------------------

def df_avail(stdout: str) -> int | None:
    """Bytes a non-root user may still write, from ``df -B1 --output=avail <path>``; None when unreadable."""
    tail = stdout.split()[-1:] if stdout else []
    return int(tail[0]) if tail and tail[0].isdigit() else None


def dead_job_error(t, settings: Settings, what: str, last_log: str, free: int | None) -> HostError:
    """A job that ended without an exit status: killed, or, on a full data volume, unable to write one."""
    db, mount = settings.database, settings.data_mount
    if free is not None and free < FULL_BELOW:
        return HostError(f"the {what} job on {t.name} stopped without an exit status: the data volume {mount} is full "
                         f"({free} bytes free; the job could not write its log or status there)",
                         hint=f"{db!r} was not touched; free space on {mount} or grow the volume, then re-run "
                              "(the staging restore starts over)")
    return HostError(f"the {what} job on {t.name} ended without an exit status (killed?); log: {last_log}",
                     hint=f"{db!r} was not touched; re-run to start the staging restore over")



def job_name(kind: str, sha256: str) -> str:
    return f"{kind}-{sha256[:16]}"


def stderr_file(phase: str) -> str:
    return f"stderr.{phase}"


def rc_file(phase: str) -> str:
    return f"rc.{phase}"


def reload_cmd(pg_bin: str, port: int) -> str:
    return shlex.join([f"{pg_bin}/psql", "-X", "-q", "-A", "-t", "-p", str(port), "-d", "postgres",
                       "-c", "SELECT pg_reload_conf()"])


def restore_script(phases: list[tuple[str, list[str]]], tuning_file: str, pg_bin: str, port: int) -> str:
    """The job: each (phase, pg_restore argv) in order, its stderr and exit status in files; the
    restore-time settings file removed (and the configuration reloaded) when the job ends, however
    it ends short of SIGKILL. Every phase runs even if one reports errors: the operator's side
    judges the messages (pg_restore exits 1 for harmless ones too)."""
    q = shlex.quote
    lines = ["set -u",
             f"cleanup() {{ rm -f {q(tuning_file)}; {reload_cmd(pg_bin, port)} >/dev/null 2>&1; }}",
             "trap cleanup EXIT",
             "trap 'exit 143' TERM INT HUP"]
    for phase, argv in phases:
        lines += [f"echo {q(phase)} > phase.tmp && mv phase.tmp phase",
                  f"{shlex.join(argv)} 2> {q(stderr_file(phase))}",
                  f"echo $? > {q(rc_file(phase))}"]
    lines.append("echo done > phase.tmp && mv phase.tmp phase")
    return "\n".join(lines) + "\n"


def analyze_script(argv: list[str]) -> str:
    return (f"echo analyze > phase\n{shlex.join(argv)} 2> {stderr_file('analyze')}\nrc=$?\n"
            f"echo $rc > {rc_file('analyze')}\nexit $rc\n")


def stale_tuning_line(base: str, tuning_file: str, pg_bin: str, port: int) -> str:
    """Remove the restore-time settings file unless a restore job is running; print what was done.

    Runs as postgres, never as root: the job directories and ``conf.d`` are postgres's, so whatever a job
    wrote there (its ``pid``) or linked there is read and removed with postgres's rights only. A running
    job is one whose wrapper is alive (its pid, digits only, names the wrapper in its cmdline)."""
    q = shlex.quote
    return (f"for d in {q(base)}/{RESTORE_JOB}-*; do [ -d \"$d\" ] && [ ! -f \"$d/rc\" ] && [ -f \"$d/pid\" ] && "
            "p=$(head -c 20 \"$d/pid\") && case \"$p\" in ''|*[!0-9]*) false;; esac && "
            "grep -qas -- \"$d/wrapper.sh\" \"/proc/$p/cmdline\" && { echo running; exit 0; }; done; "
            f"if [ -e {q(tuning_file)} ] || [ -L {q(tuning_file)} ]; then rm -f {q(tuning_file)} && "
            f"{{ {reload_cmd(pg_bin, port)} >/dev/null 2>&1; echo removed; }}; else echo absent; fi")


def attachable(staging_marker: dict | None, sha256: str, status: detached.Status) -> bool:
    """A re-run continues the restore job instead of rebuilding staging when the staging database is
    ours, from this very dump, still loading, and its job is running or has ended (judged next)."""
    return bool(staging_marker and staging_marker.get("sha256") == sha256 and staging_marker.get("state") == "loading"
                and status.state in ("starting", "running", "done"))


# ---- executors --------------------------------------------------------------------------------

def clear_stale_tuning(remote, settings: Settings, tuning_file: str) -> Step:
    out = remote.run(stale_tuning_line(detached.jobs_base(settings.data_mount), tuning_file, settings.pg_bin,
                                       settings.pg_port),
                     user="postgres").stdout.strip()
    if out == "removed":
        return Step("stale restore tuning", True, f"removed {tuning_file} left by a restore that is no longer running")
    if out == "running":
        return Step("stale restore tuning", False, "a restore job is running: its settings stay until it ends")
    return Step("stale restore tuning", False, "none left behind")


def restore_job(remote, settings: Settings, sha256: str) -> detached.Job:
    return detached.Job(remote, detached.jobs_base(settings.data_mount), job_name(RESTORE_JOB, sha256))


def analyze_job(remote, settings: Settings, sha256: str, serial: bool = False) -> detached.Job:
    return detached.Job(remote, detached.jobs_base(settings.data_mount),
                        job_name(ANALYZE_JOB + ("-serial" if serial else ""), sha256))


def phase_results(job: detached.Job, phases: list[str]) -> dict[str, tuple[int | None, str]]:
    """phase -> (exit status or None when it never ran, stderr)."""
    res = {}
    for phase in phases:
        rc = job.read(rc_file(phase)).strip()
        res[phase] = (int(rc) if rc.lstrip("-").isdigit() else None, job.read(stderr_file(phase)))
    return res


def volume_free(t, mount: str) -> int | None:
    r = t.run(["df", "-B1", "--output=avail", mount], check=False)
    return df_avail(r.stdout) if r.ok else None
