"""Moving part of an uncompressed chunk: the slices of its time range whose rows differ (pure builders).

The chunk being written when the window opens (today's, on 1-day chunks) differs from the pre-copy
in every round, but only in its last minutes. Moving it whole puts its size into the outage (a 300 MiB
chunk took 77 s here); so an uncompressed chunk on both hosts is cut into ``SLICES`` equal sub-ranges
of its time range, each fingerprinted on both hosts like a chunk (rows + digest, the same digest, so the
slices' sums are the chunk's), and only the differing slices are deleted on the target and copied from
the source, in one transaction (``where`` handed to ``delta_sql``'s COPY builders). The next round
compares the whole chunk again: that stays the proof.
"""

from __future__ import annotations

import json

from ..sql import ident, literal
from ..migrate.delta_sql import INT64_MAX, INT64_MIN, _bound, _digest
from ..migrate.delta_types import Item

SLICES = 64
MOST = SLICES // 2  # more slices than this differ: the whole chunk moves (one DELETE, one COPY)


def sliceable(src: Item, tgt: Item | None) -> bool:
    """An uncompressed chunk of one finite range on both hosts, wide enough to cut."""
    return (tgt is not None and src.kind == "chunk" and tgt.kind == "chunk" and not src.compressed
            and not tgt.compressed and src.start != INT64_MIN and src.end != INT64_MAX
            and src.end - src.start >= SLICES)


def cuts(item: Item, n: int = SLICES) -> list[int]:
    """The ``n - 1`` interior cut points of the chunk's range, in TimescaleDB's internal units."""
    start, end = item.start, item.end
    return [start + (end - start) * i // n for i in range(1, n)]


def _bucket(item: Item) -> str:
    arr = ", ".join(_bound(c, item.time_type) for c in cuts(item))
    return f"width_bucket(t.{ident(item.time_column)}, ARRAY[{arr}])"


def slices_sql(key: str, item: Item, columns: list[str]) -> str:
    """One line of JSON ``{"k", "s": {slice: [rows, digest]}}`` of the chunk's rows (slice 0 .. SLICES-1)."""
    return (f"SELECT json_build_object('k', {literal(key)}, 's', coalesce(json_object_agg(x.b, json_build_array(x.n, "
            f"x.d)), '{{}}'))::text "
            f"FROM (SELECT {_bucket(item)} AS b, count(*) AS n, {_digest(columns)} AS d FROM ONLY {item.rel} t GROUP "
            "BY 1) x;")


def parse(stdout: str) -> dict | None:
    """``slices_sql``'s output -> ``{slice: [rows, digest]}`` (None when the line is missing)."""
    for line in stdout.splitlines():
        if line.strip().startswith("{"):
            return {str(b): [int(v[0]), str(v[1])] for b, v in json.loads(line)["s"].items()}
    return None


def differing(src: dict, tgt: dict) -> list[int]:
    """Slices whose rows or digest differ, or that one host has and the other not."""
    return sorted(int(b) for b in set(src) | set(tgt) if (src.get(b) or [0, "0"]) != (tgt.get(b) or [0, "0"]))


def _ranges(buckets: list[int]) -> list[tuple[int, int]]:
    """Adjacent slices merged: [(first, last)]."""
    out: list[list[int]] = []
    for b in sorted(buckets):
        if out and b == out[-1][1] + 1:
            out[-1][1] = b
        else:
            out.append([b, b])
    return [(a, z) for a, z in out]


def where(item: Item, buckets: list[int]) -> str:
    """The differing slices as range conditions on the time column (an index can serve them)."""
    bounds = [item.start, *cuts(item), item.end]
    col, tt = f"t.{ident(item.time_column)}", item.time_type
    parts = [f"({col} >= {_bound(bounds[a], tt)} AND {col} < {_bound(bounds[z + 1], tt)})" for a, z in _ranges(buckets)]
    return "(" + " OR ".join(parts) + ")" if parts else "false"
