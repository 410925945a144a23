"""Binary streams now live on ``Remote``/``LocalHost`` (``trackerdb.remote``).

# alias kept for in-flight branches; remove after merge
"""

from __future__ import annotations

from ..files import sha256_file  # noqa: F401  (alias kept for in-flight branches; remove after merge)
from ..remote import CHUNK, StreamResult  # noqa: F401  (alias kept for in-flight branches; remove after merge)


# alias kept for in-flight branches; remove after merge
def stream_stdout(host, line: str, sink, progress=None, total=None) -> StreamResult:
    return host.stream_stdout(line, sink, progress=progress, total=total)


# alias kept for in-flight branches; remove after merge
def feed_stdin(host, line: str, path: str, limit: int | None = None) -> tuple[int, str, str]:
    return host.feed_stdin(line, path, limit=limit)


# alias kept for in-flight branches; remove after merge
def run_with_stdin(host, line: str, data, check: bool = True, timeout: float | None = None):
    return host.run(line, stdin=data, check=check, timeout=timeout)


# alias kept for in-flight branches; remove after merge
def write_text(host, path: str, content: str, mode: str = "0640", owner: str = "postgres") -> None:
    host.write_file(path, content, mode=mode, owner=owner)
