"""The pre-copy path's records: what an item is (``Item``), a chunk's matching key (``ChunkKey``), a
fingerprint (``Print``) and what the plan does with an item (``Action``).

Keys stay the strings the journal and the prints file have always held (``chunk <hypertable key>
[start, end)``, ``table schema.name``, ...): ``ChunkKey`` builds and reads them, nothing else splits
them. Prints go to and come from JSON only here (``Print.from_json``/``to_json``, ``prints_from_json``/
``prints_to_json``), so a prints file an earlier version wrote loads unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping


class Action(StrEnum):
    """What the plan does with an item; the values are the words the journal and the log have always used."""
    COPY = "copy"
    CREATE = "new"
    DROP = "drop"
    COMPRESS = "compress"
    DECOMPRESS = "decompress"
    SAME = "unchanged"


_CHUNK_RE = re.compile(r"^chunk (?P<ht>.+) \[(?P<start>-?\d+), (?P<end>-?\d+)\)$")


@dataclass(frozen=True)
class ChunkKey:
    """A chunk matched between hosts by its hypertable's key and its range (TimescaleDB's internal units)."""
    hypertable: str
    start: int
    end: int

    def __str__(self) -> str:
        return f"chunk {self.hypertable} [{self.start}, {self.end})"

    @classmethod
    def parse(cls, key: str) -> ChunkKey | None:
        """The key's parts, or None when ``key`` is not a chunk's."""
        m = _CHUNK_RE.match(key)
        return None if m is None else cls(m["ht"], int(m["start"]), int(m["end"]))


def key_kind(key: str) -> str:
    """``chunk``, ``table``, ``sequence``, ...: the first word of an item's key."""
    return key.partition(" ")[0]


@dataclass(frozen=True)
class Item:
    """A table or a chunk on one host, as ``delta_sql.items`` reads it from the catalog."""
    kind: str  # "table" | "chunk"
    rel: str
    owner: str
    columns: list[str]
    bytes: int = 0
    # a chunk's (a table's stay empty)
    hypertable: str = ""  # its hypertable's key
    schema: str = ""
    name: str = ""
    compressed_schema: str | None = None
    compressed_name: str | None = None
    ht_schema: str = ""
    ht_name: str = ""
    ht_rel: str = ""
    time_column: str = ""
    time_type: str = ""
    start: int = 0
    end: int = 0
    compressed: bool = False
    compressed_rel: str | None = None

    @property
    def zrel(self) -> str:
        """A compressed chunk's compressed relation."""
        if self.compressed_rel is None:
            raise ValueError(f"{self.rel} is not compressed")
        return self.compressed_rel

    def zpart(self, name: str) -> str:
        """``compressed_schema`` or ``compressed_name`` of a compressed chunk."""
        value = getattr(self, name) if name in ("compressed_schema", "compressed_name") else None
        if value is None:
            raise ValueError(f"{self.rel} has no {name}")
        return str(value)

    @property
    def chunk_key(self) -> ChunkKey | None:
        return ChunkKey(self.hypertable, self.start, self.end) if self.kind == "chunk" else None


@dataclass(frozen=True)
class Print:
    """An item's fingerprint: rows (``n``), digest (``d``) and the tuple versions it was read from (``v``;
    comparable only with the same host's), or only ``v`` (a version read)."""
    n: int | None = None
    d: str | None = None
    v: str | None = None

    def same_content(self, other: Print | None) -> bool:
        return other is not None and (self.n, self.d) == (other.n, other.d)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | Print) -> Print:
        """A print as JSON (``{"n", "d", "v"}``, any of them missing) or already a ``Print``."""
        if isinstance(doc, Print):
            return doc
        n, d, v = doc.get("n"), doc.get("d"), doc.get("v")
        return cls(None if n is None else int(n), None if d is None else str(d), None if v is None else str(v))

    def to_json(self) -> dict[str, Any]:
        return {k: val for k, val in (("n", self.n), ("d", self.d), ("v", self.v)) if val is not None}


def as_print(p: Mapping[str, Any] | Print | None) -> Print | None:
    return None if p is None else Print.from_json(p)


def prints_from_json(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The prints file (``{"source": {key: print}, "target": {...}, "content": {key: [source, target]}}``,
    as ``run_delta(keep=...)`` fills it) -> the same shape with ``Print``s."""
    doc = doc or {}
    return {"source": {k: Print.from_json(p) for k, p in (doc.get("source") or {}).items()},
            "target": {k: Print.from_json(p) for k, p in (doc.get("target") or {}).items()},
            "content": {k: [as_print(p) for p in pair] for k, pair in (doc.get("content") or {}).items()}}


def prints_to_json(kept: Mapping[str, Any]) -> dict[str, Any]:
    """``prints_from_json``'s inverse: what the prints file holds and ``migrate/content.reuse_prints`` reads."""
    def one(p: Print | Mapping[str, Any] | None) -> dict[str, Any] | None:
        q = as_print(p)
        return None if q is None else q.to_json()
    return {"source": {k: one(p) for k, p in (kept.get("source") or {}).items()},
            "target": {k: one(p) for k, p in (kept.get("target") or {}).items()},
            "content": {k: [one(p) for p in pair] for k, pair in (kept.get("content") or {}).items()}}
