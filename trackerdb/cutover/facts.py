"""What the cutover's phases hand on, typed: the one place that reads (and writes) their journal JSON.

A phase's facts are journaled as JSON objects (``journal.py``); the keys below are that on-disk format
and stay as they are, so a journal written by an earlier version still loads (an interrupted cutover
resumed across an upgrade). Readers default every key a phase may not have written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CopyPath(StrEnum):
    """The path a cutover takes: the full dump in the window, or the pre-copy's delta (phase 2b)."""

    FULL = "full"
    DELTA = "delta"


RELAY = "relay"  # the final dump's default transfer: through this machine


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


@dataclass(frozen=True)
class Transfer:
    """Preflight's choice for the final dump: host to host (``direct``) or through this machine (``relay``)."""

    transfer: str = RELAY

    @classmethod
    def from_preflight(cls, facts: dict) -> Transfer:
        chosen = facts.get("transfer")
        return cls(str(chosen.get("transfer", RELAY))) if isinstance(chosen, dict) else cls()


@dataclass(frozen=True)
class Freeze:
    """Phase 2: the value to restore on a re-run (``prior_read_only``, noted before the change) and the freeze."""

    recorded: bool = False  # prior_read_only was noted (a re-run must not read the frozen value as prior)
    prior_read_only: str | None = None
    frozen_at: Any = None  # as the source's now() read back (the dump job's key is made from it)
    lsn: str | None = None
    host: str | None = None

    @classmethod
    def from_json(cls, facts: dict) -> Freeze:
        return cls("prior_read_only" in facts, _str(facts.get("prior_read_only")), facts.get("frozen_at"),
                   _str(facts.get("lsn")), _str(facts.get("host")))

    @property
    def source_was_read_only(self) -> bool:
        """A source read-only by itself is not written to (no continuous aggregate refresh)."""
        return str(self.prior_read_only or "").endswith("=on")


@dataclass(frozen=True)
class Dump:
    """Phase 3 (full path) or 8 (pre-copy path): the final dump; or why there is none yet."""

    dump_path: str | None = None
    manifest_path: str | None = None
    source_manifest_path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    dump_on_target: bool = False  # the direct transfer left it on the target: the only copy, kept there
    transfer: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    deferred: str | None = None
    skipped: str | None = None
    off_critical_path: bool = False

    @classmethod
    def from_json(cls, facts: dict) -> Dump:
        size = facts.get("size_bytes")
        return cls(_str(facts.get("dump_path")), _str(facts.get("manifest_path")),
                   _str(facts.get("source_manifest_path")),
                   _str(facts.get("sha256")), int(size) if size is not None else None,
                   bool(facts.get("dump_on_target")),
                   _str(facts.get("transfer")), dict(facts.get("row_counts") or {}), _str(facts.get("deferred")),
                   _str(facts.get("skipped")), bool(facts.get("off_critical_path")))

    def to_json(self) -> dict:
        if self.dump_path is None:
            return {k: v for k, v in (("deferred", self.deferred), ("skipped", self.skipped)) if v is not None}
        out = {"dump_path": self.dump_path, "manifest_path": self.manifest_path,
               "source_manifest_path": self.source_manifest_path, "sha256": self.sha256, "size_bytes": self.size_bytes,
               "dump_on_target": self.dump_on_target, "transfer": self.transfer, "row_counts": self.row_counts}
        return out | ({"off_critical_path": True} if self.off_critical_path else {})


@dataclass(frozen=True)
class PathChoice:
    """Phase 2b's decision (journaled before it copies anything); ``full`` for journals without 2b."""

    path: CopyPath = CopyPath.FULL
    reasons: tuple[str, ...] = ()
    precopy_recorded_at: str | None = None
    through_freeze: Any = None  # a completed rollback's record: the target was left frozen
    prints_file: str | None = None  # the prints the delta kept (verify reads again only what was written since)

    @classmethod
    def from_json(cls, facts: dict) -> PathChoice:
        return cls(CopyPath(facts.get("path") or CopyPath.FULL), tuple(facts.get("reasons") or ()),
                   _str(facts.get("precopy_recorded_at")), facts.get("through_freeze"), _str(facts.get("prints_file")))


@dataclass(frozen=True)
class Prepare:
    """Phase 1a: the path the window expects, and the prints its first round kept for phase 2b."""

    path_expected: CopyPath | None = None
    prints_file: str | None = None

    @classmethod
    def from_json(cls, facts: dict) -> Prepare:
        expected = facts.get("path_expected")
        return cls(CopyPath(expected) if expected else None, _str(facts.get("prints_file")))


@dataclass(frozen=True)
class Switch:
    """Phase 6: the application's endpoint before and after (``old``/``new`` noted before the change)."""

    recorded: bool = False
    mode: str | None = None
    old: Any = None
    new: Any = None
    ttl: Any = None
    insync_at: float | None = None

    @classmethod
    def from_json(cls, facts: dict) -> Switch:
        at = facts.get("insync_at")
        return cls("old" in facts, _str(facts.get("mode")), facts.get("old"), facts.get("new"), facts.get("ttl"),
                   float(at) if at is not None else None)

    def to_note(self) -> dict:
        return {"mode": self.mode, "old": self.old, "new": self.new}
