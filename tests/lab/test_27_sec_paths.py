"""Issue 23, items 1 and 2 and the direct transfer's trust, against the lab's real hosts.

A job's user (postgres) plants what it can plant: shell in ``launched``, a symlink for the jobs base,
for ``known_hosts``, for the source's ``authorized_keys``, for a pulled dump. Each operation then
runs nothing and changes nothing as root: the marker an injected command would create does not
exist, each link's target keeps its owner, mode and content, and the operation fails with one line
and a hint. Last, ``cutover-finish`` removes the trust the direct transfer installed, and only it.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import time
from contextlib import contextmanager

import pytest

from trackerdb import detached
from trackerdb.backrest import ops as backrest_ops
from trackerdb.cutover import capture as cp
from trackerdb.cutover import lossless
from trackerdb.cutover.journal import Journal
from trackerdb.errors import HostError
from trackerdb.migrate import direct
from trackerdb.migrate.dump_job import run_dump_detached
from trackerdb.migrate.restore_plan import upload_path
from trackerdb.remote import Remote
from trackerdb.safe_paths import UnsafePathError, ensure_dir

pytestmark = pytest.mark.lab

PG = "postgres"
MARKER = "/root/trackerdb-sec27-pwned"  # only root can create it: its existence means root ran the command


@pytest.fixture(scope="module")
def hosts(provisioned):
    src, tgt = Remote(provisioned.require_source()), Remote(provisioned.target)
    yield provisioned, src, tgt
    src.close()
    tgt.close()


def state(host, path: str) -> str:
    """Owner, group, mode and type of ``path`` (links not followed) and its content's hash or listing, as root sees them."""
    q = shlex.quote(path)
    return host.run(f"stat -c '%U %G %a %F' {q}; if [ -d {q} ]; then ls -A {q}; else sha256sum < {q}; fi", sudo=True).stdout


def exists(host, path: str) -> bool:
    return host.run(f"[ -e {shlex.quote(path)} ] || [ -L {shlex.quote(path)} ]", sudo=True, check=False).ok


@contextmanager
def planted(host, path: str, target: str):
    """As postgres (what postgres itself could do): set ``path`` aside if it exists and put a link to ``target`` there."""
    p, aside = shlex.quote(path), shlex.quote(path + ".sec27-aside")
    host.run(f"if [ -e {p} ] || [ -L {p} ]; then mv -T {p} {aside}; fi; ln -s {shlex.quote(target)} {p}", user=PG)
    try:
        yield
    finally:
        host.run(f"rm -f {p}; if [ -e {aside} ] || [ -L {aside} ]; then mv -T {aside} {p}; fi", user=PG)


def test_a_planted_launched_file_runs_nothing_as_root_on_either_host(hosts):
    s, src, tgt = hosts
    for host, base in ((src, detached.jobs_base(detached.home_of(src))), (tgt, detached.jobs_base(s.data_mount))):
        host.run(["rm", "-f", MARKER], sudo=True)
        ensure_dir(host, base, "0700", PG)
        job = detached.Job(host, base, "sec27-launched")
        d = shlex.quote(job.dir)
        payload = shlex.quote(f"x[$(touch {MARKER})]")
        host.run(f"rm -rf {d} && mkdir -m 0700 {d} && printf '%s\\n' {payload} > {d}/launched", user=PG)
        try:
            st = job.status()
            assert st.state == "dead", st  # not digits: never "starting"
            assert job.wait(poll_s=0.2, timeout_s=10).state == "dead"
            assert not exists(host, MARKER), f"{host.name}: root ran the command planted in launched"
        finally:
            host.run(f"rm -rf {d}", user=PG)
            host.run(["rm", "-f", MARKER], sudo=True)


def test_a_jobs_base_linked_to_a_root_directory_is_refused_and_left_alone(hosts, tmp_path):
    s, src, tgt = hosts
    # the source: the cutover's detached dump (dump_job.py's own directory making, then Job.start)
    base = detached.jobs_base(detached.home_of(src))
    before = state(src, "/usr/local/sbin")
    with planted(src, base, "/usr/local/sbin"):
        with pytest.raises(UnsafePathError) as e:
            run_dump_detached(s, str(tmp_path), "5ec2700000000001", transfer="relay")
        line = e.value.one_line()
        assert "trackerdb-jobs" in line and "symlink" in line and "(hint:" in line and "\n" not in line, line
        assert state(src, "/usr/local/sbin") == before  # root:root 755, no dump-… directory inside
    # the target: the restore, analyze and pull jobs' base on the data mount
    tbase = detached.jobs_base(s.data_mount)
    before = state(tgt, "/usr/local/sbin")
    with planted(tgt, tbase, "/usr/local/sbin"):
        with pytest.raises(UnsafePathError):
            detached.Job(tgt, tbase, "sec27-base").start("touch /tmp/sec27-ran\n")
        assert state(tgt, "/usr/local/sbin") == before
    assert not exists(tgt, "/tmp/sec27-ran")


def test_backrest_setup_never_copies_what_known_hosts_links_to(hosts):
    s, src, tgt = hosts
    home = detached.home_of(tgt)
    kh = f"{home}/.ssh/known_hosts"
    tgt.run(f"mkdir -p -m 0700 {shlex.quote(home)}/.ssh", user=PG)
    before = state(tgt, "/etc/shadow")
    with planted(tgt, kh, "/etc/shadow"):
        with pytest.raises(HostError) as e:
            backrest_ops.setup(s)
        line = e.value.one_line()
        assert "known_hosts" in line and "(hint:" in line, line
        assert tgt.run(["test", "-L", kh], sudo=True).ok, "known_hosts was replaced (by a copy?)"
        assert state(tgt, "/etc/shadow") == before
        # no file postgres owns holds root's password line
        root_line = tgt.run("grep '^root:' /etc/shadow", sudo=True).stdout.strip()
        found = tgt.run(["grep", "-rlF", "--", root_line, f"{home}/.ssh"], sudo=True, check=False)
        assert found.stdout.strip() == "", found.stdout


def test_the_transfer_trust_never_reads_or_reowns_what_postgres_links_to_on_the_source(hosts):
    s, src, tgt = hosts
    home_s = detached.home_of(src)
    jobs = detached.jobs_base(home_s)
    src.run(f"mkdir -p -m 0700 {shlex.quote(home_s)}/.ssh", user=PG)
    ak = f"{home_s}/.ssh/authorized_keys"
    before = state(src, "/etc/shadow")
    with planted(src, ak, "/etc/shadow"):
        with pytest.raises(HostError) as e:
            direct.ensure_trust(s, src, tgt, jobs)
        line = e.value.one_line()
        assert "authorized_keys" in line and "(hint:" in line, line
        assert src.run(["test", "-L", ak], sudo=True).ok
        assert state(src, "/etc/shadow") == before
    # ~/.ssh itself linked to root's home: refused, /root keeps its owner and mode
    before = state(src, "/root")
    with planted(src, f"{home_s}/.ssh", "/root"):
        with pytest.raises(UnsafePathError) as e:
            direct.ensure_trust(s, src, tgt, jobs)
        assert ".ssh" in e.value.one_line() and "(hint:" in e.value.one_line()
        assert state(src, "/root") == before


def test_a_pulled_dump_swapped_for_a_link_is_refused_and_its_target_keeps_owner_and_mode(hosts):
    s, src, tgt = hosts
    data = b"trackerdb sec27 not a dump\n" * 2000
    size, sha = len(data), hashlib.sha256(data).hexdigest()
    precious = "/usr/local/share/trackerdb-sec27-precious"  # root's 0644 file with exactly the expected bytes
    tgt.run(f"base64 -d > {precious} && chown root:root {precious} && chmod 0644 {precious}", sudo=True,
            stdin=base64.b64encode(data).decode())
    base = detached.jobs_base(s.data_mount)
    partial = direct.partial_path(base, s.database, sha)
    dest = upload_path(s.data_mount, s.database, sha)
    ensure_dir(tgt, base, "0700", PG)
    try:
        tgt.run(["ln", "-sfn", precious, partial], user=PG)  # a finished pull, swapped by postgres for a link
        before = state(tgt, precious)
        with pytest.raises(UnsafePathError) as e:
            direct.pull(s, tgt, "5ec2700000000002", size, sha)
        assert "not a plain file" in e.value.one_line() and "(hint:" in e.value.one_line()
        assert state(tgt, precious) == before  # still root:root 644, same bytes
        assert not exists(tgt, dest) and not exists(tgt, partial)
    finally:
        tgt.run(["rm", "-f", precious], sudo=True)
        tgt.run(["rm", "-f", partial], user=PG, check=False)


def test_cutover_finish_removes_the_direct_transfer_trust_and_nothing_else(hosts, tmp_path):
    s, src, tgt = hosts
    home_s, home_t = detached.home_of(src), detached.home_of(tgt)
    ak = f"{home_s}/.ssh/authorized_keys"
    before = src.read_file(ak, user=PG)
    others = direct.authorized_keys_without_ours(before)[0]
    direct.ensure_trust(s, src, tgt, detached.jobs_base(home_s))
    assert direct.MARK in (src.read_file(ak, user=PG) or "") and exists(src, direct.READER_PATH)
    assert exists(tgt, direct.key_path(home_t))

    journal = tmp_path / "journal.jsonl"
    s = s.with_(database="postgres")  # no restored tracker here: the (absent) slot is looked for in postgres
    Journal(journal).note(cp.JOURNAL_PHASE, {"slot": cp.slot_name(time.time()), "lsn": "0/1", "database": s.database})
    res = lossless.finish(s, journal)
    trust = res["transfer_trust"]
    assert trust["changed"] and len(trust["removed"]) == 3, trust
    assert (src.read_file(ak, user=PG) or "") == others  # every other key exactly as it was
    assert not exists(src, direct.READER_PATH)
    assert not any(exists(tgt, p) for p in (direct.key_path(home_t), direct.key_path(home_t) + ".pub",
                                             direct.known_hosts_path(home_t)))
    st = Journal(journal).states()[lossless.TRUST_PHASE]
    assert st.done and st.facts["removed"] == trust["removed"]
    # again: recorded, not repeated; a fresh look finds nothing left
    assert lossless.finish(s, journal)["transfer_trust"]["changed"] is False
    fresh = Journal(tmp_path / "fresh.jsonl")
    assert lossless.end_transfer_trust(s, fresh, lambda m: None)["removed"] == []
