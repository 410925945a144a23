"""The cutover journal: JSON lines, one record per event, appended and fsynced.

Every record has ``phase``, ``event`` (begin | note | end), ``start``, ``end``, ``outcome`` and
``facts``. The state of a phase is the fold of its records: facts merge in order, the last
``end`` decides the outcome. Resume rules (``decide``):

- a phase whose last record is ``end`` with outcome ``ok`` is never re-run (``skip``);
- a phase never begun is ``run``;
- a phase that began and did not end (the process was killed) or ended ``failed`` is ``resume``:
  its function is called again with the facts recorded so far, and every destructive phase is
  written so that running it again is safe (it reads the host and the recorded facts first).

Secrets are never written: values that are ``Secret`` objects, keys that name a secret, and any
registered secret value inside a string are replaced by ``***`` before a record reaches the file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OpsError
from ..files import private_dir
from ..secrets import Secret, scrub  # noqa: F401  (scrub: the journal's and the notifications' one rule)

SKIP, RUN, RESUME = "skip", "run", "resume"


@dataclass
class PhaseState:
    phase: str
    status: str = "pending"  # pending | started | ok | failed
    start: float | None = None  # first begin: an interrupted phase's time counts from here
    last_start: float | None = None
    end: float | None = None
    facts: dict = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0

    @property
    def done(self) -> bool:
        return self.status == "ok"

    @property
    def elapsed(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return round(self.end - self.start, 3)


def fold(records: list[dict]) -> dict[str, PhaseState]:
    """Phase states from journal records, in the order phases first appear."""
    states: dict[str, PhaseState] = {}
    for r in records:
        st = states.setdefault(r["phase"], PhaseState(r["phase"]))
        ev = r.get("event")
        st.facts.update(r.get("facts") or {})
        if ev == "begin":
            st.attempts += 1
            if st.start is None:  # the phase's start is its first begin (the outage starts once)
                st.start = r.get("start")
            st.last_start = r.get("start")
            st.status, st.end, st.error = "started", None, None
        elif ev == "end":
            st.end = r.get("end")
            st.status = "ok" if r.get("outcome") == "ok" else "failed"
            st.error = r.get("error")
    return states


def decide(phases: list[str], states: dict[str, PhaseState]) -> list[tuple[str, str]]:
    """For each phase in order: skip (done), resume (begun, not done) or run (never begun).

    A phase after one that is not done cannot have completed legitimately; if the journal says it
    did, the journal is inconsistent and we refuse rather than guess.
    """
    plan = []
    gap = None
    for p in phases:
        st = states.get(p)
        if st is not None and st.done:
            if gap is not None:
                raise OpsError(f"journal says phase {p!r} completed but the earlier phase {gap!r} did not",
                               hint="the journal was edited or belongs to another run; start a new one with --journal")
            plan.append((p, SKIP))
        elif st is not None and st.status in ("started", "failed"):
            gap = gap or p
            plan.append((p, RESUME))
        else:
            gap = gap or p
            plan.append((p, RUN))
    return plan


def _drop_torn_tail(fd: int) -> None:
    """A record cut off by a kill mid-write was never complete: cut it off before appending."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
    keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
    os.ftruncate(fd, keep)


class Journal:
    """Append-only JSON-lines journal. ``secrets`` are values scrubbed from every record."""

    def __init__(self, path: str | os.PathLike, secrets: tuple[str, ...] = (), clock=time.time):
        self.path = Path(path)
        self.secrets = tuple(s.reveal() if isinstance(s, Secret) else s for s in secrets if s)
        self.clock = clock

    def add_secret(self, secret) -> None:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            self.secrets = self.secrets + (value,)

    # ---- reading ---------------------------------------------------------------------------
    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        lines = self.path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # a torn last line from a kill mid-write: ignore it
                    continue
                raise OpsError(f"journal {self.path} line {i + 1} is not JSON",
                               hint="the journal is damaged; inspect it") from None
        return out

    def states(self) -> dict[str, PhaseState]:
        return fold(self.records())

    def state(self, phase: str) -> PhaseState:
        return self.states().get(phase) or PhaseState(phase)

    def facts(self) -> dict[str, dict]:
        return {p: st.facts for p, st in self.states().items()}

    # ---- writing ---------------------------------------------------------------------------
    def _append(self, record: dict) -> dict:
        record = scrub(record, self.secrets)
        private_dir(self.path.parent)
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _drop_torn_tail(fd)
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def begin(self, phase: str, facts: dict | None = None) -> dict:
        now = self.clock()
        return self._append({"phase": phase, "event": "begin", "start": now, "end": None, "outcome": "started",
                             "facts": facts or {}})

    def note(self, phase: str, facts: dict) -> dict:
        """Facts learned mid-phase, written *before* the change they protect (e.g. a record's old value)."""
        now = self.clock()
        return self._append({"phase": phase, "event": "note", "start": now, "end": None, "outcome": "started",
                             "facts": facts})

    def end(self, phase: str, outcome: str = "ok", facts: dict | None = None, error: str | None = None) -> dict:
        now = self.clock()
        start = self.state(phase).start
        rec = {"phase": phase, "event": "end", "start": start, "end": now, "outcome": outcome, "facts": facts or {}}
        if error:
            rec["error"] = error
        return self._append(rec)
