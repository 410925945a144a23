"""What every task shares: Settings from invoke's config, one-line errors, tables and JSON."""

from __future__ import annotations

import functools
import json
import sys

from invoke import Exit
from rich.console import Console
from rich.table import Table

from .. import inputs
from ..errors import ConfigError, OpsError
from ..settings import Settings
from ..steps import Check, Outcome

console = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


def settings(c) -> Settings:
    return Settings.load(c.config.get("trackerdb", {}))


def number_flag(value, flag: str, default, lo, hi, *, whole: bool = False, example=None):
    """A number given on the command line, in [lo, hi]; ``default`` when the flag was not given.

    Tasks declare numeric flags with a ``None`` default so invoke passes the text through: invoke's
    own int()/float() cast would print its traceback for ``--scale abc``. Checked before anything runs."""
    if value is None:
        return default
    n, problem = (inputs.integer if whole else inputs.number)(value, lo, hi)
    if problem is not None:
        raise ConfigError(
            f"{flag} {value!r} {problem}", hint=f"e.g. {flag} {example if example is not None else default}"
        )
    return n


def ops_task(fn):
    """Expected failures become one line on stderr and exit 1; anything else is a bug and keeps its trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpsError as exc:
            console.print(f"[bold red]error:[/] {exc.one_line()}", markup=True, soft_wrap=True)
            raise Exit(code=1) from None
        except OSError as exc:  # a path the checks could not foresee (a full disk, a vanished directory)
            where = f" {exc.filename}" if exc.filename else ""
            console.print(
                f"[bold red]error:[/]{where}: {exc.strerror or exc} (hint: check that path and the local disk; "
                "re-run the same command to continue)",
                markup=True,
                soft_wrap=True,
            )
            raise Exit(code=1) from None
        except KeyboardInterrupt:
            console.print("interrupted; re-run the same command to continue where it stopped")
            raise Exit(code=130) from None

    return wrapper


def elapsed_progress():
    """A progress callback that prints each message with the seconds since it was made."""
    import time

    start = time.monotonic()

    def say(msg: str) -> None:
        console.print(f"[{time.monotonic() - start:7.1f}s] {msg}", markup=False, highlight=False)
    return say


def print_outcome(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(outcome.to_json())
        return
    table = Table(title=outcome.title + (" (dry run: nothing changed)" if outcome.dry_run else ""))
    table.add_column("step")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for s in outcome.steps:
        status = ("would change" if outcome.dry_run else "changed") if s.changed else "unchanged"
        table.add_row(s.name, status, s.detail)
        if outcome.dry_run:
            for cmd in s.commands:
                table.add_row("", "", f"  $ {cmd}")
    out.print(table)
    out.print("changed" if outcome.changed else "no changes: the host already matches")


def print_checks(title: str, checks: list[Check], as_json: bool, extra: dict | None = None) -> bool:
    ok = all(c.ok for c in checks)
    if as_json:
        from ..steps import checks_to_dict

        print(json.dumps(checks_to_dict(checks) | (extra or {}), indent=2))
        return ok
    table = Table(title=title)
    for col in ("check", "status", "observed", "expected"):
        table.add_column(col, overflow="fold")
    for c in checks:
        status = "[yellow]note[/]" if c.note and c.ok else ("[green]ok[/]" if c.ok else "[bold red]FAIL[/]")
        table.add_row(c.name, status, c.observed, c.expected)
    out.print(table)
    counted = [c for c in checks if not c.note]  # a note is said, never counted as a passing check
    notes = len(checks) - len(counted)
    out.print(
        f"{sum(c.ok for c in counted)}/{len(counted)} checks passed" + (f"; {notes} note(s) above" if notes else "")
    )
    return ok


def fail_unless(ok: bool, message: str) -> None:
    if not ok:
        console.print(f"[bold red]error:[/] {message}", markup=True)
        sys.stdout.flush()
        raise Exit(code=1)
