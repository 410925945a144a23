"""``owner_map`` from invoke.yaml: deliberate owner changes that restore applies and verify expects.

On the ground floor (Settings parses it when it loads; ``migrate.privileges`` applies and compares it), so
that settings never imports an operation's package."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class OwnerMapping:
    """``from`` -> ``to`` for objects owned by ``from`` in ``schemas`` (all application schemas if empty)."""

    frm: str
    to: str
    schemas: tuple[str, ...] = ()

    def describe(self) -> str:
        where = f" in schema(s) {', '.join(self.schemas)}" if self.schemas else " in every application schema"
        return f"{self.frm} -> {self.to}{where}"


def parse_owner_map(raw) -> tuple[OwnerMapping, ...]:
    """``owner_map`` from invoke.yaml: a list of ``{from: postgres, to: tracker, schemas: [tracker]}``."""
    if raw in (None, [], {}):
        return ()
    if not isinstance(raw, list):
        raise ConfigError("owner_map must be a list of {from, to, schemas}",
                          hint="e.g. owner_map: [{from: postgres, to: tracker, schemas: [tracker]}]")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not isinstance(m.get("from"), str) or not isinstance(m.get("to"), str) \
                or not m["from"] or not m["to"]:
            raise ConfigError(
                f"owner_map entry {i + 1} needs a 'from' and a 'to' role", hint="e.g. {from: postgres, to: tracker}"
            )
        if m["from"] == m["to"]:
            raise ConfigError(f"owner_map entry {i + 1} maps {m['from']} to itself", hint="remove it")
        schemas = m.get("schemas") or []
        if not isinstance(schemas, list) or not all(isinstance(s, str) and s for s in schemas):
            raise ConfigError(
                f"owner_map entry {i + 1}: schemas must be a list of schema names", hint="e.g. schemas: [tracker]"
            )
        out.append(OwnerMapping(m["from"], m["to"], tuple(schemas)))
    if len({m.frm for m in out}) != len(out):
        raise ConfigError("owner_map lists the same 'from' role twice", hint="one entry per role, with all its schemas")
    return tuple(out)
