"""lab.up / lab.down / lab.status: the public interface of the lab (see BRIEF: "The lab").

    from lab import api
    api.up("devlab"); api.status("devlab"); api.down("devlab")
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import platform
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trackerdb.settings import LAB_ROOT

from . import aws, hosts, image, render, source
from .naming import ROLES, SSH_ROLES, Names, check_name, subnet_for
from .outputs import settings_overlay, stack_outputs
from .state import State
from .util import LabError, alive, kill_and_wait, out, proc_start_time, progress, run

TOOLS = (
    "debootstrap",
    "ip",
    "unshare",
    "nsenter",
    "losetup",
    "nginx",
    "openssl",
    "apt-ftparchive",
    "ssh-keygen",
    "mount",
    "chroot",
)
SERVICES = {
    "target": {"sshd": 22},
    "source": {"sshd": 22, "postgresql": 5432},
    "repo": {"sshd": 22},
    "aws": {"https": 443},
}


def preflight() -> None:
    if platform.system() != "Linux":
        raise LabError(
            "the lab needs Linux (network namespaces, overlayfs, loop devices)", hint="run it on a Linux machine or VM"
        )
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, overlay mounts, loop devices)",
                       hint="run as root, e.g. sudo -E .venv/bin/invoke lab.up")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise LabError(f"missing host tools: {', '.join(missing)}", hint="run scripts/host-deps.sh")


@contextmanager
def _instance_lock(name: str):
    Path(LAB_ROOT).mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{LAB_ROOT}/.{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _taken_subnets(name: str) -> list[str]:
    taken = []
    for st in Path(LAB_ROOT).glob("*/state.json"):
        if st.parent.name != name:
            try:
                s = json.loads(st.read_text()).get("subnet")
            except (OSError, ValueError):
                s = None
            if s:
                taken.append(s)
    for r in json.loads(out(["ip", "-j", "route", "show", "table", "all"]) or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default" and ":" not in dst:
            try:
                taken.append(str(ipaddress.ip_network(dst, strict=False)))
            except ValueError:
                pass
    return taken


def _keygen(path: Path, comment: str) -> str:
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


# ---- up ---------------------------------------------------------------------------------------
def up(name: str, *, volume_gb: int = 2, scale: float = 1.0) -> dict:
    """Bring instance ``name`` up (reusing the cached image); returns ``status(name)``. Idempotent."""
    # The arguments first: a scale the dataset would refuse must not cost a lab (hosts, mounts, a loop device).
    check_name(name)
    check_up_args(volume_gb=volume_gb, scale=scale)
    preflight()
    with _instance_lock(name):
        st = State(name)
        if st["up"] and _healthy(st):
            progress(f"{name} is already up")
            return status(name)
        if st.dir.exists():
            progress(f"{name}: removing what a previous run left")
            _down(name)
        t0 = time.monotonic()
        try:
            _up(name, volume_gb=volume_gb, scale=scale)
        except BaseException:
            progress(f"{name}: up failed; run lab.down to clean up (state kept in {st.dir} for inspection)")
            raise
        progress(f"{name} is up in {time.monotonic() - t0:.1f}s")
    return status(name)


MAX_VOLUME_GB = 1024  # sparse, but a loop device of more than 1 TiB is never what a lab needs


def check_up_args(*, volume_gb, scale) -> None:
    """``up``'s sizes, before anything is made: what the dataset and the loop device would refuse later."""
    from .dataset_shape import _check as check_scale

    if isinstance(volume_gb, bool) or not isinstance(volume_gb, int) or not 1 <= volume_gb <= MAX_VOLUME_GB:
        raise LabError(f"lab data volume size {volume_gb!r} GB is not a whole number from 1 to {MAX_VOLUME_GB}",
                       hint="use e.g. --volume-gb 2 (sparse)")
    check_scale(scale)


def _up(name: str, *, volume_gb: int, scale: float) -> None:
    img = image.ensure()
    st = State(name)
    st.dir.mkdir(parents=True, exist_ok=True)
    (st.dir / "artifacts").mkdir(exist_ok=True)
    n = Names(name, subnet_for(name, _taken_subnets(name)))
    st["subnet"] = str(n.subnet)
    st["volume_gb"] = volume_gb
    progress(f"{name}: subnet {n.subnet}, bridge {n.bridge}")

    lab_pub = _keygen(st.dir / "id_ed25519", f"trackerdb-lab-{name}")
    (st.dir / "keys").mkdir(exist_ok=True)
    src_pg_pub = _keygen(st.dir / "keys" / "source_postgres", f"postgres@source.{name}")
    (st.dir / "aws").mkdir(exist_ok=True)
    aws.make_ca(st.dir, n.ip("aws"))
    ca_pem = (st.dir / "ca.crt").read_text()

    hosts.ensure_bridge(n)
    for role in ROLES:
        hosts.ensure_netns(n, role)

    progress(f"{name}: preparing target, source, repo (overlays, users, keys)")
    layers = {"target": "bare", "source": "pg", "repo": "pg"}
    roots, host_keys = {}, {}
    for role in SSH_ROLES:
        root = hosts.mount_overlay(img.lowerdir(layers[role]), st.dir / "hosts" / role)
        roots[role] = root
        host_keys[role] = hosts.host_keygen(root, role)
        hosts.write(root, "/etc/hosts", render.etc_hosts(n, role))
        hosts.write(root, "/etc/hostname", role + "\n")
        hosts.write(root, "/etc/resolv.conf", "# lab hosts resolve names through /etc/hosts only\n")
        hosts.write(root, "/etc/ssh/sshd_config", render.sshd_config(n.gateway))
        hosts.write(root, "/usr/local/sbin/lab-init", render.init_py(), 0o755)
        hosts.write(root, "/usr/local/share/ca-certificates/trackerdb-lab-ca.crt", ca_pem)
        with open(root / "etc/ssl/certs/ca-certificates.crt", "a") as f:  # what update-ca-certificates would do
            f.write(ca_pem)
        hosts.ensure_user(roots[role], "admin", [lab_pub], sudo=True)
    # known_hosts now: source's postgres needs the repo's key before it starts archiving
    kh = render.known_hosts(n, {r: host_keys[r] for r in SSH_ROLES})
    (st.dir / "known_hosts").write_text(kh)

    # target: only the lab's flat apt repository, and the data volume
    t = roots["target"]
    hosts.write(t, "/etc/apt/sources.list", render.apt_sources())
    for p in (t / "etc/apt/sources.list.d").glob("*"):
        p.unlink()
    loop = hosts.attach_loop(st.dir / "data.img", volume_gb)
    st["loop"] = loop
    major, minor = hosts.devnum(loop)
    by_id = render.BY_ID_PREFIX + n.volume_id.replace("-", "")

    # repo: postgres may log in with the source's postgres key; the repository path
    r = roots["repo"]
    hosts.ensure_user(r, "postgres", [src_pg_pub], sudo=False)
    uid, gid = hosts.ids(r, "postgres")
    for d in (render.REPO_PATH, "/var/log/pgbackrest", "/var/lib/pgbackrest"):
        p = r / d.lstrip("/")
        p.mkdir(parents=True, exist_ok=True)
        os.chown(p, uid, gid)
    os.chmod(r / render.REPO_PATH.lstrip("/"), 0o750)
    hosts.write(r, "/etc/pgbackrest/pgbackrest.conf", render.repo_pgbackrest_conf(), 0o640, (0, gid))
    if (r / "etc/pgbackrest.conf").exists():
        (r / "etc/pgbackrest.conf").unlink()

    # source: postgres's SSH identity and pinned repo key; postgres may take key logins, as with
    # production's sshd (UsePAM yes does not refuse a "!"-locked account; the lab's sshd runs without
    # PAM): the cutover's direct transfer lets the target read the dump through a forced command
    s = roots["source"]
    hosts.chroot(s, "usermod", "-p", "*", "postgres")
    uid, gid = hosts.ids(s, "postgres")
    sshd = s / "var/lib/postgresql/.ssh"
    sshd.mkdir(parents=True, exist_ok=True)
    os.chown(sshd, uid, gid)
    os.chmod(sshd, 0o700)
    hosts.write(
        s, "/var/lib/postgresql/.ssh/id_ed25519", (st.dir / "keys/source_postgres").read_text(), 0o600, (uid, gid)
    )
    hosts.write(s, "/var/lib/postgresql/.ssh/id_ed25519.pub", src_pg_pub + "\n", 0o644, (uid, gid))
    hosts.write(
        s, "/var/lib/postgresql/.ssh/known_hosts", render.known_hosts(n, {"repo": host_keys["repo"]}), 0o644, (uid, gid)
    )
    source.prepare(s, n, src_pg_pub)

    progress(f"{name}: starting aws (moto + nginx TLS) and the hosts' sshd")
    aws.start(st, n)
    for role in SSH_ROLES:
        script = render.launch_script(str(roots[role]), role,
                                      loop=(Path(loop).name, major, minor) if role == "target" else None,
                                      by_id=by_id if role == "target" else None,
                                      apt_repo=str(img.apt) if role == "target" else None,
                                      debian17_repo=str(img.debian17) if role == "target" and img.debian17 else None)
        hosts.launch(st, n, role, roots[role], script)
        st["launch"] = (st["launch"] or {}) | {role: script}
    for role in SSH_ROLES:
        hosts.wait_port(st, role, n.ip(role), 22)

    progress(f"{name}: source: creating the PostgreSQL 16.10 cluster")
    source.create_cluster(st, n)

    aws.wait_ready(st, n)
    seeded = aws.seed(st, n)
    progress(f"{name}: aws seeded (bucket, secrets, Route53 zone {seeded['zone_id']})")

    outputs = stack_outputs(n, volume_size_gb=volume_gb)
    (st.dir / "stack-outputs.json").write_text(render.to_json(outputs))
    overlay = settings_overlay(n, str(st.dir), repo_host_key=host_keys["repo"], zone_id=seeded["zone_id"])
    (st.dir / "settings.json").write_text(render.to_json(overlay))

    from trackerdb.session import connect
    from trackerdb.settings import HostSpec

    spec = HostSpec.from_dict("source", overlay["source"])
    if spec is None:
        raise LabError("the settings overlay names no source host", hint="run lab.down and lab.up")
    with connect(spec) as rs:
        result = source.fill(st, n, rs, scale)
    st["dataset"] = {k: result[k] for k in ("rows", "bytes", "seconds", "scale", "seed")}
    source.stanza(st)
    st["up"] = True


def _services(st: State, role: str) -> dict:
    """The role's services and ports (the source's cluster may have been moved: set_source_port)."""
    svcs = dict(SERVICES[role])
    if role == "source":
        svcs["postgresql"] = int(st.data.get("source_pg_port") or 5432)
    return svcs


def _healthy(st: State) -> bool:
    return all(_init_alive(st, r) for r in SSH_ROLES) and all(
        _port_open(st, r, p) for r in SERVICES for p in _services(st, r).values())


def set_source_port(name: str, port: int) -> dict:
    """Move the source's cluster to ``port`` and record it as this instance's ``source_pg_port`` in its
    settings.json, so Settings loaded against the lab reach it there. 5432 puts it back."""
    check_name(name)
    with _instance_lock(name):
        st = State(name)
        if not st["up"]:
            raise LabError(f"lab {name} is not up", hint="run lab.up first")
        source.set_port(st, port)
        path = st.dir / "settings.json"
        overlay = json.loads(path.read_text())
        overlay.pop("source_pg_port", None)
        if int(port) != 5432:
            overlay["source_pg_port"] = int(port)
        path.write_text(render.to_json(overlay))
        st["source_pg_port"] = int(port)
    return {"source_pg_port": int(port)}


def _init_alive(st: State, role: str) -> bool:
    pid = st.init(role)
    if not pid:
        return False
    for e in st["pids"].get(role, []):
        if e["pid"] == pid:
            return alive(pid) and proc_start_time(pid) == e.get("start")
    return False


def _port_open(st: State, role: str, port: int) -> bool:
    if not st["subnet"]:
        return False
    ip = Names(st.name, ipaddress.IPv4Network(st["subnet"])).ip(role)
    try:
        with socket.create_connection((ip, port), timeout=1):
            return True
    except OSError:
        return False


# ---- reboot -----------------------------------------------------------------------------------
def reboot(name: str, role: str = "target", timeout: float = 60) -> dict:
    """Reboot one host: its services stopped by its own init script, every process of its namespaces
    ended (its mounts, the data volume's included, vanish with them), then its init started again from
    the same launch script. What comes back is what the host's boot path brings back."""
    check_name(name)
    if role not in SSH_ROLES:
        raise LabError(f"no host {role!r} to reboot", hint=f"one of {', '.join(SSH_ROLES)}")
    with _instance_lock(name):
        st = State(name)
        script = (st["launch"] or {}).get(role)
        if not st["up"] or not script:
            raise LabError(f"lab {name} is not up (or was started by an older version)", hint="run lab.up first")
        n = Names(name, ipaddress.IPv4Network(st["subnet"]))
        t0 = time.monotonic()
        hosts.hexec(
            st, role, "if [ -x /etc/init.d/postgresql ]; then /etc/init.d/postgresql stop; fi", check=False, timeout=120
        )
        kill_and_wait([e["pid"] for e in st["pids"].get(role, [])])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and out(["ip", "netns", "pids", n.netns(role)]).strip():
            time.sleep(0.2)
        left = out(["ip", "netns", "pids", n.netns(role)]).split()
        if left:
            raise LabError(f"{role}: {len(left)} process(es) outlived the reboot", hint="run lab.down and lab.up")
        st.data["pids"][role] = []
        st.save()
        hosts.launch(st, n, role, st.dir / "hosts" / role / "root", script)
        hosts.wait_port(st, role, n.ip(role), 22)
        return {"host": role, "rebooted_in_s": round(time.monotonic() - t0, 1)}


# ---- down -------------------------------------------------------------------------------------
def down(name: str) -> dict:
    """Remove everything instance ``name`` made. Idempotent; safe after a crash or a half-built lab."""
    preflight()
    check_name(name)
    with _instance_lock(name):
        t0 = time.monotonic()
        report = _down(name)
        progress(f"{name} is down in {time.monotonic() - t0:.1f}s")
    return report


def _our_pids(st: State, n: Names) -> set[int]:
    pids: set[int] = set()
    ours = set(hosts.netns_list())
    for role in ROLES:
        if n.netns(role) in ours:
            pids.update(int(p) for p in out(["ip", "netns", "pids", n.netns(role)], check=False).split())
    for pid, start in st.all_pids():
        if alive(pid) and proc_start_time(pid) == start:
            pids.add(pid)
    prefix = str(st.dir) + "/"
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (os.readlink(d / "root") + "/").startswith(prefix):
                    pids.add(int(d.name))
            except OSError:
                pass
    pids.discard(os.getpid())
    return pids


def _our_mounts(st: State) -> list[str]:
    prefix = str(st.dir) + "/"
    mps = []
    for line in Path("/proc/mounts").read_text().splitlines():
        mp = line.split()[1].replace("\\040", " ")
        if mp.startswith(prefix):
            mps.append(mp)
    return sorted(set(mps), key=len, reverse=True)


def _our_loops(st: State) -> list[str]:
    data = json.loads(out(["losetup", "-J", "-l"]) or '{"loopdevices": []}')
    prefix = str(st.dir) + "/"
    return [d["name"] for d in data.get("loopdevices", []) if (d.get("back-file") or "").startswith(prefix)]


def _down(name: str) -> dict:
    st = State(name)
    n = Names(name, ipaddress.IPv4Network(st["subnet"] or "10.255.255.0/24"))
    report = {"killed": 0, "unmounted": 0, "loops": 0, "netns": 0, "links": 0}
    for _ in range(3):  # processes can fork while we kill; repeat until none
        pids = _our_pids(st, n)
        if not pids:
            break
        left = kill_and_wait(pids)
        report["killed"] += len(pids) - len(left)
    progress(f"{name}: {report['killed']} process(es) killed")
    for mp in _our_mounts(st):
        if run(["umount", mp], check=False).returncode != 0:
            run(["umount", "-l", mp], check=False)
        report["unmounted"] += 1
    progress(f"{name}: {report['unmounted']} mount(s) removed")
    for dev in _our_loops(st):
        run(["losetup", "-d", dev], check=False)
        report["loops"] += 1
    existing = set(hosts.netns_list())
    for role in ROLES:
        if n.netns(role) in existing:
            run(["ip", "netns", "del", n.netns(role)], check=False)
            report["netns"] += 1
        if hosts.link_exists(n.veth(role)):
            run(["ip", "link", "del", n.veth(role)], check=False)
            report["links"] += 1
    if hosts.link_exists(n.bridge):
        run(["ip", "link", "del", n.bridge], check=False)
        report["links"] += 1
    progress(f"{name}: loop device, namespaces and links removed")
    remaining = leftovers(name)
    if remaining:
        raise LabError(f"{name}: lab.down left {remaining}", hint="inspect and remove by hand; then re-run lab.down")
    if st.dir.exists():
        for p in st.dir.iterdir():
            if p.name == "artifacts":  # journals and reports outlive the lab; an empty one goes
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
                continue
            if p.is_dir() and not p.is_symlink():
                run(["rm", "-rf", "--one-file-system", str(p)])
            else:
                p.unlink()
        if not any(st.dir.iterdir()):
            st.dir.rmdir()
    return report


def leftovers(name: str) -> dict:
    """What of instance ``name`` still exists on the machine (empty when down is complete)."""
    st = State(name)
    n = Names(name, ipaddress.IPv4Network(st["subnet"] or "10.255.255.0/24"))
    left: dict[str, list] = {}
    ns = [x for x in hosts.netns_list() if x in {n.netns(r) for r in ROLES}]
    if ns:
        left["netns"] = ns
    mounts = _our_mounts(st)
    if mounts:
        left["mounts"] = mounts
    loops = _our_loops(st)
    if loops:
        left["loops"] = loops
    pids = sorted(_our_pids(st, n))
    if pids:
        left["pids"] = pids
    links = [x for x in [n.bridge] + [n.veth(r) for r in ROLES] if hosts.link_exists(x)]
    if links:
        left["links"] = links
    return left


# ---- status -----------------------------------------------------------------------------------
def status(name: str) -> dict:
    """Hosts, addresses, services and file paths of instance ``name`` (a stable interface for tests and tools)."""
    check_name(name)
    st = State(name)
    d = str(st.dir)
    res = {"name": name, "up": False, "state_dir": d, "subnet": st["subnet"],
           "stack_outputs": f"{d}/stack-outputs.json", "settings": f"{d}/settings.json",
           "known_hosts": f"{d}/known_hosts", "key_file": f"{d}/id_ed25519", "ca_bundle": f"{d}/ca.crt", "hosts": {}}
    if not st["subnet"]:
        return res
    n = Names(name, ipaddress.IPv4Network(st["subnet"]))
    for role in ROLES:
        h: dict[str, Any] = {"address": n.ip(role), "netns": n.netns(role), "names": render.host_aliases(n, role),
             "services": {svc: _port_open(st, role, port) for svc, port in _services(st, role).items()}}
        if role in SSH_ROLES:
            h |= {
                "user": "admin",
                "key_file": f"{d}/id_ed25519",
                "known_hosts": f"{d}/known_hosts",
                "init_pid": st.init(role),
            }
        else:
            h |= {"endpoint_url": f"https://{n.ip(role)}", "ca_bundle": f"{d}/ca.crt"}
        res["hosts"][role] = h
    res["hosts"]["target"] |= {
        "data_volume": st["loop"],
        "data_volume_by_id": render.BY_ID_PREFIX + n.volume_id.replace("-", ""),
    }
    res["dataset"] = st["dataset"]
    res["up"] = bool(st["up"]) and all(all(h["services"].values()) for h in res["hosts"].values())
    return res
