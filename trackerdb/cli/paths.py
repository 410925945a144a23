"""Paths named on the command line, checked before any host is touched.

Each check says what is wrong in one line with the flag to fix, so `--journal /root` or `--out /proc/1`
never surface as a traceback half-way through an operation. Pure functions of the local filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

# kernel filesystems: writing our files there is never what the operator meant
_PSEUDO = (Path("/proc"), Path("/sys"), Path("/dev"))


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def _refuse_pseudo(p: Path, flag: str) -> None:
    a = p.absolute()
    if any(a == q or q in a.parents for q in _PSEUDO):
        raise ConfigError(
            f"{flag} {p} is inside {next(q for q in _PSEUDO if a == q or q in a.parents)}, a kernel filesystem",
            hint=f"give {flag} a path on a real disk (e.g. under the state directory)",
        )


def _writable_parent(p: Path, flag: str, what: str) -> None:
    anchor = _nearest_existing(p.parent if what == "file" else p)
    if not anchor.is_dir():
        raise ConfigError(f"{flag} {p}: {anchor} is a file, so the {what} cannot be created there",
                          hint=f"give {flag} a path whose parent is a directory")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {p}: {anchor} is not writable by this user",
                          hint=f"choose a writable place for {flag}, or fix that directory's permissions")


def output_file(path: str | Path, flag: str) -> Path:
    """A file we will create or append to (a journal, an export)."""
    p = Path(path)
    _refuse_pseudo(p, flag)
    if p.is_dir():
        raise ConfigError(
            f"{flag} {p} is a directory; a file is expected", hint=f"name a file, e.g. {flag} {p / 'journal.jsonl'}"
        )
    if p.exists() and not os.access(p, os.R_OK | os.W_OK):
        raise ConfigError(
            f"{flag} {p} is not readable and writable by this user", hint="fix its permissions or choose another file"
        )
    _writable_parent(p, flag, "file")
    return p


def output_dir(path: str | Path, flag: str) -> Path:
    """A directory we will create (if missing) and write files into."""
    p = Path(path)
    _refuse_pseudo(p, flag)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file; a directory is expected", hint=f"name a directory for {flag}")
    _writable_parent(p, flag, "directory")
    return p


def input_file(path: str | Path, flag: str) -> Path:
    """A file we will read (a dump, a manifest, an existing journal)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{flag} {p} does not exist", hint=f"check the path given to {flag}")
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a directory; a file is expected", hint=f"name the file inside it for {flag}")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{flag} {p} is not readable by this user", hint="fix its permissions or run as its owner")
    return p
