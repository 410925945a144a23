"""The base-image cache: a debootstrapped Debian trixie "bare" layer, TimescaleDB .debs built from the
vendored upstream source, a "pg" overlay layer on top of bare, and a flat apt repository made from the
packages the pg layer installed.

Layout (shared, read-only once built; several lab instances use it at once)::

    /var/cache/trackerdb-lab/bare-<hash>/rootfs     minbase + sshd, sudo, python3, ...
    /var/cache/trackerdb-lab/tsdb-<hash>/debs       timescaledb-2-{,loader-}postgresql-17_2.18.2~debian13 (hash: the tarball's SHA-256, ...)
    /var/cache/trackerdb-lab/pg-<hash>/upper        overlay upper over bare: PostgreSQL 17, PostGIS, TimescaleDB 2.18.2, pgBackRest
    /var/cache/trackerdb-lab/pg-<hash>/apt          the .debs of that install + Packages/Release (the target's only apt source)

The TimescaleDB build's compilers and headers live in a throw-away overlay: only the two .debs are kept,
so neither the source host nor the target's apt repository carries build-only packages.

Each directory's name is a hash of what went into it, so changing a package list builds a new layer.
Builds run under a lock and inside a private mount+pid namespace, so a crash leaves no mount behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import tsdb
from .util import LabError, progress, retry, run

CACHE = Path(os.environ.get("TRACKERDB_LAB_CACHE", "/var/cache/trackerdb-lab"))
SUITE = "trixie"
MIRROR = os.environ.get("TRACKERDB_LAB_MIRROR", "http://deb.debian.org/debian")
BARE_PKGS = ("openssh-server", "sudo", "python3", "iproute2", "ca-certificates", "e2fsprogs", "xfsprogs", "procps", "less")
PG_PKGS = ("postgresql-17", "postgresql-17-postgis-3", "pgbackrest")  # + TimescaleDB from the tsdb layer
LAYOUT_VERSION = "1"  # bump when the build steps below change in a way that matters


def layer_hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Image:
    bare: Path   # rootfs of the bare layer
    pg: Path     # overlay upper of the pg layer (lower = bare)
    apt: Path    # flat apt repository
    tsdb: Path   # the TimescaleDB .debs built from source

    def lowerdir(self, layer: str) -> str:
        return str(self.bare) if layer == "bare" else f"{self.pg}:{self.bare}"


def paths(cache: Path = CACHE) -> Image:
    bh = layer_hash(LAYOUT_VERSION, SUITE, BARE_PKGS)
    th = layer_hash(LAYOUT_VERSION, bh, tsdb.SHA256, tsdb.PKG_VERSION, tsdb.BUILD_PKGS, tsdb.BOOTSTRAP_FLAGS,
                    sorted(tsdb.control_env().items()))
    ph = layer_hash(LAYOUT_VERSION, bh, PG_PKGS, th)
    return Image(bare=cache / f"bare-{bh}" / "rootfs", pg=cache / f"pg-{ph}" / "upper", apt=cache / f"pg-{ph}" / "apt",
                 tsdb=cache / f"tsdb-{th}" / "debs")


def debootstrap_cmd(root: Path, mirror: str = MIRROR) -> list[str]:
    return ["debootstrap", "--variant=minbase", "--include=" + ",".join(BARE_PKGS), SUITE, str(root), mirror]


def pg_build_script(bare: Path, tmp: Path, mirror: str = MIRROR, tsdb_debs: Path | None = None) -> str:
    """Shell run in a private mount+pid namespace: install the pg packages (Debian's, plus the TimescaleDB
    .debs in ``tsdb_debs``) into an overlay upper, keep every installed .deb for the flat repository."""
    m = shlex.quote(str(tmp / "merged"))
    q = shlex.quote
    pkgs = " ".join(PG_PKGS)
    local = ""
    if tsdb_debs is not None:
        local = " " + " ".join(f"/tmp/tsdb/{p}_*.deb" for p in (tsdb.LOADER_PKG, tsdb.MAIN_PKG))
    return f"""set -eu
mount -t overlay overlay -o lowerdir={q(str(bare))},upperdir={q(str(tmp / 'upper'))},workdir={q(str(tmp / 'work'))} {m}
mount -t proc proc {m}/proc
mount --bind /dev {m}/dev
cp /etc/resolv.conf {m}/etc/resolv.conf
echo 'deb {mirror} {SUITE} main' > {m}/etc/apt/sources.list
rm -f {m}/etc/apt/sources.list.d/*
printf '#!/bin/sh\\nexit 101\\n' > {m}/usr/sbin/policy-rc.d && chmod 755 {m}/usr/sbin/policy-rc.d
{_copy_debs(tsdb_debs, m)}ok=
for i in 1 2 3; do
  # (sh -c: the local .debs' globs expand inside the chroot)
  if chroot {m} apt-get -q update && chroot {m} env DEBIAN_FRONTEND=noninteractive sh -c "apt-get -q install -y \\
       --no-install-recommends -o APT::Keep-Downloaded-Packages=true {pkgs}{local}"; then ok=1; break; fi
  echo "apt failed (attempt $i/3), retrying" >&2; sleep $((i*5))
done
[ -n "$ok" ]
chroot {m} pg_dropcluster --stop 17 main 2>/dev/null || true
rm -f {m}/usr/sbin/policy-rc.d
mkdir -p {q(str(tmp / 'apt'))}
mv {m}/var/cache/apt/archives/*.deb {q(str(tmp / 'apt'))}/
{_keep_debs(tsdb_debs, m, tmp / 'apt')}rm -rf {m}/var/lib/apt/lists/* {m}/var/cache/apt/*.bin
"""


def _copy_debs(debs: Path | None, m: str) -> str:
    if debs is None:
        return ""
    return f"mkdir -p {m}/tmp/tsdb && cp {shlex.quote(str(debs))}/*.deb {m}/tmp/tsdb/\n"


def _keep_debs(debs: Path | None, m: str, apt: Path) -> str:
    # apt installs local .debs without copying them to its archive cache: the flat repository takes them from here
    if debs is None:
        return ""
    return f"mv {m}/tmp/tsdb/*.deb {shlex.quote(str(apt))}/ && rmdir {m}/tmp/tsdb\n"


def _lock(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _build_bare(final: Path) -> None:
    top = final.parent
    tmp = top.with_name(top.name + ".tmp")

    def attempt():
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rootfs").mkdir(parents=True)
        # in a private mount namespace: debootstrap's /proc and /sys mounts vanish even if it dies
        run(["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--"] + debootstrap_cmd(tmp / "rootfs"), timeout=1200)

    progress(f"building the bare layer (debootstrap {SUITE} minbase from {MIRROR})")
    retry(attempt, what="debootstrap")
    r = tmp / "rootfs"
    for p in list((r / "etc/ssh").glob("ssh_host_*")) + list((r / "var/lib/apt/lists").glob("*_*")) + list((r / "var/cache/apt/archives").glob("*.deb")):
        p.unlink()
    if top.exists():
        shutil.rmtree(top)
    tmp.rename(top)


def _build_tsdb(img: Image) -> None:
    """TimescaleDB from the verified upstream tarball -> two .debs (see tsdb.py); ~1 min of compiling on 2 cores."""
    import tarfile
    import time

    src = tsdb.tarball()
    tsdb.verify_tarball(src)
    top = img.tsdb.parent
    tmp = top.with_name(top.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("upper", "work", "merged", "src", "debs"):
        (tmp / d).mkdir(parents=True)
    with tarfile.open(src, "r:xz") as tf:
        tf.extractall(tmp / "src", filter="data")
    progress(f"building TimescaleDB {tsdb.VERSION} from {src.name} (SHA-256 verified) into {tsdb.MAIN_PKG} and {tsdb.LOADER_PKG}")
    t0 = time.monotonic()
    script = tsdb.build_script(img.bare, tmp, MIRROR, SUITE) + tsdb.package_script(tmp)
    run(["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--mount-proc", "sh", "-c", script],
        timeout=2400, env=os.environ | tsdb.control_env())
    debs = sorted(p.name for p in (tmp / "debs").glob("*.deb"))
    if len(debs) != 2:
        raise LabError(f"TimescaleDB build produced {debs or 'no .debs'}", hint=f"inspect {tmp}")
    progress(f"TimescaleDB .debs built in {time.monotonic() - t0:.0f}s: {', '.join(debs)}")
    for d in ("upper", "work", "merged", "src"):
        run(["rm", "-rf", "--one-file-system", str(tmp / d)])
    top.mkdir(parents=True, exist_ok=True)
    if img.tsdb.exists():
        shutil.rmtree(img.tsdb)
    (tmp / "debs").rename(img.tsdb)
    tmp.rmdir()


def _build_pg(img: Image) -> None:
    top = img.pg.parent
    tmp = top.with_name(top.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("upper", "work", "merged"):
        (tmp / d).mkdir(parents=True)
    progress(f"building the pg layer (postgresql-17, postgis, pgbackrest from Debian; TimescaleDB {tsdb.PKG_VERSION} from the tsdb layer)")
    run(["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--mount-proc", "sh", "-c",
         pg_build_script(img.bare, tmp, tsdb_debs=img.tsdb)], timeout=1800)
    apt = tmp / "apt"
    (apt / "Packages").write_bytes(run(["apt-ftparchive", "packages", "."], cwd=apt).stdout)
    (apt / "Release").write_bytes(run(["apt-ftparchive", "release", "."], cwd=apt).stdout)
    shutil.rmtree(tmp / "work", ignore_errors=True)
    shutil.rmtree(tmp / "merged", ignore_errors=True)
    if top.exists():
        shutil.rmtree(top)
    tmp.rename(top)


def ensure(cache: Path = CACHE) -> Image:
    """Return the image, building what is missing (once, under a lock)."""
    img = paths(cache)
    fd = _lock(cache)
    try:
        if not (img.bare.parent / ".complete").exists():
            _build_bare(img.bare)
            (img.bare.parent / ".complete").write_text("ok\n")
        if not (img.tsdb.parent / ".complete").exists():
            _build_tsdb(img)
            (img.tsdb.parent / ".complete").write_text("ok\n")
        if not (img.pg.parent / ".complete").exists():
            _build_pg(img)
            (img.pg.parent / ".complete").write_text("ok\n")
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    if not (img.apt / "Packages").is_file():
        raise LabError(f"apt repository {img.apt} is incomplete", hint=f"remove {img.pg.parent} and run lab.up again")
    return img
