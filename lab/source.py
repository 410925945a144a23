"""The `source` host (the old shared server): a PostgreSQL 16.10 cluster with PostGIS 3.5.2 and TimescaleDB 2.18.2
(community licence, as production) preloaded, archiving WAL through pgBackRest to the shared stanza on `repo`, the
tracker dataset and an unrelated database."""

from __future__ import annotations

import os

from . import engine16_debs, render, tsdb
from .hosts import hexec, ids, write
from .naming import Names
from .state import State
from .util import LabError, progress, retry

MAJOR = engine16_debs.PG_MAJOR

FLEET_SQL = """CREATE DATABASE fleet_archive;
\\c fleet_archive
CREATE TABLE archived_trips (id bigint PRIMARY KEY, vehicle text NOT NULL, closed_at timestamptz NOT NULL);
INSERT INTO archived_trips SELECT g, 'van-' || g, timestamptz '2020-01-01' + g * interval '1 day'
    FROM generate_series(1, 5) g;
"""


def prepare(root, n: Names, postgres_key_pub: str) -> None:
    """Files written before the host starts (the cluster itself is created inside the running host)."""
    write(
        root, "/etc/pgbackrest/pgbackrest.conf", render.source_pgbackrest_conf(), 0o640, (0, ids(root, "postgres")[1])
    )
    conf = root / "etc/pgbackrest.conf"
    if conf.exists():
        conf.unlink()  # one config file: /etc/pgbackrest/pgbackrest.conf


def create_cluster(st: State, n: Names) -> None:
    hexec(st, "source", f"pg_createcluster --locale=C.UTF-8 {MAJOR} main >/dev/null")
    root = st.dir / "hosts" / "source" / "root"
    uid, gid = ids(root, "postgres")
    write(root, f"/etc/postgresql/{MAJOR}/main/conf.d/lab.conf", render.pg_conf(n.ip("source")), 0o644, (uid, gid))
    hba = root / f"etc/postgresql/{MAJOR}/main/pg_hba.conf"
    with open(hba, "a") as f:
        f.write(render.pg_hba_extra(str(n.subnet)))
    for d in ("/var/log/pgbackrest", "/var/lib/pgbackrest", "/var/spool/pgbackrest"):
        p = root / d.lstrip("/")
        p.mkdir(parents=True, exist_ok=True)
        os.chown(p, uid, gid)
    hexec(st, "source", f"pg_ctlcluster {MAJOR} main start")


def set_port(st: State, port: int) -> None:
    """Move the cluster to ``port`` (postgresql.conf's own ``port`` line, which Debian's cluster tools
    read too) and restart it; pgBackRest's stanza section learns the port as well."""
    port = int(port)
    if not 1024 <= port <= 65535:
        raise LabError(f"source port {port} is not in 1024-65535", hint="e.g. 5433")
    root = st.dir / "hosts" / "source" / "root"
    write(
        root,
        "/etc/pgbackrest/pgbackrest.conf",
        render.source_pgbackrest_conf(port=port),
        0o640,
        (0, ids(root, "postgres")[1]),
    )
    hexec(st, "source", f"sed -i -E 's/^#?port = [0-9]+/port = {port}/' /etc/postgresql/{MAJOR}/main/postgresql.conf "
                        f"&& pg_ctlcluster {MAJOR} main restart")
    retry(lambda: hexec(st, "source", ["pg_isready", "-q", "-p", str(port)], timeout=10), what=f"source on port {port}",
          attempts=20, delay=0.5)


def fill(st: State, n: Names, remote_source, scale: float) -> dict:
    """The tracker dataset (over SSH as postgres, SQL on stdin) and the unrelated fleet_archive database."""
    from . import dataset

    progress(f"source: generating the tracker dataset (scale {scale}, TimescaleDB {tsdb.VERSION})")
    result = dataset.run(remote_source, scale=scale, timescaledb_version=tsdb.VERSION)
    check_edition(st)
    hexec(
        st, "source", ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"], user="postgres", input=FLEET_SQL
    )
    return result


EDITION_SQL = ("SELECT extversion || ' ' || current_setting('timescaledb.license') "
               "FROM pg_extension WHERE extname = 'timescaledb'")


def check_edition(st: State, version: str = tsdb.VERSION) -> None:
    """The source must run production's TimescaleDB: exactly ``version`` under the community licence."""
    got = (
        hexec(st, "source", ["psql", "-XAt", "-d", "tracker", "-c", EDITION_SQL], user="postgres")
        .stdout.decode()
        .strip()
    )
    if got != f"{version} timescale":
        raise LabError(
            f"source: TimescaleDB in tracker is {got or 'missing'!r}, expected '{version} timescale'",
            hint=f"the pg layer must install the lab-built {engine16_debs.TSDB}; remove the cache's "
                 "pg-* layer and lab.up again",
        )


def stanza(st: State) -> None:
    progress("source: pgbackrest stanza-create + check for the shared stanza `tracker`")
    # PostgreSQL is already archiving (and failing until the stanza exists), so an archive-push can hold the
    # stanza lock on repo for a moment (pgBackRest error 050): both commands are safe to repeat.
    retry(
        lambda: hexec(st, "source", ["pgbackrest", "--stanza=tracker", "stanza-create"], user="postgres", timeout=120),
        what="shared stanza-create",
        attempts=4,
        delay=2.0,
    )
    retry(lambda: hexec(st, "source", ["pgbackrest", "--stanza=tracker", "check"], user="postgres", timeout=180),
          what="shared stanza check", attempts=3, delay=2.0)
