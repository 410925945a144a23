"""Facts: a command that reads host state plus a pure parser of its output (pyinfra's split)."""

from __future__ import annotations

import shlex

from .volume import parse_blkid, parse_findmnt, parse_lsblk_serial  # noqa: F401  (re-exported parsers)


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


def parse_meminfo(text: str) -> int:
    """/proc/meminfo -> MemTotal in bytes."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemTotal in /proc/meminfo")


def parse_addresses(text: str) -> set[str]:
    """``hostname -I`` -> the host's addresses."""
    return set(text.split())


def parse_lsclusters(text: str) -> list[dict]:
    """``pg_lsclusters -h`` -> [{version, cluster, port, status, owner, datadir, log}]."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 6:
            out.append({"version": f[0], "cluster": f[1], "port": f[2], "status": f[3], "owner": f[4], "datadir": f[5]})
    return out


def parse_kv_rows(text: str) -> dict[str, str]:
    """psql ``-At -F '|'`` two-column rows -> dict."""
    out = {}
    for line in text.splitlines():
        if "|" in line:
            k, v = line.split("|", 1)
            out[k] = v
    return out


# ---- command lines ------------------------------------------------------------------------------
OS_RELEASE = "cat /etc/os-release"
MEMINFO = "cat /proc/meminfo"
NPROC = "nproc"
ADDRESSES = "hostname -I"


def resolve_device(path: str) -> list[str]:
    return ["readlink", "-e", path]


def size_bytes(device: str) -> list[str]:
    return ["blockdev", "--getsize64", device]


def majmin(device: str) -> str:
    return f"printf '%d:%d' 0x$(stat -L -c %t {shlex.quote(device)}) 0x$(stat -L -c %T {shlex.quote(device)})"


def serial(device: str) -> list[str]:
    return ["lsblk", "-J", "-d", "-o", "NAME,SERIAL", device]


def blkid(device: str) -> list[str]:
    return ["blkid", "-p", "-o", "export", device]  # -p: probe the device itself, not a cache


def findmnt(mount: str) -> list[str]:
    return ["findmnt", "-J", "-o", "SOURCE,TARGET,FSTYPE,MAJ:MIN", "--mountpoint", mount]


def dir_listing(path: str) -> str:
    return f"ls -A1 {shlex.quote(path)} 2>/dev/null; true"


VERSIONS_SQL = (
    "SELECT 'server', current_setting('server_version_num') UNION ALL "
    "SELECT name, coalesce(default_version, '') FROM pg_available_extensions WHERE name IN ('timescaledb', 'postgis') "
    "UNION ALL SELECT 'data_directory', current_setting('data_directory') UNION ALL "
    "SELECT 'shared_preload_libraries', current_setting('shared_preload_libraries');\n"
)
PENDING_RESTART_SQL = "SELECT name FROM pg_settings WHERE pending_restart;\n"
ROLE_SQL = ("SELECT coalesce(rolpassword, '') || '|' || CASE WHEN rolcanlogin THEN 't' ELSE 'f' END FROM pg_authid "
            "WHERE rolname = {name};\n")
