"""Progress lines from the migrate area's callbacks, for the cutover's phases (pure adapters over ``say``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def bytes_progress(say: Callable[[str], None], label: str, every_s: float = 5.0) -> Callable[..., None]:
    """Byte/step progress: every new step, and at most one line every few seconds."""
    last = {"t": 0.0, "label": None}

    def report(done=None, total=None):
        now = time.monotonic()
        if label == last["label"] and now - last["t"] < every_s and not (total and done == total):
            return
        last["t"], last["label"] = now, label
        if isinstance(done, (int, float)) and total:
            say(f"{label}: {done / 1048576:.1f}/{total / 1048576:.1f} MiB ({100 * done / total:.0f}%)")
        elif isinstance(done, (int, float)) and done:
            say(f"{label}: {done / 1048576:.1f} MiB")
        else:
            say(label)
    return report


def step_progress(say: Callable[[str], None]) -> Callable[..., None]:
    """``report(what, done, total)``: one ``bytes_progress`` per step name."""
    reporters: dict[str, Callable[..., None]] = {}

    def report(what, done=None, total=None):
        key = str(what)
        if key not in reporters:
            reporters[key] = bytes_progress(say, key)
        reporters[key](done, total)
    return report
