"""Real faults before the window (issue 28, item 7): the direct pull killed, the target's volume full.

- The target's pull of a dump (``direct.pull``, a detached job) is SIGKILLed by its PID on the target while
  the bytes flow (the lab's link to the target throttled with ``tc`` so the transfer lasts seconds). Its
  ssh, a child the kill does not reach, goes on appending; the re-run, started at once, waits for that
  writer and continues from where it stopped. The half file is never where restore reads a dump (restore
  refuses it), and the finished file is byte for byte the source's.
- The target's data volume (the lab's loop-mounted filesystem at ``data_mount``) is filled for real by a
  file this test makes (``fallocate``, every byte a non-root user may take) as soon as the restore's
  pg_restore job runs: the restore stops in one line, ``tracker`` is untouched (same OID, same rows), the
  staging database is left marked failed (the documented behaviour: the next restore drops and rebuilds
  it). Once the filler is removed the same restore finishes and verify passes against the manifest.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

import pytest

from trackerdb import detached
from trackerdb.errors import OpsError
from trackerdb.migrate import direct
from trackerdb.migrate.dump_job import run_dump_detached
from trackerdb.migrate.restore import DumpOnTarget, RestoreOptions, restore, upload_path
from trackerdb.migrate.restore_plan import staging_name, tuning_path
from trackerdb.migrate.verify import run_verify
from trackerdb.remote import Remote

from .test_50_cutover import run_sql

pytestmark = pytest.mark.lab

MEASURED: dict = {}
KEY = "fa17000000000049"  # the source's dump job this module serves to the pull
FILLER = "trackerdb-test-filler"


def _names(lab):
    from lab.naming import Names
    from lab.state import State

    return Names(lab["name"], ipaddress.ip_network(State(lab["name"])["subnet"]))


class Throttle:
    """Traffic from ``src_ip`` into the target (its veth's host side) at ``rate`` bit/s while the block lasts;
    everything else (the operator's SSH commands) unthrottled, so polls stay quick."""

    def __init__(self, dev: str, src_ip: str, rate: int):
        self.dev, self.src_ip, self.rate = dev, src_ip, rate

    def __enter__(self):
        tc = ["tc"]
        for args in (["qdisc", "replace", "dev", self.dev, "root", "handle", "1:", "htb", "default", "10"],
                     ["class", "add", "dev", self.dev, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"],
                     ["class", "add", "dev", self.dev, "parent", "1:", "classid", "1:20", "htb", "rate", f"{self.rate}bit",
                      "ceil", f"{self.rate}bit"],
                     ["filter", "add", "dev", self.dev, "parent", "1:", "protocol", "ip", "u32", "match", "ip", "src",
                      f"{self.src_ip}/32", "flowid", "1:20"]):
            subprocess.run(tc + args, check=True, capture_output=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["tc", "qdisc", "del", "dev", self.dev, "root"], check=False, capture_output=True)


def avail_bytes(tgt, path: str) -> int:
    """What a non-root user (postgres) may still write on the filesystem holding ``path``."""
    return int(tgt.run(["df", "-B1", "--output=avail", path]).stdout.split()[-1])


def fill(tgt, mount: str) -> int:
    """Fill the volume: a file of every byte a non-root user may still take (root keeps ext4's reserve).
    Returns its size."""
    path = f"{mount}/{FILLER}"
    total = 0
    for _ in range(8):  # the filesystem's own metadata (extent blocks) can refuse the last few blocks
        left = avail_bytes(tgt, mount)
        if left < 64 * 1024:
            break
        ask = left if total == 0 else left - (left // 2)
        tgt.run(f"fallocate -o {total} -l {ask} {path} || fallocate -o {total} -l {ask - (1 << 20)} {path}",
                sudo=True, check=False)
        total = int(tgt.run(["stat", "-c", "%s", path], sudo=True).stdout)
    return total


def unfill(tgt, mount: str) -> None:
    tgt.run(["rm", "-f", f"{mount}/{FILLER}"], sudo=True, check=False)


def tracker_identity(tgt) -> dict | None:
    """The live tracker on the target (OID and row counts), None when there is none."""
    import json

    oid = run_sql(tgt, "SELECT oid FROM pg_database WHERE datname = 'tracker';").stdout.strip()
    if not oid:
        return None
    out = run_sql(tgt, "SELECT json_build_object('oid', (SELECT oid FROM pg_database WHERE datname = 'tracker'), "
                       "'devices', (SELECT count(*) FROM tracker.devices), "
                       "'reports', (SELECT count(*) FROM tracker.location_reports));", "tracker").stdout
    return json.loads(out.strip().splitlines()[0])


@pytest.fixture(scope="module")
def served(provisioned, lab, tmp_path_factory):
    """A dump served by the source's reader to the target (test_42's way), the trust in place, and the
    lab's names; removes what it placed."""
    s = provisioned
    src, tgt = Remote(s.require_source()), Remote(s.target)
    chosen = direct.choose(s, src, tgt)
    assert chosen["transfer"] == "direct", chosen
    art = run_dump_detached(s, str(tmp_path_factory.mktemp("faults")), "fa17000000000048", transfer="relay")
    size, sha = art.manifest["dump"]["size_bytes"], art.manifest["dump"]["sha256"]
    job_dir = f"{detached.jobs_base(detached.home_of(src))}/dump-{KEY}"
    src.run(["install", "-d", "-m", "0700", "-o", "postgres", "-g", "postgres", job_dir], sudo=True)
    src.append_file(art.dump_path, f"/tmp/{KEY}.dump", 0, size)
    src.run(f"mv /tmp/{KEY}.dump {job_dir}/{s.database}.dump && chown postgres:postgres {job_dir}/{s.database}.dump "
            f"&& chmod 0600 {job_dir}/{s.database}.dump", sudo=True)
    base = detached.jobs_base(detached.home_of(tgt))
    yield {"settings": s, "src": src, "tgt": tgt, "art": art, "size": size, "sha": sha, "names": _names(lab),
           "partial": direct.partial_path(base, s.database, sha), "dest": upload_path(s.data_mount, s.database, sha)}
    src.run(["rm", "-rf", job_dir], sudo=True, check=False)
    unfill(tgt, s.data_mount)
    src.close()
    tgt.close()


def test_the_pull_killed_by_its_pid_mid_transfer_is_resumed_by_the_rerun(served):
    s, tgt, size, sha = served["settings"], served["tgt"], served["size"], served["sha"]
    partial, dest = served["partial"], served["dest"]
    tgt.run(["rm", "-f", dest, partial], sudo=True)
    before = tracker_identity(tgt)
    job = detached.Job(tgt, detached.jobs_base(detached.home_of(tgt)), f"pull-{KEY}")
    killed: dict = {}

    def kill_mid_transfer(done: int, total: int) -> None:
        if not killed and 0 < done < total // 2:
            pid = job.status().pid
            assert pid, job.status()
            tgt.run(["kill", "-KILL", str(pid)], sudo=True)
            # what the kill did not reach: the job's ssh, still reading from the source
            left = tgt.run(["ps", "-eo", "pid=,ppid=,args="], sudo=True, check=False).stdout
            killed.update(pid=pid, at=done, orphans=[ln.strip() for ln in left.splitlines() if f"dump-{KEY}" in ln])

    rate = max(size * 8 // 10, 256_000)  # about 10 s for the whole dump
    t0 = time.monotonic()
    names = served["names"]
    with Throttle(names.veth("target"), names.ip("source"), rate):
        with pytest.raises(OpsError) as first:
            direct.pull(s, tgt, KEY, size, sha, progress=kill_mid_transfer, poll_s=0.2)
        line = first.value.one_line()
        assert killed and "the pull on" in line and "\n" not in line, (killed, line)
        left = int(tgt.run(["stat", "-c", "%s", partial], sudo=True).stdout)
        assert 0 < left < size, (left, size)
        assert not tgt.exists(dest)  # nothing where restore reads a dump
        with pytest.raises(OpsError, match="the dump on the target is 0 bytes"):  # restore refuses: no half file used
            restore(s, DumpOnTarget(dest), served["art"].manifest_path, RestoreOptions(replace=True, keep_upload=True))
        said: list[str] = []
        got = direct.pull(s, tgt, KEY, size, sha, say=said.append, poll_s=0.2)  # at once: the orphan still writes
    MEASURED["pull_kill"] = {"seconds": round(time.monotonic() - t0, 1), "killed_at_byte": killed["at"], "dump_bytes": size,
                             "rate_bit_s": rate}
    print("\nMEASURED", MEASURED)
    assert got == dest and tgt.run(["sha256sum", dest], sudo=True).stdout.split()[0] == sha
    assert int(tgt.run(["stat", "-c", "%s", dest], sudo=True).stdout) == size
    assert any(" ssh " in f" {o} " for o in killed["orphans"]), killed  # its ssh outlived the kill and kept writing
    assert any("pulls it from" in m for m in said), said
    assert tracker_identity(tgt) == before  # the live tracker was never touched


def test_the_volume_full_during_restore_stops_in_one_line_then_the_rerun_restores(served):
    s, tgt = served["settings"], served["tgt"]
    art, dest = served["art"], served["dest"]
    if not tgt.exists(dest):  # on its own: the pull above put it there
        direct.pull(s, tgt, KEY, served["size"], served["sha"])
    if tracker_identity(tgt) is None:  # on a fresh lab: a tracker in place first, the one the fault must not touch
        restore(s, DumpOnTarget(dest), art.manifest_path, RestoreOptions(replace=True, keep_upload=True))
    before = tracker_identity(tgt)
    mount = s.data_mount
    assert tgt.run(["findmnt", "-n", "-o", "SOURCE", mount]).stdout.strip().startswith("/dev/"), "not the data volume"
    filled: dict = {}

    def fill_when_pg_restore_runs(phase, done=None, total=None) -> None:
        if not filled and str(phase).startswith("pg_restore"):
            filled["bytes"] = fill(tgt, mount)
            filled["left"] = avail_bytes(tgt, mount)

    t0 = time.monotonic()
    try:
        with pytest.raises(OpsError) as failed:
            restore(s, DumpOnTarget(dest), art.manifest_path, RestoreOptions(replace=True, keep_upload=True),
                    progress=fill_when_pg_restore_runs)
        MEASURED["restore_full_s"] = round(time.monotonic() - t0, 1)
        line = failed.value.one_line()
        assert filled and filled["left"] < 1 << 20, filled
        assert "\n" not in line, line
        assert any(w in line for w in ("No space left on device", "could not extend", f"data volume {mount} is full")), line
        assert "'tracker' was not touched" in line, line
        # nothing half-applied: tracker is the one that was there; staging is left, marked failed
        assert tracker_identity(tgt) == before
        staging = run_sql(tgt, f"SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                               f"WHERE datname = '{staging_name(s.database)}';").stdout.strip()
        assert "state=failed" in staging or "state=loading" in staging, staging
        assert not tgt.exists(tuning_path(s.postgres_major))  # the restore-time settings went with the job
    finally:
        unfill(tgt, mount)
    t1 = time.monotonic()
    outcome = restore(s, DumpOnTarget(dest), art.manifest_path, RestoreOptions(replace=True, keep_upload=True))
    MEASURED["restore_rerun_s"] = round(time.monotonic() - t1, 1)
    print("\nMEASURED", MEASURED)
    steps = {st.name: st for st in outcome.steps}
    assert "leftover staging" in steps, list(steps)  # the failed staging was dropped and rebuilt
    failed_checks = [c for c in run_verify(s, manifest=art.manifest, expect_backrest=False) if not c.ok]
    assert not failed_checks, [(c.name, c.observed) for c in failed_checks]
    assert tracker_identity(tgt)["oid"] != before["oid"]  # the restored copy is in place now
