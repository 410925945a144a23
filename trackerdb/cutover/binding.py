"""A cutover journal is bound to the environment it was started in.

The preflight records what identifies the move (environment, the stack's instance, the source's address
and port, the database; the target is the stack's instance: its address may be overridden to reach it); a resumed cutover and ``invoke rollback`` refuse a journal whose
record differs, naming each difference: a journal copied from another environment (or the lab) must
never drive this one's switch, freeze or replay (``rollback --journal <another's>`` in command-switch mode
would point the application at that journal's ``old``). Pure.
"""

from __future__ import annotations

from ..errors import PreflightError

KEY = "binding"


def binding(settings) -> dict:
    """What identifies the move in ``settings`` (a stand-in without a field records it empty)."""
    def at(host, port):
        return f"{host.address}:{port}" if host is not None else ""

    outputs = getattr(settings, "outputs", None) or {}
    return {"environment": str(getattr(settings, "environment", "") or ""),
            "instance_id": str(outputs.get("instance_id") or ""),
            "source": at(getattr(settings, "source", None), getattr(settings, "source_port", None)),
            "database": str(getattr(settings, "database", "") or "")}


def differences(recorded: dict, current: dict) -> list[str]:
    return [f"{k} {recorded.get(k)!r} recorded, {current.get(k)!r} now" for k in sorted(set(recorded) | set(current))
            if recorded.get(k) != current.get(k)]


def check(journal_path, recorded: dict | None, settings) -> None:
    """PreflightError when ``recorded`` (the journal's preflight facts' binding) is another environment's.
    A journal from before bindings were recorded has none: accepted."""
    if not recorded:
        return
    diff = differences(recorded, binding(settings))
    if diff:
        raise PreflightError(f"journal {journal_path} belongs to another cutover: {'; '.join(diff)}",
                             hint="use this environment's own journal (--journal), or a new one; nothing was changed")
