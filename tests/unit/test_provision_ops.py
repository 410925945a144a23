"""The operation against a scripted host: facts in, planned commands and errors out (no SSH)."""

import re

import pytest

from tests.conftest import prod_outputs
from trackerdb.errors import PreflightError
from trackerdb.provision import apt, ops
from trackerdb.remote import Result
from trackerdb.settings import Settings

S = Settings.from_parts({"package_source": "debian"},
                        prod_outputs(environment="lab", timescaledb_version="2.18.2",
                                     data_volume_size_gb=2, private_ip="10.77.0.2"))
DEV = "/dev/loop7"
MADISON = """postgresql-16 | 16.10-1.pgdg13+1 | file:/srv/repo ./ Packages
postgresql-client-16 | 16.10-1.pgdg13+1 | file:/srv/repo ./ Packages
postgresql-16-postgis-3 | 3.5.2+dfsg-1.pgdg13+1 | file:/srv/repo ./ Packages
postgresql-16-postgis-3-scripts | 3.5.2+dfsg-1.pgdg13+1 | file:/srv/repo ./ Packages
timescaledb-2-postgresql-16 | 2.18.2~debian13 | file:/srv/repo ./ Packages
timescaledb-2-loader-postgresql-16 | 2.18.2~debian13 | file:/srv/repo ./ Packages
pgbackrest | 2.55.1-1 | file:/srv/repo ./ Packages
ssl-cert | 1.1.3 | file:/srv/repo ./ Packages
"""
CHANGING = re.compile(r"\b(mkfs\.|e2label|xfs_admin|apt-get install|apt-mark hold|pg_createcluster|pg_ctlcluster|chown|mkdir -p /var)\b"
                      r"|mount /var/lib/postgresql")


class ScriptedHost:
    """Answers the fact commands from a table; records everything else."""

    def __init__(self, blkid="", peek="", size=2 * 1024**3, by_id=True, files=None):
        self.answers = [
            ("cat /etc/os-release", 0, 'ID=debian\nVERSION_ID="13"\nVERSION_CODENAME=trixie\n'),
            ("cat /proc/meminfo", 0, "MemTotal:       4026532 kB\n"),
            ("nproc", 0, "2\n"),
            ("hostname -I", 0, "10.77.0.2 \n"),
            ("readlink -e", 0 if by_id else 1, DEV + "\n" if by_id else ""),
            ("blockdev --getsize64", 0, f"{size}\n"),
            ("lsblk", 0, '{"blockdevices": [{"name": "loop7", "serial": null}]}'),
            ("stat -L -c %t", 0, "7:7"),
            ("blkid -p", 0 if blkid else 2, blkid),
            ("findmnt", 1, ""),
            ("mount -o ro", 0, peek),
            ("ls -A1 /var/lib/postgresql", 0, ""),
            ("apt-cache madison", 0, MADISON),
            ("dpkg-query", 0, ""),
            ("apt-mark showhold", 0, ""),
            ("stat -c %U:%G", 0, "root:root\n"),
            ("pg_lsclusters", 0, ""),
        ]
        self.files = dict(files or {"/etc/fstab": "UUID=root / ext4 defaults 0 1\n"})
        self.ran: list[str] = []
        self.writes: list[str] = []

    def run(self, cmd, sudo=False, user=None, stdin=None, check=True, timeout=None, cwd=None):
        line = cmd if isinstance(cmd, str) else " ".join(cmd)
        self.ran.append(line)
        for key, rc, out in self.answers:
            if key in line:
                return Result(line, rc, out, "")
        return Result(line, 0, "", "")

    def read_file(self, path, **kw):
        return self.files.get(path)

    def write_file(self, path, content, **kw):
        self.writes.append(path)
        self.files[path] = content
        return True

    def exists(self, path):
        return path in self.files

    def close(self):
        pass


TLS_SECRET = "tracker/db/tls"


def make_bundle(cn: str = "db.tracker.internal", key=None) -> tuple[str, str]:
    """A real self-signed certificate and its key (PEM), as an operator would store them."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


BUNDLE = make_bundle()


@pytest.fixture(autouse=True)
def fake_secret(monkeypatch):
    import json

    from trackerdb.secrets import Secret

    def fetch(settings, name):
        if name == TLS_SECRET:
            return Secret(name, json.dumps({"certificate": BUNDLE[0], "private_key": BUNDLE[1]}))
        return Secret(name, "pw-from-secrets-manager")

    monkeypatch.setattr(ops, "fetch_secret", fetch)


def test_dry_run_on_a_bare_host_plans_everything_and_changes_nothing():
    host = ScriptedHost()
    outcome = ops.provision(S, dry_run=True, host=host)
    steps = {s.name: s for s in outcome.steps}
    assert steps["format data volume"].changed and "mkfs.ext4" in steps["format data volume"].commands[0]
    assert steps["packages"].changed and "timescaledb-2-postgresql-16=2.18.2~debian13" in steps["packages"].commands[0]
    assert steps["cluster"].changed and steps["server"].changed and steps["role"].changed
    assert "create_main_cluster = false" in steps["createcluster.conf"].commands[0]
    assert host.writes == []
    assert not [c for c in host.ran if CHANGING.search(c)], [c for c in host.ran if CHANGING.search(c)]
    assert "pw-from-secrets-manager" not in outcome.to_json()


@pytest.mark.parametrize("host, fragment", [
    (ScriptedHost(by_id=False), "not found"),
    (ScriptedHost(size=1 * 1024**3), "too small"),
    (ScriptedHost(blkid="TYPE=ext4\nUUID=u1\nLABEL=backups\n", peek="lost+found\nimportant.tar\n"), "foreign ext4 filesystem with data"),
    (ScriptedHost(blkid="TYPE=xfs\nUUID=u1\n"), "already has a xfs filesystem"),
    (ScriptedHost(files={"/etc/fstab": "/dev/sdz1 /var/lib/postgresql ext4 defaults 0 2\n"}, blkid="TYPE=ext4\nUUID=u1\nLABEL=pgdata\n"),
     "/etc/fstab already mounts"),
])
def test_bad_volume_inputs_fail_before_any_change(host, fragment):
    with pytest.raises(PreflightError) as e:
        ops.provision(S, host=host)
    assert fragment in e.value.one_line()
    assert host.writes == [] and not [c for c in host.ran if CHANGING.search(c)]


def test_version_not_available_fails_before_any_change():
    host = ScriptedHost()
    with pytest.raises(PreflightError) as e:
        ops.provision(S.with_(timescaledb_version="2.99.0"), host=host)
    assert e.value.one_line().startswith("package version not available")
    assert host.writes == [] and not [c for c in host.ran if CHANGING.search(c)]


def test_private_ip_not_on_host_is_refused():
    with pytest.raises(PreflightError, match="has no address 10.9.9.9"):
        ops.provision(S.with_(outputs=dict(S.outputs, private_ip="10.9.9.9")), host=ScriptedHost())


@pytest.mark.parametrize("old, new, keys", [
    (None, "a = 1\n", {"a"}),
    ("a = 1\nb = 2\n", "a = 1\nb = 3\n", {"b"}),
    ("# x\na = 1\n", "a = 1\n", set()),
])
def test_changed_keys(old, new, keys):
    assert ops._changed_keys(old, new) == keys


def test_production_without_a_tls_certificate_stops_before_touching_anything():
    from trackerdb.errors import ConfigError

    s = Settings.from_parts({}, prod_outputs(data_volume_size_gb=2, private_ip="10.77.0.2"))
    host = ScriptedHost()
    with pytest.raises(ConfigError, match="no TLS certificate configured") as err:
        ops.provision(s, dry_run=False, host=host)
    assert "tls_secret_name" in err.value.one_line() and "\n" not in err.value.one_line()
    assert host.ran == [] and host.writes == []


def test_tls_certificate_planned_from_the_secret_and_never_shown():
    s = Settings.from_parts({"tls_secret_name": TLS_SECRET}, prod_outputs(data_volume_size_gb=2, private_ip="10.77.0.2"))
    host = ScriptedHost()
    host.answers.insert(0, ("cat /etc/os-release", 0, 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'))
    outcome = ops.provision(s, dry_run=True, host=host)
    steps = {st.name: st for st in outcome.steps}
    assert steps["tls certificate"].changed and "/etc/postgresql/16/main/tls/server.key (0600" in steps["tls certificate"].commands[1]
    assert "ssl_key_file = '/etc/postgresql/16/main/tls/server.key'" in steps["conf.d drop-in"].commands[0]
    body = BUNDLE[1].splitlines()[1]  # a line of the private key
    assert body not in outcome.to_json() and host.writes == []


def test_tls_files_written_owner_only_and_then_left_alone():
    s = S.with_(tls_secret_name=TLS_SECRET)
    host = ScriptedHost()
    p = ops.Provisioner(s, host, ops.Outcome("t"), False, lambda m: None, "pw", BUNDLE[:1] + (ops.Secret(TLS_SECRET, BUNDLE[1]),))
    assert p.server_certificate() is True
    assert host.writes == ["/etc/postgresql/16/main/tls/server.key", "/etc/postgresql/16/main/tls/server.crt"]
    from trackerdb.safe_paths import ensure_dir_argv  # the directory is made without following a link (issue 23)

    assert " ".join(ensure_dir_argv("/etc/postgresql/16/main/tls", "0700", "postgres", "postgres")) in host.ran
    host.answers.insert(0, ("stat -c %U:%G %a", 0, "postgres:postgres 700\npostgres:postgres 600\n"))
    host.writes.clear()
    assert p.server_certificate() is False and host.writes == []


def test_pgdg_dry_run_on_a_fresh_debian12_host_plans_sources_keys_and_pins():
    s = Settings.from_parts({"tls_secret_name": TLS_SECRET}, prod_outputs(data_volume_size_gb=2, private_ip="10.77.0.2"))
    host = ScriptedHost()
    host.answers.insert(0, ("cat /etc/os-release", 0, 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'))
    host.answers.insert(0, ("apt-cache madison", 0, ""))  # the repositories are not there yet
    outcome = ops.provision(s, dry_run=True, host=host)
    steps = {st.name: st for st in outcome.steps}
    assert steps["keyring pgdg"].changed and "ACCC4CF8.asc" in steps["keyring pgdg"].commands[0]
    assert "bookworm-pgdg main" in steps["apt source pgdg"].commands[0]
    assert "signed-by=/usr/share/keyrings/timescaledb.asc" in steps["apt source timescaledb"].commands[0]
    assert "timescaledb-2-postgresql-16=2.18.2~debian12*" in steps["packages"].commands[0]
    assert host.writes == [] and not [c for c in host.ran if CHANGING.search(c)]

    # the dry run names the exact PostgreSQL version and where it would come from
    assert "postgresql-16=16.10* " in steps["package versions"].detail or "postgresql-16=16.10*," in steps["package versions"].detail
    assert "https://apt.postgresql.org/pub/repos/apt" in steps["package versions"].detail
    assert "apt-archive.postgresql.org" in steps["package versions"].detail


PGDG_MADISON = """postgresql-16 | 16.16-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
postgresql-client-16 | 16.16-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
postgresql-16-postgis-3 | 3.5.2+dfsg-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
postgresql-16-postgis-3-scripts | 3.5.2+dfsg-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
timescaledb-2-postgresql-16 | 2.18.2~debian12 | https://packagecloud.io/timescale/timescaledb/debian bookworm/main amd64 Packages
timescaledb-2-loader-postgresql-16 | 2.18.2~debian12 | https://packagecloud.io/timescale/timescaledb/debian bookworm/main amd64 Packages
pgbackrest | 2.56.0-1.pgdg120+1 | https://apt.postgresql.org/pub/repos/apt bookworm-pgdg/main amd64 Packages
ssl-cert | 1.1.2 | http://deb.debian.org/debian bookworm/main amd64 Packages
"""


def _pgdg_host(madison: str) -> ScriptedHost:
    host = ScriptedHost(files={"/etc/fstab": "UUID=root / ext4 defaults 0 1\n", "/usr/share/keyrings/pgdg.asc": "k",
                               "/usr/share/keyrings/timescaledb.asc": "k",
                               "/etc/apt/sources.list.d/pgdg.list": apt.PGDG.source_line("bookworm"),
                               "/etc/apt/sources.list.d/timescaledb.list": apt.TIMESCALE.source_line("bookworm")})
    host.answers.insert(0, ("cat /etc/os-release", 0, 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'))
    host.answers.insert(0, ("apt-cache madison", 0, madison))
    host.answers.insert(0, ("dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n' ca-certificates", 0,
                            "ca-certificates\t1\tii \ncurl\t1\tii \ngnupg\t1\tii \n"))
    return host


def test_pgdg_without_the_exact_minor_plans_its_archive_repository_and_contacts_nothing():
    s = Settings.from_parts({"tls_secret_name": TLS_SECRET}, prod_outputs(data_volume_size_gb=2, private_ip="10.77.0.2"))
    host = _pgdg_host(PGDG_MADISON)  # PGDG moved on to 16.16; the source runs 16.10
    steps = {st.name: st for st in ops.provision(s, dry_run=True, host=host).steps}
    assert steps["apt source pgdg-archive"].changed
    assert ("deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt-archive.postgresql.org/pub/repos/apt "
            "bookworm-pgdg-archive main") in steps["apt source pgdg-archive"].commands[0]
    assert "postgresql-16=16.10*" in steps["package versions"].detail and "bookworm-pgdg-archive" in steps["package versions"].detail
    assert host.writes == [] and not [c for c in host.ran if CHANGING.search(c) or "apt-get update" in c]


def test_pgdg_with_the_exact_minor_adds_no_archive_and_names_the_source():
    s = Settings.from_parts({"tls_secret_name": TLS_SECRET}, prod_outputs(data_volume_size_gb=2, private_ip="10.77.0.2"))
    host = _pgdg_host(PGDG_MADISON.replace("16.16-1", "16.10-1"))
    steps = {st.name: st for st in ops.provision(s, dry_run=True, host=host).steps}
    assert "apt source pgdg-archive" not in steps
    assert ("postgresql-16=16.10-1.pgdg120+1 (from https://apt.postgresql.org/pub/repos/apt bookworm-pgdg)"
            in steps["package versions"].detail)


@pytest.mark.parametrize("installed", ["postgresql-16\t16.16-1.pgdg13+1\tii \n", "postgresql-client-16\t16.9-1.pgdg13+1\thi \n"])
def test_an_installed_postgresql_of_another_minor_is_reported_not_changed(installed):
    host = ScriptedHost()
    host.answers.insert(0, ("dpkg-query", 0, installed))
    with pytest.raises(PreflightError) as e:
        ops.provision(S, dry_run=False, host=host)
    line = e.value.one_line()
    assert "not the source's version" in line and "(want 16.10)" in line and "never changes" in line
    assert not [c for c in host.ran if "apt-get install" in c]


@pytest.mark.parametrize("changed_keys, hba_changed, postmaster, action", [
    ({"shared_buffers", "work_mem"}, False, "shared_buffers\nmax_connections\n", "restart"),
    ({"work_mem"}, False, "shared_buffers\nmax_connections\n", "reload"),
    (set(), True, "shared_buffers\n", "reload"),
    (set(), False, "shared_buffers\n", None),
])
def test_restart_only_for_restart_only_settings(changed_keys, hba_changed, postmaster, action):
    host = ScriptedHost()
    host.answers.insert(0, ("pg_lsclusters", 0, "16 main 5432 online postgres /var/lib/postgresql/16/main /var/log/x.log\n"))
    host.answers.insert(0, ("psql", 0, postmaster))
    p = ops.Provisioner(S, host, ops.Outcome("t"), False, lambda m: None, "pw")
    p.service(changed_keys, hba_changed)
    ctl = [c for c in host.ran if "pg_ctlcluster" in c]
    assert ctl == ([f"pg_ctlcluster 16 main {action}"] if action else [])
    assert p.out.steps[-1].changed is bool(action)
