"""Root acting inside trees that other users control, without following their links (issue 23).

postgres owns its home, the data mount and ``/etc/postgresql/<major>/main``; whatever postgres can
write there, postgres can replace with a symlink. ``install -d -o … -m …`` (or ``chown``/``chmod``/
``mv`` by name) run as root on such a path re-owns and re-modes the link's target: one planted link
hands postgres ``/usr/local/sbin`` or ``/etc/shadow``. Two rules follow, and this module is the
second one:

- work that happens *inside* a user's directory is done *as that user* (``Remote.run(user=…)``,
  ``read_file``/``write_file(user=…)``): no privilege is gained whatever links exist;
- where root must act (make a directory with an owner postgres cannot give, move a finished file
  into a directory postgres cannot write), it walks the path on descriptors and refuses a link that
  a non-root user could have placed (:func:`ensure_dir`, :func:`adopt_file`), with one line and a hint.

Pure builders (argv) first; the two small executors take any host with ``run`` (``Remote``, ``LocalHost``).
"""

from __future__ import annotations

from .errors import HostError

# Root creates directories (and moves finished files) inside trees other users control: postgres owns
# its home, the data mount and /etc/postgresql/<major>/main. ``install -d`` there would re-own and
# re-mode whatever a planted symlink points at. This walks the path from / one component at a time
# on descriptors: a symlink is followed only when it sits in a directory that only root can write
# (root-owned, not group/other writable: an administrator's link), anywhere else it is refused;
# missing components are made (0755 root, as install -d does) and the last one gets owner and mode
# through its own descriptor. Exit 4 + one line on stderr: refused.
_SAFE_WALK = r"""
import errno, os, pwd, grp, stat, sys
UNSAFE = 4
def refuse(msg):
    sys.stderr.write("trackerdb-unsafe-path: " + msg + "\n")
    sys.exit(UNSAFE)
def opendir(path, create=False):
    if not path.startswith("/") or ".." in path.split("/"):
        refuse(path + ": not an absolute path without ..")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    made, walked = False, ""
    for comp in [c for c in path.split("/") if c and c != "."]:
        st = os.fstat(fd)
        trusted = st.st_uid == 0 and not st.st_mode & 0o022
        flags = os.O_RDONLY | os.O_DIRECTORY | (0 if trusted else os.O_NOFOLLOW)
        walked += "/" + comp
        try:
            nfd = os.open(comp, flags, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(comp, 0o755, dir_fd=fd)
                made = True
            except FileExistsError:
                pass
            try:
                nfd = os.open(comp, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                refuse(walked + " changed while it was being created")
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # Linux says ENOTDIR for O_NOFOLLOW|O_DIRECTORY on a link
                lst = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(lst.st_mode):
                    refuse(walked + " is a symlink (owned by uid %d) in a directory uid %d can write: "
                                    "root does not follow it"
                           % (lst.st_uid, st.st_uid))
                refuse(walked + " is not a directory")
            raise
        os.close(fd)
        fd = nfd
    return fd, made
"""

_ENSURE_DIR = _SAFE_WALK + r"""
path, mode, owner, group = sys.argv[1], int(sys.argv[2], 8), sys.argv[3], sys.argv[4]
fd, made = opendir(path, create=True)
st = os.fstat(fd)
uid, gid = pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
changed = made or (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (uid, gid, mode)
os.fchown(fd, uid, gid)
os.fchmod(fd, mode)
print("changed" if changed else "ok")
"""

# A file a less trusted user finished (a pulled dump) becomes ours: renamed between two safely opened
# directories (rename moves the entry, never a link's target), then opened without following links,
# checked to be a plain file with one link, re-owned and hashed through that one descriptor. What was
# hashed is what was re-owned, and nothing a link pointed at was touched. On any refusal the moved
# entry is removed again; with an expected SHA-256 a different file is removed too (exit 5).
_ADOPT = _SAFE_WALK + r"""
import hashlib
src, dst, mode, owner, group, want = sys.argv[1:7]
sfd, _ = opendir(os.path.dirname(src))
dfd, _ = opendir(os.path.dirname(dst))
sname, dname = os.path.basename(src), os.path.basename(dst)
os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
try:
    fd = os.open(dname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
except OSError:
    os.unlink(dname, dir_fd=dfd)
    refuse(src + " was not a plain file (a symlink?): removed, nothing followed")
st = os.fstat(fd)
if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
    os.unlink(dname, dir_fd=dfd)
    refuse(src + " was not a plain file with one link: removed, nothing re-owned")
os.fchown(fd, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
os.fchmod(fd, int(mode, 8))
h, n = hashlib.sha256(), 0
while True:
    b = os.read(fd, 1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest())
if want and h.hexdigest() != want:
    os.unlink(dname, dir_fd=dfd)
    sys.exit(5)
"""

UNSAFE_EXIT = 4
MISMATCH_EXIT = 5


class UnsafePathError(HostError):
    """Root was asked to act on a path another user controls through a symlink (or a non-file): refused."""


class DigestMismatchError(HostError):
    """The file moved is not the one expected (SHA-256): it was removed."""


def ensure_dir_argv(path: str, mode: str, owner: str, group: str) -> list[str]:
    """argv (run as root) that makes directory ``path`` with owner/group/mode, following no symlink that
    a non-root user could have placed; prints ``changed`` or ``ok``, exits 4 when it refuses."""
    return ["python3", "-c", _ENSURE_DIR, path, mode, owner, group]


def adopt_file_argv(src: str, dst: str, mode: str, owner: str, group: str, sha256: str = "") -> list[str]:
    """argv (run as root) that moves ``src`` to ``dst`` and gives it owner/group/mode without following
    links; prints ``<bytes> <sha256>`` of what it re-owned; exit 4 refused, exit 5 not ``sha256``
    (the file is removed in both cases)."""
    return ["python3", "-c", _ADOPT, src, dst, mode, owner, group, sha256]


# ---- executors --------------------------------------------------------------------------------

def _reason(stderr: str) -> str:
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    marked = [ln for ln in lines if ln.startswith("trackerdb-unsafe-path: ")]
    text = (marked or lines or ["(no output)"])[-1]
    return text.removeprefix("trackerdb-unsafe-path: ")[:300]


def unsafe_hint(path: str) -> str:
    parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
    return (f"a user other than root put that there (ls -la {parent}): find out who and why, remove it and re-run; "
            "trackerdb never acts as root through it")


def ensure_dir(host, path: str, mode: str = "0755", owner: str = "root", group: str | None = None) -> bool:
    """Directory ``path`` on ``host`` with owner/group/mode, made as root without following a link a
    non-root user placed. Returns whether it changed; UnsafePathError when refused."""
    r = host.run(ensure_dir_argv(path, mode, owner, group or owner), sudo=True, check=False)
    if r.exit_code == UNSAFE_EXIT:
        raise UnsafePathError(f"{host.name}: refusing {path}: {_reason(r.stderr)}", hint=unsafe_hint(path))
    if not r.ok:
        raise HostError(f"{host.name}: cannot make directory {path}: {_reason(r.stderr)}")
    return r.stdout.strip() == "changed"


def adopt_file(host, src: str, dst: str, *, mode: str, owner: str, group: str | None = None,
               sha256: str = "") -> tuple[int, str]:
    """Move ``src`` to ``dst`` on ``host`` and re-own it as root, following no link. Returns (bytes,
    SHA-256) of the very file re-owned. UnsafePathError when refused; HostError when it is not
    ``sha256``; in both cases the moved entry is gone."""
    r = host.run(adopt_file_argv(src, dst, mode, owner, group or owner, sha256), sudo=True, check=False, timeout=3600)
    parts = r.stdout.split()
    if r.exit_code == UNSAFE_EXIT:
        raise UnsafePathError(f"{host.name}: refusing {src}: {_reason(r.stderr)}", hint=unsafe_hint(src))
    if r.exit_code == MISMATCH_EXIT and len(parts) == 2:
        raise DigestMismatchError(f"{host.name}: {src} ({parts[0]} bytes) is not the file expected (SHA-256 differs)",
                        hint="it was removed; re-run to transfer it again")
    if not r.ok or len(parts) != 2 or not parts[0].isdigit():
        raise HostError(f"{host.name}: moving {src} to {dst} failed: {_reason(r.stderr)}")
    return int(parts[0]), parts[1]
