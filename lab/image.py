"""The base-image cache: a debootstrapped Debian trixie "bare" layer, production's engine (PostgreSQL 16.10,
PostGIS 3.5.2, TimescaleDB 2.18.2) as PGDG/Timescale-named .debs (lab/engine16.py), a "pg" overlay layer on
top of bare, and a flat apt repository made from the packages the pg layer installed.

Layout (shared, read-only once built; several lab instances use it at once)::

    /var/cache/trackerdb-lab/bare-<hash>/rootfs     minbase + sshd, sudo, python3, ...
    /var/cache/trackerdb-lab-engine16/engine16-<hash>/debs   postgresql-16, postgresql-client-16 (16.10-1.pgdg13+1),
                                                    postgresql-16-postgis-3{,-scripts} (3.5.2+dfsg-1.pgdg13+1),
                                                    timescaledb-2-{,loader-}postgresql-16 (2.18.2~debian13)
    /var/cache/trackerdb-lab/pg-<hash>/upper        overlay upper over bare: those six, pgBackRest, ssl-cert
    /var/cache/trackerdb-lab/pg-<hash>/apt          the .debs of that install + Packages/Release
                                                    (the target's only apt source)
    /var/cache/trackerdb-lab/debian17-<hash>/apt    Debian's postgresql-17, postgresql-client-17
                                                    (lab/debian17.py: listed by the engine gate's lab test only,
                                                    never installed)

The engine build's compilers and headers live in a throw-away overlay: only the six .debs are kept,
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
import time
from dataclasses import dataclass
from pathlib import Path

from .util import LabError, progress, retry, run

CACHE = Path(os.environ.get("TRACKERDB_LAB_CACHE", "/var/cache/trackerdb-lab"))
SUITE = "trixie"
MIRROR = os.environ.get("TRACKERDB_LAB_MIRROR", "http://deb.debian.org/debian")
BARE_PKGS = (
    "openssh-server",
    "sudo",
    "python3",
    "iproute2",
    "ca-certificates",
    "e2fsprogs",
    "xfsprogs",
    "procps",
    "less",
)
# production's engine from the engine16 repository, exactly at its versions (lab/engine16_debs.py), + Debian's
PG_PKGS = ("postgresql-client-16=16.10-1.pgdg13+1", "postgresql-16=16.10-1.pgdg13+1",
           "postgresql-16-postgis-3-scripts=3.5.2+dfsg-1.pgdg13+1", "postgresql-16-postgis-3=3.5.2+dfsg-1.pgdg13+1",
           "timescaledb-2-loader-postgresql-16=2.18.2~debian13", "timescaledb-2-postgresql-16=2.18.2~debian13",
           "pgbackrest", "ssl-cert")
PG_MAJOR = 16
ENGINE_REPO = "/tmp/engine16"  # where the pg build sees the engine's flat repository (inside the chroot)
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
    engine: Path  # the engine16 .debs (a flat apt repository, lab/engine16.py)
    debian17: Path | None = None  # Debian's PostgreSQL 17 .debs (a flat apt repository, lab/debian17.py)

    def lowerdir(self, layer: str) -> str:
        return str(self.bare) if layer == "bare" else f"{self.pg}:{self.bare}"


def paths(cache: Path = CACHE) -> Image:
    from . import debian17, engine16  # (both import this module's constants)

    bh = layer_hash(LAYOUT_VERSION, SUITE, BARE_PKGS)
    ph = layer_hash(LAYOUT_VERSION, bh, PG_PKGS, engine16.layer_key())
    bare = cache / f"bare-{bh}" / "rootfs"
    return Image(bare=bare, pg=cache / f"pg-{ph}" / "upper", apt=cache / f"pg-{ph}" / "apt",
                 engine=engine16.paths().debs, debian17=debian17.repo_path(bare, cache))


def debootstrap_cmd(root: Path, mirror: str = MIRROR) -> list[str]:
    return ["debootstrap", "--variant=minbase", "--include=" + ",".join(BARE_PKGS), SUITE, str(root), mirror]


def pg_build_script(bare: Path, tmp: Path, mirror: str = MIRROR, engine_debs: Path | None = None) -> str:
    """Shell run in a private mount+pid namespace: install the pg packages (the engine from the flat repository
    in ``engine_debs``, the rest from Debian) into an overlay upper, keep every installed .deb for the flat
    repository the target installs from."""
    m = shlex.quote(str(tmp / "merged"))
    q = shlex.quote
    pkgs = " ".join(q(p) for p in PG_PKGS)
    engine = ""
    if engine_debs is not None:
        engine = f"echo 'deb [trusted=yes] file:{ENGINE_REPO} ./' > {m}/etc/apt/sources.list.d/engine16.list\n"
    return f"""set -eu
mount -t overlay overlay -o lowerdir={q(str(bare))},upperdir={q(str(tmp / 'upper'))},workdir={q(str(tmp / 'work'))} {m}
mount -t proc proc {m}/proc
mount --bind /dev {m}/dev
cp /etc/resolv.conf {m}/etc/resolv.conf
echo 'deb {mirror} {SUITE} main' > {m}/etc/apt/sources.list
rm -f {m}/etc/apt/sources.list.d/*
printf '#!/bin/sh\\nexit 101\\n' > {m}/usr/sbin/policy-rc.d && chmod 755 {m}/usr/sbin/policy-rc.d
{_copy_debs(engine_debs, m)}{engine}ok=
for i in 1 2 3; do
  if chroot {m} apt-get -q update && chroot {m} env DEBIAN_FRONTEND=noninteractive apt-get -q install -y \\
       --no-install-recommends -o APT::Keep-Downloaded-Packages=true {pkgs}; then ok=1; break; fi
  echo "apt failed (attempt $i/3), retrying" >&2; sleep $((i*5))
done
[ -n "$ok" ]
chroot {m} pg_dropcluster --stop {PG_MAJOR} main 2>/dev/null || true
rm -f {m}/usr/sbin/policy-rc.d {m}/etc/apt/sources.list.d/engine16.list
mkdir -p {q(str(tmp / 'apt'))}
mv {m}/var/cache/apt/archives/*.deb {q(str(tmp / 'apt'))}/
{_keep_debs(engine_debs, m, tmp / 'apt')}rm -rf {m}/var/lib/apt/lists/* {m}/var/cache/apt/*.bin
"""


def _copy_debs(debs: Path | None, m: str) -> str:
    if debs is None:
        return ""
    q = shlex.quote
    return (f"mkdir -p {m}{ENGINE_REPO}"
            f" && cp {q(str(debs))}/*.deb {q(str(debs))}/Packages {q(str(debs))}/Release {m}{ENGINE_REPO}/\n")


def _keep_debs(debs: Path | None, m: str, apt: Path) -> str:
    # apt installs from a file: repository in place, without copying to its archive cache: the flat
    # repository takes all six from here
    if debs is None:
        return ""
    return f"mv {m}{ENGINE_REPO}/*.deb {shlex.quote(str(apt))}/ && rm -rf {m}{ENGINE_REPO}\n"


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
        run(
            ["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--"]
            + debootstrap_cmd(tmp / "rootfs"),
            timeout=1200,
        )

    progress(f"building the bare layer (debootstrap {SUITE} minbase from {MIRROR})")
    retry(attempt, what="debootstrap")
    r = tmp / "rootfs"
    for p in (
        list((r / "etc/ssh").glob("ssh_host_*"))
        + list((r / "var/lib/apt/lists").glob("*_*"))
        + list((r / "var/cache/apt/archives").glob("*.deb"))
    ):
        p.unlink()
    if top.exists():
        shutil.rmtree(top)
    tmp.rename(top)


def _build_pg(img: Image) -> None:
    top = img.pg.parent
    tmp = top.with_name(top.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("upper", "work", "merged"):
        (tmp / d).mkdir(parents=True)
    progress(f"building the pg layer (PostgreSQL 16.10, PostGIS 3.5.2, TimescaleDB 2.18.2 from {img.engine}; "
             "pgBackRest from Debian)")
    run(["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--mount-proc", "sh", "-c",
         pg_build_script(img.bare, tmp, engine_debs=img.engine)], timeout=1800)
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
        if not (img.pg.parent / ".complete").exists():
            from . import engine16

            t0 = time.monotonic()
            built = engine16.build(lab_cache=cache)  # returns at once when its inputs are unchanged
            if built != img.engine:
                raise LabError(f"engine16 built {built}, expected {img.engine}", hint="check TRACKERDB_ENGINE16_CACHE")
            progress(f"engine16 .debs ready in {time.monotonic() - t0:.1f}s: {img.engine}")
        if not (img.pg.parent / ".complete").exists():
            _build_pg(img)
            (img.pg.parent / ".complete").write_text("ok\n")
        from . import debian17

        debian17.ensure(img.bare, cache)  # seconds: two .debs from the mirror, once
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    if not (img.apt / "Packages").is_file():
        raise LabError(f"apt repository {img.apt} is incomplete", hint=f"remove {img.pg.parent} and run lab.up again")
    return img
