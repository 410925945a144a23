"""What every cutover phase is called with: Settings, the journal, the dump directory, progress, the
task's session, and the typed facts of earlier phases (``facts.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..psql import Psql
from ..session import Session
from ..settings import Settings
from . import facts as fc
from .journal import Journal

PREFLIGHT, PREPARE, FREEZE, DUMP, DELTA, SWITCH = "preflight", "prepare", "freeze", "dump", "delta", "switch"


class Ctx:
    def __init__(self, settings: Settings, journal: Journal, dump_dir: Path,
                 progress: Callable[[str], None] | None = None, session: Session | None = None, full: bool = False):
        self.settings = settings
        self.journal = journal
        self.dump_dir = dump_dir
        self.progress = progress
        # the task's: one connection per host, each secret fetched once
        self.session: Session = session if session is not None else Session(settings)
        self.full = full  # --full: the full dump path whatever the pre-copy

    @property
    def secrets(self) -> list:
        return self.session.secrets

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    def facts(self, phase: str) -> dict:
        return self.journal.state(phase).facts

    def remote(self, which: str):
        return self.session.remote(which)

    def psql(self, which: str) -> Psql:
        """The session's psql on the source's or the target's cluster (on that cluster's port)."""
        return self.session.psql(which)

    def close(self) -> None:
        self.session.close()


# ---- what earlier phases handed on, typed (over anything with ``facts(phase)``: a Ctx, a test's stand-in) ----
class HasFacts(Protocol):
    def facts(self, phase: str) -> dict: ...


def transfer(ctx: HasFacts) -> str:
    return fc.Transfer.from_preflight(ctx.facts(PREFLIGHT)).transfer


def prepare_facts(ctx: HasFacts) -> fc.Prepare:
    return fc.Prepare.from_json(ctx.facts(PREPARE))


def freeze_facts(ctx: HasFacts) -> fc.Freeze:
    return fc.Freeze.from_json(ctx.facts(FREEZE))


def dump_facts(ctx: HasFacts) -> fc.Dump:
    return fc.Dump.from_json(ctx.facts(DUMP))


def path_choice(ctx: HasFacts) -> fc.PathChoice:
    return fc.PathChoice.from_json(ctx.facts(DELTA))


def switch_facts(ctx: HasFacts) -> fc.Switch:
    return fc.Switch.from_json(ctx.facts(SWITCH))


def rollback_decision_point(journal_path: object) -> str:
    return ("ROLLBACK DECISION POINT: until phase 6 (switch) completes, rollback only makes the source writable again "
            "(nothing was written anywhere else). After the switch, rollback also exports the rows written on the "
            "target and can replay them on the source. Decide before the source is decommissioned. "
            f"Command: invoke rollback --journal {journal_path}   (add --replay to apply the exported rows)")
