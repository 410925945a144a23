"""SSH trust from the cluster owner on the new host to the pgBackRest repository host.

pgBackRest reaches repo3 by running ``ssh <repo3-host-user>@<repo3-host> pgbackrest ... remote``
as the user that runs pgBackRest here (postgres). So postgres needs a key, the repository host
must accept it, and postgres's known_hosts must hold the repository host's key. That key is pinned
from Settings (``repo.host_key``), never learnt by ssh-keyscan (trust on first use would accept
whoever answers first). On the repository host the key may run only pgBackRest's remote for our
stanza, only from the target: ``from=`` plus a forced command (``remote_only_script``) that the
repository side installs from the hand-over (the lab's setup installs it itself). Facts (pure
parsers) are kept apart from the executor in ``ops``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, HostError

if TYPE_CHECKING:
    from ..settings import Settings

KEY_TYPE = "ed25519"
MARK = "trackerdb-backrest"


@dataclass(frozen=True)
class Probe:
    """Outcome of ``ssh -o BatchMode=yes postgres@repo true`` run as postgres on the target."""

    state: str  # ok | host-key-mismatch | unknown-host-key | refused-key | unreachable | error
    detail: str


def key_path(home: str) -> str:
    return f"{home.rstrip('/')}/.ssh/id_{KEY_TYPE}"


def keygen_command(home: str, comment: str) -> list[str]:
    # -N '' : pgBackRest runs unattended from archive_command; the key is owner-only on the host
    return ["ssh-keygen", "-q", "-t", KEY_TYPE, "-N", "", "-C", comment, "-f", key_path(home)]


def parse_host_key(line: str | None) -> tuple[str, str]:
    """``"ssh-ed25519 AAAA... [comment]"`` -> (type, base64). Anything else is a config error."""
    parts = (line or "").split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ConfigError(
            "the repository host's public key is not configured (repo.host_key)",
            hint="set trackerdb.repo.host_key to the line from /etc/ssh/ssh_host_ed25519_key.pub on the repository "
                 "host, obtained out of band",
        )
    return parts[0], parts[1]


def host_patterns(settings: Settings) -> list[str]:
    names = [settings.repo_host_name]
    if settings.repo_host_ip and settings.repo_host_ip != settings.repo_host_name:
        names.append(settings.repo_host_ip)
    return names


def known_hosts_line(settings: Settings) -> str:
    ktype, kb64 = parse_host_key(settings.repo_host_key)
    return f"{','.join(host_patterns(settings))} {ktype} {kb64}\n"


def merge_known_hosts(current: str | None, settings: Settings) -> tuple[str, bool]:
    """known_hosts text with our pinned line. Returns (text, changed).

    A line that already names the repository host with a *different* key is not overwritten: the
    key on file and the key in Settings disagree, and only a person can say which one is right.
    """
    ktype, kb64 = parse_host_key(settings.repo_host_key)
    wanted = known_hosts_line(settings)
    names = set(host_patterns(settings))
    lines = (current or "").splitlines(keepends=True)
    for ln in lines:
        parts = ln.split()
        if len(parts) < 3 or ln.startswith("#") or parts[0].startswith("|"):
            continue
        if names & set(parts[0].split(",")) and parts[1] == ktype and parts[2] != kb64:
            raise HostError(
                f"postgres's known_hosts already pins a different {ktype} key for {settings.repo_host_name}",
                hint="the repository host was rebuilt or Settings hold the wrong key: verify the key out of band, then "
                     "fix repo.host_key or remove the stale line",
            )
    if wanted in lines or wanted.rstrip("\n") in [ln.rstrip("\n") for ln in lines]:
        return "".join(lines), False
    text = "".join(lines)
    if text and not text.endswith("\n"):
        text += "\n"
    return text + wanted, True


# ---- the repository host's side: one key, one forced command -----------------------------------
# `restrict` alone stops forwarding and PTYs, not commands: the key would run anything as the repository
# user (read or delete every stanza in repo3, the shared one included). So the key is handed over with
# `from="<target IP>"` and `command="<REMOTE_ONLY_PATH>"`: sshd then runs that script whatever the client
# asked for, and the script lets through only pgBackRest's own remote for our stanza (see remote_only_script).
REMOTE_ONLY_PATH = "/usr/local/lib/trackerdb/pgbackrest-remote-only"
REMOTE_ONLY_LOG = "/var/log/trackerdb/pgbackrest-remote-only.log"
REMOTE_ONLY_TAG = "trackerdb-pgbackrest-remote-only"
PROBE_OK = f"{REMOTE_ONLY_TAG}: ok"
PGBACKREST_BIN = "/usr/bin/pgbackrest"
#: the ``<command>:remote`` roles pgBackRest 2.55 starts on a repository host from the database host for what
#: we run (captured from $SSH_ORIGINAL_COMMAND in the lab). Not stanza-delete/-upgrade (never on purpose), not
#: repo-ls/repo-get (arbitrary paths in the repository).
REMOTE_COMMANDS = (
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "expire",
    "info",
    "restore",
    "stanza-create",
    "verify",
)
LOG_LEVELS = ("off", "error", "warn", "info", "detail", "debug", "trace")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.,:+@/-]*")
_IP = re.compile(r"[0-9A-Fa-f:.]+")
_KEY_TYPE = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+")
_KEY_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def target_ip(settings: Settings) -> str:
    """The address the target's SSH connections to the repository host come from (its private IP)."""
    ip = settings.outputs.get("private_ip") or settings.target.address
    if not _IP.fullmatch(ip or ""):
        raise ConfigError(f"target address {ip!r} is not an IP address",
                          hint="the repository key is bound to the target's private IP (stack output private_ip)")
    return ip


def remote_only_script(settings: Settings, pgbackrest: str = PGBACKREST_BIN, log: str = REMOTE_ONLY_LOG) -> str:
    """The forced command of postgres's key on the repository host (POSIX sh; the request is in
    ``$SSH_ORIGINAL_COMMAND``). The request is never evaluated by a shell: any byte outside a small set
    (quotes, ``$``, ``;``, ``|``, ``&``, backslash, newline, glob characters...) refuses it; it is then split
    on spaces with globbing off, each word is compared with fixed values or patterns, and the words
    themselves become pgbackrest's argv. Allowed: ``true`` (the probe; prints PROBE_OK), ``pgbackrest
    version``, and ``pgbackrest [options] <cmd>:remote`` with exactly one ``--stanza=<ours>``,
    ``--remote-type=repo``, ``--repo=<key>`` and ``--repo<key>-path=<repo_path>``; every other option and
    every other request is refused and logged (syslog auth + REMOTE_ONLY_LOG)."""
    stanza, path, key = settings.stanza, settings.repo_path.rstrip("/") or "/", 3
    if not _SAFE_NAME.fullmatch(stanza):
        raise ConfigError(
            f"stanza {stanza!r} has characters the forced command cannot match literally", hint="use [A-Za-z0-9_.-]"
        )
    if not _SAFE_PATH.fullmatch(path) or "/../" in path + "/":
        raise ConfigError(
            f"repository path {path!r} is not a plain absolute path", hint="check the stack output repo_path"
        )
    for p in (pgbackrest, log):
        if not _SAFE_PATH.fullmatch(p):
            raise ConfigError(f"{p!r} is not a plain absolute path", hint="an absolute path")
    q = shlex.quote
    levels = "|".join(f"--log-level-file={lv}" for lv in LOG_LEVELS)
    locks = "|".join(f"--lock={stanza}-{kind}-{n}.lock" for kind in ("archive", "backup")
                     for n in ("[1-9]", "[1-9][0-9]", "[1-2][0-9][0-9]"))
    commands = "|".join(f"{c}:remote" for c in REMOTE_COMMANDS)
    return f"""#!/bin/sh
# {REMOTE_ONLY_TAG}: the only commands the database host's pgBackRest key may run on this repository
# host (authorized_keys command=). Generated by trackerdb backrest.setup for stanza {stanza}; do not edit.
# The request is never evaluated by a shell: unexpected characters refuse it, the words are compared
# with fixed values and become pgbackrest's argv as they are.
set -eu
set -f
STANZA={q(stanza)}
LOG={q(log)}
PGBACKREST={q(pgbackrest)}
req=${{SSH_ORIGINAL_COMMAND-}}
client=${{SSH_CLIENT:-?}}
client=${{client%% *}}
note() {{
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) {REMOTE_ONLY_TAG}[$$] from=$client $1: \
$(printf '%s' "$req" | tr -c '[:print:]' '?' | cut -c1-800)"
    logger -p auth.notice -t {REMOTE_ONLY_TAG} -- "$line" 2>/dev/null || :
    printf '%s\\n' "$line" >> "$LOG" 2>/dev/null || :
}}
refuse() {{
    note "REFUSED ($1)"
    echo "{REMOTE_ONLY_TAG}: refused: $1 (this key runs only pgBackRest's remote for stanza $STANZA)" >&2
    exit 126
}}
ok='A-Za-z0-9_.,:=/+@ -'
case $req in
    '') refuse "no command (interactive login)" ;;
    *[!$ok]*) refuse "characters outside [$ok]" ;;
esac
IFS=' '
# shellcheck disable=SC2086
set -- $req
[ "$#" -ge 1 ] || refuse "no command"
if [ "$#" -eq 1 ] && [ "$1" = true ]; then echo {q(PROBE_OK)}; exit 0; fi
case $1 in pgbackrest|{PGBACKREST_BIN}) ;; *) [ "$1" = "$PGBACKREST" ] || refuse "not pgbackrest" ;; esac
shift
if [ "$#" -eq 1 ] && [ "$1" = version ]; then note ALLOWED; exec "$PGBACKREST" version; fi
[ "$#" -ge 2 ] || refuse "not a pgBackRest remote"
stanzas=0 rtype=0 repo=0 rpath=0 i=0
for a do
    i=$((i + 1))
    if [ "$i" -eq "$#" ]; then
        case $a in {commands}) ;; *) refuse "command $a" ;; esac
        continue
    fi
    case $a in
        --stanza={stanza}) stanzas=$((stanzas + 1)) ;;
        --remote-type=repo) rtype=1 ;;
        --repo={key}) repo=1 ;;
        --repo{key}-path={path}) rpath=1 ;;
        --process=[0-9]|--process=[0-9][0-9]|--process=[0-9][0-9][0-9]) ;;
        --exec-id=*[!0-9a-f-]*) refuse "option $a" ;;
        --exec-id=[0-9]*-[0-9a-f]*) ;;
        --log-level-console=off|--log-level-stderr=off|--log-level-stderr=error) ;;
        {levels}) ;;
        {locks}) ;;
        --archive-async|--no-archive-async) ;;
        --pg1-path=/*) ;;
        *) refuse "option ${{a%%=*}}" ;;
    esac
done
[ "$stanzas" -eq 1 ] || refuse "not exactly one --stanza=$STANZA"
[ "$rtype" -eq 1 ] && [ "$repo" -eq 1 ] && [ "$rpath" -eq 1 ] || \
refuse "missing --remote-type=repo, --repo={key} or --repo{key}-path={path}"
note ALLOWED
exec "$PGBACKREST" "$@"
"""


def script_stanza(text: str | None) -> str | None:
    """The stanza an installed forced command serves (None: not installed, or not ours)."""
    if not text or REMOTE_ONLY_TAG not in text:
        return None
    m = re.search(r"^STANZA=(\S+)$", text, re.M)
    return shlex.split(m.group(1))[0] if m else None


def authorized_key_line(settings: Settings, pubkey: str) -> str:
    """The repository host's ``authorized_keys`` entry: only from the target, only the forced command,
    nothing forwarded, no PTY."""
    parts = pubkey.split()
    if len(parts) < 2 or not _KEY_TYPE.fullmatch(parts[0]) or not _KEY_B64.fullmatch(parts[1]):
        raise HostError("postgres's public key on the target is not an OpenSSH public key",
                        hint=f"remove {key_path('~postgres')}(.pub) on the target and re-run backrest.setup")
    comment = parts[2] if len(parts) > 2 and _SAFE_NAME.fullmatch(parts[2].replace("@", "")) else MARK
    return f'restrict,from="{target_ip(settings)}",command="{REMOTE_ONLY_PATH}" {parts[0]} {parts[1]} {comment}'


def authorized_keys_merge(current: str | None, line: str) -> tuple[str, bool]:
    """``authorized_keys`` with our one line exactly: a line with the same key (an unrestricted or older
    entry) is replaced, every other key is left exactly as it was."""
    key = line.split()[1:3]
    kept: list[str] = []
    ours: list[str] = []
    for ln in (current or "").splitlines():
        toks = ln.split()
        (ours if any(toks[j:j + 2] == key for j in range(len(toks))) else kept).append(ln)
    if ours == [line]:
        return current or "", False
    return "".join(ln + "\n" for ln in kept + [line]), True


def probe_command(settings: Settings, timeout: int = 10) -> list[str]:
    """The same SSH pgBackRest will make, strict about the host key, never prompting."""
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={timeout}",
            "-o", "PasswordAuthentication=no", f"{settings.repo_host_user}@{settings.repo_host_name}", "true"]


def remote_version_command(settings: Settings, timeout: int = 10) -> list[str]:
    """pgBackRest's version on the repository host, through the same SSH pgBackRest uses."""
    return probe_command(settings, timeout)[:-1] + ["pgbackrest", "version"]


def parse_probe(exit_code: int, stderr: str) -> Probe:
    err = stderr.strip()
    if exit_code == 0:
        return Probe("ok", "")
    low = err.lower()
    if "remote host identification has changed" in low or "host key for" in low and "has changed" in low:
        return Probe("host-key-mismatch", _last(err))
    if "host key verification failed" in low or "no " in low and "host key is known" in low:
        return Probe("unknown-host-key", _last(err))
    if REMOTE_ONLY_PATH in err and ("no such file" in low or "not found" in low or "permission denied" in low):
        # the key line is in place but its forced command is not: the repository side is half done
        return Probe("refused-key", f"the forced command {REMOTE_ONLY_PATH} is not installed on the repository host")
    if "permission denied" in low:
        return Probe("refused-key", _last(err))
    if any(
        s in low
        for s in (
            "timed out",
            "no route to host",
            "connection refused",
            "could not resolve",
            "name or service not known",
            "network is unreachable",
            "temporary failure in name resolution",
        )
    ):
        return Probe("unreachable", _last(err))
    return Probe("error", _last(err) or f"ssh exited {exit_code}")


UNRESTRICTED_MARK = "trackerdb-unrestricted-key"


def unrestricted_probe_command(settings: Settings, timeout: int = 10) -> list[str]:
    """Asks the repository host to ``echo`` a marker: a key that may run any command prints it; our forced
    command (or any other restriction) refuses it. Logged there as one refused request per setup."""
    return probe_command(settings, timeout)[:-1] + ["echo", UNRESTRICTED_MARK]


def runs_any_command(stdout: str) -> bool:
    return UNRESTRICTED_MARK in stdout.split()


def _last(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("@@@")]
    return lines[-1][:300] if lines else ""


def probe_error(settings: Settings, probe: Probe) -> HostError:
    where = f"{settings.repo_host_user}@{settings.repo_host_name}"
    if probe.state == "host-key-mismatch":
        return HostError(
            f"the repository host {where} presents a host key that differs from the pinned one ({probe.detail})",
            hint="do not proceed: verify the host's key out of band before changing repo.host_key",
        )
    if probe.state == "unknown-host-key":
        return HostError(f"the repository host {where} could not be verified against the pinned key ({probe.detail})",
                         hint="check repo.host_key (type and value) and repo_host_name")
    if probe.state == "refused-key":
        return HostError(
            f"the repository host {where} refuses postgres's key ({probe.detail})",
            hint="the repository side has not installed the key yet: re-run backrest.setup for "
                 "the exact line to hand over",
        )
    if probe.state == "unreachable":
        return HostError(f"the repository host {where} is unreachable ({probe.detail})",
                         hint="check the repository host, DNS and the security group's SSH rule to it")
    return HostError(
        f"SSH to the repository host {where} failed: {probe.detail}",
        hint="run the ssh command as postgres by hand to see why",
    )


def handover_text(settings: Settings, pubkey: str) -> str:
    """Exactly what the repository host's owners need to do, and nothing secret."""
    user, host = settings.repo_host_user, settings.repo_host_name
    return (
        f"Waiting for the repository side. Please ask the owners of {host} to do three things on that host:\n\n"
        f"1. Install this forced command as {REMOTE_ONLY_PATH}, owned by root, mode 0755 (its directory root-owned\n"
        f"   and not writable by {user}). It lets this key run only pgBackRest's remote for stanza {settings.stanza}\n"
        f"   (archive-push/-get, backup, check, info, stanza-create, restore, expire, verify) with --repo3-path=\n"
        f"   {settings.repo_path}; everything else (a shell, `id`, `rm`, another stanza such as "
        f"{settings.shared_stanza})\n"
        f"   is refused and logged to syslog (auth, tag {REMOTE_ONLY_TAG}) and {REMOTE_ONLY_LOG}:\n\n"
        f"----- {REMOTE_ONLY_PATH} -----\n{remote_only_script(settings)}----- end -----\n\n"
        f"2. Optionally, for the file log: install -d -m 0755 -o root -g root {REMOTE_ONLY_LOG.rsplit('/', 1)[0]} &&\n"
        f"   install -m 0640 -o {user} -g {user} /dev/null {REMOTE_ONLY_LOG}   (only if it does not exist yet)\n\n"
        f"3. Add this line to ~{user}/.ssh/authorized_keys (user {user}, mode 0600), replacing any other line with\n"
        f"   this key; it works only from {target_ip(settings)} and only through that forced command:\n\n"
        f"{authorized_key_line(settings, pubkey)}\n\n"
        f"and confirm that the repository path {settings.repo_path} is writable by {user}.\n"
        f"Know the limit: this stops commands, not pgBackRest's remote protocol, which does not confine a client to\n"
        f"its stanza (a hand-built client can read, write or remove any path {user} can reach, its own\n"
        f"authorized_keys and shell start-up files included). Only a separate OS user per stanza on {host}, unable to\n"
        f"reach the other stanzas' directories, isolates stanzas from each other. See the README, Security.\n"
        f"We pin their host key as: {known_hosts_line(settings).strip()}\n"
        f"Then re-run `invoke backrest.setup`; it continues from here.\n"
    )


def authorized_keys_path(home: str) -> str:
    return f"{home.rstrip('/')}/.ssh/authorized_keys"


def home_command(user: str) -> str:
    return f"getent passwd {shlex.quote(user)} | cut -d: -f6"
