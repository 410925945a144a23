"""TimescaleDB 2.18.2 (community, incl. tsl/) built from the vendored upstream tarball and packaged as
.debs named the way Timescale's apt repository names them, so provisioning installs it in the lab through
exactly the production path (same package names, pin and hold).

Debian's own ``postgresql-17-timescaledb`` is 2.19.3 and Apache-only (no compression, continuous
aggregates or policies), which is neither production's version nor its licence.

Pure builders here (paths, the build script, control files); ``image.py`` runs them under its lock.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

from .util import LabError

VERSION = "2.18.2"
SHA256 = "391f9def399283094c013e2b56971dffc0dc2a54a5de1b376322ff68d5ca298b"  # ../shared/vendor/README.md
PG_MAJOR = 17
DEBIAN_VERSION_ID = "13"  # trixie, as Timescale's repository suffixes its versions: 2.18.2~debian13
PKG_VERSION = f"{VERSION}~debian{DEBIAN_VERSION_ID}"
MAIN_PKG = f"timescaledb-2-postgresql-{PG_MAJOR}"
LOADER_PKG = f"timescaledb-2-loader-postgresql-{PG_MAJOR}"
# needed to build only: they stay in the throw-away build overlay, never in the lab's apt repository
BUILD_PKGS = (f"postgresql-server-dev-{PG_MAJOR}", "cmake", "make", "gcc", "libc6-dev", "libssl-dev", "libkrb5-dev")
BOOTSTRAP_FLAGS = ("-DREGRESS_CHECKS=OFF", "-DTAP_CHECKS=OFF", "-DWARNINGS_AS_ERRORS=OFF", "-DGENERATE_DOWNGRADE_SCRIPT=OFF")
LOADER_LIB = f"usr/lib/postgresql/{PG_MAJOR}/lib/timescaledb.so"

_DEFAULT_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "vendor" / f"timescaledb-{VERSION}.tar.xz"


def tarball() -> Path:
    """The upstream source: ``$TRACKERDB_TSDB_TARBALL`` or ``../shared/vendor/`` next to the checkout."""
    return Path(os.environ.get("TRACKERDB_TSDB_TARBALL") or _DEFAULT_TARBALL)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_tarball(path: Path, want: str = SHA256) -> None:
    if not path.is_file():
        raise LabError(f"TimescaleDB source {path} is missing",
                       hint="the lab builds TimescaleDB from ../shared/vendor (or set TRACKERDB_TSDB_TARBALL)")
    got = sha256_file(path)
    if got != want:
        raise LabError(f"TimescaleDB source {path} has SHA-256 {got[:16]}…, expected {want[:16]}…",
                       hint="restore the upstream tarball listed in shared/vendor/README.md; never build from an unverified one")


def deb_name(pkg: str, arch: str = "amd64") -> str:
    return f"{pkg}_{PKG_VERSION}_{arch}.deb"


def control(pkg: str, arch: str, installed_kb: int) -> str:
    """The DEBIAN/control of one package (the split Timescale uses: loader library apart from the versioned ones)."""
    if pkg == LOADER_PKG:
        depends = f"postgresql-{PG_MAJOR}"
        desc = "TimescaleDB loader (timescaledb.so, loaded through shared_preload_libraries)"
    else:
        depends = f"postgresql-{PG_MAJOR}, {LOADER_PKG} (= {PKG_VERSION})"
        desc = f"TimescaleDB {VERSION} (community edition, incl. compression, continuous aggregates, policies)"
    return (f"Package: {pkg}\nVersion: {PKG_VERSION}\nArchitecture: {arch}\nMaintainer: trackerdb lab <lab@lab.internal>\n"
            f"Installed-Size: {installed_kb}\nDepends: {depends}\nSection: database\nPriority: optional\n"
            f"Homepage: https://github.com/timescale/timescaledb\n"
            f"Description: {desc}\n Built by the trackerdb lab from upstream tag {VERSION}; named like Timescale's packages.\n")


def build_script(bare: Path, tmp: Path, mirror: str, suite: str) -> str:
    """Shell run in a private mount+pid namespace: build deps into a throw-away overlay over ``bare``, build
    the extension from ``tmp/src`` into a staging tree and package the staging tree as two .debs in ``tmp/debs``.

    Only the .debs leave the namespace; the compilers and headers vanish with the overlay's upper dir.
    """
    q = shlex.quote
    m = q(str(tmp / "merged"))
    src = f"/usr/src/timescaledb-{VERSION}"
    flags = " ".join(BOOTSTRAP_FLAGS)
    pkgs = " ".join(BUILD_PKGS)
    return f"""set -eu
mount -t overlay overlay -o lowerdir={q(str(bare))},upperdir={q(str(tmp / 'upper'))},workdir={q(str(tmp / 'work'))} {m}
mount -t proc proc {m}/proc
mount --bind /dev {m}/dev
mkdir -p {m}{src} {m}/out
mount --bind {q(str(tmp / 'src' / f'timescaledb-{VERSION}'))} {m}{src}
mount --bind {q(str(tmp / 'debs'))} {m}/out
cp /etc/resolv.conf {m}/etc/resolv.conf
echo 'deb {mirror} {suite} main' > {m}/etc/apt/sources.list
rm -f {m}/etc/apt/sources.list.d/*
printf '#!/bin/sh\\nexit 101\\n' > {m}/usr/sbin/policy-rc.d && chmod 755 {m}/usr/sbin/policy-rc.d
ok=
for i in 1 2 3; do
  if chroot {m} apt-get -q update && chroot {m} env DEBIAN_FRONTEND=noninteractive apt-get -q install -y \\
       --no-install-recommends {pkgs}; then ok=1; break; fi
  echo "apt failed (attempt $i/3), retrying" >&2; sleep $((i*5))
done
[ -n "$ok" ]
t0=$(date +%s)
chroot {m} sh -c 'cd {src} && ./bootstrap {flags} >/dev/null && make -C build -j2 >/dev/null && make -C build install DESTDIR=/stage/all >/dev/null'
echo "timescaledb build: $(( $(date +%s) - t0 )) s" > {q(str(tmp / 'debs' / 'build.log'))}
"""


def package_script(tmp: Path) -> str:
    """Shell (same namespace, after ``build_script``): split the staging tree and dpkg-deb both packages."""
    m = shlex.quote(str(tmp / "merged"))
    main, loader = f"/stage/{MAIN_PKG}", f"/stage/{LOADER_PKG}"
    return f"""set -eu
arch=$(chroot {m} dpkg --print-architecture)
chroot {m} sh -c 'set -eu
  rm -rf {main} {loader}; cp -a /stage/all {main}; mkdir -p {loader}/$(dirname {LOADER_LIB})
  mv {main}/{LOADER_LIB} {loader}/{LOADER_LIB}
  mkdir -p {main}/DEBIAN {loader}/DEBIAN'
printf '%s' "$CONTROL_MAIN" | sed "s/@ARCH@/$arch/; s/@KB@/$(du -sk {m}{main} | cut -f1)/" > {m}{main}/DEBIAN/control
printf '%s' "$CONTROL_LOADER" | sed "s/@ARCH@/$arch/; s/@KB@/$(du -sk {m}{loader} | cut -f1)/" > {m}{loader}/DEBIAN/control
chroot {m} dpkg-deb --root-owner-group -Zxz --build {main} /out/{MAIN_PKG}_{PKG_VERSION}_$arch.deb >/dev/null
chroot {m} dpkg-deb --root-owner-group -Zxz --build {loader} /out/{LOADER_PKG}_{PKG_VERSION}_$arch.deb >/dev/null
"""


def control_env() -> dict[str, str]:
    """The two control texts with placeholders the package script fills in (architecture, installed size)."""
    return {"CONTROL_MAIN": control(MAIN_PKG, "@ARCH@", 0).replace("Installed-Size: 0", "Installed-Size: @KB@"),
            "CONTROL_LOADER": control(LOADER_PKG, "@ARCH@", 0).replace("Installed-Size: 0", "Installed-Size: @KB@")}
