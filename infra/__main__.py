"""Pulumi program: the dedicated EC2 host of the tracker database. Wiring and exports only.

Where each runbook requirement lives:
  config.py   every value (Pulumi.prod.yaml) and the rules that reject unsafe or missing config
  network.py  the security group: SSH only with the repository host (and, with directTransfer, out to the
              source), 5432 only from the app, HTTPS to S3
  iam.py      role + instance profile: our stanza's S3 prefixes, the cipher secret, SSM core
  host.py     t3.medium, looked-up AMI (ignore_changes), IMDSv2 hop 1, 25 GB gp3 encrypted root
  storage.py  50 GB gp3 encrypted data volume (protected, final snapshot) + attachment
The exports are the inventory every task reads (trackerdb/inventory.py OUTPUT_KEYS).
"""

import sys
from pathlib import Path

# Pulumi runs this directory with runpy, which puts only infra/ on sys.path; the project root makes
# `infra` (and, without an installed package, `trackerdb`) import the same way as in the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402

from infra import config  # noqa: E402
from infra.host import DatabaseHost, HostArgs  # noqa: E402
from infra.iam import DatabaseIdentity, IdentityArgs  # noqa: E402
from infra.network import DatabaseNetwork, NetworkArgs  # noqa: E402
from infra.storage import DataVolume, StorageArgs  # noqa: E402
from trackerdb.inventory import OUTPUT_KEYS  # noqa: E402

cfg = config.load()

network = DatabaseNetwork("trackerdb", NetworkArgs(
    name=cfg.name, region=cfg.region, vpc_id=cfg.vpc_id, repo_host_ip=cfg.repo_host_ip,
    app_cidrs=cfg.app_cidrs, app_security_group_ids=cfg.app_security_group_ids,
    extra_egress=cfg.extra_egress, tags=cfg.tags, ssh_port=cfg.ssh_port, source_cidr=cfg.source_cidr,
))
identity = DatabaseIdentity("trackerdb", IdentityArgs(
    name=cfg.name, backup_bucket=cfg.backup_bucket, backup_prefix=cfg.backup_prefix, stanza=cfg.stanza,
    secret_names=(cfg.cipher_secret_name,), tags=cfg.tags,
))
host = DatabaseHost("trackerdb", HostArgs(
    name=cfg.name, instance_type=cfg.instance_type, ami_owner=cfg.ami_owner, ami_name_filter=cfg.ami_name_filter,
    subnet_id=cfg.subnet_id, security_group_id=network.security_group.id,
    instance_profile_name=identity.instance_profile.name, root_volume_size_gb=cfg.root_volume_size_gb, tags=cfg.tags,
))
data = DataVolume("trackerdb", StorageArgs(
    name=cfg.name, instance_id=host.instance.id, availability_zone=host.instance.availability_zone,
    size_gb=cfg.data_volume_size_gb, device_name=cfg.data_volume_device, tags=cfg.tags,
))

outputs = {
    "environment": cfg.environment,
    "region": cfg.region,
    "instance_id": host.instance.id,
    "private_ip": host.instance.private_ip,
    "availability_zone": host.instance.availability_zone,
    "root_volume_size_gb": cfg.root_volume_size_gb,
    "data_volume_id": data.volume.id,
    "data_volume_size_gb": cfg.data_volume_size_gb,
    "data_mount": cfg.data_mount,
    "security_group_id": network.security_group.id,
    "role_name": identity.role.name,
    "instance_profile_name": identity.instance_profile.name,
    "backup_bucket": cfg.backup_bucket,
    "backup_path": cfg.backup_path,
    "cipher_secret_name": cfg.cipher_secret_name,
    "app_secret_name": cfg.app_secret_name,
    "repo_host_name": cfg.repo_host_name,
    "repo_host_ip": cfg.repo_host_ip,
    "repo_host_user": cfg.repo_host_user,
    "repo_path": cfg.repo_path,
    "stanza": cfg.stanza,
    "shared_stanza": cfg.shared_stanza,
    "postgres_major": cfg.postgres_major,
    "postgres_version": cfg.postgres_version,
    "postgis_version": cfg.postgis_version,
    "timescaledb_version": cfg.timescaledb_version,
    "app_cidrs": list(cfg.app_cidrs),
    "direct_transfer": cfg.direct_transfer,
    "source_cidr": cfg.source_cidr,
}
if set(outputs) != set(OUTPUT_KEYS):  # the inventory shape is a contract with every task and the lab
    raise config.ConfigError(
        f"exports differ from trackerdb.inventory.OUTPUT_KEYS: {sorted(set(outputs) ^ set(OUTPUT_KEYS))}"
    )
for key, value in outputs.items():
    pulumi.export(key, value)
