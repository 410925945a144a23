"""Which cutover journal made which rollback capture slot: one JSON line per slot, under the state directory.

A second window runs with a new journal (`invoke cutover --journal …`), and a journal may live anywhere;
the target's ``pg_replication_slots`` knows the slot but not the journal. The switch phase registers
each slot here the moment it is named (before it is created), so the next restore, the next cutover's
preflight and restore's space refusal can find the journal that says whether the slot's rollback window
is over. Ground floor: reads and appends a file, nothing else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .files import private_dir

NAME = "capture-slots.jsonl"


def path(state_dir) -> Path:
    return Path(state_dir) / "cutover" / NAME


def parse(text: str) -> dict[str, str]:
    """``{slot: journal path}``; a later line for the same slot wins; torn or foreign lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("slot"), str) and isinstance(rec.get("journal"), str):
            out[rec["slot"]] = rec["journal"]
    return out


def journals(state_dir) -> dict[str, str]:
    p = path(state_dir)
    return parse(p.read_text()) if p.is_file() else {}


def register(state_dir, slot: str, journal) -> None:
    """Append ``slot -> journal`` (absolute), fsynced; a slot already registered to that journal is left alone."""
    journal = str(Path(journal).resolve())
    if journals(state_dir).get(slot) == journal:
        return
    p = path(state_dir)
    private_dir(p.parent)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (json.dumps({"slot": slot, "journal": journal}, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
