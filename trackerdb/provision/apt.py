"""Package sources, version resolution, pins and holds: pure builders for both package sources.

``pgdg`` (production): apt.postgresql.org for PostgreSQL/PostGIS and Timescale's packagecloud
repository for TimescaleDB, each with its own ``signed-by`` keyring, so neither key can sign the
other's packages. ``debian`` (the lab): whatever apt sources the host already has (the lab's flat
repository, which serves TimescaleDB under Timescale's package names). The code path is the same: resolve the exact versions apt offers, fail before any change if one is missing, pin the
version-critical packages at exactly that version and hold them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PreflightError

if TYPE_CHECKING:
    from ..settings import Settings

KEYRING_DIR = "/usr/share/keyrings"
SOURCES_DIR = "/etc/apt/sources.list.d"
PIN_FILE = "/etc/apt/preferences.d/50-trackerdb"
APT_ENV = "DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1"
# keep files we wrote before a package ships its own (createcluster.conf is managed by ucf)
DPKG_OPTS = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"


@dataclass(frozen=True)
class AptRepo:
    name: str
    key_url: str
    fingerprint: str | None  # verified before the keyring is installed (None: not pinned here)
    url: str
    suite: str  # "{codename}" is filled in from /etc/os-release
    component: str = "main"
    key_of: str | None = None  # another repository's keyring (PGDG's archive is signed with PGDG's key)

    @property
    def keyring(self) -> str:
        return f"{KEYRING_DIR}/{self.key_of or self.name}.asc"

    @property
    def list_file(self) -> str:
        return f"{SOURCES_DIR}/{self.name}.list"

    def source_line(self, codename: str) -> str:
        return f"deb [signed-by={self.keyring}] {self.url} {self.suite.format(codename=codename)} {self.component}\n"


PGDG = AptRepo(
    name="pgdg",
    key_url="https://www.postgresql.org/media/keys/ACCC4CF8.asc",
    fingerprint="B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8",
    url="https://apt.postgresql.org/pub/repos/apt",
    suite="{codename}-pgdg",
)
# PGDG's archive repository: every version PGDG ever published, where apt.postgresql.org keeps only the
# current minor. Added only when the current repository no longer carries the source's exact version.
PGDG_ARCHIVE = AptRepo(
    name="pgdg-archive",
    key_url=PGDG.key_url,
    fingerprint=PGDG.fingerprint,
    url="https://apt-archive.postgresql.org/pub/repos/apt",
    suite="{codename}-pgdg-archive",
    key_of=PGDG.name,
)
TIMESCALE = AptRepo(
    name="timescaledb",
    key_url="https://packagecloud.io/timescale/timescaledb/gpgkey",
    # packagecloud's key for timescale/timescaledb (RSA 4096, created 2018-10-19, UID
    # "https://packagecloud.io/timescale/timescaledb ..."): apt names it as the repository's signing
    # key in timescale/timescaledb#7582. If Timescale rotates it, provisioning stops with
    # "signing key fingerprint mismatch" until the new one is verified out of band and set here.
    fingerprint="1005FB68604CE9B8F6879CF759F18EDF47F24417",
    url="https://packagecloud.io/timescale/timescaledb/debian/",
    suite="{codename}",
)


@dataclass(frozen=True)
class PackageSpec:
    """One package we install: ``want`` is the upstream version to match (None: any), ``pinned`` => pin + hold."""

    name: str
    want: str | None = None
    suffix: str = ""  # required text right after the upstream version (Timescale: "~debian12")
    pinned: bool = False


def repos(source: str) -> list[AptRepo]:
    return [PGDG, TIMESCALE] if source == "pgdg" else []


def package_specs(settings: Settings, os_version_id: str = "12") -> list[PackageSpec]:
    """The packages to install; version-critical ones carry the version to match.

    TimescaleDB is always Timescale's packaging (``timescaledb-2-postgresql-N`` and its loader, version
    ``<x.y.z>~debian<VERSION_ID>``), whatever the package source: production gets them from Timescale's
    repository, the lab from its flat repository (built from the same upstream tag). Only where the
    packages come from differs (``repos``), never which ones, their pin or their hold.
    """
    major = settings.postgres_major
    # exactly the source's minor (TimescaleDB 2.18.2's scheduler fails every job on 16.16 and later)
    server = [
        PackageSpec(f"postgresql-{major}", settings.postgres_version, pinned=True),
        PackageSpec(f"postgresql-client-{major}", settings.postgres_version, pinned=True),
    ]
    postgis = [
        PackageSpec(f"postgresql-{major}-postgis-3", settings.postgis_version, pinned=True),
        PackageSpec(f"postgresql-{major}-postgis-3-scripts", settings.postgis_version, pinned=True),
    ]
    suffix = f"~debian{os_version_id}"
    tsdb = [
        PackageSpec(f"timescaledb-2-postgresql-{major}", settings.timescaledb_version, suffix, pinned=True),
        PackageSpec(f"timescaledb-2-loader-postgresql-{major}", settings.timescaledb_version, suffix, pinned=True),
    ]
    extra = [PackageSpec("pgbackrest"), PackageSpec("ssl-cert")]
    return [*server, *postgis, *tsdb, *extra]


_UPSTREAM = re.compile(r"^(?:\d+:)?(\d+(?:\.\d+)*)(.*)$")


def upstream(version: str) -> tuple[str, str]:
    """``1:2.19.3+dfsg-1`` -> (``2.19.3``, ``+dfsg-1``): the numeric upstream part and the rest."""
    m = _UPSTREAM.match(version.strip())
    return (m.group(1), m.group(2)) if m else ("", version)


def same_version(want: str, num: str) -> bool:
    """``num`` (an upstream version) is ``want``: exactly, or any minor of it when ``want`` is a bare major
    ("17": the newest minor apt offers, which the compatibility gate then judges)."""
    return num == want or ("." not in want and num.split(".")[0] == want)


def version_matches(spec: PackageSpec, version: str) -> bool:
    num, rest = upstream(version)
    if spec.want is None:
        return True
    return same_version(spec.want, num) and rest.startswith(spec.suffix)


def parse_madison(text: str) -> dict[str, list[str]]:
    """``apt-cache madison`` lines (``pkg | version | source``) -> {pkg: [versions, in apt's order]}."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and parts[0] and parts[1]:
            versions = out.setdefault(parts[0], [])
            if parts[1] not in versions:
                versions.append(parts[1])
    return out


def madison_origins(text: str) -> dict[tuple[str, str], str]:
    """``apt-cache madison`` lines -> {(pkg, version): "<repository URL> <suite>"} (where apt would get it)."""
    out: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and parts[0] and parts[1]:
            words = parts[2].split()  # "<url> <suite>/<component> <arch> Packages", or "<url> ./ Packages" (flat)
            suite = words[1].rstrip("/").rsplit("/", 1)[0] if len(words) >= 2 else "."
            where = words[0] if suite == "." else f"{words[0]} {suite}"
            out.setdefault((parts[0], parts[1]), where)
    return out


def archive_wanted(specs: list[PackageSpec], available: dict[str, list[str]], source: str) -> list[str]:
    """PGDG's packages whose exact version the current repository no longer offers (production only): the
    reason to add PGDG's archive repository. Never for the lab's own repository, never for TimescaleDB's."""
    if source != "pgdg":
        return []
    return [s.name for s in specs if s.pinned and s.name.startswith("postgresql-")
            and not any(version_matches(s, v) for v in available.get(s.name, []))]


def minor_drift(specs: list[PackageSpec], installed: dict[str, str]) -> list[str]:
    """Installed PostgreSQL packages at another upstream version than the pinned one: provisioning reports
    them and stops; it never moves a host's PostgreSQL minor by itself."""
    return [f"{s.name} {installed[s.name]} (want {s.want})" for s in specs
            if s.pinned and s.name.startswith("postgresql-") and "postgis" not in s.name
            and s.name in installed and not same_version(s.want or "", upstream(installed[s.name])[0])]


def chosen_text(specs: list[PackageSpec], chosen: dict[str, str], origins: dict[tuple[str, str], str]) -> str:
    """``pkg=version (from <repository> <suite>)`` for each pinned package (what ``provision --dry-run`` names)."""
    out = []
    for s in specs:
        if s.pinned and s.name in chosen:
            where = origins.get((s.name, chosen[s.name]))
            out.append(f"{s.name}={chosen[s.name]}" + (f" (from {where})" if where else ""))
    return ", ".join(out)


def resolve(specs: list[PackageSpec], available: dict[str, list[str]], source: str) -> dict[str, str]:
    """Pick the exact version to install for each spec; one PreflightError naming everything missing."""
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for spec in specs:
        version = candidate(spec, available)
        if version:
            chosen[spec.name] = version
        else:
            offered = ", ".join(available.get(spec.name, [])[:4]) or "none"
            want = f"{spec.want}{spec.suffix}" if spec.want else "any"
            missing.append(f"{spec.name} {want} (apt offers: {offered})")
    if missing:
        hint = ("check the versions in the stack config or the package source; "
                + ("PGDG keeps only current versions; its archive repository (apt-archive.postgresql.org) was "
                    "consulted for PostgreSQL's" if source == "pgdg"
                   else "the host's apt sources must offer them"))
        raise PreflightError("package version not available: " + "; ".join(missing), hint=hint)
    return chosen


def candidate(spec: PackageSpec, available: dict[str, list[str]]) -> str | None:
    """The newest version apt offers that matches ``spec`` (madison lists the newest first), or None."""
    return next((v for v in available.get(spec.name, []) if version_matches(spec, v)), None)


def server_candidate(specs: list[PackageSpec], available: dict[str, list[str]], major: int) -> str | None:
    """The ``postgresql-<major>`` version apt would install under the specs, or None."""
    spec = next((p for p in specs if p.name == f"postgresql-{major}"), None)
    return None if spec is None else candidate(spec, available)


def pin_text(specs: list[PackageSpec], chosen: dict[str, str]) -> str:
    """apt preferences: each pinned package at exactly the resolved version (priority > 1000 allows downgrade)."""
    blocks = [
        f"Package: {s.name}\nPin: version {chosen[s.name]}\nPin-Priority: 1001\n"
        for s in specs if s.pinned and s.name in chosen
    ]
    return "# managed by trackerdb provision: versions must equal the source host's\n\n" + "\n".join(blocks)


def install_command(specs: list[PackageSpec], chosen: dict[str, str]) -> str:
    args = [f"{s.name}={chosen[s.name]}" if s.pinned else s.name for s in specs]
    return f"{APT_ENV} apt-get install -y -q --no-install-recommends {DPKG_OPTS} " + shlex.join(args)


def hold_command(names: list[str]) -> list[str]:
    return ["apt-mark", "hold", *names]


def madison_command(names: list[str]) -> list[str]:
    return ["apt-cache", "madison", *names]


def update_command() -> str:
    return f"{APT_ENV} apt-get update -q"


#: primary-key fingerprints of a key file, one a line (``fpr`` right after ``pub``; subkeys' are skipped)
PRIMARY_FPRS = "awk -F: '$1==\"pub\"{p=1;next} $1==\"fpr\"&&p{print $10} {p=0}'"


def key_install_command(repo: AptRepo) -> str:
    """Download the signing key, check it when we pin one, install it as the keyring.

    The file must hold exactly one primary key, the pinned one: a file with the right key *and*
    another would otherwise install both as trusted for this repository.
    """
    q = shlex.quote
    check = ""
    if repo.fingerprint:
        check = (f" && [ \"$(gpg --show-keys --with-colons \"$tmp\" 2>/dev/null | {PRIMARY_FPRS})\" = {q(repo.fingerprint)} ]"
                 f" || {{ echo 'signing key fingerprint mismatch for {repo.name}' >&2; rm -f \"$tmp\"; exit 5; }}")
    return (f"tmp=$(mktemp) && curl -fsSL --retry 3 {q(repo.key_url)} -o \"$tmp\"{check}"
            f" && install -m 0644 -o root -g root \"$tmp\" {q(repo.keyring)} && rm -f \"$tmp\"")


def parse_dpkg_status(text: str) -> dict[str, str]:
    """``dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'`` -> {installed pkg: version}."""
    out = {}
    for line in text.splitlines():
        parts = line.split("\t")
        # db:Status-Abbrev: desired state (i install, h hold, ...) then actual state (i installed)
        if len(parts) >= 3 and parts[2][1:2] == "i":
            out[parts[0]] = parts[1]
    return out


def dpkg_query_command(names: list[str]) -> str:
    fmt = "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"
    return "dpkg-query -W -f=" + shlex.quote(fmt) + " " + shlex.join(names) + " 2>/dev/null; true"
