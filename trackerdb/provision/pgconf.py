"""PostgreSQL configuration text: the conf.d drop-in, pg_hba and the tuning maths. Pure.

Tuning follows timescaledb-tune's rules of thumb (shared_buffers 25 % of RAM, effective_cache_size
75 %, work_mem from what is left over per connection and parallel worker, workers from cores).

pg_hba: we create the cluster ourselves, so its ``pg_hba.conf`` is a file pg_createcluster wrote
(not a dpkg conffile). We replace it whole with ours instead of pointing ``hba_file`` elsewhere:
the file operators find in the usual place is the one in effect, and no stale copy misleads anyone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import tls

if TYPE_CHECKING:
    from ..settings import Settings

MB = 1024 * 1024
MANAGED = "# managed by trackerdb provision; changes here are overwritten on the next run\n"
CREATECLUSTER_CONF = "/etc/postgresql-common/createcluster.conf"


@dataclass(frozen=True)
class Tuning:
    shared_buffers_mb: int
    effective_cache_size_mb: int
    maintenance_work_mem_mb: int
    work_mem_kb: int
    max_connections: int
    max_worker_processes: int
    background_workers: int
    max_parallel_workers: int
    max_parallel_workers_per_gather: int
    max_parallel_maintenance_workers: int
    min_wal_size_mb: int
    max_wal_size_mb: int


def tune(mem_bytes: int, cores: int, volume_gb: int, max_connections: int = 100) -> Tuning:
    mem_mb = mem_bytes // MB
    cores = max(1, cores)
    shared = mem_mb // 4
    per_gather = max(1, cores // 2)
    # TimescaleDB's workers: one scheduler per database (the launcher reserves a slot for every database,
    # template ones included, and for kept-aside restores) plus the jobs running at once. Never below
    # TimescaleDB's own default of 16: with 8, the lab's 11th restore into one server found no free
    # slot and its scheduler never started ("no available background worker slots").
    bg = max(16, cores * 2)
    work_kb = max(4096, int((mem_mb - shared) * 1024 / (max_connections * 3) / per_gather))
    # WAL: room for a restore's bursts without filling a small volume (4 % of it, 1-8 GB)
    max_wal = min(8192, max(1024, volume_gb * 1024 * 4 // 100))
    return Tuning(
        shared_buffers_mb=shared,
        effective_cache_size_mb=mem_mb * 3 // 4,
        maintenance_work_mem_mb=max(64, min(2048, mem_mb // 16)),
        work_mem_kb=work_kb,
        max_connections=max_connections,
        max_worker_processes=cores + bg + 3,
        background_workers=bg,
        max_parallel_workers=cores,
        max_parallel_workers_per_gather=per_gather,
        max_parallel_maintenance_workers=per_gather,
        min_wal_size_mb=max(80, max_wal // 4),
        max_wal_size_mb=max_wal,
    )


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def dropin_text(settings: Settings, t: Tuning, private_ip: str) -> str:
    """``conf.d/50-trackerdb.conf``: loaded after the packaged postgresql.conf, so these values win."""
    listen = "localhost" if private_ip in ("", "127.0.0.1") else f"localhost,{private_ip}"
    cert, key = tls.server_files(settings)
    lines = [
        ("listen_addresses", _q(listen)),
        ("port", str(settings.pg_port)),
        ("max_connections", str(t.max_connections)),
        ("shared_preload_libraries", _q("timescaledb")),
        ("timescaledb.telemetry_level", _q("off")),
        # rollback capture (issue 16): logical decoding on the target from the switch on; a restart, so
        # here at provision time and never in the window. The markers let the decoder skip TimescaleDB's
        # own compression/decompression traffic (on by default in 2.18, set so nobody turns it off)
        ("wal_level", "logical"),
        ("timescaledb.enable_compression_wal_markers", "on"),
        ("password_encryption", _q("scram-sha-256")),
        ("ssl", "on"),
        ("ssl_cert_file", _q(cert)),
        ("ssl_key_file", _q(key)),
        ("ssl_min_protocol_version", _q("TLSv1.2")),
        ("shared_buffers", f"{t.shared_buffers_mb}MB"),
        ("effective_cache_size", f"{t.effective_cache_size_mb}MB"),
        ("maintenance_work_mem", f"{t.maintenance_work_mem_mb}MB"),
        ("work_mem", f"{t.work_mem_kb}kB"),
        ("max_worker_processes", str(t.max_worker_processes)),
        ("timescaledb.max_background_workers", str(t.background_workers)),
        ("max_parallel_workers", str(t.max_parallel_workers)),
        ("max_parallel_workers_per_gather", str(t.max_parallel_workers_per_gather)),
        ("max_parallel_maintenance_workers", str(t.max_parallel_maintenance_workers)),
        ("wal_buffers", "16MB"),
        ("min_wal_size", f"{t.min_wal_size_mb}MB"),
        ("max_wal_size", f"{t.max_wal_size_mb}MB"),
        ("checkpoint_completion_target", "0.9"),
        ("random_page_cost", "1.1"),
        ("effective_io_concurrency", "200"),
        ("log_line_prefix", _q("%m [%p] %q%u@%d ")),
        ("log_min_duration_statement", _q("1s")),
        ("log_checkpoints", "on"),
        ("log_lock_waits", "on"),
        ("log_temp_files", _q("64MB")),
        ("log_autovacuum_min_duration", _q("10s")),
    ]
    return MANAGED + "".join(f"{k} = {v}\n" for k, v in lines)


#: What pg_hba says to every TCP client that did not negotiate TLS, before any other rule can match.
NO_CLEAR_TEXT = [("hostnossl", "all", "all", "0.0.0.0/0", "reject"), ("hostnossl", "all", "all", "::/0", "reject")]
#: And to anything no rule above admitted (PostgreSQL's implicit end, written out so nobody adds below it).
REJECT_REST = [("host", "all", "all", "0.0.0.0/0", "reject"), ("host", "all", "all", "::/0", "reject")]


def hba_rows(settings: Settings) -> list[tuple[str, str, str, str, str]]:
    """Local admin by peer; every network rule is ``hostssl`` (SCRAM over TLS), clear text is rejected.

    Loopback is a network rule too: libpq's default ``sslmode=prefer`` negotiates TLS there, and a
    client that refuses TLS gets the same explicit rejection as one from the application network.
    """
    rows = [("local", "all", "postgres", "", "peer"), *NO_CLEAR_TEXT,
            ("hostssl", "all", "all", "127.0.0.1/32", "scram-sha-256")]
    for cidr in settings.app_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        rows.append(("hostssl", settings.database, "all", str(net), "scram-sha-256"))
    return rows + REJECT_REST


def hba_text(settings: Settings) -> str:
    body = "".join(f"{a:<9} {b:<15} {c:<15} {d:<18} {e}\n" for a, b, c, d, e in hba_rows(settings))
    return MANAGED + "# TYPE    DATABASE        USER            ADDRESS            METHOD\n" + body


def createcluster_text(current: str | None) -> str:
    """Stop the server package from creating a cluster on install: we create it after the mount check.

    Written before the package exists, so it must also carry what the packaged template would give
    new clusters and we rely on: ``add_include_dir = 'conf.d'`` (pg_createcluster then puts
    ``include_dir = 'conf.d'`` into postgresql.conf, so our drop-in is read; a plain ``include_dir``
    here would include files into createcluster.conf itself). An existing file keeps everything else.
    """
    wanted = {"create_main_cluster": "create_main_cluster = false", "add_include_dir": "add_include_dir = 'conf.d'"}
    out, done = [], set()
    for line in (current if current is not None else MANAGED).splitlines():
        key = line.lstrip("#").split("=", 1)[0].strip()
        if key in wanted:
            if key not in done:
                out.append(wanted[key])
                done.add(key)
            continue
        out.append(line)
    out += [wanted[k] for k in wanted if k not in done]
    return "\n".join(out) + "\n"


def includes_conf_d(postgresql_conf: str) -> bool:
    return any("".join(line.split("#", 1)[0].split()) in ("include_dir='conf.d'", 'include_dir="conf.d"')
               for line in postgresql_conf.splitlines())


def conf_dir(settings: Settings) -> str:
    return settings.pg_conf_dir


def dropin_path(settings: Settings) -> str:
    return f"{conf_dir(settings)}/conf.d/50-trackerdb.conf"


def hba_path(settings: Settings) -> str:
    return f"{conf_dir(settings)}/pg_hba.conf"


def createcluster_command(settings: Settings) -> list[str]:
    return ["pg_createcluster", "--datadir", settings.cluster_dir, "--port", str(settings.pg_port),
            "--encoding", "UTF8", "--locale", "C.UTF-8", str(settings.postgres_major), "main",
            "--", "--data-checksums", "--auth-local=peer", "--auth-host=scram-sha-256"]


def ctl_command(settings: Settings, action: str) -> list[str]:
    return ["pg_ctlcluster", str(settings.postgres_major), "main", action]
