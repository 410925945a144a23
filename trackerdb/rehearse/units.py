"""Small pure helpers of the rehearsal's report: timestamps, human units, a journal outcome's state."""

from __future__ import annotations

from datetime import datetime, timezone

OK_OUTCOMES = {"ok", "done", "pass", "passed", "success", "succeeded", "completed", "complete",
               "changed", "unchanged", "skipped", "resumed"}
RUNNING_OUTCOMES = {"", "start", "started", "running", "begin", "in-progress", "in_progress"}


def ts(value) -> float | None:
    """Epoch seconds from a float/int or an ISO 8601 string; None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        d = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def human_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def human_seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def outcome_state(outcome: str | None, end: float | None) -> str:
    """ok | failed | incomplete, from a journal outcome word and whether the phase ended."""
    word = (outcome or "").strip().lower()
    if word in OK_OUTCOMES and end is not None:
        return "ok"
    if word in RUNNING_OUTCOMES or end is None:
        return "incomplete"
    return "ok" if word in OK_OUTCOMES else "failed"
