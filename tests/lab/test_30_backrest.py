"""pgBackRest against the lab: target -> repo (SSH) and aws (S3 over TLS). Real hosts, real pgBackRest."""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from trackerdb.backrest import checks as ck
from trackerdb.backrest import conf, ops
from trackerdb.errors import ConfigError, PreflightError
from trackerdb.remote import Remote
from trackerdb.secrets import fetch_secret

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
PG = "postgres"


def psql(t, s, sql, db="postgres", extra=()):
    return t.run(["psql", "-XAtq", "-p", str(s.pg_port), "-d", db, *extra, "-c", sql], user=PG).stdout.strip()


def invoke(args, **env):
    e = dict(os.environ) | {k: v for k, v in env.items() if v is not None}
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), *args], cwd=ROOT, env=e, capture_output=True, text=True, timeout=900)


def s3_keys(s, prefix):
    from trackerdb.aws import client

    c = client(s, "s3")
    keys, token = [], None
    while True:
        kw = {"Bucket": s.backup_bucket, "Prefix": prefix} | ({"ContinuationToken": token} if token else {})
        r = c.list_objects_v2(**kw)
        keys += [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            return keys
        token = r["NextContinuationToken"]


def repo_files(s, sub):
    with Remote(s.repo) as r:
        return r.run(f"find {shlex.quote(s.repo_path + '/' + sub)} -type f 2>/dev/null | sort", sudo=True, check=False).stdout.split()


def fingerprint(s):
    """What must not change when setup refuses or has nothing to do: our files on the target (config,
    drop-in, postgres's SSH key and pinned known_hosts), archiving, the repository host's authorized_keys,
    the shared stanza."""
    with Remote(s.target) as t, Remote(s.repo) as r:
        home = r.run(["getent", "passwd", s.repo_host_user]).stdout.split(":")[5]
        return {
            "conf": t.run(["sha256sum", conf.CONF_PATH], sudo=True, check=False).stdout,
            "dropin": t.run(["sha256sum", conf.dropin_path(s)], sudo=True, check=False).stdout,
            "postgres_ssh": t.run("cd /var/lib/postgresql/.ssh && stat -c '%n %a %U' * && sha256sum *", sudo=True, check=False).stdout,
            "authorized_keys": r.run(["sha256sum", f"{home}/.ssh/authorized_keys"], sudo=True, check=False).stdout,
            "archive_command": psql(t, s, "SHOW archive_command"),
            "shared": r.run(f"cd {shlex.quote(s.repo_path)} && find archive/{s.shared_stanza} backup/{s.shared_stanza} -name '*.info*' "
                            "-exec sha256sum {} + | sort", sudo=True, check=False).stdout,
            "ours_in_repo": r.run(f"ls {shlex.quote(s.repo_path)}/archive", sudo=True, check=False).stdout,
        }


# ---- setup ------------------------------------------------------------------------------------
def test_setup_archives_wal_to_both_repositories(backrest_first_setup, backrest_ready):
    s = backrest_ready
    changed = {st.name for st in backrest_first_setup.steps if st.changed}
    assert {conf.CONF_PATH, "stanza-create"} <= changed, backrest_first_setup.to_json()
    with Remote(s.target) as t:
        assert psql(t, s, "SHOW archive_mode") == "on"
        assert psql(t, s, "SHOW archive_command") == conf.archive_command(s)
        seg = psql(t, s, "SELECT pg_walfile_name(pg_switch_wal())")
        t.run(["pgbackrest", f"--stanza={s.stanza}", "check"], user=PG, timeout=300)
        st = t.run(["stat", "-c", "%U %a", conf.CONF_PATH], sudo=True).stdout.split()
    assert st == [PG, "640"]
    in_repo3 = [Path(f).name for f in repo_files(s, f"archive/{s.stanza}")]
    in_s3 = [Path(k).name for k in s3_keys(s, f"{s.backup_path.strip('/')}/archive/{s.stanza}/")]
    assert any(n.startswith(seg) for n in in_repo3), in_repo3[-5:]
    assert any(n.startswith(seg) for n in in_s3), in_s3[-5:]


def test_check_is_green_and_the_task_exits_zero(backrest_ready):
    results = ops.check(backrest_ready)
    assert all(c.ok for c in results), [(c.name, c.observed) for c in results if not c.ok]
    names = " ".join(c.name for c in results)
    assert "repo3" in names and "repo2" in names
    r = invoke(["backrest.check", "--json"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"] is True


def test_rerunning_setup_changes_nothing(backrest_ready):
    before = fingerprint(backrest_ready)
    again = ops.setup(backrest_ready)
    assert not again.changed, [(s.name, s.detail) for s in again.steps if s.changed]
    assert fingerprint(backrest_ready) == before  # observed on both hosts, not only reported


def test_the_repository_host_holds_our_key_restricted(backrest_ready):
    s = backrest_ready
    with Remote(s.target) as t, Remote(s.repo) as r:
        pub = t.run(["cat", "/var/lib/postgresql/.ssh/id_ed25519.pub"], user=PG).stdout.split()[1]
        home = r.run(["getent", "passwd", s.repo_host_user]).stdout.split(":")[5]
        lines = [ln for ln in r.read_file(f"{home}/.ssh/authorized_keys").splitlines() if pub in ln]
        assert len(lines) == 1 and lines[0].split()[0].split(",")[0] == "restrict", lines
        # sshd enforces it: no PTY and no port forwarding for that key, while pgBackRest's command channel works
        tty = t.run(["ssh", "-tt", "-o", "BatchMode=yes", f"{s.repo_host_user}@{s.repo_host_name}", "tty"], user=PG, check=False)
        assert "not a tty" in tty.stdout + tty.stderr or "PTY allocation request failed" in tty.stdout + tty.stderr, tty
        fwd = t.run(["ssh", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-R", "15999:127.0.0.1:22",
                     f"{s.repo_host_user}@{s.repo_host_name}", "true"], user=PG, check=False)
        assert not fwd.ok, fwd
        assert t.run(["pgbackrest", "--stanza", s.stanza, "info"], user=PG, check=False).ok


def test_production_mode_waits_for_the_repository_side_and_a_rerun_picks_up(backrest_ready, tmp_path):
    """repo_writable=False (production): print the key for the other team and stop; after they add it, continue."""
    s = backrest_ready.with_(repo_writable=False)
    with Remote(s.repo) as r:
        home = r.run(["getent", "passwd", s.repo_host_user]).stdout.split(":")[5]
        ak = f"{home}/.ssh/authorized_keys"
        original = r.read_file(ak)
        with Remote(s.target) as t:
            pub = t.run(["cat", "/var/lib/postgresql/.ssh/id_ed25519.pub"], user=PG).stdout.strip()
        without = "".join(ln for ln in original.splitlines(keepends=True) if pub.split()[1] not in ln)
        assert without != original
        r.write_file(ak, without, mode="0600", owner=s.repo_host_user)
        try:
            before = fingerprint(s)
            waiting = ops.setup(s)
            assert waiting.waiting and pub in waiting.waiting and "authorized_keys" in waiting.waiting
            assert fingerprint(s) == before
            assert r.read_file(ak) == without  # we did not write their host
            # the task: same thing through an overlay that says the repository host is not ours to write
            from trackerdb.settings import lab_dir

            overlay = json.loads((lab_dir() / "settings.json").read_text())
            overlay["repo"]["writable"] = False
            p = tmp_path / "settings.json"
            p.write_text(json.dumps(overlay))
            res = invoke(["backrest.setup"], TRACKERDB_SETTINGS=str(p))
            assert res.returncode == 75, res.stdout + res.stderr
            assert "Waiting for the repository side" in res.stderr and pub in res.stderr
            assert r.read_file(ak) == without
            # the other team adds exactly the handed-over line; the re-run continues and changes nothing else
            handed = next(ln for ln in waiting.waiting.splitlines() if ln.startswith("restrict,") and " ssh-" in ln)
            r.write_file(ak, without + handed + "\n", mode="0600", owner=s.repo_host_user)
            again = ops.setup(s)
            assert not again.waiting and not again.changed, [(x.name, x.detail) for x in again.steps if x.changed]
        finally:
            r.write_file(ak, original, mode="0600", owner=s.repo_host_user)


def test_a_wrong_pinned_repository_key_is_a_clear_error(backrest_ready):
    s = backrest_ready
    from trackerdb.errors import HostError

    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD0l4eGq0n2y5oL4yK3C7k8ZrX9mQ2aT1bV0cW5dEf"
    before = fingerprint(s)
    with pytest.raises(HostError) as e:
        ops.setup(s.with_(repo_host_key=other))
    assert "different ssh-ed25519 key" in e.value.one_line()
    assert fingerprint(s) == before


# ---- the collision ----------------------------------------------------------------------------
def ssh_logins(spec) -> int:
    """Accepted SSH logins in the host's sshd log (this read's own login included)."""
    with Remote(spec) as h:
        return int(h.run("grep -c 'Accepted publickey' /var/log/sshd.log || true", sudo=True).stdout.strip() or 0)


def test_the_shared_stanza_name_is_refused_by_settings_before_any_host_is_touched(backrest_ready):
    s = backrest_ready
    before = fingerprint(s)
    logins = {h.name: ssh_logins(h) for h in (s.target, s.repo)}
    with pytest.raises(ConfigError) as e:
        ops.setup(s.with_(stanza=s.shared_stanza))
    assert "shared host's stanza" in e.value.one_line()
    # no host was even logged into: each count grew by exactly our own second read
    assert {h.name: ssh_logins(h) for h in (s.target, s.repo)} == {k: v + 1 for k, v in logins.items()}
    assert fingerprint(s) == before


def test_a_foreign_stanza_in_the_repository_is_refused_before_any_change(backrest_ready):
    s = backrest_ready
    # Bypass the name guard: only what the repository holds can now stop us.
    hostile = s.with_(stanza=s.shared_stanza, shared_stanza="not-" + s.shared_stanza)
    before = fingerprint(s)
    assert before["shared"], "the lab's shared stanza should exist on repo"
    with pytest.raises(PreflightError) as e:
        ops.setup(hostile)
    msg = e.value.one_line()
    assert "another cluster" in msg or "other encryption settings" in msg or "cannot be read" in msg, msg
    assert "stanza-upgrade" in msg or "another stanza" in msg
    assert fingerprint(s) == before


# ---- repository host unreachable --------------------------------------------------------------
def unused_lab_address(s) -> str:
    net = ipaddress.ip_network(s.app_cidrs[0], strict=False)
    used = {s.target.address, s.repo_host_ip, s.repo.address, getattr(s.source, "address", None)}
    used |= {ipaddress.ip_address(s.aws_endpoint_url.split("//")[1].split(":")[0]).exploded} if s.aws_endpoint_url else set()
    for host in reversed(list(net.hosts())):
        if str(host) not in used:
            return str(host)
    raise AssertionError("no free address")


def test_unreachable_repository_host_fails_check_clearly(backrest_ready, tmp_path):
    s = backrest_ready
    addr = unused_lab_address(s)
    results = ops.check(s.with_(repo_host_name=addr, repo_host_ip=addr))
    failed = {c.name: c for c in results if not c.ok}
    reach = [c for n, c in failed.items() if "reachable over SSH" in n]
    assert reach and "unreachable" in reach[0].observed, failed
    # the task: same settings via a copy of the stack outputs, non-zero exit and the reason on screen
    outputs = dict(s.outputs, repo_host_name=addr, repo_host_ip=addr)
    p = tmp_path / "stack-outputs.json"
    p.write_text(json.dumps(outputs))
    r = invoke(["backrest.check"], TRACKERDB_STACK_OUTPUTS=str(p))
    assert r.returncode != 0
    assert "unreachable" in r.stdout + r.stderr


# ---- backups and recovery ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_backup(backrest_ready):
    return ops.backup(backrest_ready, type="full")


def test_a_full_backup_lands_in_both_repositories(backrest_ready, full_backup):
    s = backrest_ready
    by_repo = {b["repo"]: b for b in full_backup["repos"].values()}
    assert set(by_repo) == {conf.REPO_SSH, conf.REPO_S3}
    for b in by_repo.values():
        assert b["type"] == "full" and b["label"].endswith("F")
    l3, l2 = by_repo[conf.REPO_SSH]["label"], by_repo[conf.REPO_S3]["label"]
    assert any(f"/backup/{s.stanza}/{l3}/backup.manifest" in f for f in repo_files(s, f"backup/{s.stanza}"))
    assert any(k.endswith(f"/backup/{s.stanza}/{l2}/backup.manifest") for k in s3_keys(s, f"{s.backup_path.strip('/')}/backup/{s.stanza}/"))


@pytest.mark.parametrize("repo", [conf.REPO_SSH, conf.REPO_S3])
def test_point_in_time_recovery_finds_exactly_the_rows_before_the_target(backrest_ready, full_backup, repo):
    s = backrest_ready
    table = f"pitr_probe_{repo}_{uuid.uuid4().hex[:6]}"
    scratch = f"{s.data_mount}/pitr-scratch-{uuid.uuid4().hex[:8]}"
    port = s.pg_port + 100 + repo
    with Remote(s.target) as t:
        psql(t, s, f"CREATE TABLE {table} (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        try:
            psql(t, s, f"INSERT INTO {table} (id) SELECT generate_series(1, 5)")
            time.sleep(1.5)
            target = psql(t, s, "SELECT clock_timestamp()")
            time.sleep(1.5)
            psql(t, s, f"INSERT INTO {table} (id) SELECT generate_series(6, 10)")
            # pgbackrest check switches WAL and waits until the segment is in every repository
            t.run(["pgbackrest", f"--stanza={s.stanza}", "check"], user=PG, timeout=300)
            t.run(["install", "-d", "-m", "0700", "-o", PG, "-g", PG, scratch], sudo=True)
            try:
                t.run(["pgbackrest", f"--stanza={s.stanza}", f"--repo={repo}", f"--pg1-path={scratch}", "--type=time",
                       f"--target={target}", "--target-action=promote", "--log-level-console=warn",
                       # synchronous archive-get: the running cluster's async archive-push owns the archive lock and spool
                       f'--recovery-option=restore_command=pgbackrest --stanza={s.stanza} --repo={repo} --pg1-path={scratch} '
                       f'--no-archive-async archive-get %f "%p"', "restore"],
                      user=PG, timeout=900)
                # the production cluster's settings (recovery needs max_worker_processes etc. >= the primary's),
                # then, on the command line (which wins): its own port and socket, no network, no archiving
                confd = conf.dropin_path(s).rsplit("/", 1)[0]
                t.run(f"printf 'local all postgres peer\\n' > {scratch}/pg_hba.conf && : > {scratch}/pg_ident.conf && "
                      f"printf \"include_dir '%s'\\n\" {shlex.quote(confd)} > {scratch}/postgresql.conf", user=PG)
                opts = (f"-c port={port} -c listen_addresses='' -c unix_socket_directories={scratch} -c archive_mode=off "
                        f"-c hba_file={scratch}/pg_hba.conf -c ident_file={scratch}/pg_ident.conf -c ssl=off -c shared_buffers=64MB")
                started = t.run([f"{s.pg_bin}/pg_ctl", "-D", scratch, "-l", f"{scratch}/pitr.log", "-w", "-t", "300", "-o", opts, "start"],
                                user=PG, timeout=400, check=False)
                assert started.ok, t.run(["tail", "-15", f"{scratch}/pitr.log"], sudo=True, check=False).stdout
                try:
                    q = ["-h", scratch]
                    for _ in range(120):
                        if t.run(["psql", "-XAtq", "-h", scratch, "-p", str(port), "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"],
                                 user=PG, check=False).stdout.strip() == "f":
                            break
                        time.sleep(1)
                    rows = t.run(["psql", "-XAtq", *q, "-p", str(port), "-d", "postgres", "-c", f"SELECT id FROM {table} ORDER BY id"],
                                 user=PG).stdout.split()
                    assert rows == [str(i) for i in range(1, 6)], rows
                finally:
                    t.run([f"{s.pg_bin}/pg_ctl", "-D", scratch, "-m", "fast", "-w", "stop"], user=PG, check=False, timeout=120)
            finally:
                assert scratch.startswith(f"{s.data_mount}/pitr-scratch-")
                t.run(["rm", "-rf", "--one-file-system", "--", scratch], sudo=True)
        finally:
            psql(t, s, f"DROP TABLE IF EXISTS {table}")


# ---- dropped WAL -------------------------------------------------------------------------------
def test_dropped_wal_fails_check_until_a_new_backup_closes_the_gap(backrest_ready, full_backup):
    """Make pgBackRest really drop WAL (tiny archive-push-queue-max, repo3 unreachable), see check fail,
    then put everything back with setup and close the recovery gap with a full backup."""
    s = backrest_ready
    addr = unused_lab_address(s)
    table = f"walgen_{uuid.uuid4().hex[:6]}"
    with Remote(s.target) as t:
        good = t.read_file(conf.CONF_PATH)
        broken = good.replace(f"repo3-host={s.repo_host_name}\n", f"repo3-host={addr}\n").replace(
            f"archive-push-queue-max={conf.ARCHIVE_PUSH_QUEUE_MAX}\n", "archive-push-queue-max=16MB\n")
        assert broken != good
        t.write_file(conf.CONF_PATH, broken, mode=conf.MODE, owner=PG, group=PG)
        try:
            psql(t, s, f"CREATE TABLE {table} (x text)")
            for _ in range(40):
                psql(t, s, f"INSERT INTO {table} SELECT repeat(md5(g::text), 40) FROM generate_series(1, 4000) g; SELECT pg_switch_wal()")
                if "dropped WAL file" in t.run(ck.drop_scan_command(s), sudo=True, check=False).stdout:
                    break
                time.sleep(2)
            else:
                raise AssertionError("pgBackRest never dropped WAL")
        finally:
            t.write_file(conf.CONF_PATH, good, mode=conf.MODE, owner=PG, group=PG)
        results = ops.check(s)
        dropped = [c for c in results if "no WAL dropped" in c.name]
        assert dropped and not any(c.ok for c in dropped), [(c.name, c.observed) for c in dropped]
        assert "dropped after the latest backup" in dropped[0].observed
        r = invoke(["backrest.check"])
        assert r.returncode != 0 and "dropped" in r.stdout
        # put it back: setup finds nothing to change in its files, the archive catches up; a full backup closes the gap
        ops.setup(s)
        t.run(["pgbackrest", f"--stanza={s.stanza}", "check"], user=PG, timeout=300)
        ops.backup(s, type="full")
        psql(t, s, f"DROP TABLE {table}")
    after = ops.check(s)
    assert all(c.ok for c in after), [(c.name, c.observed) for c in after if not c.ok]
    assert any("superseded" in c.observed for c in after if "no WAL dropped" in c.name)


# ---- secrets ----------------------------------------------------------------------------------
def test_the_cipher_passphrase_is_only_in_pgbackrest_conf(backrest_ready, full_backup, tmp_path):
    s = backrest_ready
    secret = fetch_secret(s, s.cipher_secret_name).reveal()
    pattern = secret + "\n"
    def scan(host, paths: str) -> list[str]:
        # grep reads the value from stdin: it never appears in grep's own argv; paths that do not exist are
        # left out, and any grep error fails the test (exit 2) instead of reading as "not found"
        r = host.run(f"set --; for p in {paths}; do [ -e \"$p\" ] && set -- \"$@\" \"$p\"; done; grep -rlF -D skip -f /dev/stdin \"$@\"",
                     sudo=True, stdin=pattern, check=False)
        assert r.exit_code in (0, 1), r.stderr
        return r.stdout.split()

    target_paths = ("/etc /var/log /root /home /tmp /var/tmp /var/lib/postgresql/.ssh /var/lib/pgbackrest "
                    f"{conf.spool_path(s)} /var/lib/postgresql/.bash_history /var/lib/postgresql/.psql_history")
    with Remote(s.target) as t:
        t.write_file("/tmp/trackerdb-planted", pattern)  # the scan finds a planted copy
        try:
            assert "/tmp/trackerdb-planted" in scan(t, target_paths)
        finally:
            t.run(["rm", "-f", "/tmp/trackerdb-planted"], sudo=True)
        hits = scan(t, target_paths)
        assert hits == [conf.CONF_PATH], hits
        procs = t.run("grep -laF -f /dev/stdin /proc/[0-9]*/cmdline 2>/dev/null; true", sudo=True, stdin=pattern).stdout.split()
        assert procs == [], procs
    with Remote(s.repo) as r:
        hits = scan(r, f"/var/log {shlex.quote(s.repo_path)} /etc /home /tmp /var/tmp")
        assert hits == [], hits
    # our own outputs and the repository
    outcome = ops.setup(s, dry_run=True)
    checks = json.dumps([c.__dict__ for c in ops.check(s)])
    assert secret not in outcome.to_json() and secret not in checks
    assert secret not in json.dumps(full_backup)
    git = subprocess.run(["git", "grep", "-lF", "-f", "-"], cwd=ROOT, input=pattern, capture_output=True, text=True)
    assert git.returncode == 1 and git.stdout.strip() == "", git  # 1: searched and not found (0 found, 2+ failed)
    r = invoke(["backrest.setup", "--dry-run", "--json"])
    assert r.returncode == 0 and secret not in r.stdout + r.stderr
