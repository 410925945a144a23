"""One shape of progress for every long operation: ``progress(step, done=None, total=None)``.

``step`` names what runs ("dump", "upload", "pg_restore data", or a whole sentence); ``done``/``total``
count its bytes (or items) when it has any. A ``say(msg)`` function is called the same way with a
message alone, so a line printer is a ``Progress`` as soon as it accepts the two counts
(``cutover/progress.py``'s ``step_progress``). Transports count the bytes of one transfer with a
``ByteCount`` (``done, total``); an operation hands them ``bytes_of(progress, step)``, never a
second shape of its own.
"""

from __future__ import annotations

from typing import Callable, Protocol

#: a line of progress for the operator (a task's printer, a journal's note)
Say = Callable[[str], None]
#: one transfer's bytes so far and its total (None: unknown), inside a transport call
ByteCount = Callable[[int, "int | None"], None]


class Progress(Protocol):
    """What every operation that reports progress calls: a step, and its counts when it has them."""

    def __call__(self, step: str, done: float | None = None, total: float | None = None, /) -> None: ...


def quiet(step: str, done: float | None = None, total: float | None = None, /) -> None:
    """The progress of a caller that wants none."""


def bytes_of(progress: Progress | None, step: str) -> ByteCount:
    """A transport's byte counter that reports as ``step`` of ``progress``."""
    report = progress or quiet

    def count(done: int, total: int | None) -> None:
        report(step, done, total)
    return count
