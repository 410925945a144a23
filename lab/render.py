"""Pure renderers: the text of every file the lab writes (unit-tested without root)."""

from __future__ import annotations

import json
import shlex

from .naming import AWS_NAME, REPO_NAME, ROLES, Names

BY_ID_PREFIX = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_"
REPO_PATH = "/var/pg_backrest_data/repo3"
SHARED_STANZA = "tracker"
LAB_APT = "/srv/lab-apt"
# Debian's PostgreSQL 17 (lab/debian17.py), mounted in the target but no apt source of it: the engine
# gate's lab test adds DEBIAN17_LIST for its duration
LAB_APT_DEBIAN17 = "/srv/lab-apt-debian17"
DEBIAN17_LIST = "/etc/apt/sources.list.d/lab-debian17.list"


def host_aliases(n: Names, role: str) -> list[str]:
    names = [n.hostname(role), role]
    if role == "repo":
        names.append(REPO_NAME)
    if role == "aws":
        names.append(AWS_NAME)
    return names


def etc_hosts(n: Names, role: str) -> str:
    """Every lab host by name; production names map to lab hosts only."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for r in ROLES:
        lines.append(f"{n.ip(r)}\t" + " ".join(host_aliases(n, r)))
    return "\n".join(lines) + "\n"


def sshd_config(operator_ip: str | None = None) -> str:
    # OpenSSH >= 9.8 penalises sources whose connections end before authentication (PerSourcePenalties);
    # the lab's tests refuse host keys on purpose many times from the operator's address, which must not
    # lock that address out. Other sources keep the default penalties.
    exempt = f"PerSourcePenaltyExemptList {operator_ip}\n" if operator_ip else ""
    return """# trackerdb lab: keys only, one pinned ed25519 host key
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
""" + exempt


def known_hosts(n: Names, host_keys: dict[str, str]) -> str:
    """``host_keys``: role -> "ssh-ed25519 AAAA..." (comment dropped). Each key by IP and by every name."""
    lines = []
    for role, key in host_keys.items():
        key = " ".join(key.split()[:2])
        lines.append(",".join([n.ip(role)] + host_aliases(n, role)) + " " + key)
    return "\n".join(lines) + "\n"


def apt_sources() -> str:
    return f"deb [trusted=yes] file:{LAB_APT} ./\n"


def debian17_sources() -> str:
    return f"deb [trusted=yes] file:{LAB_APT_DEBIAN17} ./\n"


def sudoers(user: str = "admin") -> str:
    return f"{user} ALL=(ALL) NOPASSWD:ALL\n"


def init_py() -> str:
    """PID 1 of a lab host's pid namespace (runs inside the chroot): the host's boot path, then reap
    orphans, exit on TERM. Boot does what a Debian host's does for us: mount what /etc/fstab lists
    (systemd's local-fs), then start the clusters whose start.conf says auto through postgresql-common's
    own boot script (what systemd's postgresql@ units do), then sshd. Nothing here knows about the
    project: a host comes back after `lab.reboot` only if provisioning left it able to."""
    return '''#!/usr/bin/python3
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
with open("/var/log/lab-boot.log", "ab") as log:
    log.write(b"boot\\n")
    log.flush()
    subprocess.run(["mount", "-a"], stdout=log, stderr=log)
    if os.access("/etc/init.d/postgresql", os.X_OK):
        subprocess.run(["/etc/init.d/postgresql", "start"], stdout=log, stderr=log)
subprocess.Popen(["/usr/sbin/sshd", "-D", "-E", "/var/log/sshd.log"])
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
'''


def launch_script(root: str, role: str, *, loop: tuple[str, int, int] | None = None, by_id: str | None = None,
                  apt_repo: str | None = None, debian17_repo: str | None = None) -> str:
    """Host-side shell run as PID 1 of fresh mount+pid+uts namespaces: private /dev, /proc, /sys, /run, then chroot.

    Every mount made here lives only in the host's mount namespace: it vanishes with the namespace.
    ``loop`` is (name, major, minor) of the data volume (the same /dev/loopN name as on the machine).
    """
    r = shlex.quote(root)
    lines = [
        "set -eu",
        f"mount -t proc proc {r}/proc",
        f"mount -t tmpfs -o mode=755,size=16m,nosuid tmpfs {r}/dev",
        *(f"mknod -m 666 {r}/dev/{d} c {ma} {mi}" for d, ma, mi in
          (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))),
        f"mkdir -p {r}/dev/pts {r}/dev/shm",
        f"mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts {r}/dev/pts",
        f"ln -s pts/ptmx {r}/dev/ptmx",
        f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {r}/dev/shm",
        f"ln -s /proc/self/fd {r}/dev/fd",
        f"ln -s /proc/self/fd/0 {r}/dev/stdin",
        f"ln -s /proc/self/fd/1 {r}/dev/stdout",
        f"ln -s /proc/self/fd/2 {r}/dev/stderr",
        f"mount -t sysfs -o ro,nosuid,nodev,noexec sysfs {r}/sys",
        f"mount -t tmpfs -o mode=755,nosuid,nodev tmpfs {r}/run",
    ]
    if loop:
        name, major, minor = loop
        lines.append(f"mknod -m 660 {r}/dev/{name} b {major} {minor}")
        if by_id:
            rel = by_id.lstrip("/").split("/", 1)[1]  # disk/by-id/nvme-...
            lines.append(f"mkdir -p {r}/dev/disk/by-id")
            lines.append(f"ln -s ../../{name} {r}/dev/{shlex.quote(rel)}")
    for src, at in ((apt_repo, LAB_APT), (debian17_repo, LAB_APT_DEBIAN17)):
        if src:
            lines.append(f"mkdir -p {r}{at}")
            lines.append(f"mount --bind {shlex.quote(src)} {r}{at}")
            lines.append(f"mount -o remount,bind,ro {r}{at}")
    lines.append(f"hostname {shlex.quote(role)}")
    lines.append(f"exec chroot {r} /usr/bin/python3 /usr/local/sbin/lab-init")
    return "\n".join(lines) + "\n"


def pg_conf(ip: str, stanza: str = SHARED_STANZA) -> str:
    return f"""# trackerdb lab: the old shared host
listen_addresses = 'localhost,{ip}'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
# production's edition: compression, continuous aggregates and policies (the tsl/ module)
timescaledb.license = timescale
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --stanza={stanza} archive-push %p'
archive_timeout = 60
max_wal_senders = 3
password_encryption = scram-sha-256
"""


def pg_hba_extra(subnet: str) -> str:
    return f"host all all {subnet} scram-sha-256\n"


def source_pgbackrest_conf(pg_major: int = 16, stanza: str = SHARED_STANZA, port: int = 5432) -> str:
    return f"""[global]
log-level-console=warn
log-level-file=info
log-path=/var/log/pgbackrest
compress-type=zst
start-fast=y
repo3-host={REPO_NAME}
repo3-host-user=postgres
repo3-path={REPO_PATH}

[{stanza}]
pg1-path=/var/lib/postgresql/{pg_major}/main
archive-timeout=60
""" + (f"pg1-port={int(port)}\n" if int(port) != 5432 else "")


def repo_pgbackrest_conf() -> str:
    return f"""[global]
log-level-console=warn
log-level-file=info
log-path=/var/log/pgbackrest
repo3-path={REPO_PATH}
"""


def nginx_conf(state: str, ip: str, upstream: str = "127.0.0.1:5000") -> str:
    s = state.rstrip("/")
    return f"""# trackerdb lab: TLS in front of moto (moto's own --ssl does not work with pgBackRest)
worker_processes 1;
pid {s}/nginx.pid;
error_log {s}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {s}/nginx-access.log;
    client_body_temp_path {s}/nginx-body;
    proxy_temp_path {s}/nginx-proxy;
    fastcgi_temp_path {s}/nginx-fastcgi;
    uwsgi_temp_path {s}/nginx-uwsgi;
    scgi_temp_path {s}/nginx-scgi;
    client_max_body_size 0;
    server {{
        listen {ip}:443 ssl;
        server_name {AWS_NAME};
        ssl_certificate {s}/server.crt;
        ssl_certificate_key {s}/server.key;
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def server_cert_ext(ip: str) -> str:
    return (f"subjectAltName=DNS:{AWS_NAME},DNS:s3.{AWS_NAME},IP:{ip}\n"
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
