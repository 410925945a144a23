import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import prod_outputs
from trackerdb.errors import PreflightError
from trackerdb.provision import apt
from trackerdb.settings import Settings

PROD = Settings.from_parts({}, prod_outputs())
LAB = Settings.from_parts({"package_source": "debian"},
                          prod_outputs(environment="lab", timescaledb_version="2.18.2"))

MADISON_PROD = """\
postgresql-16 | 16.10-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
postgresql-16 | 16.9-0+deb12u1 | http://deb.debian.org/debian bookworm/main amd64 Packages
postgresql-client-16 | 16.10-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
postgresql-16-postgis-3 | 3.5.2+dfsg-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
postgresql-16-postgis-3-scripts | 3.5.2+dfsg-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
timescaledb-2-postgresql-16 | 2.19.0~debian12 | https://packagecloud.io/timescale/timescaledb/debian bookworm/main amd64 Packages
timescaledb-2-postgresql-16 | 2.18.2~debian12 | https://packagecloud.io/timescale/timescaledb/debian bookworm/main amd64 Packages
timescaledb-2-postgresql-16 | 2.18.2~debian11 | https://packagecloud.io/timescale/timescaledb/debian bookworm/main amd64 Packages
timescaledb-2-loader-postgresql-16 | 2.18.2~debian12 | https://packagecloud.io/timescale/timescaledb/debian bookworm/main amd64 Packages
pgbackrest | 2.56.0-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
ssl-cert | 1.1.2 | http://deb.debian.org/debian bookworm/main amd64 Packages
"""

MADISON_LAB = """\
postgresql-16 | 16.10-1.pgdg13+1 | file:/srv/repo ./ Packages
postgresql-client-16 | 16.10-1.pgdg13+1 | file:/srv/repo ./ Packages
postgresql-16-postgis-3 | 3.5.2+dfsg-1.pgdg13+1 | file:/srv/repo ./ Packages
postgresql-16-postgis-3-scripts | 3.5.2+dfsg-1.pgdg13+1 | file:/srv/repo ./ Packages
timescaledb-2-postgresql-16 | 2.18.2~debian13 | file:/srv/repo ./ Packages
timescaledb-2-loader-postgresql-16 | 2.18.2~debian13 | file:/srv/repo ./ Packages
pgbackrest | 2.55.1-1 | file:/srv/repo ./ Packages
ssl-cert | 1.1.3 | file:/srv/repo ./ Packages
"""


@pytest.mark.parametrize("version, up, rest", [
    ("2.19.3+dfsg-1", "2.19.3", "+dfsg-1"),
    ("1:2.18.2~debian12", "2.18.2", "~debian12"),
    ("17.6-0+deb13u1", "17.6", "-0+deb13u1"),
    ("3.5.2+dfsg-1.pgdg120+1", "3.5.2", "+dfsg-1.pgdg120+1"),
])
def test_upstream_version_split(version, up, rest):
    assert apt.upstream(version) == (up, rest)


@pytest.mark.parametrize("spec, version, ok", [
    (apt.PackageSpec("p", "2.18.2", "~debian12"), "2.18.2~debian12", True),
    (apt.PackageSpec("p", "2.18.2", "~debian12"), "2.18.2~debian11", False),
    (apt.PackageSpec("p", "2.18.2", "~debian12"), "2.18.20~debian12", False),
    (apt.PackageSpec("p", "3.5.2"), "3.5.2+dfsg-1", True),
    (apt.PackageSpec("p", "3.5.2"), "3.5.3+dfsg-1", False),
    (apt.PackageSpec("p", "16.10"), "16.10-1.pgdg120+1", True),
    (apt.PackageSpec("p", "16.10"), "16.10-1.pgdg13+1", True),
    (apt.PackageSpec("p", "16.10"), "16.11-1.pgdg120+1", False),  # never "any 16 minor"
    (apt.PackageSpec("p", "16.10"), "16.1-1.pgdg120+1", False),
    (apt.PackageSpec("p", "16.10"), "16.100-1", False),
    (apt.PackageSpec("p", "16.10"), "17.6-0+deb13u1", False),
    (apt.PackageSpec("p"), "whatever", True),
])
def test_version_matches(spec, version, ok):
    assert apt.version_matches(spec, version) is ok


@pytest.mark.parametrize("settings, madison, expect", [
    (PROD, MADISON_PROD, {"timescaledb-2-postgresql-16": "2.18.2~debian12", "timescaledb-2-loader-postgresql-16": "2.18.2~debian12",
                          "postgresql-16-postgis-3": "3.5.2+dfsg-1.pgdg120+1", "postgresql-16": "16.10-1.pgdg120+1",
                          "postgresql-client-16": "16.10-1.pgdg120+1"}),
    (LAB, MADISON_LAB, {"timescaledb-2-postgresql-16": "2.18.2~debian13", "timescaledb-2-loader-postgresql-16": "2.18.2~debian13",
                        "postgresql-16-postgis-3": "3.5.2+dfsg-1.pgdg13+1", "pgbackrest": "2.55.1-1",
                        "postgresql-16": "16.10-1.pgdg13+1", "postgresql-client-16": "16.10-1.pgdg13+1"}),
])
def test_resolve_picks_exact_versions(settings, madison, expect):
    os_id = "13" if settings.package_source == "debian" else "12"
    chosen = apt.resolve(apt.package_specs(settings, os_id), apt.parse_madison(madison), settings.package_source)
    for name, version in expect.items():
        assert chosen[name] == version


@pytest.mark.parametrize("settings, madison, fragment", [
    (PROD.with_(timescaledb_version="2.18.9"), MADISON_PROD, "timescaledb-2-postgresql-16 2.18.9~debian12"),
    (LAB.with_(postgis_version="3.4.0"), MADISON_LAB, "postgresql-16-postgis-3 3.4.0 (apt offers: 3.5.2+dfsg-1.pgdg13+1)"),
    (PROD.with_(postgres_version="16.8"), MADISON_PROD, "postgresql-16 16.8 (apt offers: 16.10-1.pgdg120+1, 16.9-0+deb12u1)"),
    (PROD, MADISON_PROD.replace("16.10-1.pgdg120+1", "16.11-1.pgdg120+1"), "postgresql-client-16 16.10 (apt offers: 16.11-1"),
    (LAB, MADISON_LAB.replace("pgbackrest", "pgbackrestx"), "pgbackrest any (apt offers: none)"),
])
def test_missing_version_is_one_preflight_error(settings, madison, fragment):
    with pytest.raises(PreflightError) as e:
        apt.resolve(apt.package_specs(settings, "12"), apt.parse_madison(madison), settings.package_source)
    line = e.value.one_line()
    assert line.startswith("package version not available")
    assert fragment in line and "hint:" in line and "\n" not in line


def test_pin_file_pins_only_version_critical_packages_exactly():
    specs = apt.package_specs(PROD, "12")
    chosen = apt.resolve(specs, apt.parse_madison(MADISON_PROD), "pgdg")
    text = apt.pin_text(specs, chosen)
    assert "Package: timescaledb-2-postgresql-16\nPin: version 2.18.2~debian12\nPin-Priority: 1001\n" in text
    assert "Package: timescaledb-2-loader-postgresql-16\nPin: version 2.18.2~debian12\n" in text
    assert "Package: postgresql-16-postgis-3\nPin: version 3.5.2+dfsg-1.pgdg120+1\n" in text
    assert "Package: postgresql-16\nPin: version 16.10-1.pgdg120+1\n" in text
    assert "Package: postgresql-client-16\nPin: version 16.10-1.pgdg120+1\n" in text
    assert "Package: pgbackrest" not in text and "Package: ssl-cert" not in text
    cmd = apt.install_command(specs, chosen)
    assert "postgresql-16=16.10-1.pgdg120+1" in cmd and "postgresql-client-16=16.10-1.pgdg120+1" in cmd
    assert "timescaledb-2-postgresql-16=2.18.2~debian12" in cmd and " pgbackrest" in cmd and "--no-install-recommends" in cmd
    assert "--force-confold" in cmd  # our createcluster.conf must survive the package's ucf


@pytest.mark.parametrize("repo, codename, line", [
    (apt.PGDG, "bookworm", "deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main\n"),
    (apt.TIMESCALE, "bookworm", "deb [signed-by=/usr/share/keyrings/timescaledb.asc] https://packagecloud.io/timescale/timescaledb/debian/ bookworm main\n"),
    # PGDG's archive repository: signed with PGDG's key (its keyring), its own suite
    (apt.PGDG_ARCHIVE, "bookworm", "deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt-archive.postgresql.org/pub/repos/apt bookworm-pgdg-archive main\n"),
    (apt.PGDG_ARCHIVE, "trixie", "deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt-archive.postgresql.org/pub/repos/apt trixie-pgdg-archive main\n"),
])
def test_source_lines_are_signed_by_their_own_keyring(repo, codename, line):
    assert repo.source_line(codename) == line


@pytest.mark.parametrize("repo", [apt.PGDG, apt.TIMESCALE])
def test_every_production_repository_key_is_pinned(repo):
    assert repo.fingerprint and len(repo.fingerprint) == 40 and int(repo.fingerprint, 16) >= 0
    cmd = apt.key_install_command(repo)
    assert repo.fingerprint in cmd and cmd.index(repo.fingerprint) < cmd.index("install -m 0644")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two real OpenPGP keys (each with a subkey) made by gpg: (fingerprint, armored file) each."""
    if not shutil.which("gpg") or not shutil.which("curl"):
        pytest.skip("gpg and curl are needed to run the key check")
    home = tmp_path_factory.mktemp("gnupg")
    out = []
    for who in ("good", "evil"):
        base = ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(base + ["--quick-gen-key", f"{who} <{who}@example.invalid>", "ed25519", "sign", "never"],
                       check=True, capture_output=True)
        cols = subprocess.run(base + ["--with-colons", "--list-keys", f"{who}@example.invalid"], check=True,
                              capture_output=True, text=True).stdout
        fpr = next(line.split(":")[9] for line in cols.splitlines() if line.startswith("fpr:"))
        subprocess.run(base + ["--quick-add-key", fpr, "cv25519", "encr", "never"], check=True, capture_output=True)
        path = home / f"{who}.asc"
        path.write_text(subprocess.run(base + ["--armor", "--export", fpr], check=True, capture_output=True, text=True).stdout)
        out.append((fpr, path))
    try:
        yield out
    finally:  # gpg started an agent for this home: end it (ours, by its home directory)
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)


def _run_key_install(tmp_path, monkeypatch, key_file: Path, fingerprint: str):
    monkeypatch.setattr(apt, "KEYRING_DIR", str(tmp_path / "keyrings"))
    (tmp_path / "keyrings").mkdir(exist_ok=True)
    repo = apt.AptRepo("t", f"file://{key_file}", fingerprint, "https://example.invalid", "x")
    r = subprocess.run(["bash", "-c", apt.key_install_command(repo)], capture_output=True, text=True)
    return r, Path(repo.keyring)


def test_key_install_accepts_the_pinned_key(keys, tmp_path, monkeypatch):
    (fpr, path), _ = keys
    r, keyring = _run_key_install(tmp_path, monkeypatch, path, fpr)
    assert r.returncode == 0, r.stderr
    assert keyring.read_text() == path.read_text() and oct(keyring.stat().st_mode & 0o777) == "0o644"


def test_key_install_refuses_another_key(keys, tmp_path, monkeypatch):
    (fpr, _), (_, evil) = keys
    r, keyring = _run_key_install(tmp_path, monkeypatch, evil, fpr)
    assert r.returncode == 5 and "signing key fingerprint mismatch for t" in r.stderr and not keyring.exists()


def test_key_install_refuses_the_pinned_key_bundled_with_another(keys, tmp_path, monkeypatch):
    (fpr, good), (_, evil) = keys
    both = tmp_path / "both.asc"
    both.write_text(good.read_text() + evil.read_text())
    r, keyring = _run_key_install(tmp_path, monkeypatch, both, fpr)
    assert r.returncode == 5 and not keyring.exists()


def test_key_install_refuses_a_subkey_fingerprint_as_the_pin(keys, tmp_path, monkeypatch):
    (fpr, good), _ = keys
    cols = subprocess.run(["gpg", "--show-keys", "--with-colons", str(good)], capture_output=True, text=True).stdout
    sub = [line.split(":")[9] for line in cols.splitlines() if line.startswith("fpr:") and line.split(":")[9] != fpr]
    assert sub, "the fixture key has a subkey"
    r, keyring = _run_key_install(tmp_path, monkeypatch, good, sub[0])
    assert r.returncode == 5 and not keyring.exists()


def test_repos_only_for_pgdg():
    assert apt.repos("pgdg") == [apt.PGDG, apt.TIMESCALE] and apt.repos("debian") == []


def test_parse_dpkg_status_only_installed():
    text = ("pgbackrest\t2.55.1-1\tii \nssl-cert\t1.1.3\trc \npostgresql-17\t17.6\tii \n"
            "timescaledb-2-postgresql-17\t2.18.2~debian13\thi \nfoo\t1\tun \n")
    assert apt.parse_dpkg_status(text) == {"pgbackrest": "2.55.1-1", "postgresql-17": "17.6",
                                           "timescaledb-2-postgresql-17": "2.18.2~debian13"}  # held counts as installed


def test_timescaledb_is_timescales_packaging_whatever_the_package_source():
    # the lab installs TimescaleDB through the production path: same names, version suffix, pin and hold
    lab = PROD.with_(package_source="debian")
    ts = lambda s: [p for p in apt.package_specs(s, "13") if "timescaledb" in p.name]
    assert ts(PROD) == ts(lab) == [
        apt.PackageSpec("timescaledb-2-postgresql-16", "2.18.2", "~debian13", pinned=True),
        apt.PackageSpec("timescaledb-2-loader-postgresql-16", "2.18.2", "~debian13", pinned=True)]
    assert apt.package_specs(PROD, "13") == apt.package_specs(lab, "13")  # the whole list: only the source differs
    chosen = apt.resolve(apt.package_specs(LAB, "13"), apt.parse_madison(MADISON_LAB), "debian")
    cmd = apt.install_command(apt.package_specs(LAB, "13"), chosen)
    assert "timescaledb-2-postgresql-16=2.18.2~debian13" in cmd and "postgresql-16=16.10-1.pgdg13+1" in cmd


MADISON_PROD_16_16 = MADISON_PROD.replace("16.10-1.pgdg120+1", "16.16-1.pgdg120+1")
MADISON_ARCHIVE = MADISON_PROD_16_16 + """\
postgresql-16 | 16.10-1.pgdg120+1 | https://apt-archive.postgresql.org/pub/repos/apt bookworm-pgdg-archive/main amd64 Packages
postgresql-client-16 | 16.10-1.pgdg120+1 | https://apt-archive.postgresql.org/pub/repos/apt bookworm-pgdg-archive/main amd64 Packages
"""


@pytest.mark.parametrize("settings, madison, want", [
    (PROD, MADISON_PROD, []),  # the current repository still carries 16.10
    (PROD, MADISON_PROD_16_16, ["postgresql-16", "postgresql-client-16"]),  # PGDG moved on to 16.16
    (PROD, MADISON_PROD.replace("postgresql-client-16 |", "postgresql-clientx |"), ["postgresql-client-16"]),
    (PROD, MADISON_ARCHIVE, []),  # once the archive is a source, it offers the exact version
    (PROD.with_(timescaledb_version="2.18.9"), MADISON_PROD, []),  # never for Timescale's packages
    (LAB, MADISON_LAB.replace("16.10-1", "16.16-1"), []),  # never for the lab's own repository
])
def test_pgdg_archive_only_when_the_current_repository_lacks_the_exact_minor(settings, madison, want):
    source = settings.package_source
    assert apt.archive_wanted(apt.package_specs(settings, "12"), apt.parse_madison(madison), source) == want


def test_the_exact_minor_resolves_from_the_archive_and_names_where_it_comes_from():
    specs = apt.package_specs(PROD, "12")
    chosen = apt.resolve(specs, apt.parse_madison(MADISON_ARCHIVE), "pgdg")
    assert chosen["postgresql-16"] == chosen["postgresql-client-16"] == "16.10-1.pgdg120+1"
    text = apt.chosen_text(specs, chosen, apt.madison_origins(MADISON_ARCHIVE))
    assert ("postgresql-16=16.10-1.pgdg120+1 (from https://apt-archive.postgresql.org/pub/repos/apt "
            "bookworm-pgdg-archive)") in text
    assert "timescaledb-2-postgresql-16=2.18.2~debian12 (from https://packagecloud.io/timescale/timescaledb/debian bookworm)" in text
    assert "pgbackrest" not in text  # only the pinned ones are named


@pytest.mark.parametrize("madison, key, where", [
    (MADISON_PROD, ("postgresql-16", "16.10-1.pgdg120+1"), "https://apt.postgresql.org/pub/repos/apt bookworm-pgdg"),
    (MADISON_PROD, ("postgresql-16", "16.9-0+deb12u1"), "http://deb.debian.org/debian bookworm"),
    (MADISON_LAB, ("postgresql-16", "16.10-1.pgdg13+1"), "file:/srv/repo"),
])
def test_madison_origins(madison, key, where):
    assert apt.madison_origins(madison)[key] == where


@pytest.mark.parametrize("installed, drift", [
    ({}, []),  # a fresh host: nothing installed, nothing to report
    ({"postgresql-16": "16.10-1.pgdg120+1", "postgresql-client-16": "16.10-1.pgdg13+1"}, []),
    ({"postgresql-16": "16.9-1.pgdg120+1"}, ["postgresql-16 16.9-1.pgdg120+1 (want 16.10)"]),
    ({"postgresql-16": "16.16-1.pgdg120+1", "postgresql-client-16": "16.16-1.pgdg120+1"},
     ["postgresql-16 16.16-1.pgdg120+1 (want 16.10)", "postgresql-client-16 16.16-1.pgdg120+1 (want 16.10)"]),
    ({"timescaledb-2-postgresql-16": "2.19.0~debian12", "postgresql-16-postgis-3": "3.5.3+dfsg-1"}, []),  # re-pinned, not PostgreSQL
])
def test_an_installed_postgresql_minor_that_differs_is_reported(installed, drift):
    assert apt.minor_drift(apt.package_specs(PROD, "12"), installed) == drift


@pytest.mark.parametrize("settings, os_id, exact", [
    (PROD, "12", {"postgresql-16": "16.10", "postgresql-client-16": "16.10", "timescaledb-2-postgresql-16": "2.18.2"}),
    (LAB, "13", {"postgresql-16": "16.10", "postgresql-client-16": "16.10", "timescaledb-2-loader-postgresql-16": "2.18.2"}),
])
def test_postgresql_server_and_client_are_pinned_exactly_and_held(settings, os_id, exact):
    specs = {s.name: s for s in apt.package_specs(settings, os_id)}
    for name, want in exact.items():
        assert specs[name].want == want and specs[name].pinned
    assert specs["timescaledb-2-postgresql-16"].suffix == f"~debian{os_id}"
