"""Pure parts of ``benchmarks/peer_benchmark.py``: the peers' commands as argv/SQL, the apt download of
Debian trixie's pgcopydb on this machine, and the table of times and ratios. Unit-tested without a host."""

from __future__ import annotations

import shlex

#: Debian trixie's pgcopydb (0.17) and what of its dependencies the lab's own apt repository lacks.
PGCOPYDB_DEBS = ("pgcopydb", "libgc1", "postgresql-client")
RUNBOOK_DB = "bench_runbook"
PGCOPYDB_DB = "bench_pgcopydb"
COPY_ROLE = "bench_pgcopydb"


# ---- (a) the runbook's literal commands (runbook §3, "Example pattern") ----------------------
def runbook_dump_argv(pg_bin: str, database: str, out_file: str, port: int) -> list[str]:
    """``pg_dump -Fc --no-owner --no-privileges --file=/tmp/tracker.dump tracker`` (plus the lab's port)."""
    return [f"{pg_bin}/pg_dump", "-Fc", "--no-owner", "--no-privileges", f"--file={out_file}", "-p", str(port), database]


def runbook_restore_steps(database: str, pg_bin: str, dump_file: str, port: int) -> list[tuple[str, str, object]]:
    """The runbook's restore, in order: (label, "sql" | "argv", database for SQL or argv)."""
    return [
        ("create database", "sql", (f"CREATE DATABASE {database};", "postgres")),
        ("create extension", "sql", ("CREATE EXTENSION IF NOT EXISTS timescaledb;", database)),
        ("pre_restore", "sql", ("SELECT timescaledb_pre_restore();", database)),
        ("pg_restore", "argv", [f"{pg_bin}/pg_restore", f"--dbname={database}", "--no-owner", "--no-privileges",
                                "-p", str(port), dump_file]),
        ("post_restore", "sql", ("SELECT timescaledb_post_restore();", database)),
    ]


def parallel_dump_argv(pg_bin: str, database: str, out_dir: str, jobs: int, port: int) -> list[str]:
    """What the peers do faster: ``pg_dump -Fd -j N`` (one worker per table; chunks are tables)."""
    return [f"{pg_bin}/pg_dump", "-Fd", "-j", str(int(jobs)), f"--file={out_dir}", "-p", str(port), database]


# ---- (b) pgcopydb clone ----------------------------------------------------------------------
def pgcopydb_clone_argv(source_uri: str, target_uri: str, work_dir: str, jobs: int, skip_large_objects: bool = False) -> list[str]:
    """``pgcopydb clone`` with the parallelism our restore uses for tables, indexes and pg_restore.

    Roles: ``roles_copy_argvs`` first (the runbook has no such step: its restore loses what names a role
    the target lacks, e.g. a row-level security policy).
    ``skip_large_objects``: from a PostgreSQL 17 source, 0.17 stops at the first large object (17's
    pg_dump no longer puts their metadata in pre-data, so the target has none to open: upstream
    dimitri/pgcopydb#915, fixed by #957 after 0.17); skipped, it gets through the rest.
    No password in here: libpq reads it from the PGPASSFILE the benchmark writes."""
    j = str(int(jobs))
    return ["pgcopydb", "clone", "--source", source_uri, "--target", target_uri, "--dir", work_dir,
            "--table-jobs", j, "--index-jobs", j, "--restore-jobs", j, "--large-objects-jobs", j,
            "--no-owner", "--no-acl", "--skip-ext-comments", "--not-consistent"] + (["--skip-large-objects"] if skip_large_objects else [])


def roles_copy_argvs(pg_bin: str, source_port: int, target_port: int) -> tuple[list[str], list[str]]:
    """The source's roles onto the target before the clone (what ``pgcopydb clone --roles`` does, which 0.17
    cannot: it runs pg_dumpall's output as SQL, and pg_dumpall now starts with psql's ``\\restrict``).
    Without passwords; psql without ON_ERROR_STOP (the roles the target has already stay as they are)."""
    return ([f"{pg_bin}/pg_dumpall", "--roles-only", "--no-role-passwords", "-p", str(int(source_port))],
            [f"{pg_bin}/psql", "-X", "-q", "-p", str(int(target_port)), "-d", "postgres"])


PGCOPYDB_LO_BROKEN_FROM = 17  # the source's PostgreSQL major from which 0.17 cannot copy large objects


def pg_uri(host: str, port: int, database: str, user: str) -> str:
    return f"postgresql://{user}@{host}:{int(port)}/{database}"


def socket_uri(database: str, port: int, socket_dir: str = "/var/run/postgresql", user: str = "postgres") -> str:
    return f"postgresql://{user}@/{database}?host={socket_dir}&port={int(port)}"


def pgpass_line(host: str, port: int, database: str, user: str, password: str) -> str:
    """One ~/.pgpass line (``:`` and ``\\`` escaped as libpq wants)."""
    esc = [str(v).replace("\\", "\\\\").replace(":", "\\:") for v in (host, port, database, user, password)]
    return ":".join(esc) + "\n"


def pgcopydb_script(argv: list[str], pgpass_file: str, log_file: str) -> str:
    """The bash line that runs pgcopydb as postgres with the password file: its errors and warnings,
    then the last lines of its log (its summary table), and its exit status."""
    log = shlex.quote(log_file)
    return (f"export PGPASSFILE={shlex.quote(pgpass_file)}; {shlex.join(argv)} > {log} 2>&1; rc=$?; "
            f"grep -E ' (ERROR|FATAL|WARN) ' {log} | head -n 40; echo ----; tail -n 30 {log}; exit $rc")


def apt_options(state_dir: str, mirror: str, suite: str = "trixie") -> tuple[str, list[str]]:
    """(sources.list text, apt options) to fetch ``suite``'s packages on this machine without touching
    its own apt configuration."""
    src = f"deb {mirror} {suite} main\n"
    opts = [f"-o=Dir::Etc::SourceList={state_dir}/sources.list", "-o=Dir::Etc::SourceParts=/dev/null",
            f"-o=Dir::State::Lists={state_dir}/lists", f"-o=Dir::Cache={state_dir}/cache", "-o=APT::Architecture=amd64"]
    return src, opts


# ---- the table -------------------------------------------------------------------------------
def ratio_rows(times: dict[str, float | None], ours: str) -> list[dict]:
    """Each measured step with its ratio to ``ours`` (peer / ours: > 1 means ours is faster)."""
    base = times.get(ours)
    rows = []
    for name, secs in times.items():
        ratio = round(secs / base, 2) if secs is not None and base else None
        rows.append({"name": name, "seconds": None if secs is None else round(secs, 1), "ratio_to_ours": ratio})
    return rows


def format_table(title: str, rows: list[dict]) -> str:
    width = max([len(r["name"]) for r in rows] + [10])
    lines = [title, f"  {'step'.ljust(width)}  {'seconds':>9}  {'x ours':>7}"]
    for r in rows:
        s = "failed" if r["seconds"] is None else f"{r['seconds']:.1f}"
        x = "" if r["ratio_to_ours"] is None else f"{r['ratio_to_ours']:.2f}"
        lines.append(f"  {r['name'].ljust(width)}  {s:>9}  {x:>7}")
    return "\n".join(lines)
