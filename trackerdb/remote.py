"""SSH to a host with Fabric, host keys pinned from a known_hosts file (never trust-on-first-use).

`Remote` is deliberately thin: build commands elsewhere (pure builders), run them here. Secrets go to
remote programs on stdin or in files, never in argv; `mask` scrubs them from any error text.
It is the one transport: commands (``run``), files (``read_file``/``write_file``), binary streams
(``stream_stdout``/``feed_stdin``: Fabric's ``run`` decodes output as text, a dump is bytes) and
resumable uploads (``append_file`` on top of the public ``sftp``). ``LocalHost`` offers the same on
this machine.
"""

from __future__ import annotations

import hashlib
import io
import logging
import select
import shlex
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import pids
from .errors import HostError
from .files import pump
from .limits import STREAM_DEADLINE_S
from .secrets import mask
from .settings import HostSpec

# paramiko logs transport failures with tracebacks on stderr; we turn them into one-line HostErrors instead.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


@dataclass
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class StreamResult:
    exit_code: int
    bytes: int
    sha256: str
    stderr: str


CHUNK = 1 << 20
_ERROR_MARKS = ("ERROR:", "FATAL:", "PANIC:", "error:", "fatal:")


def error_text(output: str, limit: int = 700) -> str:
    """The part of a program's output that says what went wrong, on one line: from the first line that
    carries an error mark (psql: ERROR with its LINE/DETAIL/HINT/CONTEXT lines; the caret line alone
    says nothing) to the end, else the last non-empty line."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    if not lines:
        return "(no output)"
    first = next((i for i, ln in enumerate(lines) if any(m in ln for m in _ERROR_MARKS)), None)
    picked = lines[first:first + 6] if first is not None else lines[-1:]
    picked = [ln for ln in picked if set(ln) != {"^"}]
    text = " / ".join(picked)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wrap(cmd: str | list[str], *, sudo: bool = False, user: str | None = None, cwd: str | None = None) -> str:
    """The shell line that runs ``cmd`` (a list is quoted; a string is run by bash) as root or ``user``."""
    line = shlex.join(cmd) if isinstance(cmd, (list, tuple)) else cmd
    if cwd:
        line = f"cd {shlex.quote(cwd)} && {line}"
    if user:
        return f"sudo -n -H -u {shlex.quote(user)} -- bash -c {shlex.quote(line)}"
    if sudo:
        return f"sudo -n -- bash -c {shlex.quote(line)}"
    return line


# Root writes files into directories other users may write (postgres owns conf.d and its home): a temp file made there
# by name could be swapped for a symlink between creation and chown/chmod/write. This writer opens the directory once,
# creates the temp file O_EXCL|O_NOFOLLOW relative to it, sets owner and mode on the open descriptor, fsyncs and
# renames within the same directory: root never follows a link another user placed, and readers see the old or the new
# file, never half of one.
_ATOMIC_WRITE = r"""
import os, pwd, grp, secrets, sys
path, mode, owner, group = sys.argv[1], int(sys.argv[2], 8), sys.argv[3], sys.argv[4]
d, name = os.path.split(path)
dfd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
tmp = "." + name + "." + secrets.token_hex(6)
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
try:
    os.fchown(fd, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
    os.fchmod(fd, mode)
    data = sys.stdin.buffer.read()
    while data:
        data = data[os.write(fd, data):]
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    os.fsync(dfd)
except BaseException:
    os.unlink(tmp, dir_fd=dfd)
    raise
"""


def atomic_write_argv(path: str, mode: str, owner: str, group: str) -> list[str]:
    """argv that writes stdin to ``path`` atomically as root without following symlinks (see above)."""
    return ["python3", "-c", _ATOMIC_WRITE, path, mode, owner, group]


class _ChunkedIn(io.StringIO):
    """Invoke reads a non-terminal in_stream one character per ``input_sleep`` (10 ms): 60 s for 6 kB.
    Hand it up to 64 kB per read instead, so large stdin (SQL scripts, files) streams at SSH speed."""

    def read(self, size=-1):
        return super().read(65536 if size is not None and 0 <= size < 65536 else size)


class Remote:
    """One SSH connection. ``secrets`` are values to scrub from anything this object raises."""

    def __init__(self, spec: HostSpec, secrets=(), connect_timeout: float = 15):
        self.spec = spec
        self.name = spec.name
        self.secrets = list(secrets)
        self._timeout = connect_timeout
        self._conn = None

    # ---- connection ------------------------------------------------------------------------
    def _connect(self):
        if self._conn is not None:
            return self._conn
        import paramiko
        from fabric import Config, Connection

        spec = self.spec
        if not spec.known_hosts or not Path(spec.known_hosts).is_file():
            raise HostError(
                f"no known_hosts file for {spec.name} ({spec.known_hosts or 'not set'})",
                hint="host keys are pinned: point trackerdb.<host>.known_hosts at the file with its key",
            )
        overrides = {"load_ssh_configs": bool(spec.ssh_config), "timeouts": {"connect": self._timeout}}
        if spec.ssh_config:
            overrides["ssh_config_path"] = spec.ssh_config
        config = Config(overrides=overrides)
        connect_kwargs = {"allow_agent": False, "look_for_keys": spec.key_file is None, "banner_timeout": self._timeout}
        if spec.key_file:
            connect_kwargs["key_filename"] = spec.key_file
        proxy = (spec.proxy_command or "").replace("%h", spec.address).replace("%p", str(spec.port))
        conn = Connection(spec.address, user=spec.user, port=spec.port, config=config, connect_kwargs=connect_kwargs,
                          gateway=paramiko.ProxyCommand(proxy) if proxy else None)
        client = conn.client
        # Fabric auto-adds unknown keys and reads ~/.ssh/known_hosts; we trust only the pinned file.
        client._system_host_keys.clear()
        client._host_keys.clear()
        client.load_host_keys(spec.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.open()
        except paramiko.BadHostKeyException:
            raise HostError(
                f"host key of {spec.name} ({spec.address}) does not match the pinned key in {spec.known_hosts}",
                hint="the host was replaced or this is not the host you think: verify the key out of band before "
                     "updating known_hosts",
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostError(
                    f"host key of {spec.name} ({spec.address}) is not in {spec.known_hosts}; refusing an unknown host",
                    hint="add the host's key to that file from a trusted source (the lab or the EC2 console output)",
                ) from None
            raise HostError(f"SSH to {spec.name} ({spec.address}) failed: {exc}",
                            hint="check the user and key") from None
        except (socket.timeout, TimeoutError, OSError) as exc:
            raise HostError(f"{spec.name} ({spec.address}:{spec.port}) is unreachable: {exc.__class__.__name__}",
                            hint="check the address, security group and ProxyCommand/bastion") from None
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- commands --------------------------------------------------------------------------
    def run(self, cmd, *, sudo: bool = False, user: str | None = None, stdin: str | bytes | None = None,
            check: bool = True, timeout: float | None = None, cwd: str | None = None, echo: bool = False) -> Result:
        line = wrap(cmd, sudo=sudo, user=user, cwd=cwd)
        conn = self._connect()
        in_stream = _ChunkedIn(stdin if isinstance(stdin, str) else stdin.decode()) if stdin is not None else False
        try:
            r = conn.run(line, hide=not echo, warn=True, in_stream=in_stream, timeout=timeout, pty=False)
        except Exception as exc:  # invoke's CommandTimedOut, paramiko transport errors
            raise HostError(f"{self.name}: {mask(line, *self.secrets)[:200]} did not complete: "
                            f"{exc.__class__.__name__}",
                            hint="the connection dropped or the command timed out; re-run to continue") from None
        res = Result(line, r.exited, r.stdout, r.stderr)
        if check and not res.ok:
            raise HostError(self._describe_failure(res), hint=self._hint_for(res))
        return res

    def _describe_failure(self, res: Result) -> str:
        what = error_text(res.stderr or res.stdout)
        return mask(f"{self.name}: `{res.command[:160]}` exited {res.exit_code}: {what}", *self.secrets)

    @staticmethod
    def _hint_for(res: Result) -> str | None:
        if "a password is required" in res.stderr or "sudo: a terminal is required" in res.stderr:
            return "the SSH user needs passwordless sudo"
        return None

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], sudo=True, check=False).ok

    def read_file(self, path: str, *, user: str | None = None) -> str | None:
        """``path``'s text, or None when there is no such file. With ``user`` it is read as that user
        (a file in their home or directories: a link they planted reaches only what they may read)."""
        q = shlex.quote(path)
        r = self.run(f"if [ -f {q} ]; then cat {q}; else exit 3; fi", sudo=user is None, user=user, check=False)
        if r.exit_code == 3:
            return None
        if not r.ok:
            raise HostError(self._describe_failure(r), hint=None if user is None else
                            f"{user} cannot read it: it must be {user}'s own file, not a link to somebody else's")
        return r.stdout

    def write_file(self, path: str, content: str, *, mode: str = "0644", owner: str = "root", group: str | None = None,
                   user: str | None = None) -> bool:
        """Write ``content`` (via stdin, so secrets never hit argv) when it differs. Returns whether it changed.
        With ``user`` (then ``owner`` must be that user) the whole write runs as that user, never as root."""
        current = self.read_file(path, user=user)
        if current == content:
            stat = self.run(["stat", "-c", "%a %U %G", path], sudo=user is None, user=user).stdout.split()
            if stat == [mode.lstrip("0") or "0", owner, group or owner]:
                return False
        self.run(atomic_write_argv(path, mode, owner, group or owner), sudo=user is None, user=user, stdin=content)
        return True

    def put(self, local: str, remote: str) -> None:
        self._connect().put(local, remote)

    def get(self, remote: str, local: str) -> None:
        self._connect().get(remote, local)

    @property
    def sftp(self):
        return self._connect().sftp()

    # ---- streams and uploads -----------------------------------------------------------------
    def _channel(self, line: str):
        chan = self._connect().client.get_transport().open_session()
        chan.exec_command(line)
        return chan

    def stream_stdout(self, line: str, sink, progress=None, total=None) -> StreamResult:
        """Run the shell ``line`` and write its stdout (bytes) to ``sink``, hashing on the fly;
        ``progress(bytes, total)`` as data arrives."""
        h = hashlib.sha256()
        n = 0
        chan = self._channel(line)
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
            raise HostError(f"{self.name}: stream interrupted ({exc.__class__.__name__}) after {n} bytes",
                            hint="re-run the same command") from None
        finally:
            chan.close()
        return StreamResult(code, n, h.hexdigest(), err.decode(errors="replace"))

    def feed_stdin(self, line: str, path: str, limit: int | None = None) -> tuple[int, str, str]:
        """Run ``line`` with the local file at ``path`` on its stdin; stops sending early when the
        command stops reading (``pg_restore -l`` reads only the table of contents).
        Returns (exit code, stdout, stderr)."""
        chan = self._channel(line)
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
                        break  # the command stopped reading: it has what it needed
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

    def pipe_to(self, line: str, dest: "Remote", dest_line: str, progress=None, header: bytes = b"",
                trailer: bytes = b"", deadline_s: float | None = STREAM_DEADLINE_S) -> tuple[StreamResult, int, str]:
        """Run ``line`` here and ``dest_line`` on ``dest``, this command's stdout streamed into that one's
        stdin (a COPY between two hosts, through this process, never a file). ``header`` goes to dest
        first; ``trailer`` last, and **only** when this command exited 0 and dest took every byte: a
        receiver whose COMMIT is in the trailer never commits a stream cut short (a stream cut on a row
        boundary is valid COPY data). Returns (this side's StreamResult, dest's exit code, dest's output).
        Past ``deadline_s`` both commands are ended by their pids and a HostError names the stream (``pids``)."""
        h = hashlib.sha256()
        n = 0
        end_at = pids.deadline(deadline_s)
        src, dst = self._channel(pids.reporting(line)), dest._channel(pids.reporting(dest_line))
        err, derr = bytearray(), bytearray()
        broken = False

        try:
            if header:
                dst.sendall(header)
            while not broken:
                pids.check(end_at, (src, err, self), (dst, derr, dest), n)
                select.select([src], [], [], 1.0)
                got = False
                while src.recv_ready() and not broken:
                    data = src.recv(CHUNK)
                    if not data:
                        break
                    try:
                        dst.sendall(data)
                    except OSError:  # the receiver stopped reading (it failed): its exit code and error say why
                        broken = True
                        break
                    h.update(data)
                    n += len(data)
                    got = True
                while src.recv_stderr_ready():
                    err += src.recv_stderr(CHUNK)
                    got = True
                while dst.recv_ready():
                    derr += dst.recv(CHUNK)
                while dst.recv_stderr_ready():
                    derr += dst.recv_stderr(CHUNK)
                if got and progress:
                    progress(n, None)
                if not got and (src.exit_status_ready() or src.closed) and not src.recv_ready():
                    break
                if dst.exit_status_ready() and not got:
                    broken = True  # the receiver gave up (its error is in derr); the sender is not waited for
                    break
            code = -1 if broken and not src.exit_status_ready() else src.recv_exit_status()
            try:
                if trailer and code == 0 and not broken:
                    dst.sendall(trailer)
                dst.shutdown_write()
            except OSError:
                pass
            while not dst.exit_status_ready() or dst.recv_ready() or dst.recv_stderr_ready():
                pids.check(end_at, (src, err, self), (dst, derr, dest), n)
                select.select([dst], [], [], 1.0)
                while dst.recv_ready():
                    derr += dst.recv(CHUNK)
                while dst.recv_stderr_ready():
                    derr += dst.recv_stderr(CHUNK)
            dcode = dst.recv_exit_status()
        except (OSError, EOFError) as exc:
            raise HostError(f"{self.name} -> {dest.name}: stream interrupted ({exc.__class__.__name__}) "
                            f"after {n} bytes",
                            hint="re-run the same command") from None
        finally:
            src.close()
            dst.close()
        err_t, derr_t = (pids.reported(e)[1].decode(errors="replace") for e in (err, derr))
        return StreamResult(code, n, h.hexdigest(), err_t), dcode, derr_t

    def append_file(self, local: str, remote: str, offset: int, size: int | None = None, progress=None,
                    chunk: int = CHUNK) -> int:
        """Append ``local`` from byte ``offset`` on to ``remote`` (a resumable upload: the remote file is
        a prefix of the local one). Returns the bytes sent; ``progress(done, size)`` per chunk."""
        size = Path(local).stat().st_size if size is None else size
        if offset >= size:
            return 0
        sent = [0]

        def write(data):
            rf.write(data)
            sent[0] += len(data)

        try:
            sftp = self.sftp
            with open(local, "rb") as f, sftp.open(remote, "ab") as rf:
                rf.set_pipelined(True)
                f.seek(offset)
                pump(f, write, chunk, progress, offset, size)
            sftp.chmod(remote, 0o640)
            sftp.close()
        except HostError:
            raise
        except Exception as exc:  # paramiko SSHException/EOFError/OSError when the connection drops
            raise HostError(f"upload interrupted after {offset + sent[0]} of {size} bytes ({exc.__class__.__name__})",
                            hint="re-run the same command: the upload continues from where it stopped") from None
        return sent[0]


class LocalHost(Remote):
    """The same interface on this machine (for `dump --local` on the old host itself)."""

    def __init__(self, name: str = "local", secrets=()):
        super().__init__(HostSpec(name=name, address="localhost"), secrets)

    def _connect(self):
        return None

    def run(self, cmd, *, sudo=False, user=None, stdin=None, check=True, timeout=None, cwd=None, echo=False) -> Result:
        line = wrap(cmd, sudo=sudo, user=user, cwd=cwd)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        p = subprocess.run(["bash", "-c", line], input=data, capture_output=True, timeout=timeout)
        res = Result(line, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
        if check and not res.ok:
            raise HostError(self._describe_failure(res), hint=self._hint_for(res))
        return res

    def put(self, local: str, remote: str) -> None:
        subprocess.run(["cp", local, remote], check=True)

    def stream_stdout(self, line: str, sink, progress=None, total=None) -> StreamResult:
        h = hashlib.sha256()
        with tempfile.TemporaryFile() as err:
            p = subprocess.Popen(["bash", "-c", line], stdout=subprocess.PIPE, stderr=err)
            n = pump(p.stdout, lambda data: [w(data) for w in (sink.write, h.update)], CHUNK, progress, total=total)
            code = p.wait()
            err.seek(0)
            return StreamResult(code, n, h.hexdigest(), err.read().decode(errors="replace"))

    def feed_stdin(self, line: str, path: str, limit: int | None = None) -> tuple[int, str, str]:
        with open(path, "rb") as f:
            p = subprocess.run(["bash", "-c", line], stdin=f, capture_output=True)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def append_file(self, local: str, remote: str, offset: int, size: int | None = None, progress=None,
                    chunk: int = CHUNK) -> int:
        size = Path(local).stat().st_size if size is None else size
        if offset >= size:
            return 0
        with open(local, "rb") as f, open(remote, "ab") as rf:
            f.seek(offset)
            sent = pump(f, rf.write, chunk, progress, offset, size)
        Path(remote).chmod(0o640)
        return sent

    def get(self, remote: str, local: str) -> None:
        subprocess.run(["cp", remote, local], check=True)

    def close(self) -> None:
        pass
