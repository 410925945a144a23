"""The stack-outputs inventory: the one shape that `infra/` exports and the lab writes.

Every task reads the deployed facts from here, so nothing is configured twice. Keep this list and
`infra/__main__.py`'s exports in step (a unit test checks that they are the same set).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .errors import ConfigError

#: key -> what it means. Every key is required.
OUTPUT_KEYS: dict[str, str] = {
    "environment": "prod or lab",
    "region": "AWS region of the stack",
    "instance_id": "EC2 instance id of the dedicated database host",
    "private_ip": "private IPv4 address of the host (where tasks SSH to and the app connects)",
    "availability_zone": "AZ of the instance and its data volume",
    "root_volume_size_gb": "size of the OS volume",
    "data_volume_id": "EBS volume id of the PostgreSQL data volume (vol-...)",
    "data_volume_size_gb": "size of the data volume",
    "data_mount": "mount point of the data volume (/var/lib/postgresql)",
    "security_group_id": "security group of the host",
    "role_name": "IAM role of the instance profile",
    "instance_profile_name": "instance profile attached to the host",
    "backup_bucket": "S3 bucket of pgBackRest repo2",
    "backup_path": "repo2 path inside the bucket (/pgbackrest)",
    "cipher_secret_name": "Secrets Manager name of the pgBackRest cipher passphrase",
    "app_secret_name": "Secrets Manager name of the tracker role's password",
    "repo_host_name": "DNS name of the pgBackRest repository host",
    "repo_host_ip": "private IPv4 of the pgBackRest repository host",
    "repo_host_user": "user pgBackRest connects as on the repository host",
    "repo_path": "repo3 path on the repository host",
    "stanza": "pgBackRest stanza of the new cluster (never the shared one)",
    "shared_stanza": "the shared host's stanza, which must never be touched",
    "postgres_major": "PostgreSQL major version",
    "postgres_version": "PostgreSQL version, exactly (16.10: the source's; provisioning pins and holds it)",
    "postgis_version": "PostGIS version",
    "timescaledb_version": "TimescaleDB version (must equal the source's)",
    "app_cidrs": "networks the application connects from (pg_hba and the security group)",
    "direct_transfer": "the security group lets the target SSH to the source (the final dump moves host to host)",
    "source_cidr": "the source host's network of that egress rule ('' when direct_transfer is false)",
}


def validate(outputs: dict, origin: str) -> dict:
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise ConfigError(
            f"stack outputs from {origin} lack {', '.join(missing)}",
            hint="re-run `pulumi up` (or `invoke lab.up`) so the outputs are current",
        )
    return outputs


def load(path: str | Path | None = None, stack: str = "prod") -> dict:
    """Read outputs from a saved JSON file, or from `pulumi stack output --json` when no file is given."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"stack outputs file {p} does not exist",
                hint="run `pulumi stack output --json > stack-outputs.json` or `invoke lab.up`",
            )
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"stack outputs file {p} is not JSON ({exc.msg} at line {exc.lineno})") from None
        return validate(data, str(p))
    if not shutil.which("pulumi"):
        raise ConfigError("no stack outputs file configured and the pulumi CLI is not installed",
                          hint="set trackerdb.stack_outputs in invoke.yaml or TRACKERDB_STACK_OUTPUTS")
    proc = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(
            f"`pulumi stack output` failed: {proc.stderr.strip().splitlines()[-1:]}", hint="run `pulumi up` first"
        )
    return validate(json.loads(proc.stdout), f"pulumi stack {stack}")
