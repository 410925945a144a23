"""The application's side of the window, configured in invoke.yaml (``trackerdb.application``), no code
per platform:

- ``stop``: ordered steps run before the freeze (proxy, app, workers, command runner… as the
  maintenance guide orders them). A step may carry a ``drain`` probe: a command printing a number
  (a queue size), sampled every ``every_s`` until it is at or below ``threshold`` and has not risen
  over ``window_s``; only then does the step's command run. Past ``timeout_s`` the cutover stops
  before the freeze: nothing frozen, nothing switched.
- ``start``: ordered steps run after the switch (list them in the reverse of the stop order); a
  rollback of a cutover that stopped the application runs them too, after the source is back.
- ``health``: HTTP URLs (2xx; a bare string is a URL) or commands (exit 0; only as ``run:``) that must
  all pass, retried every ``health_every_s`` up to ``health_timeout_s``, before the cutover reports success.

Every duration is a finite number of seconds up to a day (``every_s`` up to an hour): ``.inf`` or a
typo's huge value would hold the window open forever. All of it is checked when the config is read,
before anything runs.

Commands run on the operator's machine with ``bash -c`` (where aws/kubectl/docker are configured),
never with a secret in them (the config is not secret). Every step is journaled as it completes, so a
re-run resumes after the last completed step; drain samples are journaled for the report.

Pure parts (config parsing, the drain verdict, dry-run lines) are separate from the executors.
"""

from __future__ import annotations

import math
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import OpsError, PreflightError, VerifyError
from ..settings import Settings
from ..window_config import AppHooks, HealthCheck, HookStep
from .journal import Journal

APP_STOP, APP_START, HEALTH = "app_stop", "app_start", "health"
ROLLBACK_START = "rollback_app_start"


# ---- config: parsed once with Settings (trackerdb/window_config.py: AppHooks) --------------------

def drain_verdict(samples: list[tuple[float, float]], threshold: float, window_s: float) -> str:
    """``drained`` when the latest sample is at or below ``threshold`` and the samples of the last
    ``window_s`` (which must span it) never rose; else ``waiting``."""
    if not samples:
        return "waiting"
    t_last, v_last = samples[-1]
    if v_last > threshold:
        return "waiting"
    if window_s <= 0:
        return "drained"
    if t_last - samples[0][0] < window_s:
        return "waiting"
    window = [v for t, v in samples if t >= t_last - window_s]
    start = [v for t, v in samples if t <= t_last - window_s][-1:]  # the sample that opens the window
    seq = start + window
    return "drained" if all(b <= a for a, b in zip(seq, seq[1:])) else "waiting"


def parse_number(stdout: str) -> float:
    """The probe's output -> its last number (a queue size); ValueError when there is none."""
    for token in reversed(stdout.replace(",", " ").split()):
        try:
            v = float(token)
        except ValueError:
            continue
        if not math.isnan(v):
            return v
    raise ValueError(f"no number in the probe's output: {stdout.strip()[-120:]!r}")


def dry_run_lines(hooks: AppHooks) -> list[str]:
    lines = []
    for i, s in enumerate(hooks.stop, 1):
        if s.drain:
            d = s.drain
            lines.append(f"app stop {i} {s.name}: wait until `{d.probe}` <= {d.threshold:g}, not rising over "
                         f"{d.window_s:g}s (sampled every {d.every_s:g}s, "
                         f"give up after {d.timeout_s:g}s: nothing frozen)")
        lines.append(f"app stop {i} {s.name}: {s.run}")
    for i, s in enumerate(hooks.start, 1):
        lines.append(f"app start {i} {s.name}: {s.run}")
    for c in hooks.health:
        lines.append(f"health: {f'GET {c.url} -> 2xx' if c.url else f'{c.run} -> exit 0'}"
                     f" (within {hooks.health_timeout_s:g}s)")
    if not hooks.empty and hooks.start:
        lines.append("rollback: after the source is writable again and switched back, start steps in order")
    return lines or ["application: no hooks configured (trackerdb.application): stop and start it yourself"]


# ---- executors --------------------------------------------------------------------------------

def run_command(cmd: str, timeout_s: float) -> tuple[int, str]:
    """``bash -c cmd`` on this machine -> (exit status, last output line). Timeout -> 124."""
    try:
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout_s,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout_s:g}s"
    lines = [ln for ln in (p.stdout + "\n" + p.stderr).splitlines() if ln.strip()]
    return p.returncode, (lines[-1][:300] if lines else "")


def wait_drained(step: HookStep, say, clock=time.monotonic, sleep=time.sleep) -> list[tuple[float, float]]:
    d = step.drain
    if d is None:  # no probe: nothing to wait for
        return []
    t0 = clock()
    samples: list[tuple[float, float]] = []
    while True:
        rc = None
        try:
            p = subprocess.run(["bash", "-c", d.probe], capture_output=True, text=True, timeout=max(5.0, d.every_s * 3),
                               stdin=subprocess.DEVNULL)
            rc = p.returncode
            value = parse_number(p.stdout) if rc == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            value = None
        now = clock() - t0
        if value is not None:
            samples.append((round(now, 2), value))
            verdict = drain_verdict(samples, d.threshold, d.window_s)
            say(f"[app_stop] {step.name}: queue {value:g} (<= {d.threshold:g} and not rising over {d.window_s:g}s: "
                f"{'yes' if verdict == 'drained' else 'not yet'})")
            if verdict == "drained":
                return samples
        else:
            say(f"[app_stop] {step.name}: the drain probe printed no number (exit {rc})")
        if now >= d.timeout_s:
            last = f"last {samples[-1][1]:g}" if samples else "no number read"
            raise PreflightError(
                f"application step {step.name!r}: the queue did not drain within {d.timeout_s:g}s ({last}, threshold "
                f"{d.threshold:g}); the cutover stopped before the freeze: nothing frozen, nothing switched",
                hint="scale the workers up or wait, then re-run `invoke cutover` (steps already stopped stay stopped "
                     "and are not run again); or start the application again with its start steps")
        sleep(d.every_s)


def _run_steps(ctx, phase: str, steps: tuple[HookStep, ...], sleep=time.sleep) -> dict:
    done = list(ctx.facts(phase).get("done") or [])
    record = dict(ctx.facts(phase).get("steps") or {})
    for step in steps:
        if step.name in done:
            ctx.say(f"[{phase}] {step.name}: done earlier")
            continue
        entry: dict = {"started": time.time()}
        if step.drain:
            samples = wait_drained(step, ctx.say, sleep=sleep)
            entry["drain_samples"] = samples[-50:]
            entry["drained_at"] = time.time()
        ctx.say(f"[{phase}] {step.name}: {step.run}")
        rc, last = run_command(step.run, step.timeout_s)
        entry.update({"end": time.time(), "exit": rc, "output": last})
        if rc != 0:
            ctx.journal.note(phase, {"steps": {**record, step.name: entry}})
            raise OpsError(f"application step {step.name!r} failed (exit {rc}): {last}",
                           hint="fix it and re-run `invoke cutover` (completed steps are not run again)")
        done.append(step.name)
        record[step.name] = entry
        ctx.journal.note(phase, {"done": done, "steps": record})
    return {"done": done, "steps": record, "order": [s.name for s in steps]}


def app_stop(ctx, resume: bool) -> dict:
    hooks = ctx.settings.application
    if not hooks.stop:
        return {"skipped": "no stop steps configured"}
    return _run_steps(ctx, APP_STOP, hooks.stop)


def app_start(ctx, resume: bool) -> dict:
    hooks = ctx.settings.application
    if not hooks.start:
        return {"skipped": "no start steps configured"}
    return _run_steps(ctx, APP_START, hooks.start)


def check_once(c: HealthCheck, timeout_s: float = 10.0) -> tuple[bool, str]:
    if c.url:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(urllib.request.Request(c.url, method="GET"), timeout=timeout_s) as r:
                return 200 <= r.status < 300, f"HTTP {r.status}"
        except Exception as exc:  # noqa: BLE001 - any failure is "not healthy yet"
            return False, f"{type(exc).__name__}: {str(exc)[:120]}"
    if c.run is None:  # parse_application gives every check a url or a command
        return False, "neither a url nor a command"
    rc, last = run_command(c.run, timeout_s)
    return rc == 0, f"exit {rc}" + (f": {last}" if last else "")


def health(ctx, resume: bool, clock=time.monotonic, sleep=time.sleep) -> dict:
    hooks = ctx.settings.application
    if not hooks.health:
        return {"skipped": "no health checks configured"}
    t0 = clock()
    attempts = 0
    while True:
        attempts += 1
        results = {c.name: check_once(c) for c in hooks.health}
        bad = {n: why for n, (ok, why) in results.items() if not ok}
        if not bad:
            ctx.say(f"[health] all {len(results)} check(s) pass")
            return {"checks": {n: why for n, (ok, why) in results.items()}, "attempts": attempts,
                    "seconds": round(clock() - t0, 1)}
        if clock() - t0 >= hooks.health_timeout_s:
            first = next(iter(bad.items()))
            raise VerifyError(f"application health: {len(bad)} of {len(results)} check(s) fail after "
                              f"{hooks.health_timeout_s:g}s, first {first[0]}: {first[1]}",
                              hint="the application runs against the target: fix it and re-run `invoke cutover`, "
                                   f"or `invoke rollback --journal {ctx.journal.path}`")
        ctx.say(f"[health] waiting: {', '.join(f'{n}: {w}' for n, w in bad.items())}")
        sleep(hooks.health_every_s)


@dataclass
class _RollbackCtx:
    settings: Settings
    journal: Journal
    progress: Callable[[str], None] | None = None
    notes: dict = field(default_factory=dict)

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    def facts(self, phase: str) -> dict:
        return self.journal.state(phase).facts


def rollback_start(settings: Settings, journal: Journal, progress: Callable[[str], None] | None = None) -> dict | None:
    """On rollback: if this cutover stopped the application, start it again (the start steps, in
    order) once the source is writable and the application points back at it. Journaled under its
    own phase, so a repeated rollback does not start anything twice."""
    hooks = settings.application
    stopped = journal.state(APP_STOP).facts.get("done") or []
    if not stopped or not hooks.start:
        return None
    ctx = _RollbackCtx(settings, journal, progress)
    if journal.state(ROLLBACK_START).status == "ok":
        return journal.state(ROLLBACK_START).facts
    journal.begin(ROLLBACK_START, {})
    try:
        facts = _run_steps(ctx, ROLLBACK_START, hooks.start)
    except BaseException as exc:
        journal.end(ROLLBACK_START, "failed", error=exc.one_line() if isinstance(exc, OpsError) else type(exc).__name__)
        raise
    journal.end(ROLLBACK_START, "ok", facts)
    return facts


# ---- report (pure) ----------------------------------------------------------------------------

def timeline_rows(phase: str, facts: dict) -> list[dict]:
    """A hooks phase's journaled steps as timeline rows (phase name, start, end, outcome): the wait for
    a drain probe and each command, so the report shows where the application's part of the window went."""
    rows = []
    for name, st in (facts.get("steps") or {}).items():
        start = st.get("started")
        if st.get("drain_samples") is not None and st.get("drained_at") and start:
            last = st["drain_samples"][-1][1] if st["drain_samples"] else None
            label = f"{phase}: {name} drain (last {last:g})" if last is not None else f"{phase}: {name} drain"
            rows.append({"phase": label,
                         "start": start, "end": st["drained_at"], "outcome": "ok"})
            start = st["drained_at"]
        if start and st.get("end"):
            rows.append({"phase": f"{phase}: {name}", "start": start, "end": st["end"],
                         "outcome": "ok" if st.get("exit") == 0 else "failed"})
    return rows
