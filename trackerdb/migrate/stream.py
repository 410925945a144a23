"""Binary streams over SSH (or locally): a command's stdout into a file, a file into a command's stdin.

Fabric's ``run`` decodes output as text; a dump is bytes, so these use the paramiko channel under
the same pinned-key connection. Both hash on the fly and report progress.
"""

from __future__ import annotations

import hashlib
import select
import subprocess
import tempfile
from dataclasses import dataclass

from ..errors import HostError
from ..remote import LocalHost

CHUNK = 1 << 20


@dataclass
class StreamResult:
    exit_code: int
    bytes: int
    sha256: str
    stderr: str


def _channel(host, line: str):
    conn = host._connect()
    chan = conn.client.get_transport().open_session()
    chan.exec_command(line)
    return chan


def stream_stdout(host, line: str, sink, progress=None, total=None) -> StreamResult:
    """Run the shell ``line`` on ``host`` and write its stdout (bytes) to ``sink``."""
    h = hashlib.sha256()
    n = 0
    if isinstance(host, LocalHost):
        with tempfile.TemporaryFile() as err:
            p = subprocess.Popen(["bash", "-c", line], stdout=subprocess.PIPE, stderr=err)
            while True:
                data = p.stdout.read(CHUNK)
                if not data:
                    break
                sink.write(data)
                h.update(data)
                n += len(data)
                if progress:
                    progress(n, total)
            code = p.wait()
            err.seek(0)
            return StreamResult(code, n, h.hexdigest(), err.read().decode(errors="replace"))
    chan = _channel(host, line)
    err = bytearray()
    try:
        while True:
            select.select([chan], [], [], 1.0)
            got = False
            while chan.recv_ready():
                data = chan.recv(CHUNK)
                if not data:
                    break
                sink.write(data)
                h.update(data)
                n += len(data)
                got = True
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(CHUNK)
                got = True
            if got and progress:
                progress(n, total)
            if not got and chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if not got and chan.closed:
                break
        code = chan.recv_exit_status()
    except (OSError, EOFError) as exc:
        raise HostError(f"{host.name}: stream interrupted ({exc.__class__.__name__}) after {n} bytes",
                        hint="re-run the same command") from None
    finally:
        chan.close()
    return StreamResult(code, n, h.hexdigest(), err.decode(errors="replace"))


def feed_stdin(host, line: str, path: str, limit: int | None = None) -> tuple[int, str, str]:
    """Run ``line`` with the file at ``path`` on its stdin (stops early if the command stops reading).

    Returns (exit code, stdout, stderr). Used for ``pg_restore -l`` on the target before anything is
    written there: it reads only the table of contents.
    """
    if isinstance(host, LocalHost):
        with open(path, "rb") as f:
            p = subprocess.run(["bash", "-c", line], stdin=f, capture_output=True)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    chan = _channel(host, line)
    out, err = bytearray(), bytearray()
    sent = 0
    try:
        with open(path, "rb") as f:
            while limit is None or sent < limit:
                data = f.read(CHUNK)
                if not data:
                    break
                try:
                    chan.sendall(data)
                except OSError:
                    break  # the command stopped reading: the TOC is all it needed
                sent += len(data)
                while chan.recv_ready():
                    out += chan.recv(CHUNK)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(CHUNK)
                if chan.exit_status_ready():
                    break
        try:
            chan.shutdown_write()
        except OSError:
            pass
        while True:
            select.select([chan], [], [], 1.0)
            got = False
            while chan.recv_ready():
                out += chan.recv(CHUNK)
                got = True
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(CHUNK)
                got = True
            if not got and chan.exit_status_ready():
                break
        code = chan.recv_exit_status()
    finally:
        chan.close()
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def sha256_file(path: str, progress=None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            h.update(data)
            n += len(data)
            if progress:
                progress(n, None)
    return n, h.hexdigest()


def run_with_stdin(host, line: str, data: str | bytes, check: bool = True, timeout: float | None = None):
    """Like ``host.run(line, stdin=data)`` but sends stdin in large chunks.

    Why: invoke feeds a non-terminal ``in_stream`` one byte per loop with a 10 ms nap (about
    100 bytes/s), so a few KB of SQL through ``Remote.run(stdin=…)`` takes a minute. Same Result
    and masking contract as ``Remote.run``.
    """
    from ..remote import Result

    payload = data.encode() if isinstance(data, str) else data
    if isinstance(host, LocalHost):
        p = subprocess.run(["bash", "-c", line], input=payload, capture_output=True, timeout=timeout)
        res = Result(line, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    else:
        try:
            chan = _channel(host, line)
            if timeout:
                chan.settimeout(timeout)
        except Exception as exc:
            raise HostError(f"{host.name}: could not start a command ({exc.__class__.__name__})",
                            hint="the connection dropped; re-run to continue") from None
        out, err = bytearray(), bytearray()
        try:
            view = memoryview(payload)
            while view:
                n = chan.send(view[:CHUNK])
                view = view[n:]
                while chan.recv_ready():
                    out += chan.recv(CHUNK)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(CHUNK)
            chan.shutdown_write()
            while True:
                data_ = chan.recv(CHUNK)
                if not data_:
                    break
                out += data_
            while True:
                e = chan.recv_stderr(CHUNK)
                if not e:
                    break
                err += e
            code = chan.recv_exit_status()
        except Exception as exc:
            raise HostError(f"{host.name}: command did not complete ({exc.__class__.__name__})",
                            hint="the connection dropped or the command timed out; re-run to continue") from None
        finally:
            chan.close()
        res = Result(line, code, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and not res.ok:
        errs = [ln for ln in res.stderr.splitlines() if "ERROR:" in ln or "FATAL:" in ln or "error:" in ln]
        if errs:
            from ..secrets import mask

            raise HostError(mask(f"{host.name}: {errs[0].strip()[:300]}", *host.secrets), hint=host._hint_for(res))
        raise HostError(host._describe_failure(res), hint=host._hint_for(res))
    return res


def write_text(host, path: str, content: str, mode: str = "0640", owner: str = "postgres") -> None:
    """Write a (possibly large) file on the host as root, atomically, via ``run_with_stdin``."""
    from ..remote import atomic_write_argv, wrap

    run_with_stdin(host, wrap(atomic_write_argv(path, mode, owner, owner), sudo=True), content)
