"""Results of operations: each step says whether it changed something, and why not when it didn't."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Step:
    name: str
    changed: bool
    detail: str = ""
    commands: list[str] = field(default_factory=list)  # what ran, or what would run (dry run); secrets masked

    @property
    def status(self) -> str:
        return "changed" if self.changed else "unchanged"


@dataclass
class Check:
    """One verification item: a property of a noun, observed value vs expected value."""

    name: str
    ok: bool
    observed: str = ""
    expected: str = ""
    evidence: str = ""
    # a note: said in the output, never counted as a passing check (e.g. "content not compared by digest")
    note: bool = False

    @property
    def status(self) -> str:
        return "note" if self.note and self.ok else ("ok" if self.ok else "FAIL")


class Outcome:
    """A list of steps with timing, rendered as a table or JSON."""

    def __init__(self, title: str, dry_run: bool = False):
        self.title = title
        self.dry_run = dry_run
        self.steps: list[Step] = []
        self.started = time.time()

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "elapsed_s": round(time.time() - self.started, 2),
            "steps": [asdict(s) for s in self.steps],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def note(name: str, observed: str, expected: str = "", evidence: str = "") -> Check:
    """What a reader must know and no check proves: shown with its message, not counted as passed."""
    return Check(name, True, observed, expected, evidence, note=True)


def checks_to_dict(checks: list[Check]) -> dict:
    return {"ok": all(c.ok for c in checks), "passed": sum(c.ok and not c.note for c in checks),
            "checks": [asdict(c) | {"status": c.status} for c in checks if not c.note],
            "notes": [asdict(c) | {"status": c.status} for c in checks if c.note]}
