"""Files the operator's machine keeps (dumps, manifests, journals, rollback exports): private from the start.

They hold production data or facts about it, so they are created 0600 inside directories we create
0700; no window exists in which another local user could open them. An existing directory the
operator chose (``--out /srv/x``) is left as it is: only what we create is tightened.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | Path) -> Path:
    """``path`` and any missing parents, each created 0700 (existing ones are not changed)."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        if q.parent == q:
            break
        q = q.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is filtered by the umask
    return p


def open_private(path: str | Path, binary: bool = True):
    """A new or truncated file opened for writing, mode 0600 before the first byte; never follows a symlink."""
    p = Path(path)
    private_dir(p.parent)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its old mode through O_CREAT
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8")


def write_private(path: str | Path, text: str) -> Path:
    with open_private(path, binary=False) as f:
        f.write(text)
    return Path(path)


def pump(src, write, chunk: int = 1 << 20, progress=None, start: int = 0, total: int | None = None) -> int:
    """Read the binary stream ``src`` to its end in chunks, handing each to ``write``;
    ``progress(start + bytes so far, total)`` after each. Returns the bytes read."""
    n = 0
    for data in iter(lambda: src.read(chunk), b""):
        write(data)
        n += len(data)
        if progress:
            progress(start + n, total)
    return n


def sha256_file(path: str | Path, progress=None, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size, SHA-256 hex) of a local file, read in chunks; ``progress(done, None)`` after each."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        n = pump(f, h.update, chunk, progress)
    return n, h.hexdigest()
