"""pgBackRest configuration as text: /etc/pgbackrest/pgbackrest.conf and our PostgreSQL drop-in. Pure.

Layout follows the runbook's "Proposed pgBackRest Layout": repo3 on the repository host over SSH,
repo2 on S3, zstd, async archiving with a bounded queue. Two deliberate departures:

* ``spool-path`` lives on the data volume (``<data_mount>/pgbackrest-spool``), not the runbook's
  ``/var/spool/pgbackrest``. ``/var/spool`` is on the 25 GB root disk; the spool holds the async
  archive-push status files and, during any restore or standby replay, up to
  ``archive-get-queue-max`` of prefetched WAL. Everything WAL-shaped stays on the volume that is
  sized for WAL (the same one ``archive-push-queue-max`` is measured against, pg_wal), and a full
  spool can never fill the root filesystem and take the OS down with it.
* Every option that is a secret (cipher passphrases; in the lab also moto's fixed S3 keys) is only
  ever rendered into this file on the host, which is written through stdin with owner-only mode.

Topology (why everything runs on the database host): pgBackRest >= 2.55 lets ``backup`` run on
the PostgreSQL host against a repository behind ``repoN-host`` ("Allow backup command to operate
on remote repositories", 2.55.0 release notes, pgbackrest PR #2512); ``stanza-create``, ``check``,
``info`` and ``archive-push``/``archive-get`` iterate over every configured repository, local or
remote. So the runbook's layout works as-is from the database host as user postgres, with SSH
trust in one direction only (postgres@db -> postgres@repository host). Older pgBackRest refuses a
backup to a remote repository ("backup command must be run on the repository host", issue #2510):
``ops.backup`` detects that and says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..settings import Settings

CONF_PATH = "/etc/pgbackrest/pgbackrest.conf"
CONF_DIR = "/etc/pgbackrest"
LOG_PATH = "/var/log/pgbackrest"
CA_PATH = "/etc/pgbackrest/s3-ca.pem"
OWNER = "postgres"
MODE = "0640"

#: repository keys, as in the runbook (repo1 is deliberately unused: it is the shared host's habit)
REPO_SSH = 3
REPO_S3 = 2
REPOS = (REPO_S3, REPO_SSH)  # pgBackRest's own order (ascending key)

CIPHER_TYPE = "aes-256-cbc"
ARCHIVE_PUSH_QUEUE_MAX = "4GB"
ARCHIVE_TIMEOUT = 60
MANAGED = "# managed by trackerdb backrest.setup; changes here are overwritten on the next run\n"

#: options whose values must never be printed (masked in dry runs, never in argv)
SECRET_OPTIONS = ("repo2-cipher-pass", "repo3-cipher-pass", "repo2-s3-key", "repo2-s3-key-secret")


def spool_path(settings: Settings) -> str:
    return f"{settings.data_mount.rstrip('/')}/pgbackrest-spool"


def global_options(settings: Settings, cipher_pass: str) -> list[tuple[str, str]]:
    """[global] in the runbook's order: general options, then repo3 (SSH), then repo2 (S3)."""
    opts = [
        ("process-max", "4"),
        ("log-level-console", "info"),
        ("log-level-file", "debug"),
        ("log-path", LOG_PATH),
        ("compress-type", "zst"),
        ("compress-level", "6"),
        ("delta", "y"),
        ("start-fast", "y"),
        ("repo3-host", settings.repo_host_name),
        ("repo3-host-user", settings.repo_host_user),
        ("repo3-path", settings.repo_path),
        ("repo3-cipher-type", CIPHER_TYPE),
        ("repo3-cipher-pass", cipher_pass),
        ("repo2-type", "s3"),
        ("repo2-s3-bucket", settings.backup_bucket),
        ("repo2-s3-region", settings.region),
        ("repo2-path", settings.backup_path),
        ("repo2-cipher-type", CIPHER_TYPE),
        ("repo2-cipher-pass", cipher_pass),
    ]
    opts += s3_access_options(settings)
    return opts


def s3_endpoint(settings: Settings) -> str:
    """Production talks to the regional AWS endpoint; the lab to its TLS proxy in front of moto."""
    if settings.s3_endpoint:
        return settings.s3_endpoint.removeprefix("https://").rstrip("/")
    return f"s3.{settings.region}.amazonaws.com"


def s3_access_options(settings: Settings) -> list[tuple[str, str]]:
    opts = [("repo2-s3-endpoint", s3_endpoint(settings))]
    host, _, port = s3_endpoint(settings).partition(":")
    if port:
        opts = [("repo2-s3-endpoint", host), ("repo2-storage-port", port)]
    if settings.s3_uri_style:
        opts.append(("repo2-s3-uri-style", settings.s3_uri_style))
    if settings.s3_key_type == "auto":
        # the instance profile: no key anywhere on the host
        opts.append(("repo2-s3-key-type", "auto"))
    else:
        creds = settings.s3_credentials or {}
        key = creds.get("access_key_id") or creds.get("aws_access_key_id") or creds.get("key")
        secret = creds.get("secret_access_key") or creds.get("aws_secret_access_key") or creds.get("key_secret")
        if not key or not secret:
            from ..errors import ConfigError

            raise ConfigError("s3_key_type is shared but s3_credentials has no access key pair",
                              hint="production uses s3_key_type=auto (instance profile)")
        opts += [("repo2-s3-key-type", "shared"), ("repo2-s3-key", key), ("repo2-s3-key-secret", secret)]
    if not settings.s3_verify_tls:
        opts.append(("repo2-storage-verify-tls", "n"))
    elif settings.aws_ca_bundle:
        opts.append(("repo2-storage-ca-file", CA_PATH))
    return opts


def stanza_options(settings: Settings) -> list[tuple[str, str]]:
    return [
        ("pg1-path", settings.cluster_dir),
        ("pg1-port", str(settings.pg_port)),
        ("archive-timeout", str(ARCHIVE_TIMEOUT)),
        ("archive-async", "y"),
        ("archive-push-queue-max", ARCHIVE_PUSH_QUEUE_MAX),
        ("spool-path", spool_path(settings)),
    ]


def render(settings: Settings, cipher_pass: str) -> str:
    """The whole pgbackrest.conf. Contains the passphrase: write it only to the host, owner-only."""
    if not cipher_pass or "\n" in cipher_pass:
        from ..errors import ConfigError

        raise ConfigError("the cipher passphrase is empty or spans lines", hint="store one line in the secret")
    lines = [MANAGED, "[global]\n"]
    lines += [f"{k}={v}\n" for k, v in global_options(settings, cipher_pass)]
    lines += ["\n", f"[{settings.stanza}]\n"]
    lines += [f"{k}={v}\n" for k, v in stanza_options(settings)]
    return "".join(lines)


def redact(text: str) -> str:
    """The same text with secret option values replaced (for dry runs and diffs)."""
    out = []
    for line in text.splitlines(keepends=True):
        key = line.split("=", 1)[0]
        out.append(f"{key}=<redacted>\n" if key in SECRET_OPTIONS else line)
    return "".join(out)


def probe_env(settings: Settings, cipher_pass: str) -> list[str]:
    """The desired configuration as PGBACKREST_* variables, for commands that must not depend on
    what is (or is not yet) in the host's config file. Sent on stdin, never argv."""
    env = ["PGBACKREST_CONFIG=/dev/null", f"PGBACKREST_STANZA={settings.stanza}",
           "PGBACKREST_LOG_LEVEL_FILE=off", "PGBACKREST_LOG_LEVEL_CONSOLE=warn"]
    skip = {"log-level-console", "log-level-file"}
    for k, v in global_options(settings, cipher_pass) + stanza_options(settings):
        if k in skip:
            continue
        env.append(f"PGBACKREST_{k.upper().replace('-', '_')}={v}")
    return env


# ---- PostgreSQL side ------------------------------------------------------------------------
def dropin_path(settings: Settings) -> str:
    return f"{settings.pg_conf_dir}/conf.d/60-pgbackrest.conf"


def archive_command(settings: Settings) -> str:
    return f"pgbackrest --stanza={settings.stanza} archive-push %p"


def restore_command(settings: Settings) -> str:
    return f'pgbackrest --stanza={settings.stanza} archive-get %f "%p"'


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def dropin_settings(settings: Settings) -> dict[str, str]:
    """Values PostgreSQL must report (``SHOW``) once the drop-in is in effect."""
    return {
        "archive_mode": "on",
        "archive_command": archive_command(settings),
        "restore_command": restore_command(settings),
        "archive_timeout": "1min",  # as SHOW reports it (ARCHIVE_TIMEOUT seconds)
    }


def dropin_text(settings: Settings) -> str:
    """``conf.d/60-pgbackrest.conf``: after provisioning's 50-trackerdb.conf, so these win."""
    s = dropin_settings(settings)
    return (MANAGED
            + f"archive_mode = {s['archive_mode']}\n"
            + f"archive_command = {_q(s['archive_command'])}\n"
            + f"restore_command = {_q(s['restore_command'])}\n"
            + f"archive_timeout = {_q(s['archive_timeout'])}\n")
