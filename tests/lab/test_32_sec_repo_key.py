"""Security issue 23, item 4, against the lab: postgres's key on the repository host runs pgBackRest's remote
for OUR stanza and nothing else, only from the target. Evidence is read on the repository host: the forced
command's own log (every request, allowed or refused, with the client's address) and sshd's log."""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

from trackerdb.backrest import conf, ops, ssh
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab
PG = "postgres"
PUB = "/var/lib/postgresql/.ssh/id_ed25519.pub"
# the contract with the repository side (named in the hand-over and the README), spelled out so that the
# observations below do not depend on the code under test
SCRIPT = "/usr/local/lib/trackerdb/pgbackrest-remote-only"
LOG = "/var/log/trackerdb/pgbackrest-remote-only.log"


def repo_log(r) -> list[str]:
    return r.run(["cat", LOG], sudo=True, check=False).stdout.splitlines()


def sshd_log(r) -> list[str]:
    return r.run(["cat", "/var/log/sshd.log"], sudo=True).stdout.splitlines()


def to_repo(t, s, request: str | None):
    """ssh from the target as postgres, exactly as pgBackRest does (BatchMode, pinned host key)."""
    argv = ["ssh", "-o", "BatchMode=yes", f"{s.repo_host_user}@{s.repo_host_name}"] + ([request] if request is not None else [])
    return t.run(argv, user=PG, check=False, timeout=60)


def shared_stanza(s, r) -> str:
    """Every file of the shared stanza in repo3, with its hash (what a delete or overwrite would change)."""
    q = shlex.quote(s.repo_path)
    out = r.run(f"cd {q} && find archive/{s.shared_stanza} backup/{s.shared_stanza} -type f -exec sha256sum {{}} + | sort",
                sudo=True, check=False).stdout
    assert out.count("\n") >= 3, out  # the lab's source archives to it: it is not empty
    return out


def kept(before: str, after: str) -> bool:
    """Every file the shared stanza had is still there, unchanged. New files may appear meanwhile: the lab's
    source keeps archiving its own WAL to that stanza (archive_timeout), which is not our request's doing."""
    gone = set(before.splitlines()) - set(after.splitlines())
    assert not gone, f"removed or changed in the shared stanza: {sorted(gone)[:5]}"
    return True


def home(r, user) -> str:
    return r.run(["getent", "passwd", user]).stdout.split(":")[5]


def test_the_key_is_bound_to_the_target_and_a_root_owned_forced_command(backrest_ready):
    s = backrest_ready
    with Remote(s.target) as t, Remote(s.repo) as r:
        pub = t.run(["cat", PUB], user=PG).stdout.strip()
        lines = r.read_file(f"{home(r, s.repo_host_user)}/.ssh/authorized_keys", user=s.repo_host_user).splitlines()
        ours = [ln for ln in lines if pub.split()[1] in ln]
        assert ours and ours[0].startswith(f'restrict,from="{s.target.address}",command="{SCRIPT}" ')
        assert any("postgres@source" in ln for ln in lines)  # the shared host's own key is left as it was
        # the repository user cannot change its own forced command
        st = r.run(["stat", "-c", "%U %G %a", SCRIPT, SCRIPT.rsplit("/", 1)[0]], sudo=True).stdout.split("\n")
        assert st[:2] == ["root root 755", "root root 755"], st
        assert ours == [ssh.authorized_key_line(s, pub)] and ssh.REMOTE_ONLY_PATH == SCRIPT and ssh.REMOTE_ONLY_LOG == LOG
        assert r.read_file(SCRIPT) == ssh.remote_only_script(s)
        denied = r.run(f"echo x >> {SCRIPT}", user=s.repo_host_user, check=False)
        assert not denied.ok


@pytest.mark.parametrize("request_line, why", [
    ("id", "not pgbackrest"),
    (None, "no command (interactive login)"),
    ("sh -c id", "not pgbackrest"),
    ("rm -rf {repo}/archive/{shared} {repo}/backup/{shared}", "not pgbackrest"),
    ("cat /etc/pgbackrest/pgbackrest.conf", "not pgbackrest"),
    ("pgbackrest --stanza={shared} info", "option --stanza"),
    # pgBackRest's own remote, word for word as it is started, but for the shared stanza
    ("pgbackrest --exec-id=1-deadbeef --log-level-console=off --log-level-file=off --log-level-stderr=error --process=0 "
     "--remote-type=repo --repo=3 --repo3-path={repo} --stanza={shared} info:remote", "option --stanza"),
    ("pgbackrest --exec-id=1-deadbeef --log-level-console=off --log-level-file=off --log-level-stderr=error --process=0 "
     "--remote-type=repo --repo=3 --repo3-path={repo} --stanza={ours} stanza-delete:remote", "command stanza-delete:remote"),
    ("pgbackrest --exec-id=1-deadbeef --process=0 --remote-type=repo --repo=3 --repo3-path={repo} --stanza={ours} "
     "--config=/tmp/x.conf info:remote", "option --config"),
    ("pgbackrest --exec-id=1-deadbeef --process=0 --remote-type=repo --repo=3 --repo3-path=/ --stanza={ours} info:remote",
     "option --repo3-path"),
    ("pgbackrest version; rm -rf {repo}", "characters outside"),
])
def test_any_other_command_is_refused_by_the_forced_command_and_logged_there(backrest_ready, request_line, why):
    s = backrest_ready
    request = None if request_line is None else request_line.format(repo=s.repo_path, shared=s.shared_stanza, ours=s.stanza)
    with Remote(s.target) as t, Remote(s.repo) as r:
        before_shared, before_log, before_sshd = shared_stanza(s, r), len(repo_log(r)), len(sshd_log(r))
        res = to_repo(t, s, request)
        assert res.exit_code == 126, res
        assert "uid=" not in res.stdout and "cipher" not in res.stdout
        assert f"refused: {why}" in res.stderr, res.stderr
        new = repo_log(r)[before_log:]
        assert len(new) == 1 and f"from={s.target.address} REFUSED ({why}" in new[0], new
        assert new[0].endswith(": " + (request or "")), new
        # sshd accepted the key from the target: the refusal is the forced command's, not a failed login
        assert any(f"Accepted publickey for {s.repo_host_user} from {s.target.address}" in ln for ln in sshd_log(r)[before_sshd:])
        assert kept(before_shared, shared_stanza(s, r))


def test_a_stock_pgbackrest_asking_for_the_shared_stanza_is_refused(backrest_ready):
    s = backrest_ready
    with Remote(s.target) as t, Remote(s.repo) as r:
        before = len(repo_log(r))
        res = t.run(["pgbackrest", f"--stanza={s.shared_stanza}", f"--repo={conf.REPO_SSH}", "--output=json", "info"],
                    user=PG, check=False, timeout=120)
        info = json.loads(res.stdout)
        assert info[0]["status"]["code"] != 0 and "refused" in json.dumps(info), info
        new = repo_log(r)[before:]
        assert new and all("REFUSED (option --stanza)" in ln and f"--stanza={s.shared_stanza} info:remote" in ln for ln in new), new


def test_the_key_is_refused_from_any_other_address(backrest_ready):
    """The private key copied to another host (the source) is useless: sshd refuses it by from=."""
    s = backrest_ready
    with Remote(s.target) as t, Remote(s.source) as src, Remote(s.repo) as r:
        key = t.read_file("/var/lib/postgresql/.ssh/id_ed25519")
        before = len(sshd_log(r))
        try:
            src.write_file("/root/copied_key", key, mode="0600", owner="root")
            res = src.run(["ssh", "-i", "/root/copied_key", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                           "-o", "UserKnownHostsFile=/var/lib/postgresql/.ssh/known_hosts",
                           f"{s.repo_host_user}@{s.repo_host_name}", "true"], sudo=True, check=False, timeout=60)
        finally:
            src.run(["rm", "-f", "/root/copied_key"], sudo=True)
        assert res.exit_code == 255 and "Permission denied" in res.stderr, res
        new = sshd_log(r)[before:]
        assert any("correct key but not from a permitted host" in ln and f"required={s.target.address}" in ln for ln in new), new
        assert not any(f"Accepted publickey for {s.repo_host_user} from {s.source.address}" in ln for ln in new)


def _archived(t, s, wal: str) -> bool:
    last = t.run(["psql", "-XAtq", "-p", str(s.pg_port), "-c", "SELECT last_archived_wal FROM pg_stat_archiver"], user=PG).stdout.strip()
    return bool(last) and last >= wal


def test_our_stanza_still_checks_archives_and_backs_up_through_it(backrest_ready):
    s = backrest_ready
    with Remote(s.target) as t, Remote(s.repo) as r:
        before = len(repo_log(r))
        results = ops.check(s)
        assert all(c.ok for c in results), [(c.name, c.observed) for c in results if not c.ok]
        wal = t.run(["psql", "-XAtq", "-p", str(s.pg_port), "-c", "SELECT pg_walfile_name(pg_switch_wal())"], user=PG).stdout.strip()
        deadline = time.monotonic() + 120
        while not _archived(t, s, wal) and time.monotonic() < deadline:
            time.sleep(1)
        assert _archived(t, s, wal), wal
        report = ops.backup(s, type="incr")
        label = next(b["label"] for b in report["repos"].values() if b["repo"] == conf.REPO_SSH)
        assert r.run(["test", "-f", f"{s.repo_path}/backup/{s.stanza}/{label}/backup.manifest"], sudo=True, check=False).ok
        assert t.run(["pgbackrest", f"--stanza={s.stanza}", "check"], user=PG, check=False, timeout=300).ok
        new = repo_log(r)[before:]
        assert not [ln for ln in new if "REFUSED" in ln], new
        for role in ("archive-push", "backup", "check", "info"):
            assert any(f"from={s.target.address} ALLOWED: " in ln and f"--stanza={s.stanza} {role}:remote" in ln for ln in new), role


def test_setup_for_another_stanza_does_not_move_the_key_to_it(backrest_ready):
    """The forced command is not rewritten for a stanza the tool has not yet shown to be ours (here the shared
    one, past the name guard): that would open the shared stanza to the key before anything checked it."""
    from trackerdb.errors import PreflightError

    s = backrest_ready
    with Remote(s.repo) as r:
        before = r.read_file(SCRIPT)
        with pytest.raises(PreflightError) as e:
            ops.setup(s.with_(stanza=s.shared_stanza, shared_stanza="not-" + s.shared_stanza))
        assert f"restricted to stanza {s.stanza}" in e.value.one_line()
        assert r.read_file(SCRIPT) == before == ssh.remote_only_script(s)


def test_production_waits_until_the_repository_side_restricts_the_key(backrest_ready):
    """repo_writable=False: a key the repository side installed with `restrict` only (today's hand-over) runs any
    command; setup now says so and hands over the forced command; with the handed-over line it continues."""
    s = backrest_ready.with_(repo_writable=False)
    user = s.repo_host_user
    with Remote(s.target) as t, Remote(s.repo) as r:
        pub = t.run(["cat", PUB], user=PG).stdout.strip()
        ak = f"{home(r, user)}/.ssh/authorized_keys"
        original = r.read_file(ak, user=user)
        others = "".join(ln for ln in original.splitlines(keepends=True) if pub.split()[1] not in ln)
        try:
            r.write_file(ak, others + f"restrict {pub}\n", mode="0600", owner=user, user=user)
            assert "uid=" in to_repo(t, s, "id").stdout  # the hole: any command as the repository user
            waiting = ops.setup(s)
            assert waiting.waiting, [(x.name, x.detail) for x in waiting.steps]
            assert any("runs ANY command" in x.detail for x in waiting.steps)
            assert ssh.remote_only_script(s) in waiting.waiting and ssh.authorized_key_line(s, pub) in waiting.waiting.splitlines()
            assert r.read_file(ak, user=user) == others + f"restrict {pub}\n"  # their host is not ours to write

            # half done: the line is in, the forced command is not -> still waiting, with the reason
            handed = next(ln for ln in waiting.waiting.splitlines() if ln.startswith("restrict,") and " ssh-" in ln)
            r.write_file(ak, others + handed + "\n", mode="0600", owner=user, user=user)
            r.run(["mv", SCRIPT, SCRIPT + ".away"], sudo=True)
            try:
                half = ops.setup(s)
                assert half.waiting and any("is not installed" in x.detail for x in half.steps), [(x.name, x.detail) for x in half.steps]
            finally:
                r.run(["mv", SCRIPT + ".away", SCRIPT], sudo=True)

            again = ops.setup(s)
            assert not again.waiting and not again.changed, [(x.name, x.detail) for x in again.steps if x.changed]
            assert to_repo(t, s, "id").exit_code == 126
        finally:
            r.write_file(ak, original, mode="0600", owner=user, user=user)


def test_known_limit_the_remote_protocol_is_not_confined_to_the_stanza(backrest_ready, tmp_path):
    """What the forced command cannot enforce (pgBackRest 2.55): once a remote is running for OUR stanza, the client
    names the paths (src/storage/remote/protocol.c hands them to the storage driver unchecked). A stock client whose
    ssh wrapper renames `repo-ls:remote` to `info:remote` lists the shared stanza's WAL. This test documents the
    limit the README states; it should fail, and the README change, once the repository side isolates stanzas
    (a separate OS user per stanza, or pgBackRest's TLS server)."""
    s = backrest_ready
    wrapper = "/var/lib/postgresql/trackerdb-test-rename-remote"
    with Remote(s.target) as t, Remote(s.repo) as r:
        t.write_file(wrapper, '#!/bin/bash\nargs=("$@"); last=${args[$#-1]}; args[$#-1]="${last% *} info:remote"\nexec ssh "${args[@]}"\n',
                     mode="0755", owner=PG, user=PG)
        try:
            before = len(repo_log(r))
            res = t.run(["pgbackrest", f"--stanza={s.stanza}", f"--repo={conf.REPO_SSH}", f"--cmd-ssh={wrapper}",
                         "--log-level-console=warn", "repo-ls", "--recurse", f"archive/{s.shared_stanza}"],
                        user=PG, check=False, timeout=120)
        finally:
            t.run(["rm", "-f", wrapper], sudo=True)
        assert res.ok and re.search(r"^[0-9]{2}-[0-9]+/[0-9A-F]{16}/[0-9A-F]{24}-[0-9a-f]{40}", res.stdout, re.M), res  # the shared stanza's WAL
        new = repo_log(r)[before:]
        assert new and all("ALLOWED: " in ln and f"--stanza={s.stanza} info:remote" in ln for ln in new), new
