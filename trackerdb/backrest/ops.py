"""backrest.setup / check / backup: facts from the hosts, then only the changes that differ.

Topology: every pgBackRest command runs on the database host as postgres (see ``conf``'s
docstring for why that is possible with pgBackRest >= 2.55 and what older versions need).
"""

from __future__ import annotations

import re
import shlex
from typing import Callable

from .. import compat
from ..errors import HostError, PreflightError
from ..remote import Remote
from ..safe_paths import ensure_dir
from ..secrets import Secret, mask
from ..session import connect, connection, target_cluster
from ..steps import Check, Outcome, Step
from . import checks as ck
from . import conf, ssh, stanza
from ..settings import Settings

PG = "postgres"
MIN_REMOTE_BACKUP = (2, 55)
Progress = Callable[[str], None] | None


def repo_names(settings: Settings) -> dict[int, str]:
    return {conf.REPO_SSH: f"repo{conf.REPO_SSH} ({settings.repo_host_name}:{settings.repo_path})",
            conf.REPO_S3: f"repo{conf.REPO_S3} (s3://{settings.backup_bucket}{settings.backup_path})"}


def _say(progress: Progress, msg: str) -> None:
    if progress:
        progress(msg)


# ---- facts ------------------------------------------------------------------------------------
def parse_version(text: str) -> tuple[int, ...]:
    m = re.search(r"pgBackRest (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise HostError("pgbackrest is not installed on the target", hint="run `invoke provision` first")
    return tuple(int(x) for x in m.groups() if x is not None)


def pgbackrest_version(t: Remote) -> tuple[int, ...]:
    r = t.run("pgbackrest version", check=False)
    return parse_version(r.stdout if r.ok else "")


def system_id(t: Remote, settings: Settings) -> int:
    r = t.run(stanza.controldata_command(settings), user=PG, check=False)
    if not r.ok:
        raise PreflightError(f"no PostgreSQL cluster at {settings.cluster_dir} on the target "
                             f"({r.stderr.strip()[:120]})", hint="run `invoke provision` first")
    return stanza.parse_controldata(r.stdout)


def psql_json(t: Remote, settings: Settings, sql: str) -> dict:
    try:
        return target_cluster(t, settings).json(sql)
    except HostError as exc:
        raise HostError(f"PostgreSQL on the target did not answer: {exc.message}",
                        hint=f"is the cluster running? pg_ctlcluster {settings.postgres_major} main status") from None


def _info(t: Remote, settings: Settings, secret: Secret, env: list[str],
          repo: int | None = None) -> dict[int, stanza.RepoFact]:
    r = t.run(stanza.env_run(stanza.info_argv(repo)), user=PG, stdin="\n".join(env) + "\n", check=False, timeout=300)
    if not r.stdout.strip().startswith("["):
        text = r.stderr.strip() or r.stdout.strip()
        detail = mask(text.splitlines()[-1] if text else f"exit {r.exit_code}", secret)
        raise HostError(f"pgbackrest info failed on the target: {detail[:300]}",
                        hint="see /var/log/pgbackrest on the target")
    return stanza.parse_info(r.stdout, settings.stanza)


def repo_facts(t: Remote, settings: Settings, secret: Secret) -> dict[int, stanza.RepoFact]:
    """What both repositories hold for our stanza, seen through the *desired* configuration.

    A stanza we cannot decrypt gets a second, read-only look without our cipher so the error can
    name the system id that owns it (the shared stanza is not encrypted with our passphrase)."""
    env = conf.probe_env(settings, secret.reveal())
    facts = _info(t, settings, secret, env)
    for key, f in facts.items():
        if stanza.looks_like_cipher_error(f):
            ours = (f"PGBACKREST_REPO{key}_CIPHER_PASS=", f"PGBACKREST_REPO{key}_CIPHER_TYPE=")
            plain = [e for e in env if not e.startswith(ours)]
            try:
                no_cipher = plain + [f"PGBACKREST_REPO{key}_CIPHER_TYPE=none"]
                other = _info(t, settings, secret, no_cipher, repo=key).get(key)
            except HostError:
                continue
            if other is not None and other.state == "present":
                other.cipher_mismatch = True
                facts[key] = other
    return facts


def home_of(host: Remote, user: str) -> str:
    home = host.run(ssh.home_command(user)).stdout.strip()
    if not home:
        raise HostError(f"user {user} does not exist on {host.name}",
                        hint="install PostgreSQL/pgBackRest first (invoke provision)")
    return home


def ssh_probe(t: Remote, settings: Settings) -> ssh.Probe:
    r = t.run(ssh.probe_command(settings), user=PG, check=False, timeout=60)
    return ssh.parse_probe(r.exit_code, r.stderr)


# ---- setup ------------------------------------------------------------------------------------
class SetupOutcome(Outcome):
    """``setup``'s steps, and the hand-over text when it waits for the repository side (else None)."""

    waiting: str | None = None


def setup(settings: Settings, dry_run: bool = False, progress: Progress = None, session=None) -> SetupOutcome:
    """SSH trust, collision check, configuration, stanza, archiving. Idempotent."""
    settings.validate()  # includes: stanza is not the shared host's
    ssh.parse_host_key(settings.repo_host_key)
    out = SetupOutcome(f"pgBackRest on {settings.target.name} (stanza {settings.stanza})", dry_run=dry_run)
    with connection(settings, session) as (sess, t):
        secret = sess.secret(settings.cipher_secret_name)
        _say(progress, "reading facts from the target")
        version = pgbackrest_version(t)
        sysid = system_id(t, settings)
        out.add(Step("facts", False, f"pgBackRest {'.'.join(map(str, version))}; cluster system id {sysid}"))

        if not _ssh_trust(t, settings, out, dry_run, progress):
            return out  # waiting for the repository side (production) or dry run without a key
        _same_version(t, settings, version, out)

        _ca(t, settings, out, dry_run)
        _say(progress, "reading what the repositories hold for the stanza")
        facts = repo_facts(t, settings, secret)
        todo = stanza.decide(facts, sysid, settings.stanza, repo_names(settings))  # raises on a foreign stanza
        owned = "; ".join(f"repo{k}: {facts[k].state}"
                          + (f" (ours, {facts[k].system_id})" if facts[k].state == "present" else "")
                          for k in sorted(facts))
        out.add(Step("stanza ownership", False, owned))

        _apply_config(t, settings, secret, out, dry_run, progress)

        if todo:
            cmd = stanza.create_argv(settings)
            if not dry_run:
                _say(progress, "stanza-create on " + ", ".join(f"repo{k}" for k in todo))
                r = t.run(cmd, user=PG, check=False, timeout=600)
                if not r.ok:
                    raise HostError(f"stanza-create failed: {mask(_tail(r), secret)}",
                                    hint="see /var/log/pgbackrest on the target")
            out.add(Step("stanza-create", True, "created on " + ", ".join(repo_names(settings)[k] for k in todo),
                         [shlex.join(cmd)]))
        else:
            out.add(Step("stanza-create", False, "stanza exists in both repositories with this cluster's system id"))

        _apply_dropin(t, settings, out, dry_run, progress)

        if out.changed and not dry_run:
            _say(progress, "pgbackrest check (forces a WAL switch and waits for it in both repositories)")
            cmd = stanza.check_argv(settings)
            r = t.run(cmd, user=PG, check=False, timeout=600)
            if not r.ok:
                raise HostError(f"pgbackrest check failed after setup: {mask(_tail(r), secret)}",
                                hint="run `invoke backrest.check` for details")
            out.add(Step("pgbackrest check", False, "WAL reached both repositories", [shlex.join(cmd)]))
    return out


def _same_version(t: Remote, settings: Settings, version: tuple[int, ...], out: Outcome) -> None:
    """pgBackRest's remote protocol requires the exact same version on both hosts."""
    r = t.run(ssh.remote_version_command(settings), user=PG, check=False, timeout=60)
    theirs = parse_version(r.stdout) if r.ok else None
    ours = ".".join(map(str, version))
    if theirs is None:
        raise HostError(f"cannot read pgBackRest's version on {settings.repo_host_name}: "
                        f"{(r.stderr.strip() or 'no output')[:200]}",
                        hint="is pgbackrest installed on the repository host?")
    if theirs != version:
        raise PreflightError(
            f"pgBackRest {ours} on the target but {'.'.join(map(str, theirs))} on {settings.repo_host_name}; they "
            "must be identical",
            hint="pin the target's pgbackrest package to the repository host's version (or upgrade both together)")
    note = ""
    if version[:2] < MIN_REMOTE_BACKUP:
        note = "; older than 2.55: repo3 backups must run on the repository host"
    out.add(Step("pgBackRest versions", False, f"{ours} on both hosts{note}"))


def _tail(r) -> str:
    text = (r.stderr.strip() or r.stdout.strip())
    errs = [ln for ln in text.splitlines() if "ERROR" in ln]
    return (errs[-1] if errs else (text.splitlines()[-1] if text else f"exit {r.exit_code}"))[:300]


def _ssh_trust(t: Remote, settings: Settings, out: SetupOutcome, dry_run: bool, progress: Progress) -> bool:
    home = home_of(t, PG)
    key = ssh.key_path(home)
    if t.exists(key + ".pub"):
        out.add(Step("postgres SSH key", False, f"{key}.pub exists"))
    else:
        cmd = ssh.keygen_command(home, f"postgres@{settings.target.name}-{ssh.MARK}")
        if not dry_run:
            ensure_dir(t, f"{home}/.ssh", "0700", PG)  # root, refusing a link planted in postgres's home
            t.run(cmd, user=PG)
        out.add(Step("postgres SSH key", True, f"created {key}", [shlex.join(cmd)]))
        if dry_run:
            out.add(Step("repository trust", True, "would pin the repository host key and hand over the new key"))
            return False
    pubkey = t.run(["cat", key + ".pub"], user=PG).stdout.strip()

    kh_path = f"{home}/.ssh/known_hosts"
    # postgres's own file, read and rewritten as postgres: a link there reaches only what postgres may read
    text, changed = ssh.merge_known_hosts(t.read_file(kh_path, user=PG), settings)
    if changed and not dry_run:
        t.write_file(kh_path, text, mode="0644", owner=PG, group=PG, user=PG)
    out.add(Step("repository host key pinned", changed, ssh.known_hosts_line(settings).strip()[:120]))
    if dry_run and changed:
        return True

    repo = settings.repo if settings.repo_writable else None
    writable = repo is not None
    if repo is not None:  # the lab: the repository host is ours to write
        _say(progress, f"restricting postgres's key on {repo.name} to pgBackRest's remote for {settings.stanza}")
        user, script = settings.repo_host_user, ssh.remote_only_script(settings)
        line = ssh.authorized_key_line(settings, pubkey)
        with connect(repo) as rh:
            # root's file in root's directory: the repository user must not be able to change its own forced command
            installed = rh.read_file(ssh.REMOTE_ONLY_PATH)
            serves = ssh.script_stanza(installed)
            if serves not in (None, settings.stanza):
                # moving the key to another stanza would open that stanza to it before anything could check whose it is
                raise PreflightError(
                    f"postgres's key on {repo.name} is restricted to stanza {serves}; "
                    f"stanza {settings.stanza} cannot be read through it",
                    hint="pointing the key at another stanza is the repository side's decision: "
                         f"remove {ssh.REMOTE_ONLY_PATH} there first")
            if dry_run:
                changed = installed != script
            else:
                rh.run(["install", "-d", "-m", "0755", "-o", "root", "-g", "root",
                        ssh.REMOTE_ONLY_PATH.rsplit("/", 1)[0], ssh.REMOTE_ONLY_LOG.rsplit("/", 1)[0]], sudo=True)
                changed = rh.write_file(ssh.REMOTE_ONLY_PATH, script, mode="0755", owner="root")
                log = shlex.quote(ssh.REMOTE_ONLY_LOG)
                rh.run(f"[ -e {log} ] || install -m 0640 -o {shlex.quote(user)} -g {shlex.quote(user)} /dev/null {log}",
                       sudo=True)
            out.add(Step("repository forced command", changed, ssh.REMOTE_ONLY_PATH))
            # their authorized_keys is read and written as the repository user, never by root (a link they
            # planted reaches only what they may write)
            rhome = home_of(rh, user)
            ak = ssh.authorized_keys_path(rhome)
            new, changed = ssh.authorized_keys_merge(rh.read_file(ak, user=user), line)
            if changed and not dry_run:
                rh.run(["install", "-d", "-m", "0700", f"{rhome}/.ssh"], user=user)
                rh.write_file(ak, new, mode="0600", owner=user, user=user)
            out.add(Step("repository key restricted", changed,
                         f'from="{ssh.target_ip(settings)}",command="{ssh.REMOTE_ONLY_PATH}" '
                         f"in {user}'s authorized_keys on {repo.name}"))
        if dry_run and changed:
            return True

    probe = ssh_probe(t, settings)
    if probe.state == "ok":
        answer = t.run(ssh.unrestricted_probe_command(settings), user=PG, check=False, timeout=60)
        if not ssh.runs_any_command(answer.stdout):
            out.add(Step("repository accepts postgres's key", False,
                         f"ssh {settings.repo_host_user}@{settings.repo_host_name} ok; other commands refused"))
            return True
        if writable:
            raise HostError(f"{settings.repo_host_name} accepts postgres's key without its forced command "
                            f"{ssh.REMOTE_ONLY_PATH}",
                            hint="another line or an sshd AuthorizedKeysCommand grants that key: check "
                                 f"{settings.repo_host_user}'s keys there")
        out.add(Step("repository accepts postgres's key", False,
                     "WAITING for the repository side: the key is accepted but runs ANY command as "
                     f"{settings.repo_host_user}; it must be restricted to {ssh.REMOTE_ONLY_PATH}"))
        out.waiting = ssh.handover_text(settings, pubkey)
        return False
    if probe.state != "refused-key" or writable:
        raise ssh.probe_error(settings, probe)
    out.add(Step("repository accepts postgres's key", False, "WAITING for the repository side: " + probe.detail))
    out.waiting = ssh.handover_text(settings, pubkey)
    return False


def _ca(t: Remote, settings: Settings, out: Outcome, dry_run: bool) -> None:
    """Lab only: the CA of the S3 endpoint's TLS proxy. The probe needs it too, so it comes first;
    it is public material and changes nothing about archiving. Production uses the system store."""
    if not (settings.s3_verify_tls and settings.aws_ca_bundle):
        return
    from pathlib import Path

    ca = Path(settings.aws_ca_bundle).read_text()
    if dry_run:
        changed = t.read_file(conf.CA_PATH) != ca
    else:
        if not t.exists(conf.CONF_DIR):
            t.run(["install", "-d", "-m", "0750", "-o", "root", "-g", PG, conf.CONF_DIR], sudo=True)
        changed = t.write_file(conf.CA_PATH, ca, mode="0644", owner="root")
    out.add(Step("S3 endpoint CA", changed, conf.CA_PATH))


def _apply_config(t: Remote, settings: Settings, secret: Secret, out: Outcome, dry_run: bool,
                  progress: Progress) -> None:
    dirs = [(conf.CONF_DIR, "root", PG, "0750"), (conf.LOG_PATH, PG, PG, "0770"),
            (conf.spool_path(settings), PG, PG, "0750")]
    for path, owner, group, mode in dirs:
        st = t.run(["stat", "-c", "%U %G %a", path], sudo=True, check=False)
        want = f"{owner} {group} {mode.lstrip('0')}"
        if st.ok and st.stdout.strip() == want:
            continue
        cmd = ["install", "-d", "-m", mode, "-o", owner, "-g", group, path]  # what it amounts to
        if not dry_run:
            ensure_dir(t, path, mode, owner, group)  # the spool is on postgres's data mount: no link followed
        out.add(Step(f"directory {path}", True, want, [shlex.join(cmd)]))
    text = conf.render(settings, secret.reveal())
    current = t.read_file(conf.CONF_PATH)
    if dry_run:
        changed = current != text
    else:
        _say(progress, f"writing {conf.CONF_PATH}")
        changed = t.write_file(conf.CONF_PATH, text, mode=conf.MODE, owner=PG, group=PG)
    out.add(Step(conf.CONF_PATH, changed, f"owner {PG}, mode {conf.MODE}; cipher passphrase from "
                                          f"{settings.cipher_secret_name}",
                 [conf.redact(text)] if dry_run and changed else []))


def _apply_dropin(t: Remote, settings: Settings, out: Outcome, dry_run: bool, progress: Progress) -> None:
    path = conf.dropin_path(settings)
    text = conf.dropin_text(settings)
    confd = path.rsplit("/", 1)[0]
    if not dry_run:  # postgres owns the cluster's configuration directory: refuse a link there, follow none
        ensure_dir(t, confd, "0755", PG)
    # in postgres's directory, as postgres (a link there reaches only what postgres may read)
    if dry_run:
        changed = t.read_file(path, user=PG) != text
    else:
        changed = t.write_file(path, text, mode="0644", owner=PG, group=PG, user=PG)
    out.add(Step(path, changed, "archive_mode, archive_command, restore_command, archive_timeout",
                 [text] if dry_run and changed else []))
    if dry_run:
        return
    ctl = ["pg_ctlcluster", str(settings.postgres_major), "main"]
    if changed:
        t.run(ctl + ["reload"], sudo=True)
    pg = target_cluster(t, settings)
    pending = pg.run("SELECT count(*) FROM pg_settings WHERE pending_restart;", check=False).stdout.strip()
    mode = pg.run("SHOW archive_mode;", check=False).stdout.strip()
    if mode != "on" or (changed and pending not in ("", "0")):
        _say(progress, "restarting PostgreSQL (archive_mode needs a restart)")
        t.run(ctl + ["restart"], sudo=True, timeout=300)
        out.add(Step("postgresql restart", True, "archive_mode takes effect only at server start",
                     [shlex.join(ctl + ["restart"])]))
    elif changed:
        out.add(Step("postgresql reload", True, "archive settings reloaded", [shlex.join(ctl + ["reload"])]))
    arch = psql_json(t, settings, ck.ARCHIVER_SQL)
    wrong = [k for k, v in conf.dropin_settings(settings).items() if k in arch and arch[k] != v]
    if wrong:
        raise HostError(f"PostgreSQL does not use {path}: {', '.join(f'{k}={arch[k]!r}' for k in wrong)}",
                        hint="postgresql.conf must contain include_dir = 'conf.d' and nothing later may override "
                             "these settings")


# ---- check ------------------------------------------------------------------------------------
def check(settings: Settings, max_lag: int = ck.MAX_LAG_SEGMENTS, session=None) -> list[Check]:
    """Archive health, per repository, from the desired configuration's point of view."""
    results: list[Check] = []
    with connection(settings, session) as (sess, t):
        secret = sess.secret(settings.cipher_secret_name)
        current = t.read_file(conf.CONF_PATH)
        want = conf.render(settings, secret.reveal())
        diff = _diff_keys(current or "", want)
        seen = "missing" if current is None else ("matches" if not diff else "differs: " + ", ".join(diff))
        results.append(Check(f"{conf.CONF_PATH} matches Settings", current == want, seen, "rendered from Settings"))
        mode = t.run(["stat", "-c", "%U %a", conf.CONF_PATH], sudo=True, check=False).stdout.strip()
        results.append(Check(f"{conf.CONF_PATH} owner-only", mode in (f"{PG} 640", f"{PG} 600"), mode or "missing",
                             f"{PG} 640/600"))

        probe = ssh_probe(t, settings)
        results.append(Check(f"repository host {settings.repo_host_name} reachable over SSH as postgres",
                             probe.state == "ok",
                             probe.state + (f": {probe.detail}" if probe.detail else ""), "ok",
                             evidence=ssh.probe_error(settings, probe).one_line() if probe.state != "ok" else ""))
        sysid = system_id(t, settings)
        arch = psql_json(t, settings, ck.ARCHIVER_SQL)
        results += ck.archiver_checks(arch, settings)
        results += _rollback_slot_checks(t, settings)
        # a minor upgraded later (by hand, by unattended-upgrades) is caught the day it happens
        ok, seen, hint = compat.engine_verdict("target", psql_json(t, settings, compat.ENGINE_SQL))
        results.append(Check("engine compatibility", ok, seen, compat.EXPECTED, evidence=hint))
        drops = ck.parse_drop_scan(t.run(ck.drop_scan_command(settings), sudo=True, check=False).stdout)
        try:
            facts = repo_facts(t, settings, secret)
        except HostError as exc:
            results.append(Check("pgbackrest info", False, exc.one_line(), "JSON for both repositories"))
            return results
        results += ck.repo_checks(facts, arch, sysid, repo_names(settings), drops, max_lag)
    return results


def _rollback_slot_checks(t, settings: Settings) -> list[Check]:
    """A rollback capture slot holds WAL on the data volume until `invoke cutover-finish` (issue 16)."""
    from ..slot_watch import FAIL_SHARE, WARN_SHARE, slot_checks
    from ..errors import OpsError

    try:
        rows = slot_checks(target_cluster(t, settings), settings)
    except OpsError as exc:
        return [Check("rollback slots readable", False, exc.one_line(), "pg_replication_slots")]
    return [Check(name, level != "fail", ("WARNING: " if level == "warn" else "") + text,
                  f"retained WAL < {int(100 * WARN_SHARE)}% of free space (fails at {int(100 * FAIL_SHARE)}%)")
            for name, level, text in rows]


def _diff_keys(current: str, want: str) -> list[str]:
    def kv(text):
        d, section = {}, ""
        for ln in text.splitlines():
            if ln.startswith("["):
                section = ln.strip()
            elif "=" in ln and not ln.startswith("#"):
                k, v = ln.split("=", 1)
                d[f"{section}{k}"] = v
        return d
    a, b = kv(current), kv(want)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


# ---- backup -----------------------------------------------------------------------------------
def backup_argv(settings: Settings, repo: int, type: str) -> list[str]:
    return ["pgbackrest", f"--stanza={settings.stanza}", f"--repo={repo}", f"--type={type}", "--log-level-console=info",
            "backup"]


def backup(settings: Settings, type: str = "full", progress: Progress = None, session=None) -> dict:
    """One backup into each repository (pgBackRest writes one repository per run), then report them."""
    if type not in ("full", "diff", "incr"):
        from ..errors import ConfigError

        raise ConfigError(f"backup type {type!r} is not full, diff or incr", hint="use --type full")
    with connection(settings, session) as (sess, t):
        secret = sess.secret(settings.cipher_secret_name)
        version = pgbackrest_version(t)
        if version[:2] < MIN_REMOTE_BACKUP:
            raise PreflightError(
                f"pgBackRest {'.'.join(map(str, version))} cannot back up to repo{conf.REPO_SSH} "
                "from the database host",
                hint="pgBackRest >= 2.55 (same version on both hosts) is needed; otherwise run the repo3 backup on the "
                     "repository host with pg1-host pointing here")
        before = repo_facts(t, settings, secret)
        report: dict = {"stanza": settings.stanza, "type": type, "repos": {}}
        for key in (conf.REPO_SSH, conf.REPO_S3):
            cmd = backup_argv(settings, key, type)
            _say(progress, f"{type} backup to {repo_names(settings)[key]}")
            r = t.run(cmd, user=PG, check=False, timeout=6 * 3600)
            if not r.ok:
                raise HostError(f"backup to repo{key} failed: {mask(_tail(r), secret)}",
                                hint="see /var/log/pgbackrest on the target")
        after = repo_facts(t, settings, secret)
        for key in (conf.REPO_SSH, conf.REPO_S3):
            old = {b["label"] for b in before[key].backups}
            new = [b for b in after[key].backups if b["label"] not in old]
            if not new:
                raise HostError(f"no new backup appeared in repo{key}", hint="see /var/log/pgbackrest on the target")
            report["repos"][repo_names(settings)[key]] = new[-1] | {"repo": key}
    return report
