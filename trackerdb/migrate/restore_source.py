"""Restore's stages that deal with the dump file itself: checked where it is (here, or on the target where
the direct transfer left it), and uploaded (resumably) when it is here."""

from __future__ import annotations

import base64
import shlex

from ..errors import HostError, PreflightError
from ..files import sha256_file
from ..safe_paths import ensure_dir
from ..steps import Step
from . import manifest as mf
from . import toc
from .restore_ctx import DumpOnTarget, LocalDump, RestoreCtx
from .restore_plan import upload_path

UPLOAD_CHUNK = 1 << 20


def check_dump(ctx: RestoreCtx) -> None:
    """Stage "dump file" (no host): the manifest, and for a local dump its header, size and SHA-256."""
    src = ctx.source
    if isinstance(src, DumpOnTarget):
        if not ctx.manifest_path:
            raise PreflightError("a dump on the target needs its manifest",
                                 hint="pass the manifest the dump phase wrote")
        ctx.manifest_file = ctx.manifest_path
        ctx.manifest = mf.load_manifest(ctx.manifest_file)
        ctx.size, ctx.sha = ctx.manifest["dump"]["size_bytes"], ctx.manifest["dump"]["sha256"]
        return
    dump = src.path
    if not dump.is_file():
        raise PreflightError(f"dump {dump} does not exist", hint="run `invoke dump` first or pass the right --dump")
    ctx.manifest_file = ctx.manifest_path or str(mf.manifest_path_for(dump))
    manifest = ctx.manifest = mf.load_manifest(ctx.manifest_file)
    with open(dump, "rb") as f:
        header = toc.parse_archive_header(f.read(16))
    size = ctx.size = dump.stat().st_size
    if size != manifest["dump"]["size_bytes"]:
        raise PreflightError(f"dump is {size} bytes, the manifest says {manifest['dump']['size_bytes']}",
                             hint="the file is truncated or not the dump this manifest describes: "
                                  "copy it again or re-run `invoke dump`")
    _, ctx.sha = sha256_file(str(dump), progress=lambda d, t: ctx.say("checksum", d, size))
    if ctx.sha != manifest["dump"]["sha256"]:
        raise PreflightError("dump SHA-256 does not match the manifest",
                             hint="the file was changed or corrupted in transit: copy it again or re-run `invoke dump`")
    ctx.out.add(Step("dump file", False,
                     f"custom archive {header['archive_version']}, {toc.human_bytes(size)}, sha256 ok"))


def read_toc(ctx: RestoreCtx) -> tuple[int, str, str]:
    """What the target's ``pg_restore -l`` says of the dump: fed from here, or read where it lies there."""
    if isinstance(ctx.source, DumpOnTarget):
        return _check_on_target(ctx, ctx.source.path)
    return ctx.t.feed_stdin(" ".join([f"{ctx.settings.pg_bin}/pg_restore", "-l"]), str(ctx.source.path))


def _check_on_target(ctx: RestoreCtx, path: str) -> tuple[int, str, str]:
    """The dump the direct transfer left on the target: where restore reads it, the manifest's size and
    SHA-256, a custom archive; returns what ``pg_restore -l`` says of it there."""
    t, settings, size, sha = ctx.t, ctx.settings, ctx.size, ctx.sha
    if path != upload_path(settings.data_mount, settings.database, sha):
        raise PreflightError(f"{path} is not where restore reads this dump", hint="re-run the dump phase")
    got = remote_size(t, path)
    if got != size:
        raise PreflightError(f"the dump on the target is {got} bytes, the manifest says {size}",
                             hint="re-run the dump phase")
    head = t.run(f"head -c 16 {shlex.quote(path)} | base64 -w0", sudo=True).stdout
    header = toc.parse_archive_header(base64.b64decode(head))
    if t.run(["sha256sum", path], sudo=True, timeout=3600).stdout.split()[0] != sha:
        raise PreflightError("the dump on the target does not match the manifest's SHA-256",
                             hint="re-run the dump phase")
    ctx.out.add(Step("dump file", False,
                     f"on the target: custom archive {header['archive_version']}, {toc.human_bytes(size)}, sha256 ok"))
    r = t.run([f"{settings.pg_bin}/pg_restore", "-l", path], user="postgres", check=False)
    return r.exit_code, r.stdout, r.stderr


def remote_size(t, path: str) -> int:
    r = t.run(["stat", "-c", "%s", path], sudo=True, check=False)
    return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 0


def upload(t, local: str, remote: str, size: int, offset: int, say) -> int:
    """Append the rest of ``local`` to ``remote`` over SFTP. Returns the bytes sent by this run."""
    d = remote.rsplit("/", 1)[0]
    user = t.spec.user
    ensure_dir(t, d, "2750", user, "postgres")  # setgid, ours, group postgres: pg_restore reads; no link followed
    if offset == 0:
        t.run(["rm", "-f", remote], sudo=True)
    if offset >= size:
        return 0
    return t.append_file(local, remote, offset, size, progress=lambda done, total: say("upload", done, total),
                         chunk=UPLOAD_CHUNK)


def dump_on_target(ctx: RestoreCtx) -> None:
    """Stage "dump on target": nothing to send (checked in the preflight)."""
    ctx.out.add(Step("upload", False, "none: the direct transfer put the dump on the target (checked above)"))


def upload_dump(ctx: RestoreCtx) -> None:
    """Stage "upload": the rest of the local dump, resumed at what the target has; SHA-256 checked there."""
    if not isinstance(ctx.source, LocalDump):
        raise TypeError("upload of a dump that is not here")
    t, out, uploaded, remote_dump = ctx.t, ctx.out, ctx.uploaded, ctx.remote_dump
    out.stats["uploaded_bytes"] = upload(t, str(ctx.source.path), remote_dump, ctx.size, uploaded, ctx.say)
    sent = toc.human_bytes(out.stats["uploaded_bytes"])
    out.add(Step("upload", out.stats["uploaded_bytes"] > 0,
                 f"{sent} sent (resumed at {toc.human_bytes(uploaded)})" if uploaded else f"{sent} sent"))
    remote_sha = t.run(["sha256sum", remote_dump], sudo=True, timeout=3600).stdout.split()[0]
    if remote_sha != ctx.sha:
        t.run(["rm", "-f", remote_dump], sudo=True)
        raise HostError("the uploaded dump's SHA-256 on the target differs from the local file",
                        hint="the partial upload was removed; re-run to upload it again")
    out.add(Step("checksum on target", False, "sha256 matches"))
