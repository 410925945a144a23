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


def fingerprint(target, settings) -> str:
    """What a bad input must not change: fstab, mounts, packages and holds, pins, clusters, the volume."""
    dev = target.run(["readlink", "-e", settings.data_volume_by_id], sudo=True, check=False).stdout.strip()
    parts = [
        "cat /etc/fstab",
        "findmnt -rn -o TARGET,SOURCE,FSTYPE | sort",
        "dpkg-query -W -f='${Package}=${Version} ${db:Status-Abbrev}\\n' | sort",
        "apt-mark showhold",
        "ls -l /etc/apt/sources.list.d /etc/apt/preferences.d /etc/postgresql-common 2>&1",
        "command -v pg_lsclusters >/dev/null && pg_lsclusters -h",
        f"blkid -p -o export {shlex.quote(dev)}" if dev else "true",
    ]
    return target.run(" ; ".join(parts), sudo=True, check=False).stdout


def run_task(*args, env=None, timeout=900):
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), "provision", *args], cwd=ROOT, env=env or lab_env(),
                          capture_output=True, text=True, timeout=timeout)


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
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(password=pw, **(params | {"dbname": "postgres"}))


def test_second_run_changes_nothing(provisioned):
    t0 = time.monotonic()
    r = run_task("--json")
    MEASURED["second_run_s"] = round(time.monotonic() - t0, 1)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["changed"] is False, [s for s in out["steps"] if s["changed"]]
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


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_leaves_the_host_as_it_was(case, provisioned, target, tmp_path):
    spec, fragment = BAD[case]
    if spec == "wrong_key":
        spec = {"target_over": {"known_hosts": _wrong_known_hosts(tmp_path, provisioned)}}
    elif spec == "empty_known_hosts":
        (tmp_path / "empty").write_text("")
        spec = {"target_over": {"known_hosts": str(tmp_path / "empty")}}
    env = _overlay(tmp_path, provisioned, **spec)
    before = fingerprint(target, provisioned)
    r = run_task(env=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip() and not l.lstrip().startswith("…")]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert fragment in lines[0] and "hint:" in lines[0]
    assert fingerprint(target, provisioned) == before


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


def test_reboot_simulation_brings_everything_back(provisioned, target):
    s = provisioned
    psql(target, f"DROP DATABASE IF EXISTS {SCRATCH};\nCREATE DATABASE {SCRATCH};\n")
    try:
        psql(target, "CREATE TABLE marker(v text);\nINSERT INTO marker VALUES ('before-reboot');\n", db=SCRATCH)
        ctl = f"pg_ctlcluster {s.postgres_major} main"
        target.run(f"{ctl} stop && umount {shlex.quote(s.data_mount)}", sudo=True)
        assert not target.run(["findmnt", "--mountpoint", s.data_mount], sudo=True, check=False).ok
        target.run(f"mount -a && {ctl} start", sudo=True)
        assert psql(target, "SELECT v FROM marker;\n", db=SCRATCH).stdout.strip() == "before-reboot"
        assert psql(target, "SHOW data_directory;").stdout.strip() == s.cluster_dir
    finally:
        psql(target, f"DROP DATABASE IF EXISTS {SCRATCH};\n", check=False)


def test_password_never_in_logs_or_output(provisioned, target):
    """The secret and its SCRAM verifier appear in no PostgreSQL log, no task output, no shell history."""
    from trackerdb.secrets import fetch_secret

    s = provisioned
    pw = fetch_secret(s, s.app_secret_name).reveal()
    verifier = psql(target, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{s.owner_role}';").stdout.strip()
    assert verifier.startswith("SCRAM-SHA-256$")
    r = run_task("--json")
    assert r.returncode == 0 and pw not in r.stdout + r.stderr and verifier not in r.stdout + r.stderr
    # patterns on stdin, so they are not in grep's argv either
    found = target.run("grep -rlFf /dev/stdin /var/log /root /home /var/lib/postgresql/.psql_history 2>/dev/null; true",
                       sudo=True, stdin=f"{pw}\n{verifier.split('$', 2)[2]}\n").stdout.strip()
    assert found == ""
