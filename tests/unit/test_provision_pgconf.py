import base64
import hashlib
import hmac

import pytest

from tests.conftest import prod_outputs
from trackerdb.provision import pgconf, roles
from trackerdb.settings import Settings

GIB = 1024**3
PROD = Settings.from_parts({}, prod_outputs())


@pytest.mark.parametrize("mem_gib, cores, vol_gb, expect", [
    # t3.medium: 4 GiB, 2 vCPU, 50 GB data volume
    (4, 2, 50, {"shared_buffers_mb": 1024, "effective_cache_size_mb": 3072, "maintenance_work_mem_mb": 256,
                "max_parallel_workers": 2, "max_parallel_workers_per_gather": 1, "background_workers": 16,
                "max_worker_processes": 21, "max_wal_size_mb": 2048, "min_wal_size_mb": 512, "work_mem_kb": 10485}),
    (16, 8, 50, {"shared_buffers_mb": 4096, "effective_cache_size_mb": 12288, "maintenance_work_mem_mb": 1024,
                 "max_parallel_workers": 8, "max_parallel_workers_per_gather": 4, "background_workers": 16,
                 "max_worker_processes": 27, "work_mem_kb": 10485}),
    (64, 16, 500, {"maintenance_work_mem_mb": 2048, "max_wal_size_mb": 8192, "min_wal_size_mb": 2048}),  # capped
    (1, 1, 2, {"shared_buffers_mb": 256, "maintenance_work_mem_mb": 64, "work_mem_kb": 4096,
               "max_parallel_workers_per_gather": 1, "max_wal_size_mb": 1024}),  # the floors
])
def test_tuning_maths(mem_gib, cores, vol_gb, expect):
    t = pgconf.tune(mem_gib * GIB, cores, vol_gb)
    for k, v in expect.items():
        assert getattr(t, k) == v, k


def test_dropin_has_the_settings_the_runbook_needs():
    text = pgconf.dropin_text(PROD, pgconf.tune(4 * GIB, 2, 50), "172.31.10.20")
    for line in ("shared_preload_libraries = 'timescaledb'", "listen_addresses = 'localhost,172.31.10.20'",
                 "ssl = on", "shared_buffers = 1024MB", "effective_cache_size = 3072MB",
                 "timescaledb.max_background_workers = 16", "log_checkpoints = on", "log_lock_waits = on",
                 "password_encryption = 'scram-sha-256'", "log_line_prefix = '%m [%p] %q%u@%d '", "port = 5432"):
        assert line + "\n" in text, line
    keys = [l.split("=")[0].strip() for l in text.splitlines() if "=" in l and not l.startswith("#")]
    assert len(keys) == len(set(keys))


def _hba_decide(text: str, kind: str, database: str, user: str, address: str | None) -> str:
    """PostgreSQL's pg_hba rule: the first line matching connection type, database, user and address
    decides; no match is a rejection. ``kind``: local | ssl | nossl."""
    import ipaddress

    for line in text.splitlines():
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        typ, db, usr = f[0], f[1], f[2]
        if typ == "local":
            if kind != "local":
                continue
            method = f[3]
        else:
            if kind == "local" or (typ == "hostssl" and kind != "ssl") or (typ == "hostnossl" and kind != "nossl"):
                continue
            net = ipaddress.ip_network(f[3])
            ip = ipaddress.ip_address(address)
            if ip.version != net.version or ip not in net:
                continue
            method = f[4]
        if db not in ("all", database) or usr not in ("all", user):
            continue
        return method
    return "reject"


@pytest.mark.parametrize("kind, database, address, method", [
    ("ssl", "tracker", "172.31.40.7", "scram-sha-256"),      # the application, over TLS
    ("nossl", "tracker", "172.31.40.7", "reject"),           # the application without TLS
    ("ssl", "tracker", "10.1.2.3", "scram-sha-256"),
    ("nossl", "tracker", "10.1.2.3", "reject"),
    ("ssl", "postgres", "172.31.40.7", "reject"),            # app networks reach the tracker database only
    ("ssl", "tracker", "192.0.2.1", "reject"),               # not an app network
    ("nossl", "tracker", "192.0.2.1", "reject"),
    ("ssl", "tracker", "2001:db8::1", "reject"),
    ("nossl", "tracker", "2001:db8::1", "reject"),
    ("ssl", "postgres", "127.0.0.1", "scram-sha-256"),       # loopback: TLS too
    ("nossl", "postgres", "127.0.0.1", "reject"),
    ("local", "postgres", None, "peer"),
])
def test_hba_network_access_only_over_tls(kind, database, address, method):
    s = PROD.with_(app_cidrs=("172.31.32.0/20", "10.1.2.3/32"))
    assert _hba_decide(pgconf.hba_text(s), kind, database, "postgres" if kind == "local" else "tracker", address) == method


def test_hba_every_admitting_network_rule_is_hostssl():
    s = PROD.with_(app_cidrs=("172.31.32.0/20", "2001:db8:10::/48"))
    rows = [l.split() for l in pgconf.hba_text(s).splitlines() if l and not l.startswith("#")]
    admitting = [r for r in rows if r[0] != "local" and r[-1] != "reject"]
    assert admitting and all(r[0] == "hostssl" for r in admitting), admitting
    assert {r[3] for r in admitting} == {"127.0.0.1/32", "172.31.32.0/20", "2001:db8:10::/48"}
    assert "trust" not in pgconf.hba_text(s)
    # clear text is refused before any admitting rule, for both families
    first_admit = rows.index(admitting[0])
    assert {tuple(r) for r in rows[:first_admit] if r[0] == "hostnossl"} == {
        ("hostnossl", "all", "all", "0.0.0.0/0", "reject"), ("hostnossl", "all", "all", "::/0", "reject")}


def test_dropin_uses_the_operator_certificate_when_one_is_named():
    text = pgconf.dropin_text(PROD.with_(tls_secret_name="tracker/db/tls"), pgconf.tune(4 << 30, 2, 50), "10.0.0.5")
    assert "ssl_cert_file = '/etc/postgresql/16/main/tls/server.crt'" in text
    assert "ssl_key_file = '/etc/postgresql/16/main/tls/server.key'" in text and "snakeoil" not in text


@pytest.mark.parametrize("current, expect_line, keeps", [
    (None, "create_main_cluster = false", None),
    ("# comment\n#create_main_cluster = true\nssl = on\n", "create_main_cluster = false", "ssl = on"),
    ("create_main_cluster = true\nstart_conf = 'auto'\n", "create_main_cluster = false", "start_conf = 'auto'"),
    ("#add_include_dir = '...'\nadd_include_dir = 'conf.d'\n", "create_main_cluster = false", None),
])
def test_createcluster_conf_disables_the_packaged_cluster(current, expect_line, keeps):
    text = pgconf.createcluster_text(current)
    assert [l for l in text.splitlines() if "create_main_cluster" in l] == [expect_line]
    if keeps:
        assert keeps in text
    assert "add_include_dir = 'conf.d'\n" in text  # pg_createcluster adds include_dir to postgresql.conf: our drop-in is read
    assert pgconf.createcluster_text(text) == text  # idempotent


@pytest.mark.parametrize("conf, ok", [
    ("include_dir = 'conf.d'\n", True),
    ("include_dir='conf.d'   # add settings\n", True),
    ("include_dir = 'conf.d'\t\t\t# include files ending in '.conf' from\n", True),  # as pg_createcluster writes it
    ("#include_dir = 'conf.d'\n", False),
    ("#include_dir = '...'\t\t\t# include files\n", False),
    ("", False),
])
def test_includes_conf_d(conf, ok):
    assert pgconf.includes_conf_d(conf) is ok


def test_createcluster_command_uses_the_volume():
    cmd = pgconf.createcluster_command(PROD)
    assert cmd[:3] == ["pg_createcluster", "--datadir", "/var/lib/postgresql/16/main"]
    assert "--data-checksums" in cmd and cmd[cmd.index("--port") + 1] == "5432"


def _pg_scram(password, salt, iterations):
    """Independent re-derivation (RFC 5802 / PostgreSQL's scram_build_secret)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    ck = hmac.new(salted, b"Client Key", "sha256").digest()
    sk = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(ck).digest(), sk


def test_scram_verifier_format_and_keys():
    salt = bytes(range(16))
    v = roles.scram_verifier("s3cret-pw", salt, 4096)
    head, keys = v.split("$", 1)[1].split("$")
    it, s64 = head.split(":")
    stored, server = (base64.b64decode(x) for x in keys.split(":"))
    assert v.startswith("SCRAM-SHA-256$4096:") and base64.b64decode(s64) == salt and it == "4096"
    assert (stored, server) == _pg_scram("s3cret-pw", salt, 4096)


@pytest.mark.parametrize("stored, password, ok", [
    (roles.scram_verifier("right"), "right", True),
    (roles.scram_verifier("right"), "wrong", False),
    ("md5abcdef", "right", False),
    ("", "right", False),
    ("SCRAM-SHA-256$garbage", "right", False),
])
def test_verifier_matches(stored, password, ok):
    assert roles.verifier_matches(stored, password) is ok


@pytest.mark.parametrize("create", [True, False])
def test_role_sql_keeps_a_failed_statement_out_of_the_log(create):
    """A failed ALTER/CREATE ROLE would be logged with its text (log_min_error_statement = error by
    default), verifier included, unless the session raises the threshold above every error level."""
    sql = roles.role_sql("tracker", roles.scram_verifier("pw-plain-123"), create=create)
    lines = sql.splitlines()
    role_at = next(i for i, line in enumerate(lines) if " ROLE " in line)
    sets = {line.split()[1]: line.split("=", 1)[1].strip(" ;") for line in lines[:role_at] if line.startswith("SET ")}
    assert sets.get("log_min_error_statement") == "panic"
    assert sets.get("log_statement") == "'none'" and sets.get("log_min_duration_statement") == "-1"
    assert lines[role_at].startswith("CREATE ROLE" if create else "ALTER ROLE") and role_at == len(lines) - 1


def test_role_sql_never_contains_the_password_and_turns_logging_off():
    sql = roles.role_sql("tracker", roles.scram_verifier("pw-plain-123"), create=True)
    assert "pw-plain-123" not in sql
    assert sql.index("log_statement = 'none'") < sql.index('CREATE ROLE "tracker" WITH LOGIN PASSWORD \'SCRAM-SHA-256$')
