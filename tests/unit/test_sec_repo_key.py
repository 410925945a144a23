"""Security issue 23, item 4: the repository host's key for postgres@target runs pgBackRest's remote for our
stanza and nothing else. The forced command is run here for real (dash and bash), with a fake pgbackrest
that prints its argv and a fake logger that records what would go to syslog."""

from __future__ import annotations

import shutil
import subprocess
from types import SimpleNamespace

import pytest

from tests.conftest import prod_outputs
from trackerdb.backrest import ssh
from trackerdb.errors import ConfigError, HostError
from trackerdb.settings import Settings

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOURKEY postgres@target-trackerdb-backrest"
REPO = "/var/pg_backrest_data/repo3"
# what pgBackRest 2.55 on the target sent over SSH in the lab ($SSH_ORIGINAL_COMMAND, captured on the repo host)
OURS = "--log-level-console=off --log-level-file=off --log-level-stderr=error --remote-type=repo --repo=3 " \
       f"--repo3-path={REPO} --stanza=tracker-dedicated"
CAPTURED = [
    f"pgbackrest --exec-id=4352-74b540c8 --process=0 {OURS} info:remote",
    f"pgbackrest --archive-async --exec-id=4368-3b8e8662 --lock=tracker-dedicated-archive-2.lock "
    f"--lock=tracker-dedicated-archive-3.lock --process=1 {OURS} archive-push:remote",
    f"pgbackrest --archive-async --exec-id=4457-b1ad7e9c --pg1-path=/var/lib/postgresql/16/main --process=4 {OURS} archive-get:remote",
    f"pgbackrest --exec-id=4364-7ff314a3 --lock=tracker-dedicated-backup-3.lock --pg1-path=/var/lib/postgresql/16/main "
    f"--process=0 {OURS} backup:remote",
    f"pgbackrest --exec-id=4709-574dbba2 --pg1-path=/var/lib/postgresql/16/main --process=0 {OURS} check:remote",
    f"pgbackrest --exec-id=4469-a93f6d30 --lock=tracker-dedicated-archive-2.lock --lock=tracker-dedicated-archive-3.lock "
    f"--lock=tracker-dedicated-backup-2.lock --lock=tracker-dedicated-backup-3.lock --pg1-path=/var/lib/postgresql/16/main "
    f"--process=0 {OURS} stanza-create:remote",
    f"pgbackrest --exec-id=1-a --pg1-path=/var/lib/postgresql/scr --process=2 {OURS} restore:remote",
    f"/usr/bin/pgbackrest --exec-id=1-a --lock=tracker-dedicated-backup-3.lock --process=0 {OURS} expire:remote",
]
REFUSED = [
    ("", "no command"),
    ("   ", "no command"),
    ("id", "not pgbackrest"),
    ("sh", "not pgbackrest"),
    (f"rm -rf {REPO}/archive/tracker", "not pgbackrest"),
    ("cat /etc/pgbackrest/pgbackrest.conf", "not pgbackrest"),
    ("pgbackrest --stanza=tracker info", "option --stanza"),
    ("pgbackrest --stanza=tracker-dedicated info", "command info"),  # the CLI itself, not its remote
    ("pgbackrest info:remote", "not a pgBackRest remote"),
    (CAPTURED[0].replace("--stanza=tracker-dedicated", "--stanza=tracker"), "option --stanza"),
    (CAPTURED[0].replace("--stanza=tracker-dedicated", "--stanza=tracker-dedicated --stanza=tracker"), "option --stanza"),
    (CAPTURED[0].replace("--stanza=tracker-dedicated", "--stanza=tracker-dedicated --stanza=tracker-dedicated"), "not exactly one"),
    (CAPTURED[0].replace("--stanza=tracker-dedicated ", ""), "not exactly one"),
    (CAPTURED[0].replace(f"--repo3-path={REPO}", "--repo3-path=/"), "option --repo3-path"),
    (CAPTURED[0].replace(f"--repo3-path={REPO}", f"--repo3-path={REPO}/../"), "option --repo3-path"),
    (CAPTURED[0].replace(f"--repo3-path={REPO} ", ""), "missing"),
    (CAPTURED[0].replace("--repo=3", "--repo=1"), "option --repo"),
    (CAPTURED[0].replace("--remote-type=repo", "--remote-type=pg"), "option --remote-type"),
    (CAPTURED[0].replace("info:remote", "--config=/tmp/evil.conf info:remote"), "option --config"),
    (CAPTURED[0].replace("info:remote", "--config-include-path=/tmp info:remote"), "option --config-include-path"),
    (CAPTURED[0].replace("info:remote", "--log-path=/var/lib/postgresql/.ssh info:remote"), "option --log-path"),
    (CAPTURED[0].replace("info:remote", "--lock-path=/tmp info:remote"), "option --lock-path"),
    (CAPTURED[0].replace("info:remote", "--repo3-host=evil info:remote"), "option --repo3-host"),
    (CAPTURED[0].replace("info:remote", "--lock=tracker-archive-3.lock info:remote"), "option --lock"),
    (CAPTURED[0].replace("info:remote", "--lock=tracker-dedicated-archive-../../x.lock info:remote"), "option --lock"),
    (CAPTURED[0].replace("info:remote", "repo-ls:remote"), "command repo-ls:remote"),
    (CAPTURED[0].replace("info:remote", "repo-get:remote"), "command repo-get:remote"),
    (CAPTURED[0].replace("info:remote", "stanza-delete:remote"), "command stanza-delete:remote"),
    (CAPTURED[0].replace("info:remote", "stanza-upgrade:remote"), "command stanza-upgrade:remote"),
    (CAPTURED[0].replace("info:remote", "server"), "command server"),
    (CAPTURED[0] + "; id", "characters"),
    (CAPTURED[0] + " && id", "characters"),
    (CAPTURED[0] + " | id", "characters"),
    (CAPTURED[0] + " `id`", "characters"),
    (CAPTURED[0] + " $(id)", "characters"),
    (CAPTURED[0].replace("--process=0", "--process=*"), "characters"),
    (CAPTURED[0].replace("--process=0", "'--process=0'"), "characters"),
    (CAPTURED[0].replace(" info:remote", "\ninfo:remote"), "characters"),
    ("true\nid", "characters"),
    ("true id", "not pgbackrest"),
    ("pgbackrest version; id", "characters"),
    ("pgbackrest-evil version", "not pgbackrest"),
]


def s(**outputs):
    return Settings.from_parts({"repo": {"host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPINNED"}}, prod_outputs(**outputs))


# ---- the authorized_keys line -------------------------------------------------------------------
def test_the_key_is_bound_to_the_target_and_the_forced_command():
    line = ssh.authorized_key_line(s(), PUB)
    options, ktype, kb64, comment = line.split(" ")
    assert options.split(",") == ["restrict", 'from="172.31.10.20"', f'command="{ssh.REMOTE_ONLY_PATH}"']
    assert (ktype, kb64, comment) == tuple(PUB.split())


@pytest.mark.parametrize("pub", ["", "AAAA", "not a key", 'ssh-ed25519"x AAAA'])
def test_odd_public_keys_are_refused(pub):
    with pytest.raises(HostError):
        ssh.authorized_key_line(s(), pub)


@pytest.mark.parametrize("ip", ["", "target.example", '1.2.3.4",command="/bin/sh'])
def test_the_target_address_must_be_an_ip(ip):
    with pytest.raises(ConfigError):
        ssh.authorized_key_line(SimpleNamespace(outputs={"private_ip": ip}, target=SimpleNamespace(address=ip)), PUB)


def test_merge_replaces_an_unrestricted_or_restrict_only_line_and_keeps_every_other_key():
    line = ssh.authorized_key_line(s(), PUB)
    key = " ".join(PUB.split()[:2])
    others = "ssh-ed25519 AAAAOTHER postgres@source\n# a comment\nssh-rsa AAAARSA ops@bastion\n"
    for ours in (PUB, f"restrict {PUB}", f'restrict,from="10.0.0.1" {key} old-comment', f'command="/bin/true" {key}'):
        text, changed = ssh.authorized_keys_merge(others + ours + "\n", line)
        assert changed and text == others + line + "\n", ours
        assert ssh.authorized_keys_merge(text, line) == (text, False)
    assert ssh.authorized_keys_merge(None, line) == (line + "\n", True)


# ---- the hand-over -----------------------------------------------------------------------------
def test_handover_says_what_the_repository_side_must_install():
    text = ssh.handover_text(s(), PUB)
    lines = text.splitlines()
    assert ssh.authorized_key_line(s(), PUB) in lines
    assert f"restrict {PUB}" not in lines  # the old, unrestricted hand-over
    assert ssh.REMOTE_ONLY_PATH in text and "root" in text and "0755" in text
    assert ssh.remote_only_script(s()) in text  # the whole script, verbatim
    assert ssh.REMOTE_ONLY_LOG in text and "syslog" in text
    assert "172.31.10.20" in text and "re-run" in text
    assert "separate OS user per stanza" in text  # the limit is said, not hidden


# ---- the probe ---------------------------------------------------------------------------------
def test_a_key_line_whose_forced_command_is_missing_means_waiting_for_the_repository_side():
    err = f"bash: line 1: {ssh.REMOTE_ONLY_PATH}: No such file or directory"
    probe = ssh.parse_probe(127, err)
    assert probe.state == "refused-key" and "not installed" in probe.detail


def test_the_probe_tells_a_restricted_key_from_an_unrestricted_one():
    cmd = ssh.unrestricted_probe_command(s())
    assert "StrictHostKeyChecking=yes" in cmd and "BatchMode=yes" in cmd
    assert cmd[-3:] == ["postgres@pg-backrest.timescale.glimpse.internal", "echo", ssh.UNRESTRICTED_MARK]
    assert ssh.runs_any_command(ssh.UNRESTRICTED_MARK + "\n")  # sshd ran `echo` as asked
    assert not ssh.runs_any_command("")  # refused by the forced command


def test_the_forced_command_refuses_the_unrestricted_probe(forced):
    request_line = " ".join(ssh.unrestricted_probe_command(s())[-2:])
    r, ran, log, _ = forced(request_line)
    assert r.returncode == 126 and ran is None and not ssh.runs_any_command(r.stdout)
    assert f"REFUSED (not pgbackrest): {request_line}" in log


# ---- the forced command, run ------------------------------------------------------------------
@pytest.fixture(params=[p for p in ("dash", "bash") if shutil.which(p)])
def forced(request, tmp_path):
    """Run the rendered script under a real shell as sshd would, with $SSH_ORIGINAL_COMMAND."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pgbackrest"
    fake.write_text('#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done > "$(dirname "$0")/../argv"\necho fake-pgbackrest-ran\n')
    logger = bindir / "logger"
    logger.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$(dirname "$0")/../syslog"\n')
    for p in (fake, logger):
        p.chmod(0o755)
    script = tmp_path / "remote-only"
    script.write_text(ssh.remote_only_script(s(), pgbackrest=str(fake), log=str(tmp_path / "remote-only.log")))

    def run(request_line: str):
        env = {"PATH": f"{bindir}:/usr/bin:/bin", "SSH_ORIGINAL_COMMAND": request_line, "SSH_CLIENT": "172.31.10.20 40000 22"}
        r = subprocess.run([request.param, str(script)], env=env, capture_output=True, text=True, timeout=20)
        argv = tmp_path / "argv"
        ran = argv.read_text().splitlines() if argv.exists() else None
        if argv.exists():
            argv.unlink()
        log = (tmp_path / "remote-only.log").read_text() if (tmp_path / "remote-only.log").exists() else ""
        syslog = (tmp_path / "syslog").read_text() if (tmp_path / "syslog").exists() else ""
        return r, ran, log, syslog

    return run


@pytest.mark.parametrize("request_line", CAPTURED)
def test_pgbackrest_remote_for_our_stanza_runs_with_exactly_the_requested_argv(forced, request_line):
    r, ran, log, syslog = forced(request_line)
    assert r.returncode == 0 and "fake-pgbackrest-ran" in r.stdout, r.stderr
    assert ran == request_line.split()[1:]  # the words themselves, nothing re-evaluated
    assert f"from=172.31.10.20 ALLOWED: {request_line}" in log and "ALLOWED" in syslog


@pytest.mark.parametrize("request_line, why", REFUSED)
def test_anything_else_is_refused_logged_and_never_run(forced, request_line, why):
    r, ran, log, syslog = forced(request_line)
    assert r.returncode == 126 and ran is None, (r.stdout, r.stderr)
    assert "fake-pgbackrest-ran" not in r.stdout and "uid=" not in r.stdout
    assert f"refused: {why}" in r.stderr, r.stderr
    assert f"from=172.31.10.20 REFUSED ({why}" in log and "REFUSED" in syslog and "auth.notice" in syslog
    assert "\n" not in log.rstrip("\n")  # one line per request, whatever the request held


def test_the_probe_and_the_version_are_answered(forced):
    r, ran, _, _ = forced("true")
    assert (r.returncode, r.stdout.strip(), ran) == (0, ssh.PROBE_OK, None)
    r, ran, _, _ = forced("pgbackrest version")
    assert r.returncode == 0 and ran == ["version"]


@pytest.mark.parametrize("stanza, path", [("tracker*", REPO), ("tra cker", REPO), ("t'x", REPO), ("[a]", REPO), ("-x", REPO),
                                          ("ok", "relative/repo3"), ("ok", "/var/repo*"), ("ok", "/var/re po"), ("ok", "/var/../etc")])
def test_a_stanza_or_path_the_script_cannot_match_literally_is_refused(stanza, path):
    with pytest.raises(ConfigError):
        ssh.remote_only_script(SimpleNamespace(stanza=stanza, repo_path=path))


def test_the_installed_script_says_which_stanza_it_serves():
    assert ssh.script_stanza(ssh.remote_only_script(s())) == "tracker-dedicated"
    assert ssh.script_stanza(None) is None and ssh.script_stanza("#!/bin/sh\nSTANZA=x\n") is None
