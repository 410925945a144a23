"""The lab's hosts are what they claim to be (real sshd, PostgreSQL, pgBackRest, TLS S3, Secrets Manager)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from trackerdb.errors import HostError
from trackerdb.remote import Remote
from trackerdb.settings import HostSpec

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]


def spec(lab, role, **over) -> HostSpec:
    h = lab["hosts"][role]
    d = {"address": h["address"], "user": h["user"], "key_file": h["key_file"], "known_hosts": h["known_hosts"]} | over
    return HostSpec.from_dict(role, d)


@pytest.fixture(scope="module")
def hosts(lab):
    rs = {r: Remote(spec(lab, r)) for r in ("target", "source", "repo")}
    yield rs
    for r in rs.values():
        r.close()


@pytest.mark.parametrize("role", ["target", "source", "repo"])
def test_ssh_with_pinned_key_and_passwordless_sudo(hosts, role):
    assert hosts[role].run("hostname").stdout.strip() == role
    assert hosts[role].run("id -u", sudo=True).stdout.strip() == "0"


def test_unknown_or_changed_host_key_is_refused(lab, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    addr = lab["hosts"]["target"]["address"]
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"{addr} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    with pytest.raises(HostError, match="does not match"):
        Remote(spec(lab, "target", known_hosts=str(changed))).run("true")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostError, match="refusing an unknown host"):
        Remote(spec(lab, "target", known_hosts=str(empty))).run("true")


def test_target_is_bare_no_postgresql(hosts):
    t = hosts["target"]
    assert not t.run("command -v psql || command -v pg_ctlcluster", check=False).ok
    assert not t.exists("/usr/lib/postgresql")
    installed = t.run("dpkg-query -W -f '${Package} ${Status}\\n' | grep 'install ok installed' | cut -d' ' -f1").stdout.split()
    assert not [p for p in installed if p.startswith(("postgresql", "timescaledb", "pgbackrest"))]
    for tool in ("sshd", "sudo", "python3", "mkfs.ext4", "mkfs.xfs", "blkid"):
        assert t.run(f"PATH=$PATH:/usr/sbin:/sbin command -v {tool}", check=False).ok, tool


def test_target_data_volume_by_id_is_the_loop_device(lab, hosts):
    t, h = hosts["target"], lab["hosts"]["target"]
    outputs = json.loads(Path(lab["stack_outputs"]).read_text())
    by_id = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + outputs["data_volume_id"].replace("-", "")
    assert by_id == h["data_volume_by_id"]
    assert t.run(["readlink", "-f", by_id]).stdout.strip() == h["data_volume"]
    size = int(t.run(["blockdev", "--getsize64", by_id], sudo=True).stdout)
    assert size == outputs["data_volume_size_gb"] * 1024**3
    # no filesystem yet: provisioning formats it
    assert t.run(["blkid", "-p", by_id], sudo=True, check=False).exit_code == 2


def test_target_installs_packages_only_from_the_lab_repo(hosts):
    t = hosts["target"]
    sources = t.run("cat /etc/apt/sources.list; ls /etc/apt/sources.list.d/ | wc -l").stdout
    assert sources.splitlines()[0] == "deb [trusted=yes] file:/srv/lab-apt ./" and sources.split()[-1] == "0"
    assert "default" not in t.run("ip route").stdout  # no route out of the lab
    t.run("apt-get -q update", sudo=True, timeout=120)
    policy = t.run("apt-cache policy postgresql-16 postgresql-client-16 timescaledb-2-postgresql-16 "
                   "timescaledb-2-loader-postgresql-16 postgresql-16-postgis-3 pgbackrest").stdout
    for v in ("16.10-1.pgdg13+1", "2.18.2~debian13", "3.5.2+dfsg-1.pgdg13+1", "file:/srv/lab-apt"):
        assert v in policy, v
    # the flat repository serves production's engine under PGDG's and Timescale's names, not Debian's
    # PostgreSQL 17 or its Apache TimescaleDB, and nothing that only the build needed
    names = set(t.run("grep -h '^Package: ' /srv/lab-apt/Packages | cut -d' ' -f2").stdout.split())
    assert {"postgresql-16", "postgresql-client-16", "postgresql-16-postgis-3", "postgresql-16-postgis-3-scripts",
            "timescaledb-2-postgresql-16", "timescaledb-2-loader-postgresql-16", "pgbackrest"} <= names
    assert not names & {"postgresql-17", "postgresql-17-timescaledb", "postgresql-server-dev-16", "postgresql-server-dev-17",
                        "cmake", "gcc", "libssl-dev", "libkrb5-dev", "patchelf"}


def test_source_runs_the_tracker_database(hosts):
    s = hosts["source"]
    q = ("SELECT extname || '=' || extversion FROM pg_extension WHERE extname IN ('postgis','timescaledb') ORDER BY 1")
    exts = s.run(["psql", "-XAt", "-d", "tracker", "-c", q], user="postgres").stdout.split()
    assert exts == ["postgis=3.5.2", "timescaledb=2.18.2"]
    lic = s.run(["psql", "-XAt", "-d", "tracker", "-c", "SHOW timescaledb.license"], user="postgres").stdout.strip()
    assert lic == "timescale"
    pkgs = s.run("dpkg-query -W -f '${Package}=${Version}\\n' 'timescaledb*'").stdout.split()
    assert sorted(pkgs) == ["timescaledb-2-loader-postgresql-16=2.18.2~debian13", "timescaledb-2-postgresql-16=2.18.2~debian13"]
    # production's engine, exactly: the server says 16.10 (TimescaleDB 2.18.2's scheduler fails on 16.16+)
    ver = s.run(["psql", "-XAt", "-d", "tracker", "-c", "SELECT version()"], user="postgres").stdout
    assert ver.startswith("PostgreSQL 16.10 "), ver
    pkgs = s.run("dpkg-query -W -f '${Package}=${Version}\\n' 'postgresql-16*' 'postgresql-client-16'").stdout.split()
    assert sorted(pkgs) == ["postgresql-16-postgis-3-scripts=3.5.2+dfsg-1.pgdg13+1", "postgresql-16-postgis-3=3.5.2+dfsg-1.pgdg13+1",
                            "postgresql-16=16.10-1.pgdg13+1", "postgresql-client-16=16.10-1.pgdg13+1"]
    n = s.run(["psql", "-XAt", "-d", "fleet_archive", "-c", "SELECT count(*) FROM archived_trips"], user="postgres").stdout
    assert int(n) > 0
    owner = s.run(["psql", "-XAt", "-c", "SELECT rolsuper FROM pg_roles WHERE rolname = 'tracker'"], user="postgres").stdout.strip()
    assert owner == "f"


def test_source_archives_wal_to_the_shared_stanza_on_repo(hosts):
    s, r = hosts["source"], hosts["repo"]
    s.run(["pgbackrest", "--stanza=tracker", "check"], user="postgres", timeout=180)
    sysid = s.run(["psql", "-XAt", "-c", "SELECT system_identifier FROM pg_control_system()"], user="postgres").stdout.strip()
    info = r.run(["cat", "/var/pg_backrest_data/repo3/archive/tracker/archive.info"], user="postgres").stdout
    assert f"db-system-id={sysid}" in info.replace('"', "").replace(" ", "") or sysid in info
    segs = r.run("find /var/pg_backrest_data/repo3/archive/tracker -name '0000*' | wc -l", user="postgres").stdout
    assert int(segs) >= 1


def _s3_conf(lab, path: str, extra: str = "") -> str:
    return f"""[global]
log-level-console=warn
log-path=/tmp
lock-path=/tmp/pgbackrest-labcheck
repo1-type=s3
repo1-s3-endpoint=aws.lab.internal
repo1-s3-bucket=glimpse-timescale-backups
repo1-s3-region=eu-west-2
repo1-s3-uri-style=path
repo1-s3-key=testing
repo1-s3-key-secret=testing
repo1-path={path}
{extra}
[labcheck]
pg1-path=/var/lib/postgresql/16/main
"""


def test_pgbackrest_stanza_create_against_tls_s3(lab, hosts, lab_settings, tmp_path):
    """TLS is verified (the lab CA is in every host's trust store): a foreign CA file makes it fail."""
    import boto3

    s = hosts["source"]
    path = f"/lab-check-{uuid.uuid4().hex[:8]}"
    conf = "/tmp/labcheck-pgbackrest.conf"
    try:
        s.write_file(conf, _s3_conf(lab, path), mode="0600", owner="postgres")
        s.run(["pgbackrest", f"--config={conf}", "--stanza=labcheck", "stanza-create"], user="postgres", timeout=120)
        s3 = boto3.client("s3", region_name="eu-west-2", endpoint_url=lab_settings.aws_endpoint_url,
                          verify=lab_settings.aws_ca_bundle, aws_access_key_id="testing", aws_secret_access_key="testing")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="glimpse-timescale-backups", Prefix=path.lstrip("/")).get("Contents", [])]
        assert any(k.endswith("archive/labcheck/archive.info") for k in keys), keys
        # the same with the lab CA named explicitly (what repo2-storage-ca-file does on the new host), as repo2
        ca = "/usr/local/share/ca-certificates/trackerdb-lab-ca.crt"
        s.write_file(conf, _s3_conf(lab, path + "-ca", f"repo1-storage-ca-file={ca}\n").replace("repo1-", "repo2-"),
                     mode="0600", owner="postgres")
        s.run(["pgbackrest", f"--config={conf}", "--stanza=labcheck", "stanza-create"], user="postgres", timeout=120)
        # a CA that did not sign the server certificate must be refused
        s.run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=other "
              "-keyout /tmp/labcheck-other.key -out /tmp/labcheck-other.crt 2>/dev/null", user="postgres")
        s.write_file(conf, _s3_conf(lab, path + "x", "repo1-storage-ca-file=/tmp/labcheck-other.crt\nio-timeout=5\n"), mode="0600", owner="postgres")
        bad = s.run(["pgbackrest", f"--config={conf}", "--stanza=labcheck", "stanza-create"], user="postgres", check=False, timeout=120)
        assert not bad.ok and ("certificate" in (bad.stdout + bad.stderr).lower() or "tls" in (bad.stdout + bad.stderr).lower())
    finally:
        s.run(f"rm -rf {conf} /tmp/labcheck-other.* /tmp/pgbackrest-labcheck /tmp/labcheck-*.log", sudo=True, check=False)


def test_secrets_manager_returns_the_cipher_secret(lab_settings, monkeypatch):
    from trackerdb.secrets import fetch_secret

    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)  # the lab's settings carry moto's keys
    secret = fetch_secret(lab_settings, lab_settings.cipher_secret_name)
    assert len(secret.reveal()) >= 32
    assert secret.reveal() not in repr(secret)


def test_route53_record_points_at_the_source(lab, lab_settings):
    import boto3

    r53 = boto3.client("route53", region_name="eu-west-2", endpoint_url=lab_settings.aws_endpoint_url,
                       verify=lab_settings.aws_ca_bundle, aws_access_key_id="testing", aws_secret_access_key="testing")
    rrs = r53.list_resource_record_sets(HostedZoneId=lab_settings.switch.zone_id)["ResourceRecordSets"]
    rec = [r for r in rrs if r["Name"].rstrip(".") == lab_settings.switch.record_name and r["Type"] == "A"]
    assert rec and rec[0]["ResourceRecords"][0]["Value"] == lab["hosts"]["source"]["address"]


def test_status_json_task(lab):
    p = subprocess.run([sys.executable, "-m", "invoke", "lab.status", "--json", "--name", lab["name"]],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["up"] and set(st["hosts"]) == {"target", "source", "repo", "aws"}
    for role in ("target", "source", "repo"):
        h = st["hosts"][role]
        assert Path(h["key_file"]).is_file() and Path(h["known_hosts"]).is_file() and h["user"] == "admin"
    assert Path(st["stack_outputs"]).is_file()
