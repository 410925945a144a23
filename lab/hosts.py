"""Executors for one lab host: network namespace + veth on the lab bridge, overlay root, private namespaces.

Everything created here is recorded in the instance's state (see ``state.py``) so ``down`` can remove it
by PID and by name, even after a crash half-way through ``up``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from . import render
from .naming import Names
from .state import State
from .util import LabError, out, proc_start_time, run


def link_exists(name: str, netns: str | None = None) -> bool:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", name]
    return run(cmd, check=False).returncode == 0


def netns_list() -> list[str]:
    return [line.split()[0] for line in out(["ip", "netns", "list"]).splitlines() if line.strip()]


def ensure_bridge(n: Names) -> None:
    if not link_exists(n.bridge):
        run(["ip", "link", "add", n.bridge, "type", "bridge"])
    run(["ip", "addr", "replace", f"{n.gateway}/{n.subnet.prefixlen}", "dev", n.bridge])
    run(["ip", "link", "set", n.bridge, "up"])


def ensure_netns(n: Names, role: str) -> None:
    ns = n.netns(role)
    if ns not in netns_list():
        run(["ip", "netns", "add", ns])
    host_if, peer = n.veth(role), n.veth(role) + "p"
    if not link_exists("eth0", ns):
        if link_exists(host_if):
            run(["ip", "link", "del", host_if])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", peer, "netns", ns])
        run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
    run(["ip", "link", "set", host_if, "master", n.bridge, "up"])
    run(["ip", "-n", ns, "addr", "replace", f"{n.ip(role)}/{n.subnet.prefixlen}", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    # deliberately no default route: lab hosts reach the lab subnet only, never the internet


def mount_overlay(lowerdir: str, hostdir: Path) -> Path:
    root, upper, work = hostdir / "root", hostdir / "upper", hostdir / "work"
    for d in (root, upper, work):
        d.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(root):
        run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={lowerdir},upperdir={upper},workdir={work}",
                str(root),
            ]
        )
    return root


def chroot(root: Path, *cmd: str, input: str | None = None, check: bool = True):
    return run(["chroot", str(root), *cmd], input=input, check=check)


def write(root: Path, path: str, content: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content)
    os.chmod(p, mode)
    if owner:
        os.chown(p, *owner)


def ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == user:
            return int(f[2]), int(f[3])
    raise LabError(f"user {user} missing in {root}")


def ensure_user(root: Path, user: str, pubkeys: list[str], *, sudo: bool) -> None:
    if chroot(root, "id", "-u", user, check=False).returncode != 0:
        chroot(root, "useradd", "-m", "-s", "/bin/bash", user)
    chroot(
        root, "usermod", "-p", "*", "-s", "/bin/bash", user
    )  # not locked ("!"): sshd without PAM refuses locked accounts
    uid, gid = ids(root, user)
    home = chroot(root, "sh", "-c", f"getent passwd {shlex.quote(user)} | cut -d: -f6").stdout.decode().strip()
    ssh = root / home.lstrip("/") / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    os.chown(ssh, uid, gid)
    os.chmod(ssh, 0o700)
    write(root, f"{home}/.ssh/authorized_keys", "".join(k.strip() + "\n" for k in pubkeys), 0o600, (uid, gid))
    if sudo:
        write(root, f"/etc/sudoers.d/lab-{user}", render.sudoers(user), 0o440)


def host_keygen(root: Path, role: str) -> str:
    key = root / "etc/ssh/ssh_host_ed25519_key"
    for p in root.joinpath("etc/ssh").glob("ssh_host_*"):
        p.unlink()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{role}", "-f", str(key)])
    return key.with_suffix(".pub").read_text().strip()


def launch(st: State, n: Names, role: str, root: Path, script: str) -> int:
    """Start the host's PID 1 in its netns under fresh mount+pid+uts+ipc namespaces; record its PIDs."""
    log = open(st.dir / f"{role}-init.log", "ab")
    cmd = ["ip", "netns", "exec", n.netns(role), "unshare", "--mount", "--propagation", "private", "--pid", "--uts",
           "--ipc", "--fork", "--", "/bin/sh", "-c", script]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    st.add_pid(role, p.pid, proc_start_time(p.pid))
    init = _wait_child(p.pid)
    if init is None:
        raise LabError(f"{role}: the host's init did not start (see {st.dir}/{role}-init.log)")
    st.add_pid(role, init, proc_start_time(init))
    st.set_init(role, init)
    return init


def _wait_child(pid: int, timeout: float = 10.0) -> int | None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        if kids:
            return int(kids[0])
        time.sleep(0.02)
    return None


def nsenter_cmd(init_pid: int, cmd: list[str] | str, user: str | None = None) -> list[str]:
    """Run inside a started host: its namespaces, its root, optionally as ``user`` (via runuser, no PAM prompt)."""
    line = cmd if isinstance(cmd, str) else shlex.join(cmd)
    if user:
        inner = ["/usr/sbin/runuser", "-u", user, "--", "/bin/sh", "-c", f"cd ~ 2>/dev/null; {line}"]
    else:
        inner = ["/bin/sh", "-c", line]
    return ["nsenter", "-t", str(init_pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w"] + inner


def hexec(
    st: State,
    role: str,
    cmd,
    *,
    user: str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 600,
):
    init = st.init(role)
    if not init:
        raise LabError(f"{role} is not running")
    return run(nsenter_cmd(init, cmd, user), input=input, check=check, timeout=timeout)


def wait_port(st: State, role: str, ip: str, port: int, timeout: float = 20.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise LabError(f"{role}: nothing listens on {ip}:{port} after {timeout:.0f}s", hint=f"see {st.dir}/{role}-init.log")


def attach_loop(image: Path, size_gb: int) -> str:
    if not image.exists():
        with open(image, "wb") as f:
            f.truncate(size_gb * 1024**3)  # sparse
    existing = out(["losetup", "-j", str(image), "-O", "NAME", "-n"]).split()
    if existing:
        return existing[0]
    return out(["losetup", "--find", "--show", str(image)]).strip()


def devnum(dev: str) -> tuple[int, int]:
    rdev = os.stat(dev).st_rdev
    return os.major(rdev), os.minor(rdev)
