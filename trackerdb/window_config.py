"""The window's configuration, parsed once when Settings load (``Settings.application``, ``.switch``,
``.notify``): the application's hooks (``trackerdb.application``, run by ``cutover/hooks.py``), how the
application is pointed at the new host (``trackerdb.switch``, ``cutover/switch.py``) and where phase
notifications go (``trackerdb.notify``, ``notify.py``).

Pure: no host, no file read. Every bad value is one ``ConfigError`` naming its key, with a hint, before
any task reaches a host. What only a use can tell (a Route53 zone that is not set, an old value nobody
knows, a CA file that is not there) is checked where it is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

HINT = "see trackerdb.application in invoke.yaml (README: Application hooks)"


# ---- trackerdb.application ---------------------------------------------------------------------

@dataclass(frozen=True)
class Drain:
    probe: str
    every_s: float = 10.0
    threshold: float = 0.0
    window_s: float = 120.0
    timeout_s: float = 900.0


@dataclass(frozen=True)
class HookStep:
    name: str
    run: str
    drain: Drain | None = None
    timeout_s: float = 600.0


@dataclass(frozen=True)
class HealthCheck:
    name: str
    url: str | None = None
    run: str | None = None


@dataclass(frozen=True)
class AppHooks:
    stop: tuple[HookStep, ...] = ()
    start: tuple[HookStep, ...] = ()
    health: tuple[HealthCheck, ...] = ()
    health_timeout_s: float = 300.0
    health_every_s: float = 5.0

    @property
    def empty(self) -> bool:
        return not (self.stop or self.start or self.health)


DAY_S = 86400.0  # no wait, timeout or interval of the window is longer: a bigger one is a typo (or .inf)


def _num(raw: dict[str, Any], key: str, default: float, where: str,
         minimum: float = 0.0, maximum: float = DAY_S) -> float:
    """A finite number in [minimum, maximum]: YAML's ``.inf``/``.nan``, ``yes`` and text are refused."""
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}.{key} must be a number, not {v!r}", hint=HINT)
    f = float(v)
    if not math.isfinite(f) or not minimum <= f <= maximum:
        raise ConfigError(f"{where}.{key} must be a number from {minimum:g} to {maximum:g}, not {v!r}", hint=HINT)
    return f


def _step(raw: object, where: str) -> HookStep:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with name and run, not {raw!r}", hint=HINT)
    unknown = set(raw) - {"name", "run", "drain", "timeout_s"}
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}", hint=HINT)
    name, run = raw.get("name"), raw.get("run")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name is missing", hint=HINT)
    if not isinstance(run, str) or not run.strip():
        raise ConfigError(f"{where} ({name}): run must be a command", hint=HINT)
    drain = None
    if raw.get("drain") is not None:
        d = raw["drain"]
        w = f"{where}.drain"
        if not isinstance(d, dict) or not isinstance(d.get("probe"), str) or not d["probe"].strip():
            raise ConfigError(f"{w} ({name}) needs a probe command that prints a number", hint=HINT)
        unknown = set(d) - {"probe", "every_s", "threshold", "window_s", "timeout_s"}
        if unknown:
            raise ConfigError(f"{w} has unknown key(s) {', '.join(sorted(unknown))}", hint=HINT)
        drain = Drain(d["probe"], _num(d, "every_s", 10, w, 0.1, 3600), _num(d, "threshold", 0, w, -1e15, 1e15),
                      _num(d, "window_s", 120, w), _num(d, "timeout_s", 900, w, 0.1))
    return HookStep(name.strip(), run, drain, _num(raw, "timeout_s", 600, where, 1))


def _check_url(url: object, where: str) -> str:
    parts, host = None, None
    if isinstance(url, str):
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
    if not isinstance(url, str) or parts is None or parts.scheme not in ("http", "https") or not host \
            or url != url.strip():
        raise ConfigError(f"{where}.url must be http:// or https:// with a host, not {url!r}",
                          hint=HINT + "; a command is written {run: '<command>'}")
    return url


def _check(raw: object, where: str) -> HealthCheck:
    """A URL (a bare string or ``url:``) or a command, only ever as ``run:``: a mistyped URL
    (``htps://…``, ``app:8080/health``) must not become a shell command."""
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict) or bool(raw.get("url")) == bool(raw.get("run")):
        raise ConfigError(f"{where} needs exactly one of url or run", hint=HINT)
    unknown = set(raw) - {"name", "url", "run"}
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}", hint=HINT)
    url, run = raw.get("url"), raw.get("run")
    if url:
        url = _check_url(url, where)
    elif not isinstance(run, str) or not run.strip():
        raise ConfigError(f"{where}.run must be a command, not {run!r}", hint=HINT)
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{where}.name must be text, not {name!r}", hint=HINT)
    return HealthCheck(str(name or url or run), url, run)


def parse_application(raw: object) -> AppHooks:
    """``trackerdb.application`` -> AppHooks; every bad value is one ConfigError naming its key."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("trackerdb.application must be a mapping", hint=HINT)
    unknown = set(raw) - {"stop", "start", "health", "health_timeout_s", "health_every_s"}
    if unknown:
        raise ConfigError(f"trackerdb.application has unknown key(s) {', '.join(sorted(unknown))}", hint=HINT)
    lists = {}
    for key in ("stop", "start", "health"):
        v = raw.get(key) or []
        if not isinstance(v, list):
            raise ConfigError(f"trackerdb.application.{key} must be a list", hint=HINT)
        lists[key] = v
    stop = tuple(_step(s, f"application.stop[{i}]") for i, s in enumerate(lists["stop"]))
    start = tuple(_step(s, f"application.start[{i}]") for i, s in enumerate(lists["start"]))
    for label, steps in (("stop", stop), ("start", start)):
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ConfigError(f"application.{label} has duplicate step names",
                              hint="name each step once (the journal keys on it)")
    return AppHooks(stop, start, tuple(_check(c, f"application.health[{i}]") for i, c in enumerate(lists["health"])),
                    _num(raw, "health_timeout_s", 300, "application", 0.1),
                    _num(raw, "health_every_s", 5, "application", 0.1, 3600))


# ---- trackerdb.switch -----------------------------------------------------------------------------

SWITCH_MODES = ("route53", "command")
PLACEHOLDERS = ("{old}", "{new}")
# ``{word}`` not preceded by ``$`` (``${VAR}`` is the shell's): a placeholder, meant or mistyped
_PLACEHOLDER = re.compile(r"(?<![$\\]){([A-Za-z_][A-Za-z0-9_]*)}")
COMMAND_HINT = "e.g. switch.command: './repoint-app {old} {new}' (only {old} and {new} are replaced)"


@dataclass(frozen=True)
class SwitchConfig:
    """``trackerdb.switch``: a Route53 record (``zone_id``, ``record_name``) or an operator's ``command``;
    ``old``/``new``: the values before and after (default: the source's and the target's addresses)."""

    mode: str = "route53"
    zone_id: str | None = None
    record_name: str | None = None
    ttl_wait: bool = True
    command: str | None = None
    old: str | None = None
    new: str | None = None


def check_template(template: object) -> str:
    """``switch.command`` if it is a command with ``{new}`` and no placeholder other than ``{old}``/``{new}``."""
    if not isinstance(template, str) or not template.strip() or "{new}" not in template:
        raise ConfigError("switch.mode is command but switch.command is not set or has no {new} placeholder",
                          hint=COMMAND_HINT)
    unknown = sorted({m.group(0) for m in _PLACEHOLDER.finditer(template)} - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"switch.command has unknown placeholder(s) {', '.join(unknown)}", hint=COMMAND_HINT)
    return template


def _text(raw: dict[str, Any], key: str, where: str, hint: str) -> str | None:
    """An optional string value (None when unset or empty)."""
    v = raw.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{where}.{key} must be text, not {v!r}", hint=hint)
    return v


def parse_switch(raw: object) -> SwitchConfig:
    """``trackerdb.switch`` -> SwitchConfig. The mode and, in command mode, the command are checked here;
    a Route53 zone and record are required only by the switch itself (``cutover/switch.py``)."""
    raw = raw or {}
    hint = "set trackerdb.switch.mode"
    if not isinstance(raw, dict):
        raise ConfigError("trackerdb.switch must be a mapping", hint=hint)
    mode = raw.get("mode") or "route53"
    if mode not in SWITCH_MODES:
        raise ConfigError(f"switch.mode {mode!r} is not route53 or command", hint=hint)
    ttl_wait = raw.get("ttl_wait", True)
    if not isinstance(ttl_wait, bool):
        raise ConfigError(f"switch.ttl_wait must be true or false, not {ttl_wait!r}",
                          hint="set trackerdb.switch.ttl_wait")
    command = check_template(raw.get("command")) if mode == "command" else _text(raw, "command", "switch", COMMAND_HINT)
    where = "set trackerdb.switch"
    return SwitchConfig(mode=mode, zone_id=_text(raw, "zone_id", "switch", where),
                        record_name=_text(raw, "record_name", "switch", where), ttl_wait=ttl_wait, command=command,
                        old=_text(raw, "old", "switch", where), new=_text(raw, "new", "switch", where))


# ---- trackerdb.notify -----------------------------------------------------------------------------

@dataclass(frozen=True)
class NotifyConfig:
    """``trackerdb.notify``: the NAME of the Secrets Manager secret holding the webhook URL (None: no
    notifications) and an optional CA bundle for a receiver with a private CA."""

    webhook_secret_name: str | None = None
    ca_file: str | None = None


def parse_notify(raw: object) -> NotifyConfig:
    raw = raw or {}
    hint = "set trackerdb.notify.webhook_secret_name (the secret's name) and, for a private CA, notify.ca_file"
    if not isinstance(raw, dict):
        raise ConfigError("trackerdb.notify must be a mapping", hint=hint)
    unknown = set(raw) - {"webhook_secret_name", "ca_file"}
    if unknown:
        raise ConfigError(f"trackerdb.notify has unknown key(s) {', '.join(sorted(unknown))}", hint=hint)
    return NotifyConfig(_text(raw, "webhook_secret_name", "notify", hint), _text(raw, "ca_file", "notify", hint))
