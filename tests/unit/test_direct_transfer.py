"""The direct (host-to-host) dump transfer: the source's forced command, run for real with sh; the
authorized_keys entry and its merge; the target's ssh command; the transfer setting; the decision."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import prod_outputs
from trackerdb.backrest.ssh import Probe
from trackerdb.errors import ConfigError, HostError, PreflightError
from trackerdb.migrate import direct
from trackerdb.settings import Settings

KEY = "0123456789abcdef"
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfTheTarget postgres@target"


# ---- the reader (authorized_keys command=) ---------------------------------------------------

@pytest.fixture
def jobs(tmp_path):
    d = tmp_path / "trackerdb-jobs" / f"dump-{KEY}"
    d.mkdir(parents=True)
    (d / "tracker.dump").write_bytes(b"PGDMP" + bytes(range(256)) * 10)
    (tmp_path / "secret").write_text("not for the target\n")
    script = tmp_path / "dump-read"
    script.write_text(direct.reader_script(str(tmp_path / "trackerdb-jobs"), "tracker"))
    return tmp_path, script


def _ask(script, request: str | None):
    env = {"PATH": os.environ["PATH"]}
    if request is not None:
        env["SSH_ORIGINAL_COMMAND"] = request
    return subprocess.run(["sh", str(script)], env=env, capture_output=True)


def test_reader_answers_probe(jobs):
    _, script = jobs
    r = _ask(script, "probe")
    assert r.returncode == 0 and r.stdout.decode().strip() == direct.PROBE_OK


def test_reader_prints_the_dump_from_an_offset(jobs):
    tmp, script = jobs
    data = (tmp / "trackerdb-jobs" / f"dump-{KEY}" / "tracker.dump").read_bytes()
    assert _ask(script, f"read dump-{KEY} 0").stdout == data
    assert _ask(script, f"read dump-{KEY} 1000").stdout == data[1000:]
    assert _ask(script, f"read dump-{KEY} {len(data)}").stdout == b""


@pytest.mark.parametrize("request_", [
    None, "", "bash", "cat /etc/shadow", f"read dump-{KEY}", f"read dump-{KEY} 0 extra",
    "read ../secret 0", f"read dump-{KEY}/../../secret 0", f"read dump-{KEY[:-1]} 0", f"read dump-{KEY}0 0",
    f"read dump-{KEY.upper()} 0", "read dump-* 0", f"read dump-{KEY} -1", f"read dump-{KEY} 1;id", f"read dump-{KEY} $(id)",
    f"probe; read dump-{KEY} 0",
])
def test_reader_refuses_everything_else(jobs, request_):
    _, script = jobs
    r = _ask(script, request_)
    assert r.returncode != 0 and r.stdout == b""
    assert b"not for the target" not in r.stdout + r.stderr


def test_reader_says_when_the_dump_is_gone(jobs):
    _, script = jobs
    r = _ask(script, "read dump-fedcba9876543210 0")
    assert r.returncode == 3 and b"no dump" in r.stderr


# ---- authorized_keys -------------------------------------------------------------------------

def test_authorized_key_line_is_restricted_to_the_reader_from_the_target():
    line = direct.authorized_key_line(PUB, "172.31.10.20")
    options, ktype, kb64, comment = line.split()
    assert set(options.split(",")) == {"restrict", 'from="172.31.10.20"', f'command="{direct.READER_PATH}"'}
    assert (ktype, kb64, comment) == ("ssh-ed25519", PUB.split()[1], direct.MARK)


@pytest.mark.parametrize("pub, ip", [("not a key", "172.31.10.20"), (PUB, '1.2.3.4",command="/bin/sh')])
def test_authorized_key_line_refuses_odd_input(pub, ip):
    with pytest.raises(HostError):
        direct.authorized_key_line(pub, ip)


def test_merge_keeps_other_keys_and_replaces_only_ours():
    others = "restrict ssh-ed25519 AAAArepo pgbackrest@repo\nssh-rsa AAAAother admin\n"
    stale = 'restrict,from="10.0.0.9",command="/x" ssh-ed25519 AAAAold trackerdb-transfer\n'
    line = direct.authorized_key_line(PUB, "172.31.10.20")
    text, changed = direct.authorized_keys_merge(others + stale, line)
    assert changed and text.splitlines() == others.splitlines() + [line]
    again, changed = direct.authorized_keys_merge(text, line)
    assert not changed and again == text


def test_merge_restricts_an_unrestricted_copy_of_the_key():
    line = direct.authorized_key_line(PUB, "172.31.10.20")
    text, changed = direct.authorized_keys_merge(PUB + "\n", line)
    assert changed and text.splitlines() == [line]


# ---- the target's side -----------------------------------------------------------------------

def test_ssh_from_the_target_is_pinned_and_never_prompts():
    argv = direct.ssh_argv("/var/lib/postgresql", "172.31.7.8", ["probe"])
    opts = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "PasswordAuthentication=no",
            "GlobalKnownHostsFile=/dev/null",
            "UserKnownHostsFile=/var/lib/postgresql/.ssh/trackerdb_transfer_known_hosts"} <= opts
    assert argv[argv.index("-i") + 1] == "/var/lib/postgresql/.ssh/trackerdb_transfer"
    assert argv[-3:] == ["postgres@172.31.7.8", "--", "probe"]


def test_pull_script_appends_from_the_partial_size_and_refuses_bad_keys():
    script = direct.pull_script("/var/lib/postgresql", "172.31.7.8", KEY, "/var/lib/postgresql/trackerdb-jobs/x.partial")
    assert f'read dump-{KEY} "$off" >&9' in script and "stat -c %s" in script and "flock 9" in script
    with pytest.raises(ValueError):
        direct.pull_script("/h", "1.2.3.4", "../../etc", "/p")
    with pytest.raises(ValueError):
        direct.read_request(KEY, -1)


def test_known_hosts_line_pins_the_address_to_the_key():
    assert direct.known_hosts_line("172.31.7.8", "ssh-ed25519 AAAAhost root@source\n") == "172.31.7.8 ssh-ed25519 AAAAhost\n"
    with pytest.raises(HostError):
        direct.known_hosts_line("172.31.7.8", "")


# ---- settings and the decision ---------------------------------------------------------------

def _settings(cfg=None, **outputs):
    base = {"source": {"address": "172.31.7.8", "user": "admin", "known_hosts": "/dev/null"}}
    return Settings.from_parts(base | (cfg or {}), prod_outputs(**outputs))


def test_transfer_defaults_from_the_stack_output():
    assert _settings().transfer == "relay"
    s = _settings(direct_transfer=True, source_cidr="172.31.7.8/32")
    assert (s.transfer, s.transfer_explicit) == ("direct", False)
    s = _settings({"transfer": "relay"}, direct_transfer=True, source_cidr="172.31.7.8/32")
    assert (s.transfer, s.transfer_explicit) == ("relay", True)


def test_transfer_setting_is_validated():
    with pytest.raises(ConfigError, match="not direct or relay"):
        _settings({"transfer": "scp"})


def test_source_address_for_the_target_defaults_to_the_source():
    assert direct.source_address(_settings()) == "172.31.7.8"
    assert direct.source_address(_settings({"transfer_source_address": "10.0.0.5"})) == "10.0.0.5"


class _Host:
    name = "h"


@pytest.fixture
def failing_probe(monkeypatch):
    monkeypatch.setattr(direct.detached, "home_of", lambda host, user="postgres": "/var/lib/postgresql")
    monkeypatch.setattr(direct, "ensure_trust", lambda *a, **k: [])
    monkeypatch.setattr(direct, "probe", lambda s, t: Probe("unreachable", "connect to host 172.31.7.8 port 22: Connection timed out"))


def test_a_failing_direct_path_falls_back_to_the_relay_loudly(failing_probe):
    said = []
    got = direct.choose(_settings(direct_transfer=True, source_cidr="172.31.7.8/32"), _Host(), _Host(), said.append)
    assert got["transfer"] == "relay" and "unreachable" in got["why"]
    assert any(m.startswith("WARNING: direct transfer unavailable") and "FALLING BACK" in m for m in said)


def test_an_explicit_direct_transfer_that_fails_is_refused(failing_probe):
    with pytest.raises(PreflightError) as err:
        direct.choose(_settings({"transfer": "direct"}), _Host(), _Host())
    assert "direct transfer refused" in err.value.one_line() and "trackerdb.transfer: relay" in err.value.one_line()


def test_relay_is_chosen_without_touching_any_host():
    got = direct.choose(_settings(), None, None)
    assert got == {"transfer": "relay", "why": "the stack says direct_transfer: false"}


def test_dry_run_says_where_the_bytes_go_and_what_a_failure_does():
    relay = direct.dry_run_lines(_settings())
    assert relay == ["dump: relay: source -> this machine -> target (stack output direct_transfer is false)"]
    lines = direct.dry_run_lines(_settings(direct_transfer=True, source_cidr="172.31.7.8/32"))
    assert 'restrict,from="172.31.10.20",command="/usr/local/lib/trackerdb/dump-read"' in lines[0]
    assert "postgres@172.31.7.8:22" in lines[1] and lines[1].endswith("fall back to the relay, loudly")
    assert direct.dry_run_lines(_settings({"transfer": "direct"}))[1].endswith("refuse the cutover")


def test_a_pull_killed_by_its_pid_leaves_a_writer_and_the_rerun_waits_for_it(tmp_path):
    """The pull script for real (sh, flock; ``ssh`` stood in by a slow reader of a local file): the first
    job's shell SIGKILLed mid-transfer leaves its ``ssh`` appending; a re-run started at once must not
    append beside it. The partial ends as exactly the source's bytes."""
    import os
    import signal
    import subprocess
    import time

    src = tmp_path / "dump"
    src.write_bytes(os.urandom(64 * 1024))
    fake = tmp_path / "bin"
    fake.mkdir()
    # the reader's contract: bytes from the offset (the last argument) on; slow, 4 KiB every 20 ms
    (fake / "ssh").write_text(f"""#!/usr/bin/env python3
import sys, time
off = int(sys.argv[-1])
data = open({str(src)!r}, 'rb').read()[off:]
for i in range(0, len(data), 4096):
    sys.stdout.buffer.write(data[i:i + 4096]); sys.stdout.buffer.flush(); time.sleep(0.02)
""")
    (fake / "ssh").chmod(0o755)
    partial = tmp_path / "x.partial"
    script = direct.pull_script("/h", "10.0.0.1", KEY, str(partial))
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    first = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, env=env, start_new_session=True)
    while not partial.exists() or partial.stat().st_size < 16 * 1024:
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)  # the job's PID only: its ssh goes on appending
    first.wait()
    assert partial.stat().st_size < src.stat().st_size
    again = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, timeout=60)
    assert again.returncode == 0
    assert partial.read_bytes() == src.read_bytes()
    os.killpg(first.pid, signal.SIGKILL) if _group_alive(first.pid) else None


def _group_alive(pgid: int) -> bool:
    import os

    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
