"""Hostile values of the stack outputs and invoke.yaml through the real `invoke`: one line, no host touched.

Every host (target, source, repo) and the AWS endpoint point at a TCP recorder on 127.0.0.1 that this
test owns, so any connection attempt is counted; nothing here can reach the stack outputs' 172.31.x
addresses, because the overlay replaces the target's address and nothing connects to the others. The
control case (valid values, same task) shows the recorder does see a task that gets as far as a host.
"""

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import prod_outputs

ROOT = Path(__file__).resolve().parents[2]
INVOKE = [str(ROOT / ".venv" / "bin" / "invoke")]


class Recorder:
    """A listener that accepts and counts every connection (and closes it at once)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def _host(rec, kh):
    return {"address": "127.0.0.1", "port": rec.port, "user": "admin", "known_hosts": str(kh)}


def run_invoke(tmp_path, rec, argv, outputs_over=None, overlay_over=None, yaml_over=None):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    outputs = tmp_path / "stack-outputs.json"
    outputs.write_text(json.dumps(prod_outputs(**(outputs_over or {}))))
    overlay = {"target": _host(rec, kh), "source": _host(rec, kh), "repo": _host(rec, kh),
               "aws_endpoint_url": f"http://127.0.0.1:{rec.port}", "state_dir": str(tmp_path / "state")}
    for k, v in (overlay_over or {}).items():
        overlay[k] = (overlay.get(k) | v) if isinstance(v, dict) and isinstance(overlay.get(k), dict) else v
    (tmp_path / "settings.json").write_text(json.dumps(overlay))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKERDB_", "INVOKE_", "AWS_"))}
    env |= {"TRACKERDB_STACK_OUTPUTS": str(outputs), "TRACKERDB_SETTINGS": str(tmp_path / "settings.json"),
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-2", "HOME": str(tmp_path)}
    extra = []
    if yaml_over:  # a runtime invoke.yaml (`invoke -f`): the same layer as the project's invoke.yaml
        (tmp_path / "invoke-extra.yaml").write_text(yaml.safe_dump({"trackerdb": yaml_over}))
        extra = ["-f", str(tmp_path / "invoke-extra.yaml")]
    return subprocess.run(INVOKE + extra + argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


DUMP = ["dump", "--out", "OUT"]

# name: (stack-output overrides, settings-overlay overrides, runtime invoke.yaml overrides, what the line names)
CASES = {
    "stanza x;cmd": ({"stanza": "x;cmd"}, {}, {}, "stack output stanza"),
    "stanza equals shared_stanza": ({"stanza": "tracker"}, {}, {}, "stanza 'tracker' is the shared host's stanza"),
    "database all": ({}, {}, {"database": "all"}, "trackerdb.database"),
    "transfer_source_address with a newline": ({}, {"transfer_source_address": "10.0.0.5\n* ssh-ed25519 AAAA"}, {},
                                               "trackerdb.transfer_source_address"),
    "data_volume_size_gb 50GB": ({"data_volume_size_gb": "50GB"}, {}, {}, "stack output data_volume_size_gb"),
    "pg_port abc": ({}, {}, {"pg_port": "abc"}, "trackerdb.pg_port"),
    "repo_host_ip not an IP": ({"repo_host_ip": "pg-backrest"}, {}, {}, "stack output repo_host_ip"),
    "app_cidrs 0.0.0.0/0": ({"app_cidrs": ["0.0.0.0/0"]}, {}, {}, "stack output app_cidrs"),
    "backup_path with ..": ({"backup_path": "/pgbackrest/../x"}, {}, {}, "stack output backup_path"),
    "backup_path with a space": ({"backup_path": "/pg backrest"}, {}, {}, "stack output backup_path"),
    "instance_id malformed": ({"instance_id": "i-xyz;reboot"}, {}, {}, "stack output instance_id"),
    "data_mount relative": ({"data_mount": "var/lib/postgresql"}, {}, {}, "stack output data_mount"),
    "owner_map not a list": ({}, {}, {"owner_map": "postgres"}, "owner_map"),
    "owner_map to all": ({}, {}, {"owner_map": [{"from": "postgres", "to": "all"}]}, "trackerdb.owner_map entry 1"),
    "source port text": ({}, {"source": {"port": "22;x"}}, {}, "trackerdb.source.port"),
    "repo writable as text": ({}, {"repo": {"writable": "false"}}, {}, "trackerdb.repo.writable"),
    "postgres_major 16.10": ({"postgres_major": "16.10"}, {}, {}, "stack output postgres_major"),
    "source_cidr the world": ({"direct_transfer": True, "source_cidr": "0.0.0.0/0"}, {}, {}, "stack output source_cidr"),
}


def _one_error_line(r) -> str:
    assert r.returncode != 0, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "(hint:" in lines[0], r.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_value_is_one_line_and_no_host_is_touched(case, tmp_path, recorder):
    outputs_over, overlay_over, yaml_over, key = CASES[case]
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in DUMP]
    r = run_invoke(tmp_path, recorder, argv, outputs_over, overlay_over, yaml_over)
    line = _one_error_line(r)
    assert key in line, line
    assert recorder.count == 0, f"{recorder.count} connection(s) made before the value was refused"


@pytest.mark.parametrize("flag", ["/tmp", "/var/tmp", "dumps/relative", "/var/tmp/../etc", "/var/lib/postgresql/16/main"])
def test_dump_on_host_refused_before_any_host(flag, tmp_path, recorder):
    r = run_invoke(tmp_path, recorder, ["dump", "--on-host", flag])
    line = _one_error_line(r)
    assert "--on-host" in line
    assert recorder.count == 0


def test_control_valid_values_do_reach_the_recorder(tmp_path, recorder):
    """The proof above can fail: with valid values the same task connects, and the recorder sees it."""
    r = run_invoke(tmp_path, recorder, [a.replace("OUT", str(tmp_path / "out")) for a in DUMP])
    assert r.returncode != 0  # the recorder is no sshd
    assert recorder.count >= 1, (r.stdout, r.stderr)


@pytest.mark.parametrize("argv, fragment", [
    (["lab.up", "--scale", "abc"], "--scale 'abc' must be a number"),
    (["lab.up", "--volume-gb", "abc"], "--volume-gb 'abc' must be a whole number"),
    (["lab.up", "--volume-gb", "2.5"], "--volume-gb '2.5' must be a whole number"),
    (["lab.up", "--scale", "-5"], "--scale '-5' must be between"),
    (["lab.up", "--scale", "nan"], "--scale 'nan' must be a number"),
    (["rehearse", "--scale", "abc"], "--scale 'abc' must be a number"),
    (["rehearse", "--volume-gb", "-1"], "--volume-gb '-1' must be between"),
    (["rehearse", "--calibrate", "x"], "--calibrate 'x' must be a number"),
    (["backrest.check", "--max-lag", "abc"], "--max-lag 'abc' must be a whole number"),
])
def test_numeric_flags_are_one_line_and_build_nothing(argv, fragment, tmp_path, recorder):
    name = "hinput-cli"
    state = Path("/var/lib/trackerdb-lab") / name
    lock = Path("/var/lib/trackerdb-lab") / f".{name}.lock"
    before = (state.exists(), lock.exists())
    r = run_invoke(tmp_path, recorder, argv) if argv[0] == "backrest.check" else _run_lab(argv, name)
    line = _one_error_line(r)
    assert fragment in line, line
    assert (state.exists(), lock.exists()) == before and not state.exists()  # no lock taken, no state made
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"tdb-{name}-" not in netns
    assert recorder.count == 0


def _run_lab(argv, name):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKERDB_", "INVOKE_"))}
    env["TRACKERDB_LAB"] = name
    argv = argv + (["--lab", name] if argv[0] == "rehearse" else [])
    return subprocess.run(INVOKE + argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
