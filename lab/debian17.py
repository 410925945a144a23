"""Debian trixie's own PostgreSQL 17 as a flat apt repository, for the engine gate's lab test only.

The lab runs production's 16.10 (lab/engine16.py); the compatibility gate (trackerdb/compat.py) must
still be shown refusing what apt would install on a host whose sources offer Debian's PostgreSQL 17
(17.12 and later break TimescaleDB 2.18.2's scheduler, timescale/timescaledb#11015). This layer holds
Debian's real ``postgresql-17`` and ``postgresql-client-17`` .debs, downloaded from the image's mirror
with ``apt-get download`` inside a throw-away overlay of the bare layer, plus Packages/Release::

    /var/cache/trackerdb-lab/debian17-<hash>/apt    postgresql-17, postgresql-client-17 (trixie's candidate)

``apt-cache madison`` needs only the index, so their dependencies are not carried: the repository can be
listed by a host, never installed from (the gate refuses before any install). The lab mounts it read-only
in the target at ``render.LAB_APT_DEBIAN17``; it is no apt source of the target until a test adds one.

Keyed like the other layers (a hash of what went into it in the directory's name, a ``.complete``
marker); built under image.ensure's lock, in a private mount+pid namespace (no mount outlives it).
Does not enter the pg layer's hash.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from .image import MIRROR, SUITE, layer_hash
from .util import LabError, progress, retry, run

PKGS = ("postgresql-17", "postgresql-client-17")
LAYOUT_VERSION = "1"
DL = "/tmp/debian17"  # the download directory inside the chroot


def build_script(bare: Path, tmp: Path, mirror: str = MIRROR) -> str:
    """Shell run in a private mount+pid namespace: ``apt-get download`` the packages from ``mirror`` inside
    an overlay over ``bare`` (its upper in ``tmp``), then move the .debs to ``tmp/apt``."""
    q = shlex.quote
    m = q(str(tmp / "merged"))
    pkgs = " ".join(q(p) for p in PKGS)
    return f"""set -eu
mount -t overlay overlay -o lowerdir={q(str(bare))},upperdir={q(str(tmp / 'upper'))},workdir={q(str(tmp / 'work'))} {m}
mount -t proc proc {m}/proc
mount --bind /dev {m}/dev
cp /etc/resolv.conf {m}/etc/resolv.conf
echo {q(f'deb {mirror} {SUITE} main')} > {m}/etc/apt/sources.list
rm -f {m}/etc/apt/sources.list.d/*
mkdir -p {m}{DL}
chroot {m} chown _apt {DL}
chroot {m} apt-get -q update
chroot {m} sh -c 'cd {DL} && apt-get -q download {pkgs}'
mkdir -p {q(str(tmp / 'apt'))}
mv {m}{DL}/*.deb {q(str(tmp / 'apt'))}/
"""


def layer_key(bare: Path) -> str:
    """``bare``: the bare layer's rootfs (its directory name carries the bare layer's hash). The mirror is
    not part of the key, as for the bare layer; the script is (with placeholder paths)."""
    return layer_hash(
        LAYOUT_VERSION, bare.parent.name, SUITE, PKGS, build_script(Path("/bare"), Path("/tmp"), "MIRROR")
    )


def repo_path(bare: Path, cache: Path) -> Path:
    return cache / f"debian17-{layer_key(bare)}" / "apt"


def check_debs(names: list[str]) -> None:
    """Exactly one .deb per package (``<pkg>_<version>_<arch>.deb``), nothing else."""
    got = sorted(n.split("_", 1)[0] for n in names if n.endswith(".deb"))
    if got != sorted(PKGS) or len(names) != len(PKGS):
        raise LabError(f"debian17: apt-get download gave {sorted(names)}, not one .deb each of {', '.join(PKGS)}",
                       hint=f"check that {SUITE} on {MIRROR} carries them")


def build(bare: Path, apt: Path, mirror: str = MIRROR) -> None:
    top = apt.parent
    tmp = top.with_name(top.name + ".tmp")

    def attempt():
        shutil.rmtree(tmp, ignore_errors=True)
        for d in ("upper", "work", "merged"):
            (tmp / d).mkdir(parents=True)
        run(["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--mount-proc", "sh", "-c",
             build_script(bare, tmp, mirror)], timeout=600)

    progress(
        f"building the debian17 layer ({', '.join(PKGS)} from {SUITE} on {mirror}, for the engine gate's lab test)"
    )
    retry(attempt, what="debian17 download")
    repo = tmp / "apt"
    check_debs([p.name for p in repo.iterdir()])
    (repo / "Packages").write_bytes(run(["apt-ftparchive", "packages", "."], cwd=repo).stdout)
    (repo / "Release").write_bytes(run(["apt-ftparchive", "release", "."], cwd=repo).stdout)
    for d in ("upper", "work", "merged"):
        shutil.rmtree(tmp / d, ignore_errors=True)
    if top.exists():
        shutil.rmtree(top)
    tmp.rename(top)
    progress(f"debian17 layer: {', '.join(sorted(p.name for p in apt.glob('*.deb')))}")


def ensure(bare: Path, cache: Path) -> Path:
    """The repository's directory, built when missing (call under image.ensure's lock)."""
    apt = repo_path(bare, cache)
    if not (apt.parent / ".complete").exists():
        build(bare, apt)
        (apt.parent / ".complete").write_text("ok\n")
    if not (apt / "Packages").is_file():
        raise LabError(f"apt repository {apt} is incomplete", hint=f"remove {apt.parent} and run lab.up again")
    return apt
