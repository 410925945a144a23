"""The ``test_decoding`` output parser (pure): COPY text rows of ``(lsn, xid, data)`` into changes.

Names are printed by ``quote_identifier``, values by their type's output function, quoted with
``'`` doubled (numbers and booleans bare, bit strings as ``B'...'``), ``null`` and
``unchanged-toast-datum`` as words. Chunk changes map to their hypertable; TimescaleDB's
compression/decompression marker spans, compressed chunks and internal tables are counted, not
kept (see :mod:`trackerdb.cutover.capture` for why).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..tsdb_api import INTERNAL_SCHEMAS_RE

MARK_PREFIX = "::timescaledb-"
INTERNAL_SCHEMA = re.compile(INTERNAL_SCHEMAS_RE)  # TimescaleDB's and PostgreSQL's own, by exact name
CHUNK_NAME = re.compile(r"^_hyper_(\d+)_(\d+)_chunk$")
COMPRESSED_CHUNK_NAME = re.compile(r"^compress_hyper_\d+_\d+_chunk$")


@dataclass
class Change:
    op: str                      # INSERT, UPDATE, DELETE, TRUNCATE
    schema: str
    table: str
    old: dict | None = None      # replica identity (key columns, or every column with FULL)
    new: dict | None = None
    lsn: str = ""
    xid: str = ""
    also: list = field(default_factory=list)  # TRUNCATE only: the other (schema, table) the line names
    # a replayed TRUNCATE's ``new`` is {"tables": [[schema, table], ...]}: every table, the first included


@dataclass
class Decoded:
    """The parsed stream, with what is replayed and what is not."""
    changes: list = field(default_factory=list)        # Change, commit_lsn set, in commit order
    commits: int = 0
    last_commit_lsn: str | None = None
    skipped: dict = field(default_factory=dict)        # reason -> count
    truncated: list = field(default_factory=list)      # hypertables whose chunks a TRUNCATE named alone (not replayed)
    unmapped: list = field(default_factory=list)       # chunk-like internal tables with no hypertable


def copy_unescape(field_text: str) -> str | None:
    """One field of COPY's text output back to its value (``\\N`` is NULL)."""
    if field_text == "\\N":
        return None
    out, i = [], 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "\\": "\\"}
    while i < len(field_text):
        ch = field_text[i]
        if ch == "\\" and i + 1 < len(field_text):
            nxt = field_text[i + 1]
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
                continue
            m = re.match(r"[0-7]{1,3}", field_text[i + 1:])
            if m:
                out.append(chr(int(m.group(0), 8)))
                i += 1 + len(m.group(0))
                continue
            if nxt == "x":
                m = re.match(r"[0-9a-fA-F]{1,2}", field_text[i + 2:])
                if m:
                    out.append(chr(int(m.group(0), 16)))
                    i += 2 + len(m.group(0))
                    continue
            out.append(nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def copy_rows(text: str) -> list[tuple]:
    """COPY text output lines into tuples of unescaped fields."""
    rows = []
    for line in text.split("\n"):
        if line == "":
            continue
        rows.append(tuple(copy_unescape(f) for f in line.split("\t")))
    return rows


class ParseError(ValueError):
    pass


def _quoted(s: str, i: int, q: str, what: str) -> tuple[str, int]:
    """The text between the quote ``q`` at ``s[i]`` and its closing quote, a doubled quote read as one."""
    out, i = [], i + 1
    while True:
        j = s.find(q, i)
        if j < 0:
            raise ParseError(f"unterminated quoted {what}")
        out.append(s[i:j])
        if s.startswith(q + q, j):
            out.append(q)
            i = j + 2
            continue
        return "".join(out), j + 1


def _ident(s: str, i: int) -> tuple[str, int]:
    """An identifier as quote_identifier printed it, starting at ``s[i]``."""
    if s.startswith('"', i):
        return _quoted(s, i, '"', "identifier")
    m = re.compile(r"[^.,\[\s:\"]+").match(s, i)  # unquoted names are lowercase letters, digits, _ and $
    if not m:
        raise ParseError(f"identifier expected at {i}")
    return m.group(0), m.end()


def _value(s: str, i: int) -> tuple[str | None, int, bool]:
    """A value: 'quoted' (with '' doubled), B'bits', null, unchanged-toast-datum, or a bare token
    (numbers, true/false). -> (value, end, unchanged)"""
    if s.startswith("B'", i):  # bit and varbit
        i += 1
    if s.startswith("'", i):
        return (*_quoted(s, i, "'", "value"), False)
    j = s.find(" ", i)
    j = len(s) if j < 0 else j
    tok = s[i:j]
    if tok == "null":
        return None, j, False
    if tok == "unchanged-toast-datum":
        return None, j, True
    return tok, j, False


def _type_end(s: str, i: int, column: str) -> int:
    """The index of the ``:`` after a column's ``[type]`` starting at ``s[i]``: brackets nest (``text[]``), a
    quoted type name (``"my]:type"``) is skipped whole."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c == '"':
            _, i = _quoted(s, i, '"', "type name")
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                if not s.startswith(":", i + 1):
                    raise ParseError(f"':' expected after the type of column {column!r}")
                return i + 1
        i += 1
    raise ParseError(f"type of column {column!r} not terminated")


def parse_tuple(s: str, i: int = 0, stop: str | None = None) -> tuple[dict, int]:
    """``col[type]:value col[type]:value ...`` until the end of ``s`` or the keyword ``stop``.
    Unchanged TOAST values are left out (the replay keeps what the source has)."""
    cols: dict = {}
    while i < len(s):
        if s[i] == " ":
            i += 1
            continue
        if stop and s.startswith(stop, i):
            break
        name, i = _ident(s, i)
        if not s.startswith("[", i):
            raise ParseError(f"'[' expected after column {name!r}")
        j = _type_end(s, i, name)
        val, i, unchanged = _value(s, j + 1)
        if not unchanged:
            cols[name] = val
    return cols, i


def parse_change(data: str) -> Change | None:
    """One ``table schema.name: OP: ...`` line; None for any other line."""
    if not data.startswith("table "):
        return None
    i = len("table ")
    schema, i = _ident(data, i)
    if not data.startswith(".", i):
        raise ParseError("'.' expected after the schema")
    table, i = _ident(data, i + 1)
    also = []
    while data.startswith(", ", i):  # TRUNCATE a, b (and CASCADE's tables) is one line naming them all
        s2, i = _ident(data, i + 2)
        if not data.startswith(".", i):
            raise ParseError("'.' expected after the schema")
        t2, i = _ident(data, i + 1)
        also.append((s2, t2))
    if not data.startswith(": ", i):
        raise ParseError("': ' expected after the table")
    rest = data[i + 2:]
    op, _, body = rest.partition(": ")
    op = op.rstrip(":")
    if op not in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        raise ParseError(f"unknown operation {op!r}")
    if also and op != "TRUNCATE":
        raise ParseError(f"{op} names several tables")
    ch = Change(op, schema, table, also=also)
    if op == "TRUNCATE" or body == "(no-tuple-data)":
        return ch
    if op == "INSERT":
        ch.new, _ = parse_tuple(body)
    elif op == "DELETE":
        ch.old, _ = parse_tuple(body)
    else:
        if body.startswith("old-key: "):
            ch.old, k = parse_tuple(body, len("old-key: "), stop="new-tuple: ")
            ch.new, _ = parse_tuple(body, k + len("new-tuple: "))
        else:
            ch.new, _ = parse_tuple(body)
    return ch


_MESSAGE = re.compile(r"^message: transactional: (\d) prefix: (.*?), sz: (\d+) content:")


def decode(rows: list[tuple], chunk_map: dict | None = None) -> Decoded:
    """``(lsn, xid, data)`` rows from :func:`changes_copy_sql` into replayable changes.

    Changes to chunks and internal tables between TimescaleDB's compression/decompression markers, to
    compressed chunks and to internal tables are counted in ``skipped`` (a marker span never hides a
    change to a table outside TimescaleDB's schemas: any role can forge the markers); chunk changes
    are renamed to their hypertable.
    A transaction's changes are kept only once its COMMIT is seen (peek stops at commit boundaries)."""
    chunk_map = chunk_map or {}
    out = Decoded()
    pending: list = []
    depth = 0
    for row in rows:
        if len(row) != 3:
            raise ParseError(f"expected 3 fields (lsn, xid, data), got {len(row)}")
        lsn, xid, data = row
        if data.startswith("BEGIN"):
            # depth is kept: with skip-empty-xacts, PostgreSQL 16's test_decoding prints a transaction's first
            # transactional message *before* its BEGIN (BEGIN waits for the first change), so a span TimescaleDB
            # opens first thing in a transaction starts on the line above (17 prints BEGIN first). Spans end at
            # COMMIT; a non-transactional message never counts.
            pending = []
            continue
        if data.startswith("COMMIT"):
            for ch in pending:
                ch.lsn = lsn
            out.changes.extend(pending)
            out.commits += 1
            out.last_commit_lsn = lsn
            pending, depth = [], 0
            continue
        m = _MESSAGE.match(data)
        if m:
            prefix = m.group(2)
            if prefix.startswith(MARK_PREFIX) and m.group(1) == "1":
                if prefix.endswith("-start"):
                    depth += 1
                elif prefix.endswith("-end"):
                    depth = max(0, depth - 1)
            continue
        try:
            ch = parse_change(data)
        except ParseError as exc:
            raise ParseError(f"at LSN {lsn}: {exc} in {data[:80]!r}") from None
        if ch is None:
            raise ParseError(f"at LSN {lsn}: unexpected decoder line {data[:80]!r}")
        ch.xid = xid or ""
        if ch.op == "TRUNCATE":
            replayed = _truncate(out, [(ch.schema, ch.table), *ch.also], chunk_map)
            if replayed:  # one change naming them all: replayed as one TRUNCATE (foreign keys among them hold)
                pending.append(Change("TRUNCATE", *replayed[0], new={"tables": [list(t) for t in replayed]},
                                      also=replayed[1:]))
            continue
        if depth and INTERNAL_SCHEMA.match(ch.schema):
            # only TimescaleDB's own storage moves inside a span: any role can emit the marker
            # (pg_logical_emit_message), so a span never hides a change to a table of ours
            _bump(out.skipped, "compression/decompression (moves rows between storages)")
            continue
        mapped = map_table(ch, chunk_map)
        if mapped is None:
            if ch.schema.startswith("_timescaledb") and CHUNK_NAME.match(ch.table):
                out.unmapped.append(f"{ch.schema}.{ch.table}")
            reason = ("compressed chunk storage" if COMPRESSED_CHUNK_NAME.match(ch.table) or
                      (chunk_map.get("chunks", {}).get(f"{ch.schema}.{ch.table}") or {}).get("compressed_storage")
                      else "TimescaleDB internal table")
            _bump(out.skipped, reason)
            continue
        ch.schema, ch.table = mapped
        pending.append(ch)
    return out


def _truncate(out: Decoded, names: list, chunk_map: dict) -> list[tuple[str, str]]:
    """The tables of one TRUNCATE line that are replayed: the application's own (regular tables and
    hypertables), never TimescaleDB's storage. A chunk is counted (its hypertable's TRUNCATE covers it);
    a chunk truncated alone (a compression empties the uncompressed chunk that way) is named as not
    carried back when it is not inside a marker span (the rollback warns)."""
    user = [(s_, t_) for s_, t_ in names if not INTERNAL_SCHEMA.match(s_)]
    for s_, t_ in names:
        if not INTERNAL_SCHEMA.match(s_):
            continue
        mapped = map_table(Change("TRUNCATE", s_, t_), chunk_map)
        if mapped is None or mapped in user:
            _bump(out.skipped, "TRUNCATE of TimescaleDB storage")
            continue
        out.truncated.append(f"{mapped[0]}.{mapped[1]}")
        _bump(out.skipped, "TRUNCATE (not replayed)")
    return user


def _bump(d: dict, key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


def map_table(ch: Change, chunk_map: dict) -> tuple[str, str] | None:
    """The user-visible table a change belongs to, or None when it is not replayed."""
    if not INTERNAL_SCHEMA.match(ch.schema):
        return ch.schema, ch.table
    info = (chunk_map.get("chunks") or {}).get(f"{ch.schema}.{ch.table}")
    if info is None:
        m = CHUNK_NAME.match(ch.table)
        if m:
            info = (chunk_map.get("hypertables") or {}).get(m.group(1))
    if not info or info.get("compressed_storage") or INTERNAL_SCHEMA.match(info["schema"]):
        return None  # compressed storage, or a continuous aggregate's materialization
    return info["schema"], info["name"]


def counts(changes: list[Change]) -> dict:
    """``{table: {insert: n, update: n, delete: n}}``."""
    out: dict = {}
    for ch in changes:
        t = out.setdefault(f"{ch.schema}.{ch.table}", {"insert": 0, "update": 0, "delete": 0})
        t[ch.op.lower()] = t.get(ch.op.lower(), 0) + 1
    return out
