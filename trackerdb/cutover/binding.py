"""A cutover journal is bound to the environment it was started in.

The preflight records what identifies the move (environment, the stack's instance, the source's address
and port, the database; the target is the stack's instance: its address may be overridden to reach it); a
resumed cutover and ``invoke rollback`` refuse a journal whose record differs, naming each difference: a
journal copied from another environment (or the lab) must never drive this one's switch, freeze or replay
(``rollback --journal <another's>`` in command-switch mode would point the application at that journal's
``old``). Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import PreflightError

if TYPE_CHECKING:
    from ..settings import HostSpec, Settings

KEY = "binding"
SYSTEM_ID = "system_identifier"
SYSTEM_ID_SQL = "SELECT system_identifier FROM pg_control_system();"


class BindingError(PreflightError):
    """The journal belongs to another cutover (environment or target cluster)."""


def binding(settings: Settings) -> dict:
    """What identifies the move in ``settings`` (what a field does not hold is recorded empty)."""
    def at(host: HostSpec | None, port: int) -> str:
        return f"{host.address}:{port}" if host is not None else ""

    return {"environment": str(settings.environment or ""),
            "instance_id": str(settings.outputs.get("instance_id") or ""),
            "source": at(settings.source, settings.source_port),
            "database": str(settings.database or "")}


def differences(recorded: dict, current: dict) -> list[str]:
    return [f"{k} {recorded.get(k)!r} recorded, {current.get(k)!r} now" for k in sorted(set(recorded) | set(current))
            if recorded.get(k) != current.get(k)]


def check(journal_path, recorded: dict | None, settings: Settings) -> None:
    """BindingError when ``recorded`` (the journal's preflight facts' binding) is another environment's.
    A journal from before bindings were recorded has none: accepted. The target's system identifier is
    ``check_target``'s (it needs the target)."""
    if not recorded:
        return
    diff = differences({k: v for k, v in recorded.items() if k != SYSTEM_ID}, binding(settings))
    if diff:
        raise BindingError(f"journal {journal_path} belongs to another cutover: {'; '.join(diff)}",
                             hint="use this environment's own journal (--journal), or a new one; nothing was changed")


def target_system_identifier(psql) -> str:
    """The target cluster's system identifier (``psql``: the target's ``Psql``)."""
    return psql.value(SYSTEM_ID_SQL)


def check_target(journal_path, recorded: dict | None, system_identifier: str | None) -> None:
    """BindingError when the journal recorded another target cluster than the one answering now.
    Nothing recorded (a journal from before) or nothing read (the target does not answer): accepted."""
    was = (recorded or {}).get(SYSTEM_ID)
    if not was or not system_identifier or str(was) == str(system_identifier):
        return
    raise BindingError(f"journal {journal_path} belongs to another target cluster: system identifier {was} recorded, "
                       f"{system_identifier} now",
                       hint="the target was rebuilt (initdb) or is another host: start a new cutover with a new "
                            "--journal; nothing was changed")
