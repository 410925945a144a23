"""The data volume: identify it, decide whether it may be formatted, and the fstab line. Pure.

The rule that protects data: a device with *any* filesystem or partition table is never formatted.
An existing filesystem is accepted only when it is ours: our label, or the configured type and
empty apart from ``lost+found``. Anything else is a foreign volume and a one-line error.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..errors import PreflightError

LABEL = "pgdata"
GIB = 1024**3
MOUNT_OPTIONS = "defaults,nofail"


@dataclass(frozen=True)
class Probe:
    """What ``blkid -p -o export`` found on the device (empty when nothing)."""

    fstype: str = ""
    uuid: str = ""
    label: str = ""
    pttype: str = ""

    @property
    def blank(self) -> bool:
        return not self.fstype and not self.pttype


def parse_blkid(text: str) -> Probe:
    kv = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            kv[k.strip()] = v.strip()
    return Probe(
        fstype=kv.get("TYPE", ""), uuid=kv.get("UUID", ""), label=kv.get("LABEL", ""), pttype=kv.get("PTTYPE", "")
    )


def parse_lsblk_serial(text: str) -> str:
    """``lsblk -J -d -o NAME,SERIAL <dev>`` -> the serial ("" when none)."""
    try:
        devs = json.loads(text).get("blockdevices") or []
    except json.JSONDecodeError:
        return ""
    return (devs[0].get("serial") or "").strip() if devs else ""


def check_size(size_bytes: int, expected_gb: int, device: str) -> None:
    """EBS sizes are whole GiB; allow rounding either way, refuse a smaller or clearly different device."""
    gib = size_bytes / GIB
    if gib < expected_gb - 0.5:
        raise PreflightError(
            f"data volume {device} is too small: {gib:.1f} GiB, the stack says {expected_gb} GiB",
            hint="this is not the volume the stack created, or it was not resized: check data_volume_id",
        )
    if gib > expected_gb + 1:
        raise PreflightError(
            f"data volume {device} is {gib:.1f} GiB, the stack says {expected_gb} GiB",
            hint="check data_volume_id and data_volume_size_gb in the stack outputs (a resize needs `pulumi up` first)",
        )


def check_serial(serial: str, volume_id: str, device: str) -> None:
    if serial and serial.replace("-", "") != volume_id.replace("-", ""):
        raise PreflightError(
            f"device {device} has serial {serial}, not volume {volume_id}",
            hint="the by-id link points at another volume: check the attachment",
        )


def is_empty_listing(names: list[str]) -> bool:
    return all(n in ("lost+found", "") for n in names)


def decide(probe: Probe, fs_type: str, device: str, *, mounted_here: bool, in_fstab: bool,
           listing: list[str] | None) -> str:
    """What to do with the device: "mkfs", "use" (ours already) or "adopt" (empty, relabel it ours).

    ``listing`` is the top-level directory of the filesystem (None when not looked at).
    """
    if probe.pttype and not probe.fstype:
        raise PreflightError(f"data volume {device} has a {probe.pttype} partition table",
                             hint="never reformatted automatically: inspect it, wipe it by hand if it is really unused")
    if probe.blank:
        return "mkfs"
    if probe.fstype != fs_type:
        raise PreflightError(f"data volume {device} already has a {probe.fstype} filesystem (expected {fs_type})",
                             hint="a volume with a filesystem is never reformatted: check data_volume_id or fs_type")
    if probe.label == LABEL or mounted_here or in_fstab:
        return "use"
    if listing is not None and is_empty_listing(listing):
        return "adopt"
    shown = ", ".join(sorted(listing or [])[:5]) or "unknown"
    raise PreflightError(
        f"data volume {device} has a foreign {probe.fstype} filesystem with "
        f"data (label {probe.label or 'none'!r}; {shown})",
        hint="never reformatted: attach an empty volume, or move its data away and wipe it by hand",
    )


def mkfs_command(fs_type: str, device: str) -> list[str]:
    if fs_type == "xfs":
        return ["mkfs.xfs", "-q", "-L", LABEL, device]
    return ["mkfs.ext4", "-q", "-L", LABEL, "-m", "1", device]


def label_command(fs_type: str, device: str) -> list[str]:
    return ["xfs_admin", "-L", LABEL, device] if fs_type == "xfs" else ["e2label", device, LABEL]


def peek_command(fs_type: str, device: str) -> str:
    """List a filesystem's top level without changing it: read-only, no journal replay, then unmount."""
    opts = "ro,norecovery" if fs_type == "xfs" else "ro,noload"
    d = shlex.quote(device)
    return (f"d=$(mktemp -d) && mount -o {opts} {d} \"$d\" && ls -A1 \"$d\"; rc=$?; "
            f"umount \"$d\" 2>/dev/null; rmdir \"$d\"; exit $rc")


def fstab_line(uuid: str, mount: str, fs_type: str) -> str:
    return f"UUID={uuid} {mount} {fs_type} {MOUNT_OPTIONS} 0 2"


def fstab_update(text: str, uuid: str, mount: str, fs_type: str) -> str:
    """The fstab with exactly one line for ``mount`` (our UUID). Another device at that mount point is an error."""
    want = fstab_line(uuid, mount, fs_type)
    out, placed = [], False
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 2 and fields[1].rstrip("/") == mount.rstrip("/"):
            if fields[0] != f"UUID={uuid}":
                raise PreflightError(f"/etc/fstab already mounts {fields[0]} at {mount}",
                                     hint="remove or fix that line by hand; it is not the data volume")
            if not placed:
                out.append(want)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.append(want)
    return "\n".join(out) + "\n"


def parse_findmnt(text: str) -> dict | None:
    """``findmnt -J -o SOURCE,TARGET,FSTYPE,MAJ:MIN --mountpoint M`` -> the first filesystem or None."""
    try:
        fss = json.loads(text).get("filesystems") or []
    except json.JSONDecodeError:
        return None
    return fss[0] if fss else None


def mount_is_device(mnt: dict | None, device: str, majmin: str) -> bool:
    if not mnt:
        return False
    return mnt.get("source") == device or (bool(majmin) and mnt.get("maj:min") == majmin)
