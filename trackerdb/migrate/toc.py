"""Pure builders and parsers around pg_restore: archive header, TOC split, error allowlist, commands.

Parallel restore of a TimescaleDB dump follows Timescale's documented procedure ("Restoring with
concurrency", timescale/docs use-timescale/migration/troubleshooting.md,
https://docs.timescale.com/migrate/latest/troubleshooting/): the ``_timescaledb_catalog`` tables
are loaded serially, before anything else is loaded, and everything else is loaded with ``--jobs``.
The same page documents that ``_timescaledb_catalog.metadata`` data from the source collides with
the row the target's extension already has ("The metadata table"), and recommends dropping that TOC
entry from a ``pg_restore --list`` file and restoring with ``--use-list``. We do both with ``-L``
lists built here, from the archive's own TOC.

The page's literal first step (``--schema=_timescaledb_catalog`` before anything else exists) no
longer works once a hypertable is compressed: since 2.14 ``_timescaledb_catalog.compression_settings``
holds ``regclass`` columns (``relid``, ``compress_relid``), so its COPY needs the user's tables and
the compressed chunk tables to exist already (``relation "tracker.device_events" does not exist``).
So the restore runs in three phases (``restore_phases``), which keeps what the procedure is about:

1. ``schema``: every kept entry, ``--section=pre-data``, serially (pg_restore does pre-data serially
   even with ``--jobs``, so nothing parallel is lost): schemas, types, functions, every table,
   chunk, compressed chunk and materialized hypertable, views and continuous aggregates' views;
2. ``catalog``: the ``_timescaledb_catalog`` data (and its sequences), serially: every regclass
   now resolves;
3. ``data``: everything else, ``--section=data --section=post-data`` with ``--jobs``: table data,
   then indexes, constraints and triggers in parallel, then (pg_restore's last pass) ACLs and
   default ACLs.

Only the catalog's *data* entries go to the ``catalog`` list; its other entries go with the rest.
pg_dump puts ``ALTER DEFAULT PRIVILEGES … IN SCHEMA _timescaledb_catalog`` (``DEFAULT ACL
_timescaledb_catalog …``) after the post-data boundary: in a list restored with ``--section=data``
it was silently skipped (measured: the default privileges set in ``_timescaledb_catalog`` were
missing on the target while the same ones in ``_timescaledb_internal`` arrived). ACLs of the
extension's schemas and of its member tables and functions (pg_dump emits the difference from
``pg_init_privs``) sit next to their objects in pre-data and are restored in phase 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import PreflightError

CATALOG_SCHEMA = "_timescaledb_catalog"
CATALOG_DATA_TYPES = ("TABLE DATA", "SEQUENCE SET")  # what the serial catalog phase loads
# TOC data entries that must not be restored (see module docstring).
EXCLUDED_TOC = [re.compile(r"^\d+; \d+ \d+ TABLE DATA _timescaledb_catalog metadata \S+$")]

# pg_dump's object type names, longest first so "TABLE DATA" wins over "TABLE".
_TOC_TYPES = sorted([
    "TABLE DATA", "TABLE ATTACH", "TABLE", "SEQUENCE SET", "SEQUENCE OWNED BY", "SEQUENCE", "INDEX ATTACH", "INDEX",
    "FK CONSTRAINT", "CHECK CONSTRAINT", "CONSTRAINT", "DEFAULT ACL", "DEFAULT", "MATERIALIZED VIEW DATA",
    "MATERIALIZED VIEW", "VIEW", "FOREIGN TABLE", "FUNCTION", "PROCEDURE", "AGGREGATE", "TYPE", "SHELL TYPE", "DOMAIN",
    "TRIGGER", "EVENT TRIGGER", "RULE", "POLICY", "ROW SECURITY", "STATISTICS", "COMMENT", "ACL", "SCHEMA", "EXTENSION",
    "COLLATION", "CONVERSION", "OPERATOR CLASS", "OPERATOR FAMILY", "OPERATOR", "CAST", "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "PUBLICATION TABLE", "PUBLICATION",
    "ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE PROPERTIES", "LARGE OBJECT", "BLOB", "BLOBS",
], key=lambda t: -len(t))
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


# ---- archive header ------------------------------------------------------------------------

ARCHIVE_FORMATS = {0: "unknown", 1: "custom", 2: "files", 3: "tar", 4: "null", 5: "directory"}


def parse_archive_header(head: bytes) -> dict:
    """The first bytes of a pg_dump archive: magic, archive version, format. Raises on anything else."""
    if len(head) < 11 or head[:5] != b"PGDMP":
        raise PreflightError("the file is not a pg_dump archive (no PGDMP header)",
                             hint="pass the custom-format file `invoke dump` wrote (pg_dump -Fc), not a SQL script "
                                  "or another file")
    vmaj, vmin, vrev, int_size, off_size, fmt = head[5], head[6], head[7], head[8], head[9], head[10]
    fmt_name = ARCHIVE_FORMATS.get(fmt, f"format {fmt}")
    if fmt_name != "custom":
        raise PreflightError(f"the dump is a {fmt_name}-format archive, not custom format",
                             hint="re-run `invoke dump` (it uses pg_dump -Fc)")
    return {"archive_version": f"{vmaj}.{vmin}.{vrev}", "int_size": int_size, "off_size": off_size, "format": fmt_name}


# ---- TOC --------------------------------------------------------------------------------------

@dataclass
class TocEntry:
    line: str
    dump_id: int
    type: str
    schema: str | None
    rest: str


def parse_toc_line(line: str) -> TocEntry | None:
    """One ``pg_restore -l`` line -> entry; comments and blank lines -> None."""
    line = line.rstrip("\n")
    if not line or line.startswith(";"):
        return None
    m = _TOC_LINE.match(line)
    if not m:
        return None
    tail = m.group(4)
    for t in _TOC_TYPES:
        if tail == t or tail.startswith(t + " "):
            after = tail[len(t) + 1:]
            schema = after.split(" ", 1)[0] if after else None
            return TocEntry(line, int(m.group(1)), t, None if schema in (None, "-") else schema, after)
    return TocEntry(line, int(m.group(1)), tail.split(" ", 1)[0], None, tail)


def parse_toc(text: str) -> list[TocEntry]:
    return [e for e in (parse_toc_line(ln) for ln in text.splitlines()) if e is not None]


@dataclass
class TocSplit:
    catalog: list[str] = field(default_factory=list)   # _timescaledb_catalog data: serially, before other data
    rest: list[str] = field(default_factory=list)      # everything else: with --jobs
    kept: list[str] = field(default_factory=list)      # catalog + rest in the archive's order (for pre-data)
    excluded: list[str] = field(default_factory=list)  # documented as must-not-restore
    entries: int = 0
    table_data: int = 0


def split_toc(text: str) -> TocSplit:
    split = TocSplit()
    for e in parse_toc(text):
        split.entries += 1
        if any(rx.match(e.line) for rx in EXCLUDED_TOC):
            split.excluded.append(e.line)
            continue
        split.kept.append(e.line)
        if e.schema == CATALOG_SCHEMA and e.type in CATALOG_DATA_TYPES:
            split.catalog.append(e.line)
        else:
            split.rest.append(e.line)
            if e.type == "TABLE DATA":
                split.table_data += 1
    if split.entries == 0:
        raise PreflightError("the dump's table of contents is empty",
                             hint="re-run `invoke dump`; the file may be truncated at the start")
    return split


def list_file_text(lines: list[str]) -> str:
    return "".join(ln + "\n" for ln in lines)


@dataclass(frozen=True)
class Phase:
    name: str
    lines: list[str]
    sections: tuple[str, ...]
    jobs: int


def restore_phases(split: TocSplit, jobs: int) -> list[Phase]:
    """The three pg_restore runs, in order (see the module docstring for why)."""
    return [
        Phase("schema", split.kept, ("pre-data",), 1),
        Phase("catalog", split.catalog, ("data",), 1),
        Phase("data", split.rest, ("data", "post-data"), max(1, jobs)),
    ]


# ---- pg_restore commands ----------------------------------------------------------------------

def pg_restore_cmd(pg_bin: str, database: str, dump_path: str, *, port: int = 5432, list_file: str | None = None,
                   jobs: int = 1, sections: tuple[str, ...] = ()) -> list[str]:
    """``pg_restore`` with the runbook's flags. No --exit-on-error: errors are collected and judged.

    Owners and ACLs are restored as in the dump (the roles exist first): equivalence with the source
    is the bar, and verify compares them object by object."""
    cmd = [f"{pg_bin}/pg_restore", "-p", str(port), "-d", database]
    if list_file:
        cmd += ["-L", list_file]
    cmd += [f"--section={s}" for s in sections]
    if jobs > 1:
        cmd += ["-j", str(jobs)]
    return cmd + [dump_path]


def restore_jobs(cpus: int, maximum: int = 8) -> int:
    return max(1, min(cpus, maximum))


# ---- pg_restore errors ------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowed:
    name: str
    toc: re.Pattern | None
    message: re.Pattern
    why: str


# Known-harmless TimescaleDB messages. Each is matched on both the TOC entry and the exact message.
ALLOWLIST = [
    Allowed(
        "timescaledb-metadata-exported-uuid",
        re.compile(r"^TOC entry \d+; \d+ \d+ TABLE DATA _timescaledb_catalog metadata \S+$"),
        re.compile(r'^COPY failed for table "metadata": ERROR:  duplicate key value violates unique constraint '
                   r'"metadata_pkey"$'),
        "the target's extension already has its own metadata row (Timescale docs: 'The metadata table'); "
        "only reached when the TOC entry is not excluded",
    ),
]


@dataclass
class RestoreError:
    message: str
    toc: str | None = None
    details: list[str] = field(default_factory=list)
    allowed: str | None = None  # allowlist name when known-harmless

    def one_line(self) -> str:
        where = f" [{self.toc}]" if self.toc else ""
        return f"{self.message}{where}"


def parse_restore_errors(stderr: str) -> list[RestoreError]:
    """Errors from pg_restore's stderr (verbose or not), each with its TOC entry when printed."""
    errors: list[RestoreError] = []
    toc = None
    current = None
    for line in stderr.splitlines():
        if line.startswith("pg_restore: from TOC entry "):
            toc = "TOC entry " + line[len("pg_restore: from TOC entry "):].strip()
            current = None
        elif line.startswith("pg_restore: error: "):
            msg = line[len("pg_restore: error: "):]
            if msg.startswith("could not execute query: "):
                msg = msg[len("could not execute query: "):]
            current = RestoreError(msg, toc)
            errors.append(current)
            toc = None
        elif line.startswith("pg_restore: "):
            current = None
            if not line.startswith("pg_restore: while PROCESSING TOC"):
                toc = toc if line.startswith("pg_restore: from TOC") else None
        elif current is not None:
            current.details.append(line)
    for e in errors:
        for a in ALLOWLIST:
            if a.message.match(e.message) and (a.toc is None or (e.toc and a.toc.match(e.toc))):
                e.allowed = a.name
                break
    return errors


# ---- space ------------------------------------------------------------------------------------

def space_needed(db_size_bytes: int, dump_size_bytes: int, uploaded_bytes: int, wal_bytes: int,
                 headroom: float = 1.3) -> int:
    """Bytes the data volume must have free: the restored database with headroom (freshly built
    indexes, bloat-free but not smaller than the source), the rest of the upload, and the WAL the
    restore may keep (max_wal_size during the restore)."""
    remaining_upload = max(0, dump_size_bytes - uploaded_bytes)
    return int(math.ceil(db_size_bytes * headroom)) + remaining_upload + wal_bytes


def parse_df_avail(stdout: str) -> int:
    """``df -B1 --output=avail PATH`` -> bytes available."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    try:
        return int(lines[-1])
    except (IndexError, ValueError):
        raise PreflightError(f"cannot read free space from df output {stdout!r}",
                             hint="is the data volume mounted?") from None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
