"""Where the window's verify compares content, and what it costs, said before the window (``cutover --dry-run``)
and after it (the rehearsal report). Pure: the path and the database's size in, one sentence out.

The rates are measured (``benchmarks/content_digest.py``, lab at scale 100, 316 MiB, both lab hosts on the same
2 cores; README "What `invoke verify` compares: counts, digests"), per GiB of the source database, low-high:
- full path: every table and chunk range digested on the frozen source and the target at once, inside the
  window (213 s at 11 GiB: the source alone, as on two separate hosts; 523 s: both on the lab's shared cores);
- pre-copy path: both hosts' tuple versions read, only what was written since the delta's last prints
  digested (about 37 s at 11 GiB with nothing written since).
"""

from __future__ import annotations

GIB = 1024 ** 3
FULL_S_PER_GIB = (213 / 11, 523 / 11)
PRECOPY_S_PER_GIB = (37 / 11, 37 / 11)


def projected_s(path: str, db_bytes: int) -> tuple[float, float]:
    """Low and high projected seconds of the window's content comparison for a database of ``db_bytes``."""
    lo, hi = FULL_S_PER_GIB if path == "full" else PRECOPY_S_PER_GIB
    gib = max(0, int(db_bytes)) / GIB
    return round(lo * gib, 1), round(hi * gib, 1)


def _span(lo: float, hi: float) -> str:
    def one(s: float) -> str:
        return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
    return one(lo) if lo == hi else f"{one(lo)}-{one(hi)}"


def line(path: str | None, db_bytes: int | None) -> str:
    """Which path's content comparison the window runs, where, and its projected cost at this database's size."""
    size = f"{db_bytes / GIB:.2f} GiB" if db_bytes is not None else "size unknown"
    cost = _span(*projected_s(path or "full", db_bytes)) if db_bytes is not None else "cost unknown"
    if path == "delta":
        return (
            "content (verify, phase 5): pre-copy path -- both hosts' tuple versions read, "
            "only what was written since the delta's last prints digested again; "
            f"projected {cost} for {size} inside the window (measured: about 37 s at 11 GiB)"
        )
    if path == "full":
        return (
            "content (verify, phase 5): FULL path -- every table and chunk range digested "
            "on the frozen source and the target at once, inside the window: "
            f"projected {cost} for {size} (measured: 3.5-9 min at 11 GiB, 0.5-1.3x pg_dump's time); "
            "the window's dump takes no digests (this verify reads the frozen source itself)"
        )
    return (
        "content (verify, phase 5): the path is decided after the freeze; pre-copy "
        f"{_span(*projected_s('delta', db_bytes or 0))}, "
        f"full {_span(*projected_s('full', db_bytes or 0))} for {size}"
    )
