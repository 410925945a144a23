"""Provisioning against the lab's bare target: the real host, observed state only."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.fx_provision import MEASURED, ROOT, lab_env
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab
SCRATCH = "provision_scratch"


@pytest.fixture(scope="module")
def target(provisioned):
    with Remote(provisioned.target) as r:
        yield r


def psql(target, sql, db="postgres", check=True):
    return target.run(f"psql -X -q -At -v ON_ERROR_STOP=1 -d {shlex.quote(db)} -f -", user="postgres", stdin=sql, check=check)


# every place provisioning writes: apt sources/pins/keys, PostgreSQL's and pgBackRest's configuration,
# the TLS files, fstab; content hashed, and owner and mode of each file
WRITES = "/etc/fstab /etc/apt /etc/postgresql /etc/postgresql-common /etc/pgbackrest /etc/ssl/private /etc/ssl/certs/ssl-cert-snakeoil.pem"
# what the running server has in force, and the roles' password verifiers (hashed, never printed)
SERVER_SQL = ("SELECT name || '=' || setting FROM pg_settings WHERE source IN ('configuration file', 'command line') "
              "UNION ALL SELECT 'role ' || rolname || ' ' || md5(coalesce(rolpassword, '')) || ' ' || rolcanlogin FROM pg_authid "
              "ORDER BY 1")


def fingerprint(target, settings) -> str:
    """What a bad input (or a run that should change nothing) must not change: fstab, mounts, packages
    and holds, the content, owner and mode of every file provisioning writes, clusters, the volume's
    filesystem, the server's settings in force and the roles' passwords."""
    dev = target.run(["readlink", "-e", settings.data_volume_by_id], sudo=True, check=False).stdout.strip()
    parts = [
        "findmnt -rn -o TARGET,SOURCE,FSTYPE | sort",
        "dpkg-query -W -f='${Package}=${Version} ${db:Status-Abbrev}\\n' | sort",
        "apt-mark showhold",
        f"find {WRITES} -xdev \\( -type f -o -type l \\) -printf '%p %m %u:%g %l\\n' 2>&1 | sort",
        f"find {WRITES} -xdev -type f -exec sha256sum {{}} + 2>&1 | sort",
        "command -v pg_lsclusters >/dev/null && pg_lsclusters -h",
        f"blkid -p -o export {shlex.quote(dev)}" if dev else "true",
        f"if command -v psql >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then "
        f"sudo -u postgres psql -XAtc {shlex.quote(SERVER_SQL)}; fi",
    ]
    return target.run(" ; ".join(parts), sudo=True, check=False).stdout


def run_task(*args, env=None, timeout=900):
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), "provision", *args], cwd=ROOT, env=env or lab_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("case", list(BAD_BARE := (
    "volume id not found", "volume too small", "package version not available", "target unreachable", "secret missing",
    "host key mismatch", "host key unknown")))
def test_bad_input_on_a_bare_host_changes_nothing(case, lab, tmp_path):
    """The same bad inputs as below, before any provisioning: nothing may be installed, formatted or written."""
    from tests.lab.fx_provision import load_lab_settings

    settings = load_lab_settings(lab["name"])
    with Remote(settings.target) as bare:
        if bare.run("command -v pg_lsclusters", check=False).ok:
            pytest.fail("the target is already provisioned: the bare-host cases must run before the `provisioned` fixture")
        _bad_input(case, settings, bare, tmp_path)


def test_postgres_runs_from_the_mounted_volume(provisioned, target):
    s = provisioned
    assert psql(target, "SHOW data_directory;").stdout.strip() == s.cluster_dir
    dev = target.run(["readlink", "-e", s.data_volume_by_id], sudo=True).stdout.strip()
    mnt = json.loads(target.run(["findmnt", "-J", "-o", "SOURCE,TARGET", "--target", s.cluster_dir], sudo=True).stdout)
    assert mnt["filesystems"][0]["target"] == s.data_mount
    assert mnt["filesystems"][0]["source"] == dev
    fstab = target.read_file("/etc/fstab")
    assert any(l.split()[1:2] == [s.data_mount] and "nofail" in l and l.startswith("UUID=") for l in fstab.splitlines() if l.split())


def test_extensions_and_versions(provisioned, target):
    s = provisioned
    psql(target, f"DROP DATABASE IF EXISTS {SCRATCH};\nCREATE DATABASE {SCRATCH};\n")
    try:
        psql(target, "CREATE EXTENSION timescaledb;\nCREATE EXTENSION postgis;\n", db=SCRATCH)
        rows = dict(l.split("|") for l in psql(target, "SELECT extname, extversion FROM pg_extension;\n"
                                               "SELECT 'server', current_setting('server_version_num');\n"
                                               "SELECT 'license', current_setting('timescaledb.license');\n", db=SCRATCH).stdout.split())
        assert rows["timescaledb"] == s.timescaledb_version == "2.18.2"
        assert rows["license"] == "timescale"  # production's edition: compression and caggs exist
        assert rows["postgis"].split()[0].startswith(s.postgis_version)
        assert int(rows["server"]) // 10000 == s.postgres_major
    finally:
        psql(target, f"DROP DATABASE IF EXISTS {SCRATCH};\n")


def test_packages_pinned_and_held(provisioned, target):
    held = target.run(["apt-mark", "showhold"], sudo=True).stdout.split()
    major = provisioned.postgres_major
    # the production package names, pinned and held at the stack's version
    assert {f"timescaledb-2-postgresql-{major}", f"timescaledb-2-loader-postgresql-{major}"} <= set(held)
    versions = dict(l.split() for l in target.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", f"timescaledb-2-postgresql-{major}", f"timescaledb-2-loader-postgresql-{major}"]).stdout.splitlines())
    assert set(versions.values()) == {f"{provisioned.timescaledb_version}~debian13"}
    pins = target.read_file("/etc/apt/preferences.d/50-trackerdb")
    assert f"Package: timescaledb-2-postgresql-{major}\nPin: version {provisioned.timescaledb_version}~debian13\n" in pins
    assert target.run(["dpkg-query", "-W", f"postgresql-{major}-timescaledb"], check=False).exit_code != 0
    assert "create_main_cluster = false" in target.read_file("/etc/postgresql-common/createcluster.conf")


def test_tracker_authenticates_with_the_secret_over_tls_from_the_app_network(provisioned):
    """From the lab bridge (inside app_cidrs): SCRAM with the secret passes, a wrong password does not.

    pg_hba admits the app networks to the ``tracker`` database only; the migration creates it, so until
    then a correct password gets as far as "database does not exist" (authentication happens first).
    """
    import psycopg

    from trackerdb.secrets import fetch_secret

    s = provisioned
    pw = fetch_secret(s, s.app_secret_name).reveal()
    params = dict(host=s.outputs["private_ip"], port=s.pg_port, dbname=s.database, user=s.owner_role,
                  sslmode="require", connect_timeout=10)
    try:
        with psycopg.connect(password=pw, **params) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
    except psycopg.OperationalError as exc:
        assert f'database "{s.database}" does not exist' in str(exc), str(exc).replace(pw, "***")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(password=pw + "x", **params)
    # the explicit reject lines at the end of pg_hba answer everything the hostssl rules did not admit
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
        psycopg.connect(password=pw, **(params | {"dbname": "postgres"}))


def test_second_run_changes_nothing(provisioned, target):
    before = fingerprint(target, provisioned)
    t0 = time.monotonic()
    r = run_task("--json")
    MEASURED["second_run_s"] = round(time.monotonic() - t0, 1)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["changed"] is False, [s for s in out["steps"] if s["changed"]]
    # observed, not only reported: every file, setting and password as it was
    assert fingerprint(target, provisioned) == before
    print(f"provision measurements: {MEASURED}")


def test_dry_run_changes_nothing(provisioned, target):
    before = fingerprint(target, provisioned)
    r = run_task("--dry-run")
    assert r.returncode == 0, r.stderr
    assert "no changes" in r.stdout
    assert fingerprint(target, provisioned) == before


def _overlay(tmp_path: Path, settings, outputs_over=None, overlay_over=None, target_over=None) -> dict:
    from trackerdb.settings import lab_dir

    d = lab_dir(lab_env())
    outputs = json.loads((d / "stack-outputs.json").read_text()) | (outputs_over or {})
    overlay = json.loads((d / "settings.json").read_text()) | (overlay_over or {})
    overlay["target"] = overlay["target"] | (target_over or {})
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    overlay["stack_outputs"] = str(tmp_path / "outputs.json")
    (tmp_path / "settings.json").write_text(json.dumps(overlay))
    env = lab_env()
    env.pop("TRACKERDB_ENV")
    env["TRACKERDB_SETTINGS"] = str(tmp_path / "settings.json")
    return env


def _wrong_known_hosts(tmp_path: Path, settings) -> str:
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], capture_output=True)
    assert other.returncode == 0
    pub = (tmp_path / "k.pub").read_text().split()[:2]
    p = tmp_path / "known_hosts_wrong"
    p.write_text(f"{settings.target.address} {' '.join(pub)}\n")
    return str(p)


BAD = {
    "volume id not found": ({"outputs_over": {"data_volume_id": "vol-0000000000000dead"}}, "not found"),
    "volume too small": ({"outputs_over": {"data_volume_size_gb": 400}}, "too small"),
    "package version not available": ({"outputs_over": {"timescaledb_version": "2.99.0"}}, "package version not available"),
    "target unreachable": ({"target_over": {"address": "127.0.0.1", "port": 1}}, "unreachable"),
    "secret missing": ({"outputs_over": {"app_secret_name": "tracker/db/no-such-secret"}}, "not found"),
    "host key mismatch": ("wrong_key", "does not match the pinned key"),
    "host key unknown": ("empty_known_hosts", "refusing an unknown host"),
}


assert set(BAD) == set(BAD_BARE)


def _bad_input(case, settings, target, tmp_path):
    spec, fragment = BAD[case]
    if spec == "wrong_key":
        spec = {"target_over": {"known_hosts": _wrong_known_hosts(tmp_path, settings)}}
    elif spec == "empty_known_hosts":
        (tmp_path / "empty").write_text("")
        spec = {"target_over": {"known_hosts": str(tmp_path / "empty")}}
    env = _overlay(tmp_path, settings, **spec)
    before = fingerprint(target, settings)
    r = run_task(env=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip() and not l.lstrip().startswith("…")]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert fragment in lines[0] and "hint:" in lines[0]
    assert fingerprint(target, settings) == before


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_leaves_the_host_as_it_was(case, provisioned, target, tmp_path):
    _bad_input(case, provisioned, target, tmp_path)


def test_foreign_filesystem_with_data_is_never_reformatted(provisioned, target):
    """Make the (provisioned) volume look foreign: unmounted, not in fstab, another label. Then put it back."""
    s = provisioned
    dev = target.run(["readlink", "-e", s.data_volume_by_id], sudo=True).stdout.strip()
    fstab = target.read_file("/etc/fstab")
    ctl = f"pg_ctlcluster {s.postgres_major} main"
    target.run(f"{ctl} stop && umount {shlex.quote(s.data_mount)} && e2label {shlex.quote(dev)} foreign", sudo=True)
    try:
        target.write_file("/etc/fstab", "".join(l + "\n" for l in fstab.splitlines() if s.data_mount not in l))
        before = fingerprint(target, s)
        r = run_task(timeout=300)
        assert r.returncode == 1
        assert "foreign ext4 filesystem with data" in r.stderr and "never reformatted" in r.stderr
        assert fingerprint(target, s) == before
    finally:
        target.run(f"e2label {shlex.quote(dev)} pgdata", sudo=True)
        target.write_file("/etc/fstab", fstab)
        target.run(f"mount {shlex.quote(s.data_mount)} && {ctl} start", sudo=True)
    assert psql(target, "SELECT 1;").stdout.strip() == "1"


def test_reboot_brings_everything_back_by_the_hosts_own_boot_path(provisioned, lab):
    """A real reboot of the lab host (every process and mount of it gone, its init started again): the
    volume comes back from fstab and PostgreSQL from its boot script; the test starts nothing itself."""
    from lab import api

    s = provisioned
    with Remote(s.target) as t:
        psql(t, f"DROP DATABASE IF EXISTS {SCRATCH};\nCREATE DATABASE {SCRATCH};\n")
        psql(t, "CREATE TABLE marker(v text);\nINSERT INTO marker VALUES ('before-reboot');\n", db=SCRATCH)
        started = psql(t, "SELECT pg_postmaster_start_time();").stdout.strip()
    res = api.reboot(lab["name"], "target")
    print("reboot:", res)
    with Remote(s.target) as t:
        try:
            deadline = time.monotonic() + 60
            while not psql(t, "SELECT 1;", check=False).ok and time.monotonic() < deadline:
                time.sleep(0.5)
            assert psql(t, "SELECT pg_postmaster_start_time();").stdout.strip() != started  # a new server
            assert psql(t, "SELECT v FROM marker;\n", db=SCRATCH).stdout.strip() == "before-reboot"
            assert psql(t, "SHOW data_directory;").stdout.strip() == s.cluster_dir
            mnt = t.run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", s.data_mount], sudo=True).stdout.strip()
            assert mnt == t.run(["readlink", "-e", s.data_volume_by_id], sudo=True).stdout.strip()
        finally:
            psql(t, f"DROP DATABASE IF EXISTS {SCRATCH};\n", check=False)


SCAN = "/var/log /root /home /etc /tmp /var/tmp /run /var/lib/postgresql /var/lib/pgbackrest /var/spool"


def scan_for(target, patterns: list[str], exclude_dirs=()) -> list[str]:
    """Files on the target that contain any of ``patterns`` (given on stdin, so never in grep's argv).
    grep's own errors fail the test instead of passing silently."""
    excl = " ".join(f"--exclude-dir={shlex.quote(d)}" for d in exclude_dirs)
    r = target.run(f"grep -rlF -D skip {excl} -f /dev/stdin {SCAN}", sudo=True, stdin="".join(p + "\n" for p in patterns),
                   check=False)
    assert r.exit_code in (0, 1), f"grep failed: {r.stderr[-500:]}"
    return r.stdout.split()


def test_password_never_in_logs_or_output(provisioned, target):
    """The run that sets the password: the secret and its SCRAM verifier appear in none of its output,
    and nowhere on the host outside the catalog that must hold the verifier."""
    from trackerdb.secrets import fetch_secret

    s = provisioned
    pw = fetch_secret(s, s.app_secret_name).reveal()
    psql(target, f"ALTER ROLE {s.owner_role} PASSWORD 'a-different-password';")  # so this run must set it again
    r = run_task("--json")
    assert r.returncode == 0, r.stderr
    role_step = next(st for st in json.loads(r.stdout)["steps"] if st["name"] == "role")
    assert role_step["changed"] is True
    verifier = psql(target, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{s.owner_role}';").stdout.strip()
    assert verifier.startswith("SCRAM-SHA-256$") and verifier.split("$", 2)[2] not in ("",)
    body = verifier.split("$", 2)[2]
    assert pw not in r.stdout + r.stderr and body not in r.stdout + r.stderr
    # the scan finds a planted copy (so an empty result means something)
    planted = "/var/log/trackerdb-planted.log"
    target.write_file(planted, f"leak {pw} here\n")
    try:
        assert planted in scan_for(target, [pw])
    finally:
        target.run(["rm", "-f", planted], sudo=True)
    # the password itself: nowhere, the data directory included
    assert scan_for(target, [pw]) == []
    # its verifier: only in the catalog (global/) and the WAL, where PostgreSQL keeps it
    assert scan_for(target, [body], exclude_dirs=("global", "pg_wal")) == []
