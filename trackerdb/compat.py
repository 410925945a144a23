"""The engine compatibility gate: PostgreSQL/TimescaleDB combinations known to break, from
``compat_matrix.toml`` (one row per upstream fact, with its reference).

Pure: version parsing and matching. The callers (provision, restore and cutover preflight,
backrest.check, signoff) read the versions from a host or a package index and ask :func:`check` or
:func:`problems`; a match is refused in one line naming the combination, the symptom and the
reference, with the row's hint.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import PreflightError

MATRIX = Path(__file__).with_name("compat_matrix.toml")
_OPEN = 10 ** 9  # a "*" component of an upper bound


@dataclass(frozen=True)
class Span:
    low: tuple[int, ...]
    high: tuple[int, ...]

    def __contains__(self, v: tuple[int, ...]) -> bool:
        return self.low <= _pad(v) <= self.high


@dataclass(frozen=True)
class Break:
    name: str
    timescaledb: tuple[Span, ...]
    postgresql: tuple[Span, ...]
    symptom: str
    reference: str
    hint: str

    def matches(self, postgresql: tuple[int, ...], timescaledb: tuple[int, ...]) -> bool:
        return any(postgresql in s for s in self.postgresql) and any(timescaledb in s for s in self.timescaledb)


def _pad(parts: tuple[int, ...], fill: int = 0) -> tuple[int, ...]:
    return tuple(parts) + (fill,) * (3 - len(parts))


def _bound(text: str, upper: bool) -> tuple[int, ...]:
    text = text.strip()
    if text == "*":
        return (_OPEN,) * 3 if upper else (0, 0, 0)
    parts = text.split(".")
    if "*" in parts:
        head = tuple(int(p) for p in parts[: parts.index("*")])
        return _pad(head, _OPEN if upper else 0)
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"not a version bound: {text!r}")
    return _pad(tuple(int(p) for p in parts))


def parse_span(text: str) -> Span:
    """``"15.20 - 15.*"``, ``"* - 2.27.2"``, ``"2.32.0"``, ``"16.5"``."""
    lo, sep, hi = text.partition(" - ")
    if not sep:
        return Span(_bound(lo, False), _bound(lo, True))
    return Span(_bound(lo, False), _bound(hi, True))


def version(text) -> tuple[int, ...] | None:
    """The leading dotted number of a version string ("16.10 (Debian …)", "16.10-1.pgdg120+1", "2.18.2",
    "2.18.2~debian12") as a tuple; None when there is none."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", str(text or ""))
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def pg_version_from_num(num) -> str:
    """``server_version_num`` (160010) -> "16.10"."""
    n = int(num)
    return f"{n // 10000}.{n % 10000}"


def parse_matrix(text: str) -> list[Break]:
    rows = tomllib.loads(text).get("broken") or []
    out = []
    for r in rows:
        missing = [k for k in ("name", "timescaledb", "postgresql", "symptom", "reference", "hint") if not r.get(k)]
        if missing:
            raise ValueError(f"compatibility row {r.get('name')!r} lacks {', '.join(missing)}")
        out.append(Break(r["name"], tuple(parse_span(s) for s in r["timescaledb"]),
                         tuple(parse_span(s) for s in r["postgresql"]), r["symptom"], r["reference"], r["hint"]))
    return out


@lru_cache(maxsize=4)
def load(path: Path = MATRIX) -> tuple[Break, ...]:
    return tuple(parse_matrix(path.read_text()))


def breaks(postgresql, timescaledb, table=None) -> list[Break]:
    """The rows a combination matches; none when either version is unknown (no TimescaleDB: nothing to gate)."""
    pg, ts = version(postgresql), version(timescaledb)
    if pg is None or ts is None or len(pg) < 2:
        return []
    return [b for b in (load() if table is None else table) if b.matches(pg, ts)]


def refusal_line(where: str, postgresql, timescaledb, b: Break) -> str:
    pg = ".".join(str(p) for p in version(postgresql) or ())
    ts = ".".join(str(p) for p in version(timescaledb) or ())
    return (f"{where}: PostgreSQL {pg} with TimescaleDB {ts} is a known-broken combination ({b.name}): "
            f"{b.symptom} [{b.reference}]")


def problems(where: str, postgresql, timescaledb, table=None) -> list[tuple[str, str]]:
    """(one line, hint) per matching row."""
    return [(refusal_line(where, postgresql, timescaledb, b), b.hint) for b in breaks(postgresql, timescaledb, table)]


def check(where: str, postgresql, timescaledb, table=None) -> None:
    """Raise :class:`PreflightError` (the first matching row) for a known-broken combination."""
    found = problems(where, postgresql, timescaledb, table)
    if found:
        line, hint = found[0]
        raise PreflightError(line, hint=hint)


# ---- a running host, judged against the table ---------------------------------------------------
#: the server's version and the TimescaleDB its packages provide (what the loader loads for a new database)
ENGINE_SQL = ("SELECT json_build_object('server_version_num', current_setting('server_version_num'), "
              "'timescaledb', (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'))")
EXPECTED = "no known-broken PostgreSQL/TimescaleDB combination (trackerdb/compat_matrix.toml)"


def engine_verdict(where: str, facts: dict, table=None) -> tuple[bool, str, str]:
    """``ENGINE_SQL``'s row -> (ok, observed, hint): the first matching row's line, or the versions seen."""
    pg = pg_version_from_num(facts["server_version_num"]) if facts.get("server_version_num") else None
    ts = facts.get("timescaledb")
    found = problems(where, pg, ts, table)
    if found:
        return False, found[0][0], found[0][1]
    return True, f"{where}: PostgreSQL {pg}, TimescaleDB {ts or 'not installed'}: no known break", ""
