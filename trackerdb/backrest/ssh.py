"""SSH trust from the cluster owner on the new host to the pgBackRest repository host.

pgBackRest reaches repo3 by running ``ssh <repo3-host-user>@<repo3-host> pgbackrest ... remote``
as the user that runs pgBackRest here (postgres). So postgres needs a key, the repository host
must accept it, and postgres's known_hosts must hold the repository host's key. That key is pinned
from Settings (``repo.host_key``), never learnt by ssh-keyscan (trust on first use would accept
whoever answers first). Facts (pure parsers) are kept apart from the executor in ``ops``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..errors import ConfigError, HostError

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
            hint="set trackerdb.repo.host_key to the line from /etc/ssh/ssh_host_ed25519_key.pub on the repository host, obtained out of band",
        )
    return parts[0], parts[1]


def host_patterns(settings) -> list[str]:
    names = [settings.repo_host_name]
    if settings.repo_host_ip and settings.repo_host_ip != settings.repo_host_name:
        names.append(settings.repo_host_ip)
    return names


def known_hosts_line(settings) -> str:
    ktype, kb64 = parse_host_key(settings.repo_host_key)
    return f"{','.join(host_patterns(settings))} {ktype} {kb64}\n"


def merge_known_hosts(current: str | None, settings) -> tuple[str, bool]:
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
                hint="the repository host was rebuilt or Settings hold the wrong key: verify the key out of band, then fix repo.host_key or remove the stale line",
            )
    if wanted in lines or wanted.rstrip("\n") in [ln.rstrip("\n") for ln in lines]:
        return "".join(lines), False
    text = "".join(lines)
    if text and not text.endswith("\n"):
        text += "\n"
    return text + wanted, True


# pgBackRest needs a plain command channel to the repository host and nothing else: `restrict` turns off
# port/agent/X11 forwarding, PTYs and ~/.ssh/rc for this key. (No forced command: pgBackRest starts its
# remote with arguments that vary per command and option set, so a fixed command would break it.)
KEY_OPTIONS = "restrict"


def authorized_key_line(pubkey: str) -> str:
    return f"{KEY_OPTIONS} {pubkey.strip()}"


def authorized_keys_merge(current: str | None, pubkey: str) -> tuple[str, bool]:
    """authorized_keys with ``pubkey`` present once and restricted (matched on type+key, not on comment).
    A line for the same key without ``restrict`` gains it; options the repository side set (``from=``)
    are kept."""
    want = pubkey.split()[:2]
    lines = (current or "").splitlines(keepends=True)
    for i, ln in enumerate(lines):
        toks = ln.split()
        at = next((j for j in range(len(toks)) if toks[j:j + 2] == want), None)
        if at is None:
            continue
        if at == 0:
            lines[i] = f"{KEY_OPTIONS} {ln.strip()}\n"
            return "".join(lines), True
        options = ln.strip().split(None, 1)[0] if at == 1 else None
        if options is not None and KEY_OPTIONS in options.split(","):
            return "".join(lines), False
        lines[i] = f"{KEY_OPTIONS},{ln.strip()}\n" if options is not None else f"{KEY_OPTIONS} {' '.join(toks[at:])}\n"
        return "".join(lines), True
    text = "".join(lines)
    if text and not text.endswith("\n"):
        text += "\n"
    return text + authorized_key_line(pubkey) + "\n", True


def probe_command(settings, timeout: int = 10) -> list[str]:
    """The same SSH pgBackRest will make, strict about the host key, never prompting."""
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={timeout}",
            "-o", "PasswordAuthentication=no", f"{settings.repo_host_user}@{settings.repo_host_name}", "true"]


def remote_version_command(settings, timeout: int = 10) -> list[str]:
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
    if "permission denied" in low:
        return Probe("refused-key", _last(err))
    if any(s in low for s in ("timed out", "no route to host", "connection refused", "could not resolve",
                              "name or service not known", "network is unreachable", "temporary failure in name resolution")):
        return Probe("unreachable", _last(err))
    return Probe("error", _last(err) or f"ssh exited {exit_code}")


def _last(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("@@@")]
    return lines[-1][:300] if lines else ""


def probe_error(settings, probe: Probe) -> HostError:
    where = f"{settings.repo_host_user}@{settings.repo_host_name}"
    if probe.state == "host-key-mismatch":
        return HostError(f"the repository host {where} presents a host key that differs from the pinned one ({probe.detail})",
                         hint="do not proceed: verify the host's key out of band before changing repo.host_key")
    if probe.state == "unknown-host-key":
        return HostError(f"the repository host {where} could not be verified against the pinned key ({probe.detail})",
                         hint="check repo.host_key (type and value) and repo_host_name")
    if probe.state == "refused-key":
        return HostError(f"the repository host {where} refuses postgres's key ({probe.detail})",
                         hint="the repository side has not installed the key yet: re-run backrest.setup for the exact line to hand over")
    if probe.state == "unreachable":
        return HostError(f"the repository host {where} is unreachable ({probe.detail})",
                         hint="check the repository host, DNS and the security group's SSH rule to it")
    return HostError(f"SSH to the repository host {where} failed: {probe.detail}", hint="run the ssh command as postgres by hand to see why")


def handover_text(settings, pubkey: str) -> str:
    """Exactly what the repository host's owners need to do, and nothing secret."""
    return (
        f"Waiting for the repository side. Please ask the owners of {settings.repo_host_name} to add this line to\n"
        f"~{settings.repo_host_user}/.ssh/authorized_keys on that host (user {settings.repo_host_user}, mode 0600):\n\n"
        f"{authorized_key_line(pubkey)}\n\n"
        f"(`restrict`: no forwarding, no PTY; pgBackRest needs only the command channel), "
        f"and to confirm that the repository path {settings.repo_path} is writable by {settings.repo_host_user}.\n"
        f"We pin their host key as: {known_hosts_line(settings).strip()}\n"
        f"Then re-run `invoke backrest.setup`; it continues from here.\n"
    )


def authorized_keys_path(home: str) -> str:
    return f"{home.rstrip('/')}/.ssh/authorized_keys"


def home_command(user: str) -> str:
    return f"getent passwd {shlex.quote(user)} | cut -d: -f6"
