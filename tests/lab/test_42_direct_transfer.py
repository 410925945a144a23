"""The final dump host to host (issue 15, item 4): the target pulls it from the source over SSH with a
restricted key; the operator's machine moves next to none of its bytes; restore reads it where it
landed; a refused direct path falls back to the relay (loudly) or is refused when asked for explicitly;
a partial pull resumes and a damaged one is caught by its SHA-256.

Bytes are counted by the kernel: the lab bridge's own interface carries only what the operator's
machine (this host) sends or receives; the source's and target's veths carry what those hosts move.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from trackerdb.errors import PreflightError
from trackerdb.migrate import direct
from trackerdb.migrate.dump_job import run_dump_detached
from trackerdb.migrate.restore import DumpOnTarget, RestoreOptions, restore, upload_path
from trackerdb.migrate.verify import run_verify
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab

MEASURED: dict = {}


def _names(lab):
    from lab.naming import Names
    from lab.state import State

    st = State(lab["name"])
    return Names(lab["name"], ipaddress.ip_network(st["subnet"]))


def _counter(dev: str, what: str) -> int:
    return int(Path(f"/sys/class/net/{dev}/statistics/{what}").read_text())


class Bytes:
    """Kernel byte counters: the operator's side (the bridge's own interface) and the source's veth."""

    def __init__(self, n):
        self.n = n

    def snap(self) -> dict:
        b, src, tgt = self.n.bridge, self.n.veth("source"), self.n.veth("target")
        # a veth's host side: tx = towards the namespace, rx = from it
        return {"operator": _counter(b, "rx_bytes") + _counter(b, "tx_bytes"),
                "source_out": _counter(src, "rx_bytes"), "target_in": _counter(tgt, "tx_bytes")}

    def __enter__(self):
        self.before, self.t0 = self.snap(), time.monotonic()
        return self

    def __exit__(self, *exc):
        after = self.snap()
        self.delta = {k: after[k] - self.before[k] for k in after}
        self.seconds = round(time.monotonic() - self.t0, 2)


def _after_pg_dump(src, art) -> float:
    """Seconds from pg_dump's end on the source (its job's ``ended``; the lab's hosts share one clock)
    to now: checksums and the transfer, the part the two paths do differently."""
    ended = float(src.run(["cat", f"{art.manifest['dump']['detached_job']}/ended"], sudo=True).stdout.strip())
    return round(time.time() - ended, 2)


@pytest.fixture(scope="module")
def hosts(provisioned):
    src, tgt = Remote(provisioned.require_source()), Remote(provisioned.target)
    yield provisioned, src, tgt
    src.close()
    tgt.close()


@pytest.fixture(scope="module")
def net(lab):
    return _names(lab)


@pytest.fixture
def blocked(net):
    """The target cannot reach the source (a missing egress rule); the operator still reaches both."""
    ns = net.netns("target")
    import subprocess

    subprocess.run(["ip", "-n", ns, "route", "add", "unreachable", f"{net.ip('source')}/32"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "-n", ns, "route", "del", "unreachable", f"{net.ip('source')}/32"], check=True)


@pytest.fixture(scope="module")
def direct_run(hosts, net, tmp_path_factory):
    s, src, tgt = hosts
    assert s.transfer == "direct" and not s.transfer_explicit  # from the lab's stack output direct_transfer
    said: list[str] = []
    chosen = direct.choose(s, src, tgt, said.append)
    assert chosen["transfer"] == "direct", said
    local = tmp_path_factory.mktemp("direct")
    with Bytes(net) as b:
        art = run_dump_detached(s, str(local), "d1ec7000000000a1", say=said.append, transfer="direct")
    MEASURED["direct"] = {"seconds": b.seconds, "after_pg_dump_s": _after_pg_dump(src, art), **b.delta,
                          "dump_bytes": art.manifest["dump"]["size_bytes"]}
    return art, b, said, local


def test_the_target_pulls_the_dump_and_the_operator_moves_almost_none_of_it(hosts, direct_run):
    s, src, tgt = hosts
    art, b, said, local = direct_run
    size, sha = art.manifest["dump"]["size_bytes"], art.manifest["dump"]["sha256"]
    assert art.on_target and art.dump_path == upload_path(s.data_mount, s.database, sha)
    assert art.manifest["dump"]["transfer"].startswith("direct")
    assert tgt.run(["sha256sum", art.dump_path], sudo=True).stdout.split()[0] == sha
    assert int(tgt.run(["stat", "-c", "%s", art.dump_path], sudo=True).stdout) == size
    assert size > 1 << 20, "the lab's dump is too small to tell transfer from control traffic"
    assert b.delta["source_out"] >= size and b.delta["target_in"] >= size  # the bytes crossed host to host
    assert b.delta["operator"] < size / 4, b.delta  # SSH commands and polling only
    assert sorted(p.name for p in local.iterdir()) == ["tracker.manifest.json"]  # no dump on the operator's machine
    assert not src.exists(f"{art.manifest['dump']['detached_job']}/{s.database}.dump")  # not left on the shared source
    assert any("host to host" in m for m in said)


def test_the_source_grants_only_the_reader_to_the_target(hosts):
    s, src, tgt = hosts
    ak = src.read_file("/var/lib/postgresql/.ssh/authorized_keys") or ""
    ours = [ln for ln in ak.splitlines() if ln.endswith(direct.MARK)]
    assert len(ours) == 1 and ours[0].startswith(f'restrict,from="{s.target.address}",command="{direct.READER_PATH}" ')
    home = "/var/lib/postgresql"
    # the key cannot run anything but the reader: a shell command is refused, a path outside the jobs too
    for request in (["id"], ["read", "../../../etc/passwd", "0"], ["cat", "/etc/shadow"]):
        r = tgt.run(direct.ssh_argv(home, direct.source_address(s), request), user="postgres", check=False)
        assert r.exit_code == 2 and "refused" in r.stderr and "root:" not in r.stdout, (request, r)


def test_restore_reads_the_dump_where_the_direct_transfer_left_it(hosts, direct_run):
    s, _, tgt = hosts
    art, _, _, _ = direct_run
    outcome = restore(s, DumpOnTarget(art.dump_path), art.manifest_path, RestoreOptions(replace=True, keep_upload=True))
    by = {st.name: st for st in outcome.steps}
    assert by["dump file"].detail.startswith("on the target:") and by["upload"].detail.startswith("none")
    assert outcome.stats["uploaded_bytes"] == 0
    failed = [c for c in run_verify(s, manifest=art.manifest, expect_backrest=False) if not c.ok]
    assert not failed, [(c.name, c.observed, c.expected) for c in failed]
    assert tgt.exists(art.dump_path)  # kept: with the direct path it is the one copy


def test_relay_for_comparison(hosts, net, tmp_path_factory, direct_run):
    """The same dump through the operator (fetch, then the restore's upload primitive): the figure to compare."""
    s, src, tgt = hosts
    with Bytes(net) as b:
        art = run_dump_detached(s, str(tmp_path_factory.mktemp("relay")), "4e1a7000000000b2", transfer="relay")
        size = art.manifest["dump"]["size_bytes"]
        remote = upload_path(s.data_mount, s.database, art.manifest["dump"]["sha256"]) + ".relay"
        tgt.run(["install", "-d", "-m", "2750", "-o", tgt.spec.user, "-g", "postgres", remote.rsplit("/", 1)[0]], sudo=True)
        tgt.run(["rm", "-f", remote], sudo=True)
        tgt.append_file(art.dump_path, remote, 0, size)
    after = _after_pg_dump(src, art)
    tgt.run(["rm", "-f", remote], sudo=True)
    MEASURED["relay"] = {"seconds": b.seconds, "after_pg_dump_s": after, **b.delta, "dump_bytes": size}
    assert not art.on_target and b.delta["operator"] >= 2 * size  # in from the source, out to the target
    print("\nMEASURED transfer " + json.dumps(MEASURED, sort_keys=True))


def test_a_refused_direct_path_falls_back_to_the_relay_loudly(hosts, blocked, tmp_path):
    s, src, tgt = hosts
    said: list[str] = []
    chosen = direct.choose(s, src, tgt, said.append)
    assert chosen["transfer"] == "relay" and "unreachable" in chosen["why"]
    assert any("FALLING BACK" in m for m in said)
    with pytest.raises(PreflightError, match="direct transfer refused"):
        direct.choose(s.with_(transfer_explicit=True), src, tgt)
    # refused between the preflight and the dump: the pull fails, the relay takes over, the dump arrives
    said.clear()
    art = run_dump_detached(s, str(tmp_path), "b10c7000000000c3", say=said.append, transfer="direct")
    assert not art.on_target and Path(art.dump_path).is_file()
    from trackerdb.files import sha256_file

    assert sha256_file(art.dump_path) == (art.manifest["dump"]["size_bytes"], art.manifest["dump"]["sha256"])
    assert any("FALLING BACK" in m for m in said), said


def _place(host, data: bytes, path: str) -> None:
    """``data`` into ``path`` (postgres, 0600) on ``host``, through stdin."""
    import base64

    host.run(f"base64 -d > {path} && chown postgres:postgres {path} && chmod 0600 {path}", sudo=True,
             stdin=base64.b64encode(data).decode())


def test_a_partial_pull_resumes_and_a_damaged_one_is_caught(hosts, tmp_path):
    s, src, tgt = hosts
    art = run_dump_detached(s, str(tmp_path), "7e5a7000000000d4", transfer="relay")  # a dump file to serve
    data = Path(art.dump_path).read_bytes()
    size, sha = art.manifest["dump"]["size_bytes"], art.manifest["dump"]["sha256"]
    key = "7e5a7000000000d5"
    job_dir = f"/var/lib/postgresql/trackerdb-jobs/dump-{key}"
    src.run(["install", "-d", "-m", "0700", "-o", "postgres", "-g", "postgres", job_dir], sudo=True)
    _place(src, data, f"{job_dir}/{s.database}.dump")
    base = "/var/lib/postgresql/trackerdb-jobs"
    partial = direct.partial_path(base, s.database, sha)
    dest = upload_path(s.data_mount, s.database, sha)
    try:
        # a killed pull left the first half: the re-run continues from there
        tgt.run(["rm", "-f", dest], sudo=True)
        tgt.run(["install", "-d", "-m", "0700", "-o", "postgres", "-g", "postgres", base], sudo=True)
        _place(tgt, data[: size // 2], partial)
        said: list[str] = []
        got = direct.pull(s, tgt, key, size, sha, say=said.append)
        assert got == dest and tgt.run(["sha256sum", dest], sudo=True).stdout.split()[0] == sha
        assert any(f"from byte {size // 2}" in m for m in said), said
        # a partial that is not a prefix of this dump: caught by the SHA-256, removed; the next run is clean
        tgt.run(["rm", "-f", dest], sudo=True)
        tgt.run(f"head -c {size // 2} /dev/urandom > {partial}", user="postgres")
        with pytest.raises(Exception, match="differs from the source"):
            direct.pull(s, tgt, key, size, sha)
        assert not tgt.exists(partial)
        assert direct.pull(s, tgt, key, size, sha) == dest
    finally:
        src.run(["rm", "-rf", job_dir], sudo=True, check=False)
        tgt.run(["rm", "-f", partial], sudo=True, check=False)
