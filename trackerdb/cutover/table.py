"""The cutover's phase record and the pure rules over the table (``phases.TABLE``, in runbook order).

Each phase is one ``Phase``: its id (the journal's key), the runbook step ("1a", "6b", ...), its title,
the function ``fn(ctx, resume) -> facts``, whether it changes a host in a way a rollback must undo
(``destructive``), the earlier phases whose facts it reads, and whether it may run on its own
(``invoke cutover-phase ID``) instead of only inside the window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import OpsError

PhaseFn = Callable[[Any, bool], "dict | None"]
#: the supported extension point: after a phase's function succeeded, ``hook(ctx, facts)`` may add facts
#: (journaled with the phase's own); it runs inside the phase, so its failure is the phase's failure
AfterHook = Callable[[Any, dict], "dict | None"]


@dataclass(frozen=True)
class Phase:
    id: str
    step: str  # the runbook's number: "1", "1a", "2b", "6c", "8"
    title: str
    fn: PhaseFn
    destructive: bool = False
    reads: tuple[str, ...] = ()  # earlier phases whose journaled facts this one reads
    alone: bool = False  # may run on its own: `invoke cutover-phase ID`

    @property
    def heading(self) -> str:
        """The step and title as the journal's progress lines, the notifier and the dry run show them."""
        return f"{self.step} {self.title}"


def step_key(step: str) -> tuple[int, str]:
    """"6b" -> (6, "b"): the runbook's order."""
    m = re.fullmatch(r"(\d+)([a-z]?)", step)
    if not m:
        raise ValueError(f"not a runbook step: {step!r}")
    return int(m.group(1)), m.group(2)


def find(table: tuple[Phase, ...], name: str) -> Phase:
    """The phase called ``name`` (its id or its runbook step); a one-line refusal naming the valid ones."""
    for p in table:
        if name in (p.id, p.step):
            return p
    raise OpsError(f"no cutover phase {name!r}",
                   hint="phases that run on their own: " + ", ".join(f"{p.id} ({p.step})" for p in table if p.alone))


def alone(table: tuple[Phase, ...], name: str, done: Mapping[str, bool]) -> Phase:
    """The phase ``name`` if it may run on its own now: marked ``alone`` and every earlier phase done in
    the journal (``done``: phase id -> done), so that the cutover later resumes after it."""
    p = find(table, name)
    valid = ", ".join(f"{q.id} ({q.step})" for q in table if q.alone)
    if not p.alone:
        raise OpsError(f"phase {p.id} ({p.step}) runs only inside the window (`invoke cutover`), not on its own",
                       hint=f"phases that run on their own: {valid}")
    before = [q for q in table[:table.index(p)] if not done.get(q.id)]
    if before:
        first = before[0]
        how = f"`invoke cutover-phase {first.id}`" if first.alone else "`invoke cutover`"
        raise OpsError(f"phase {p.id} ({p.step}) follows {first.id} ({first.step}), "
                       "which this journal has not completed",
                       hint=f"run {how} first (same --journal); nothing was changed")
    return p


def check_after(table: tuple[Phase, ...], after: Mapping[str, AfterHook]) -> None:
    unknown = sorted(set(after) - {p.id for p in table})
    if unknown:
        raise OpsError(f"after-phase hook for unknown phase(s) {', '.join(unknown)}",
                       hint="phases: " + ", ".join(p.id for p in table))
