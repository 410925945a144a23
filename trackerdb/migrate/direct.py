"""The final dump host to host: the target pulls it from the source over SSH, not through the operator.

Why SSH from the target to the source (and not ``pg_dump`` on the target against the source over TLS):
the source is a shared host with another 1.1 TB database. Pulling the file the detached dump job
already wrote needs no new database role, no pg_hba change and no password on the target; the
snapshot/manifest logic stays where it is (``dump.dump_script``). What the source grants is one key,
in postgres's ``authorized_keys``, with ``restrict`` (no forwarding, no PTY, no ~/.ssh/rc),
``from="<target's address>"`` and a forced ``command=`` (:func:`reader_script`) that can do two
things only: answer ``probe``, or print ``<jobs>/dump-<16 hex>/<db>.dump`` from a byte offset on.
The key is made on the target and its private half never leaves it. The source's host key is pinned
on the target from the operator's own pinned connection to the source (never learnt by ssh-keyscan).

The network needs one flow: the target's egress TCP 22 to the source (Pulumi ``directTransfer`` +
``sourceCidr``, exported as ``direct_transfer``/``source_cidr``, checked by ``infra.check``), and the
source's firewall letting the target's address in on 22.

The pull is a detached job on the target (``trackerdb.detached``): a killed operator's re-run
attaches to it, or starts it again from the partial file's size (the partial is named by the dump's
SHA-256, so it is always a prefix of this very dump). On arrival the file's size and SHA-256 are
checked against the source's before it is moved to where ``restore`` reads it.

Pure builders first; the executor (``ensure_trust``, ``probe``, ``pull``) after.
"""

from __future__ import annotations

import re
import shlex
import time
from typing import TYPE_CHECKING

from .. import detached
from ..backrest.ssh import Probe, parse_probe
from ..errors import HostError
from ..safe_paths import DigestMismatchError, adopt_file, ensure_dir
from .restore_plan import upload_dir, upload_path

if TYPE_CHECKING:
    from ..settings import Settings

READER_PATH = "/usr/local/lib/trackerdb/dump-read"
SOURCE_USER = "postgres"  # owns the dump job's files on the source
KEY_NAME = "trackerdb_transfer"
MARK = "trackerdb-transfer"
PROBE_OK = "trackerdb-dump-read ok"
_KEY = re.compile(r"^[0-9a-f]{16}$")
HOST_KEY_LINE = ("for t in ed25519 ecdsa rsa; do f=/etc/ssh/ssh_host_${t}_key.pub; "
                 "if [ -f $f ]; then cat $f; exit 0; fi; done; exit 1")


# ---- pure builders ----------------------------------------------------------------------------

def reader_script(jobs_base: str, database: str) -> str:
    """The forced command of the transfer key on the source (``sh``; the request is in
    ``$SSH_ORIGINAL_COMMAND``): ``probe``, or ``read dump-<16 hex> <offset>``. Anything else is refused."""
    hexes = "[0-9a-f]" * 16
    path = f"{shlex.quote(jobs_base.rstrip('/'))}/\"$2\"/{shlex.quote(database + '.dump')}"
    return f"""#!/bin/sh
# trackerdb: the only command the target's transfer key may run (authorized_keys command=).
set -eu
set -f
# shellcheck disable=SC2086
set -- ${{SSH_ORIGINAL_COMMAND:-}}
if [ "$#" -eq 1 ] && [ "$1" = probe ]; then echo "{PROBE_OK}"; exit 0; fi
if [ "$#" -ne 3 ] || [ "$1" != read ]; then echo "trackerdb-dump-read: refused (only probe or read)" >&2; exit 2; fi
case "$2" in dump-{hexes}) ;; *) echo "trackerdb-dump-read: refused job name" >&2; exit 2;; esac
case "$3" in ""|*[!0-9]*) echo "trackerdb-dump-read: refused offset" >&2; exit 2;; esac
f={path}
[ -f "$f" ] || {{ echo "trackerdb-dump-read: no dump for $2" >&2; exit 3; }}
exec tail -c +"$(( $3 + 1 ))" -- "$f"
"""


def key_path(home: str) -> str:
    return f"{home.rstrip('/')}/.ssh/{KEY_NAME}"


def known_hosts_path(home: str) -> str:
    return f"{home.rstrip('/')}/.ssh/{KEY_NAME}_known_hosts"


def keygen_command(home: str) -> list[str]:
    # -N '': the pull runs unattended as a detached job; the key is postgres-only on the target
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", MARK, "-f", key_path(home)]


def authorized_key_line(pubkey: str, target_ip: str) -> str:
    """The source's ``authorized_keys`` entry: only the reader, only from the target, nothing forwarded."""
    parts = pubkey.split()
    if len(parts) < 2 or not parts[0].startswith("ssh-"):
        raise HostError("the target's transfer key is not an OpenSSH public key",
                        hint="remove it on the target; re-run")
    if not re.fullmatch(r"[0-9A-Fa-f:.]+", target_ip):
        raise HostError(f"target address {target_ip!r} is not an IP address", hint="check the stack output private_ip")
    return f'restrict,from="{target_ip}",command="{READER_PATH}" {parts[0]} {parts[1]} {MARK}'


def authorized_keys_merge(current: str | None, line: str) -> tuple[str, bool]:
    """``authorized_keys`` with our one line: an earlier line of ours (a rebuilt target's key) or any
    line with this key is replaced; every other key is left exactly as it was."""
    key = line.split()[-3:-1]
    kept, ours = [], []
    for ln in (current or "").splitlines():
        toks = ln.split()
        if (toks and toks[-1] == MARK) or any(toks[j:j + 2] == key for j in range(len(toks))):
            ours.append(ln)
        else:
            kept.append(ln)
    if ours == [line]:
        return current or "", False
    return "".join(ln + "\n" for ln in kept + [line]), True


def authorized_keys_without_ours(current: str | None) -> tuple[str, bool]:
    """``authorized_keys`` without our transfer line(s) (marked ``trackerdb-transfer`` and forcing the
    reader); every other line kept exactly. (text, whether it changed)."""
    if not current:
        return current or "", False
    lines = current.splitlines(keepends=True)
    kept = [ln for ln in lines if not _ours(ln)]
    if len(kept) == len(lines):
        return current, False
    return "".join(kept), True


def _ours(line: str) -> bool:
    toks = line.split()
    return bool(toks) and toks[-1] == MARK and f'command="{READER_PATH}"' in line


def authorized_keys_path(home: str) -> str:
    return f"{home.rstrip('/')}/.ssh/authorized_keys"


def remove_reader_line() -> str:
    """Shell line (root; ``/usr/local/lib/trackerdb`` is root's) that removes the reader and, when empty,
    its directory; prints ``removed`` or ``absent``."""
    q = shlex.quote
    d = READER_PATH.rsplit("/", 1)[0]
    return (f"if [ -e {q(READER_PATH)} ] || [ -L {q(READER_PATH)} ]; then rm -f -- {q(READER_PATH)} && "
            f"{{ rmdir -- {q(d)} 2>/dev/null || true; }} && echo removed; else echo absent; fi")


def remove_files_line(paths: list[str]) -> str:
    """Shell line (run as the files' owner) that removes ``paths``; prints ``removed`` when any was there."""
    q = " ".join(shlex.quote(p) for p in paths)
    return (f"n=0; for f in {q}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then rm -f -- \"$f\" && n=1; fi; done; "
            "[ $n = 1 ] && echo removed || echo absent")


def known_hosts_line(address: str, host_key: str) -> str:
    parts = host_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise HostError("the source's host key could not be read",
                        hint="check /etc/ssh/ssh_host_ed25519_key.pub on the source")
    return f"{address} {parts[0]} {parts[1]}\n"


def ssh_argv(home: str, address: str, request: list[str], port: int = 22, timeout: int = 10) -> list[str]:
    """ssh from the target's postgres to the source's reader: pinned host key, our key only, no prompts."""
    return ["ssh", "-T", "-i", key_path(home), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts_path(home)}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "PasswordAuthentication=no", "-o",
            f"ConnectTimeout={timeout}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-p", str(port),
            f"{SOURCE_USER}@{address}", "--", *request]


def read_request(key: str, offset: int) -> list[str]:
    if not _KEY.match(key) or offset < 0:
        raise ValueError(f"bad job key {key!r} or offset {offset}")
    return ["read", f"dump-{key}", str(int(offset))]


def partial_path(jobs_base: str, database: str, sha256: str) -> str:
    return f"{jobs_base.rstrip('/')}/{database}-{sha256[:16]}.dump.partial"


def pull_script(home: str, address: str, key: str, partial: str, port: int = 22) -> str:
    """The target's detached pull: append the source's dump from the partial file's size on."""
    if not _KEY.match(key):
        raise ValueError(f"bad job key {key!r}")
    q = shlex.quote
    ssh = shlex.join(ssh_argv(home, address, ["read", f"dump-{key}"], port=port))
    # One writer at a time: the lock is on the partial's open file, which the ssh inherits. A job killed by
    # its PID leaves its ssh running and appending (the wrapper's death does not reach its children); a
    # re-run started meanwhile waits for that writer to end, then continues from the size it left.
    return f"""set -eu
umask 077
p={q(partial)}
exec 9>>"$p"
echo "waiting for an earlier pull still writing" > phase
flock 9
off=$(stat -c %s "$p")
echo "pull from byte $off" > phase
{ssh} "$off" >&9
echo pulled > phase
"""


def relay_warning(reason: str) -> str:
    return (f"WARNING: direct transfer unavailable ({reason}): FALLING BACK to the relay through this machine "
            "(the dump crosses the operator's link twice)")


def dry_run_lines(settings: Settings) -> list[str]:
    """What the cutover will do with the final dump's bytes (no host is touched)."""
    if settings.transfer == "relay":
        why = "trackerdb.transfer: relay" if settings.transfer_explicit else "stack output direct_transfer is false"
        return [f"dump: relay: source -> this machine -> target ({why})"]
    address = source_address(settings) if settings.source else "<source>"
    target_ip = settings.outputs.get("private_ip") or settings.target.address
    on_failure = "refuse the cutover" if settings.transfer_explicit else "fall back to the relay, loudly"
    return [f"preflight: a transfer key for postgres on the target; the source's host key pinned there for {address}; "
            f"on the source {READER_PATH} and in postgres's authorized_keys: "
            f'restrict,from="{target_ip}",command="{READER_PATH}" <the target\'s key> {MARK}',
            f"dump: direct: the target pulls it from {SOURCE_USER}@{address}:22 (SSH, egress rule directTransfer); "
            f"if the probe fails: {on_failure}"]


def probe_failure(probe: Probe, address: str) -> str:
    hints = {"unreachable": "is the security group's egress SSH rule to the source (directTransfer/sourceCidr) "
                            "deployed, "
                            "and does the source's firewall let the target in on 22?",
             "refused-key": "the source refuses the transfer key: is the entry in postgres's authorized_keys (the "
                            "preflight "
                            "installs it), and does the source's sshd let postgres log in (AllowUsers/AllowGroups; a "
                            "'!'-locked account without UsePAM)?",
             "host-key-mismatch": "the source's host key differs from the one pinned on the target",
             "unknown-host-key": "the source's host key is not pinned on the target"}
    return (f"target -> {SOURCE_USER}@{address}:22 {probe.state}: {probe.detail or 'no detail'} "
            f"({hints.get(probe.state, 'see ssh')})")


# ---- executor ---------------------------------------------------------------------------------

def source_address(settings: Settings) -> str:
    return settings.transfer_source_address or settings.require_source().address


def ensure_trust(settings: Settings, src, tgt, source_jobs_base: str) -> list[str]:
    """Key on the target, the source's host key pinned there, the reader and the restricted key on the
    source. Idempotent; returns what changed."""
    # Everything under postgres's home is read and written as postgres, never as root (issue 23):
    # root makes only ~/.ssh (refusing a planted link) and the reader, in a root-owned directory.
    changed = []
    pg = "postgres"
    home_t = detached.home_of(tgt)
    if not tgt.exists(key_path(home_t)):
        ensure_dir(tgt, f"{home_t}/.ssh", "0700", pg)
        tgt.run(keygen_command(home_t), user=pg)
        changed.append("transfer key made on the target")
    pub = tgt.run(["cat", key_path(home_t) + ".pub"], user=pg).stdout
    # read over our own pinned connection to the source, never learnt from the network
    host_key = src.run(HOST_KEY_LINE, sudo=True, check=False).stdout
    if tgt.write_file(known_hosts_path(home_t), known_hosts_line(source_address(settings), host_key),
                      mode="0644", owner=pg, user=pg):
        changed.append("source host key pinned on the target")
    ensure_dir(src, READER_PATH.rsplit("/", 1)[0], "0755", "root")
    if src.write_file(READER_PATH, reader_script(source_jobs_base, settings.database), mode="0755", owner="root"):
        changed.append(f"reader {READER_PATH} on the source")
    home_s = detached.home_of(src, SOURCE_USER)
    ensure_dir(src, f"{home_s}/.ssh", "0700", SOURCE_USER)
    ak = authorized_keys_path(home_s)
    line = authorized_key_line(pub, settings.outputs.get("private_ip") or tgt.spec.address)
    text, ch = authorized_keys_merge(src.read_file(ak, user=SOURCE_USER), line)
    if ch:
        src.write_file(ak, text, mode="0600", owner=SOURCE_USER, user=SOURCE_USER)
        changed.append("restricted transfer key in the source's authorized_keys")
    return changed


def remove_trust(settings: Settings, src, tgt) -> list[str]:
    """The end of the direct transfer's trust (``cutover-finish``): our line in the source's
    ``authorized_keys`` and the reader there, the key and the pinned host key on the target. Every
    other key is left exactly as it was. Idempotent; returns what was removed. ``src`` may be None
    (no source any more): the target's half still goes."""
    removed = []
    pg = "postgres"
    if src is not None:
        ak = authorized_keys_path(detached.home_of(src, SOURCE_USER))
        current = src.read_file(ak, user=SOURCE_USER)
        text, ch = authorized_keys_without_ours(current)
        if ch:
            src.write_file(ak, text, mode="0600", owner=SOURCE_USER, user=SOURCE_USER)
            removed.append("the transfer key's line in the source's authorized_keys")
        if src.run(remove_reader_line(), sudo=True).stdout.strip() == "removed":
            removed.append(f"reader {READER_PATH} on the source")
    home_t = detached.home_of(tgt)
    files = [key_path(home_t), key_path(home_t) + ".pub", known_hosts_path(home_t)]
    if tgt.run(remove_files_line(files), user=pg).stdout.strip() == "removed":
        removed.append("transfer key and pinned source host key on the target")
    return removed


def probe(settings: Settings, tgt) -> Probe:
    """Does the direct path work, end to end (network, host key, key, forced command)?"""
    home = detached.home_of(tgt)
    r = tgt.run(ssh_argv(home, source_address(settings), ["probe"]), user="postgres", check=False, timeout=60)
    if r.ok and PROBE_OK not in r.stdout:
        return Probe("error", f"the source answered {r.stdout.strip()[:80]!r}, not the reader")
    return parse_probe(r.exit_code, r.stderr)


def pull(settings: Settings, tgt, key: str, remote_size: int, remote_sha: str, progress=None, say=None,
         poll_s: float = 1.0) -> str:
    """The target pulls the source's dump of job ``key``; returns its path on the target (``upload_path``),
    size and SHA-256 checked. Attaches to a pull already running."""
    say = say or (lambda m: None)
    progress = progress or (lambda done, total: None)
    db = settings.database
    home = detached.home_of(tgt)
    dest = upload_path(settings.data_mount, db, remote_sha)
    # sizes and hashes are read as postgres (the jobs base is postgres's; the upload directory is
    # group-readable by postgres): root never opens what postgres could have linked (issue 23)
    if _size(tgt, dest) == remote_size and _sha(tgt, dest) == remote_sha:
        say(f"dump: already on {tgt.name} ({dest}), SHA-256 matches")
        return dest
    base = detached.jobs_base(settings.data_mount)
    job = detached.Job(tgt, base, f"pull-{key}")
    partial = partial_path(base, db, remote_sha)
    st = job.status()
    if st.active:
        say(f"dump: attaching to the pull running on {tgt.name} ({job.dir})")
    else:
        have = max(_size(tgt, partial), 0)
        if have > remote_size:
            tgt.run(["rm", "-f", partial], user="postgres")
            have = 0
        if have < remote_size:
            how = job.start(pull_script(home, source_address(settings), key, partial))
            say(f"dump: {tgt.name} pulls it from {source_address(settings)} host to host ({how}, from byte {have})")
    while True:
        st = job.status()
        progress(max(_size(tgt, partial), 0), remote_size)
        if not st.active:
            break
        time.sleep(poll_s)
    if _size(tgt, partial) != remote_size and not (st.state == "done" and st.rc == 0):
        raise HostError(f"the pull on {tgt.name} failed (job {st.state}, exit {st.rc}): {_last(job.read('log'))}",
                        hint="re-run: the pull continues from where it stopped")
    size = _size(tgt, partial)
    if size != remote_size:
        tgt.run(["rm", "-f", partial], user="postgres")
        raise HostError(f"the pulled dump differs from the source's ({size} of {remote_size} bytes)",
                        hint="the partial file was removed; re-run to pull it again")
    user = tgt.spec.user
    # where restore reads it (its setgid upload directory: the SSH user writes, postgres reads). Root
    # moves the entry and re-owns and hashes it through one descriptor, following no link: the bytes
    # checked are the bytes re-owned (a check by name, then mv/chown/chmod, left a window between).
    ensure_dir(tgt, upload_dir(settings.data_mount), "2750", user, "postgres")
    try:
        adopt_file(tgt, partial, dest, mode="0640", owner=user, group="postgres", sha256=remote_sha)
    except DigestMismatchError:
        raise HostError(f"the pulled dump differs from the source's ({size} of {remote_size} bytes, SHA-256 differs)",
                        hint="the pulled file was removed; re-run to pull it again") from None
    return dest


def _size(host, path: str) -> int:
    """Bytes of ``path`` on ``host`` (read as postgres); -1 when there is no such file."""
    r = host.run(["stat", "-L", "-c", "%s", path], user="postgres", check=False)
    return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else -1


def _sha(host, path: str) -> str:
    r = host.run(["sha256sum", path], user="postgres", check=False, timeout=3600)
    return r.stdout.split()[0] if r.ok and r.stdout.split() else ""


def _last(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def choose(settings: Settings, src, tgt, say=None) -> dict:
    """The cutover preflight's decision: ``{"transfer": "direct"|"relay", "why": ...}``. A direct path
    that fails its probe falls back to the relay loudly, or, when ``trackerdb.transfer: direct`` was
    set explicitly, is refused (one line + hint)."""
    from ..errors import OpsError, PreflightError

    say = say or (lambda m: None)
    if settings.transfer == "relay":
        why = "trackerdb.transfer: relay" if settings.transfer_explicit else "the stack says direct_transfer: false"
        say(f"transfer: relay through this machine ({why})")
        return {"transfer": "relay", "why": why}
    address = source_address(settings)
    try:
        changed = ensure_trust(settings, src, tgt, detached.jobs_base(detached.home_of(src)))
        result = probe(settings, tgt)
    except OpsError as exc:
        changed, result = [], Probe("error", exc.one_line())
    if result.state == "ok":
        say(f"transfer: direct, {tgt.name} pulls the final dump from {SOURCE_USER}@{address} "
            f"(probe ok{'; ' + ', '.join(changed) if changed else ''})")
        return {"transfer": "direct", "why": "probe ok", "source_address": address, "changed": changed}
    reason = probe_failure(result, address)
    if settings.transfer_explicit:
        raise PreflightError(f"direct transfer refused: {reason}",
                             hint="fix that path, or set trackerdb.transfer: relay to send the dump through this "
                                  "machine")
    say(relay_warning(reason))
    return {"transfer": "relay", "why": reason}
