import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prod_outputs(**over):
    """A complete stack-outputs dict with the runbook's production values (for unit tests)."""
    o = {
        "environment": "prod",
        "region": "eu-west-2",
        "instance_id": "i-0123456789abcdef0",
        "private_ip": "172.31.10.20",
        "availability_zone": "eu-west-2a",
        "root_volume_size_gb": 25,
        "data_volume_id": "vol-0a1b2c3d4e5f60718",
        "data_volume_size_gb": 50,
        "data_mount": "/var/lib/postgresql",
        "security_group_id": "sg-0123",
        "role_name": "tracker-db-role",
        "instance_profile_name": "tracker-db-profile",
        "backup_bucket": "glimpse-timescale-backups",
        "backup_path": "/pgbackrest",
        "cipher_secret_name": "tracker/pgbackrest/cipher-pass",
        "app_secret_name": "tracker/db/tracker-password",
        "repo_host_name": "pg-backrest.timescale.glimpse.internal",
        "repo_host_ip": "172.31.203.209",
        "repo_host_user": "postgres",
        "repo_path": "/var/pg_backrest_data/repo3",
        "stanza": "tracker-dedicated",
        "shared_stanza": "tracker",
        "postgres_major": 16,
        "postgres_version": "16.10",
        "postgis_version": "3.5.2",
        "timescaledb_version": "2.18.2",
        "app_cidrs": ["172.31.32.0/20"],
        "direct_transfer": False,
        "source_cidr": "",
    }
    o.update(over)
    return o
