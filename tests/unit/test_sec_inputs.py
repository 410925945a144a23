"""Values from outside are checked by rule, not only by key (security issue 23, items 5 and 6, lab inputs).

Tables: a hostile value in, one ConfigError line naming its key out. The rules live once in
trackerdb/inputs.py; Settings.validate and infra/config.py both apply them.
"""

import ast
from pathlib import Path

import pytest

from tests.conftest import prod_outputs
from trackerdb import inputs
from trackerdb.errors import ConfigError, OpsError, PreflightError
from trackerdb.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# (stack-output overrides, invoke.yaml overrides, the key the one line must name)
HOSTILE = {
    "stanza with shell": ({"stanza": "x;cmd"}, {}, "stack output stanza"),
    "stanza with a quote": ({"stanza": "a'b"}, {}, "stack output stanza"),
    "shared stanza with a slash": ({"shared_stanza": "tracker/../x"}, {}, "stack output shared_stanza"),
    "stanza equals shared": ({"stanza": "tracker"}, {}, "stanza 'tracker' is the shared host's stanza"),
    "database all": ({}, {"database": "all"}, "trackerdb.database"),
    "database replication": ({}, {"database": "replication"}, "trackerdb.database"),
    "database with a space": ({}, {"database": "tracker db"}, "trackerdb.database"),
    "owner role public": ({}, {"owner_role": "public"}, "trackerdb.owner_role"),
    "transfer address with a newline": ({}, {"transfer_source_address": "10.0.0.5\n* ssh-ed25519 AAAA"},
                                        "trackerdb.transfer_source_address"),
    "size with a unit": ({"data_volume_size_gb": "50GB"}, {}, "stack output data_volume_size_gb"),
    "size zero": ({"data_volume_size_gb": 0}, {}, "stack output data_volume_size_gb"),
    "pg_port text": ({}, {"pg_port": "abc"}, "trackerdb.pg_port"),
    "pg_port out of range": ({}, {"pg_port": 70000}, "trackerdb.pg_port"),
    "source_pg_port text": ({}, {"source_pg_port": "5433x"}, "trackerdb.source_pg_port"),
    "target port text": ({}, {"target": {"port": "22; x"}}, "trackerdb.target.port"),
    "source address with a space": ({}, {"source": {"address": "10.0.0.1 -oProxyCommand=x"}}, "trackerdb.source.address"),
    "repo user with shell": ({}, {"repo": {"address": "10.0.0.9", "user": "root;id"}}, "trackerdb.repo.user"),
    "repo writable as text": ({}, {"repo": {"writable": "false"}}, "trackerdb.repo.writable"),
    "repo host key of two lines": ({}, {"repo": {"host_key": "ssh-ed25519 AAAA\n* ssh-rsa BBBB"}}, "trackerdb.repo.host_key"),
    "repo_host_ip a name": ({"repo_host_ip": "pg-backrest"}, {}, "stack output repo_host_ip"),
    "repo_host_name with a newline": ({"repo_host_name": "a.internal\nb"}, {}, "stack output repo_host_name"),
    "repo_host_user with shell": ({"repo_host_user": "postgres;id"}, {}, "stack output repo_host_user"),
    "app_cidrs the world": ({"app_cidrs": ["0.0.0.0/0"]}, {}, "stack output app_cidrs"),
    "app_cidrs a /4": ({"app_cidrs": ["0.0.0.0/4"]}, {}, "stack output app_cidrs"),
    "app_cidrs a string": ({"app_cidrs": "0.0.0.0/0"}, {}, "stack output app_cidrs"),
    "app_cidrs host bits": ({"app_cidrs": ["10.0.0.1/24"]}, {}, "stack output app_cidrs"),
    "backup_path with ..": ({"backup_path": "/pgbackrest/../other"}, {}, "stack output backup_path"),
    "backup_path with a space": ({"backup_path": "/pg backrest"}, {}, "stack output backup_path"),
    "backup_path the root": ({"backup_path": "/"}, {}, "stack output backup_path"),
    "repo_path relative": ({"repo_path": "var/pg_backrest_data/repo3"}, {}, "stack output repo_path"),
    "instance_id malformed": ({"instance_id": "i-0123; reboot"}, {}, "stack output instance_id"),
    "data_volume_id malformed": ({"data_volume_id": "vol-../../dev/sda"}, {}, "stack output data_volume_id"),
    "data_mount relative": ({"data_mount": "var/lib/postgresql"}, {}, "stack output data_mount"),
    "data_mount with a space": ({"data_mount": "/var/lib/post gres"}, {}, "stack output data_mount"),
    "region with shell": ({"region": "eu-west-2;x"}, {}, "stack output region"),
    "az malformed": ({"availability_zone": "eu-west-2 a"}, {}, "stack output availability_zone"),
    "bucket with a slash": ({"backup_bucket": "bucket/x"}, {}, "stack output backup_bucket"),
    "secret name with a space": ({"cipher_secret_name": "tracker cipher"}, {}, "stack output cipher_secret_name"),
    "postgres_major a minor": ({"postgres_major": "16.10"}, {}, "stack output postgres_major"),
    "timescaledb version with shell": ({"timescaledb_version": "2.18.2;x"}, {}, "stack output timescaledb_version"),
    "postgis version any": ({"postgis_version": "*"}, {}, "stack output postgis_version"),
    "security group malformed": ({"security_group_id": "sg-*"}, {}, "stack output security_group_id"),
    "direct_transfer text": ({"direct_transfer": "yes"}, {}, "stack output direct_transfer"),
    "source_cidr the world": ({"direct_transfer": True, "source_cidr": "0.0.0.0/0"}, {}, "stack output source_cidr"),
    "environment with a space": ({"environment": "prod x"}, {}, "stack output environment"),
    "owner_map not a list": ({}, {"owner_map": "postgres"}, "owner_map"),
    "owner_map to all": ({}, {"owner_map": [{"from": "postgres", "to": "all"}]}, "trackerdb.owner_map entry 1 'to'"),
    "tls secret with a newline": ({}, {"tls_secret_name": "tls\nx"}, "trackerdb.tls_secret_name"),
    "s3 endpoint with a space": ({}, {"s3_endpoint": "aws.lab internal"}, "trackerdb.s3_endpoint"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_value_is_one_line_naming_its_key(case):
    over, cfg, key = HOSTILE[case]
    with pytest.raises(ConfigError) as e:
        Settings.from_parts(cfg, prod_outputs(**over))
    line = e.value.one_line()
    assert key in line and "\n" not in line and "hint:" in line, line


def test_the_production_and_lab_shapes_pass():
    s = Settings.from_parts({"source": {"address": "172.31.5.6", "port": "22"}, "pg_port": "5433",
                             "repo": {"address": "172.31.203.209", "writable": False,
                                      "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ+abc/def="}},
                            prod_outputs(direct_transfer=True, source_cidr="172.31.5.6/32"))
    assert s.pg_port == 5433 and s.source.port == 22  # text of a whole number is taken (env and YAML strings)
    lab = prod_outputs(environment="lab", instance_id="i-0123456789abcdef0", security_group_id="sg-a1b2c30lab",
                       app_cidrs=["10.77.1.0/24"])
    assert Settings.from_parts({"s3_endpoint": "aws.lab.internal:443", "s3_uri_style": "path", "s3_key_type": "shared"},
                               lab).s3_endpoint == "aws.lab.internal:443"


@pytest.mark.parametrize("rule, good, bad", [
    (inputs.stanza, ["tracker-dedicated", "t.1_x"], ["x;cmd", "", "*", "a/b", "-x", 5, "x" * 65]),
    (inputs.pg_name, ["tracker", "tracker_calib", "_x"], ["all", "sameuser", "public", "Tracker", "1x", "a-b", "a b", None]),
    (inputs.host_address, ["10.0.0.1", "::1", "pg-backrest.timescale.glimpse.internal"],
     ["a\nb", "a b", "-oProxyCommand=x", "", "a..b", 7]),
    (inputs.abs_path, ["/pgbackrest", "/var/lib/postgresql"], ["/", "", "rel", "/a/../b", "/a/./b", "/a//b", "/a b", "/a/"]),
    (inputs.network, ["10.0.0.0/24", "2001:db8:10::/48"], ["0.0.0.0/0", "::/0", "10.0.0.0/7", "10.0.0.1/24", "x"]),
    (inputs.source_network, ["172.31.5.6/32", "10.1.2.0/24"], ["0.0.0.0/0", "10.0.0.0/16", "2001:db8::1/128"]),
    (inputs.endpoint, ["aws.lab", "aws.lab:443", "10.0.0.1:9000"], ["aws.lab:abc", "aws.lab:0", "a b:1", "a:1:2"]),
    (inputs.host_key, ["ssh-ed25519 AAAAC3Nza+/=="], ["ssh-ed25519 AAAA\nx", "ssh-ed25519", "* ssh-ed25519 AAAA"]),
])
def test_rules_table(rule, good, bad):
    assert [g for g in good if rule(g) is not None] == []
    assert [b for b in bad if rule(b) is None] == []


@pytest.mark.parametrize("value, lo, hi, want", [
    ("50", 1, 100, 50), (50, 1, 100, 50), (" 7 ", 1, 9, 7), (50.0, 1, 100, 50),
    ("50GB", 1, 100, None), ("abc", 1, 100, None), (True, 0, 1, None), (0, 1, 100, None), ("5.5", 1, 9, None),
])
def test_integer_takes_whole_numbers_only(value, lo, hi, want):
    n, problem = inputs.integer(value, lo, hi)
    assert n == want and (problem is None) == (want is not None)


# ---- dump --on-host: the pure check and the decision from the host's facts ---------------------------

@pytest.mark.parametrize("path, fragment", [
    ("/tmp", "system directory"), ("/var/tmp", "system directory"), ("/", "absolute path below /"),
    ("/etc/trackerdb", "system directory"), ("/var/lib/postgresql", "system directory"),
    ("/var/lib/postgresql/16/main", "PostgreSQL cluster"), ("dumps", "absolute path"), ("/var/tmp/../etc", "normalised"),
    ("/var/tmp/my dump", "normalised"), ("/var/tmp/x/", "normalised"), ("/dev/shm", "system directory"),
])
def test_on_host_static_refusals(path, fragment):
    from trackerdb.migrate.dump import check_on_host_dir

    with pytest.raises(ConfigError) as e:
        check_on_host_dir(path)
    assert fragment in e.value.one_line() and "--on-host" in e.value.one_line()


def test_on_host_accepts_a_new_directory_of_its_own():
    from trackerdb.migrate.dump import check_on_host_dir

    assert check_on_host_dir("/var/tmp/trackerdb-dump") == "/var/tmp/trackerdb-dump"


P = "/var/tmp/trackerdb-dump"


@pytest.mark.parametrize("facts, want", [
    ({"kind": "missing", "parent": "directory", "resolved": P}, "create"),
    ({"kind": "directory", "owner": "postgres", "mode": "750", "resolved": P}, "reuse"),
    ({"kind": "directory", "owner": "root", "mode": "1777", "resolved": P}, "owned by 'root', not postgres"),
    ({"kind": "directory", "owner": "admin", "mode": "755", "resolved": P}, "never re-owned"),
    ({"kind": "symlink", "resolved": P}, "symbolic link"),
    ({"kind": "missing", "parent": "directory", "resolved": "/etc/x"}, "resolves to '/etc/x'"),
    ({"kind": "other", "resolved": P}, "not a directory"),
    ({"kind": "missing", "parent": "missing", "resolved": P}, "parent directory does not exist"),
    ({}, "symbolic link"),  # no facts at all: refused, never created
])
def test_on_host_decision_from_facts(facts, want):
    from trackerdb.migrate.dump import on_host_dir_action

    if want in ("create", "reuse"):
        assert on_host_dir_action(P, facts) == want
    else:
        with pytest.raises(PreflightError) as e:
            on_host_dir_action(P, facts)
        assert want in e.value.one_line() and "nothing was changed" in e.value.one_line()


def test_on_host_facts_script_parses_and_creates_only_new():
    from trackerdb.migrate.dump import create_dir_command, dir_facts_script, parse_dir_facts

    assert "'/var/tmp/a b'" in dir_facts_script("/var/tmp/a b")  # quoted even if the check were bypassed
    assert parse_dir_facts("kind=directory owner=postgres mode=750\nparent=directory\nresolved=/x\n") == \
        {"kind": "directory", "owner": "postgres", "mode": "750", "parent": "directory", "resolved": "/x"}
    cmd = create_dir_command(P)
    assert "mkdir -m 0750 --" in cmd[2] and "-p" not in cmd[2] and cmd[-1] == P
    assert "install" not in " ".join(cmd)


class _FakeHost:
    """Records commands; answers the facts script with ``facts``."""

    name = "source"

    def __init__(self, facts: str):
        self.facts, self.ran = facts, []

    def run(self, cmd, **kw):
        self.ran.append(cmd)

        class R:
            ok, stdout, stderr = True, self.facts if isinstance(cmd, str) else "", ""
        return R()


@pytest.mark.parametrize("facts, changes", [
    ("kind=directory owner=root mode=1777\nparent=directory\nresolved=/var/tmp/d\n", 0),
    ("kind=symlink\nparent=directory\nresolved=/etc\n", 0),
    ("kind=directory owner=postgres mode=750\nparent=directory\nresolved=/var/tmp/d\n", 0),
    ("kind=missing\nparent=directory\nresolved=/var/tmp/d\n", 1),
])
def test_prepare_runs_one_read_then_at_most_one_create(facts, changes):
    from trackerdb.migrate.dump import prepare_on_host_dir

    host = _FakeHost(facts)
    try:
        prepare_on_host_dir(host, "/var/tmp/d")
    except PreflightError:
        pass
    assert isinstance(host.ran[0], str) and "stat -c" in host.ran[0]  # facts first
    made = host.ran[1:]
    assert len(made) == changes and not any("chown" in " ".join(c) and "mkdir" not in " ".join(c) for c in made)


# ---- lab inputs: checked before anything is built ---------------------------------------------------

@pytest.mark.parametrize("kw, fragment", [
    ({"scale": -5}, "positive number"), ({"scale": float("nan")}, "positive number"), ({"scale": 1e9}, "above the limit"),
    ({"volume_gb": 0}, "volume size"), ({"volume_gb": "2"}, "volume size"), ({"volume_gb": 10**6}, "volume size"),
])
def test_lab_up_refuses_bad_sizes_before_preflight_lock_or_build(kw, fragment, monkeypatch):
    """Ordering, proved: preflight, the instance lock, State and the builder are recorders; none may run."""
    from lab import api

    called = []
    monkeypatch.setattr(api, "preflight", lambda: called.append("preflight"))
    monkeypatch.setattr(api, "_instance_lock", lambda name: called.append("lock") or _nothing())
    monkeypatch.setattr(api, "State", lambda name: called.append("state"))
    monkeypatch.setattr(api, "_up", lambda *a, **k: called.append("build"))
    monkeypatch.setattr(api, "_down", lambda *a, **k: called.append("down"))
    with pytest.raises(OpsError) as e:
        api.up("hinput-neg", **({"volume_gb": 2, "scale": 1.0} | kw))
    assert fragment in e.value.one_line()
    assert called == []


def _nothing():
    import contextlib

    return contextlib.nullcontext()


# ---- the layers: infra shares the rules through one pure module ----------------------------------

def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return found


def test_inputs_is_pure_standard_library():
    assert {m for m in _imports(ROOT / "trackerdb" / "inputs.py")} <= {"__future__", "ipaddress", "math", "re",
                                                                        "collections.abc"}
    assert "from ." not in (ROOT / "trackerdb" / "inputs.py").read_text()


def test_infra_imports_of_trackerdb_are_inventory_and_inputs_only():
    used = {m for p in (ROOT / "infra").rglob("*.py") for m in _imports(p) if m.split(".")[0] == "trackerdb"}
    assert used <= {"trackerdb", "trackerdb.inventory", "trackerdb.inputs"}, used


def test_infra_applies_the_same_stanza_rule():
    from infra import config

    assert config.too_wide is inputs.too_wide and config.TOO_WIDE is inputs.TOO_WIDE
    assert "inputs.stanza" in (ROOT / "infra" / "config.py").read_text()
