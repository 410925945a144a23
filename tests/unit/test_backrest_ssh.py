import pytest

from tests.conftest import prod_outputs
from trackerdb.backrest import ssh
from trackerdb.errors import ConfigError, HostError
from trackerdb.settings import Settings

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPINNED"


def s(key=KEY):
    return Settings.from_parts({"repo": {"host_key": key}}, prod_outputs())


def test_known_hosts_line_names_host_and_ip():
    assert ssh.known_hosts_line(s()) == "pg-backrest.timescale.glimpse.internal,172.31.203.209 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPINNED\n"


@pytest.mark.parametrize("bad", [None, "", "AAAA", "not a key"])
def test_missing_or_malformed_host_key_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        ssh.known_hosts_line(s(bad))


OURS = 'restrict,from="172.31.10.20",command="/usr/local/lib/trackerdb/pgbackrest-remote-only" ssh-ed25519 AAAAPUB'


# security issue 23, item 4: `restrict` alone ran any command; the line is now ours exactly (from= + forced command)
@pytest.mark.parametrize("current, changed, line", [
    (None, True, f"{OURS} postgres@target"),
    ("ssh-rsa AAAAOTHER a@b\n", True, f"{OURS} postgres@target"),
    # the same key installed earlier unrestricted or with `restrict` only: replaced by the forced-command line
    ("ssh-ed25519 AAAAPUB postgres@target-old-comment\n", True, f"{OURS} postgres@target"),
    ('from="10.0.0.1" ssh-ed25519 AAAAPUB c\n', True, f"{OURS} postgres@target"),
    ("restrict ssh-ed25519 AAAAPUB c\n", True, f"{OURS} postgres@target"),
    (f"{OURS} postgres@target\n", False, f"{OURS} postgres@target"),
])
def test_authorized_keys_merge_is_idempotent_and_restricted(current, changed, line):
    wanted = ssh.authorized_key_line(s(), "ssh-ed25519 AAAAPUB postgres@target")
    text, did = ssh.authorized_keys_merge(current, wanted)
    assert did is changed and text.count("AAAAPUB") == 1
    assert line in text.splitlines()
    again, did2 = ssh.authorized_keys_merge(text, wanted)
    assert (again, did2) == (text, False)


@pytest.mark.parametrize("code, stderr, state", [
    (0, "", "ok"),
    (255, "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@\nHost key verification failed.", "host-key-mismatch"),
    (255, "No ED25519 host key is known for repo and you have requested strict checking.\nHost key verification failed.", "unknown-host-key"),
    (255, "postgres@repo: Permission denied (publickey).", "refused-key"),
    (255, "ssh: connect to host 10.9.9.9 port 22: No route to host", "unreachable"),
    (255, "ssh: connect to host 10.9.9.9 port 22: Connection timed out", "unreachable"),
    (255, "ssh: Could not resolve hostname nowhere: Name or service not known", "unreachable"),
    (1, "weird", "error"),
])
def test_probe_outcomes_are_classified(code, stderr, state):
    assert ssh.parse_probe(code, stderr).state == state


def test_errors_say_what_to_do():
    e = ssh.probe_error(s(), ssh.Probe("host-key-mismatch", "x"))
    assert "differs from the pinned one" in e.one_line() and "out of band" in e.one_line()
    e = ssh.probe_error(s(), ssh.Probe("unreachable", "No route to host"))
    assert "unreachable" in e.one_line()


def test_handover_text_has_the_key_and_nothing_else_secret():
    text = ssh.handover_text(s(), "ssh-ed25519 AAAAPUB postgres@target")
    assert f"{OURS} postgres@target" in text.splitlines()
    assert "authorized_keys" in text and "re-run" in text


def test_probe_command_is_strict_and_batch():
    cmd = ssh.probe_command(s())
    assert "StrictHostKeyChecking=yes" in cmd and "BatchMode=yes" in cmd
    assert cmd[-2:] == ["postgres@pg-backrest.timescale.glimpse.internal", "true"]
