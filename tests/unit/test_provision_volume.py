import pytest

from trackerdb.errors import PreflightError
from trackerdb.provision import volume
from trackerdb.provision.volume import Probe

GIB = 1024**3
DEV = "/dev/nvme1n1"


@pytest.mark.parametrize("text, probe", [
    ("", Probe()),
    ("DEVNAME=/dev/nvme1n1\nUUID=1234-abcd\nLABEL=pgdata\nTYPE=ext4\nUSAGE=filesystem\n", Probe("ext4", "1234-abcd", "pgdata")),
    ("DEVNAME=/dev/nvme1n1\nPTUUID=aa\nPTTYPE=gpt\n", Probe(pttype="gpt")),
])
def test_parse_blkid(text, probe):
    assert volume.parse_blkid(text) == probe


@pytest.mark.parametrize("text, serial", [
    ('{"blockdevices": [{"name": "nvme1n1", "serial": "vol0a1b2c3d4e5f60718"}]}', "vol0a1b2c3d4e5f60718"),
    ('{"blockdevices": [{"name": "loop3", "serial": null}]}', ""),
    ("garbage", ""),
])
def test_parse_lsblk_serial(text, serial):
    assert volume.parse_lsblk_serial(text) == serial


@pytest.mark.parametrize("size, expected, ok", [
    (50 * GIB, 50, True),
    (2 * GIB, 2, True),
    (int(1.6 * GIB), 2, True),      # lab loop file rounded in the outputs
    (int(1.4 * GIB), 2, False),
    (10 * GIB, 50, False),
    (100 * GIB, 50, False),
])
def test_check_size(size, expected, ok):
    if ok:
        volume.check_size(size, expected, DEV)
    else:
        with pytest.raises(PreflightError):
            volume.check_size(size, expected, DEV)


def test_too_small_says_so_in_one_line():
    with pytest.raises(PreflightError) as e:
        volume.check_size(10 * GIB, 50, DEV)
    assert "too small" in e.value.one_line() and "hint:" in e.value.one_line()


@pytest.mark.parametrize("serial, ok", [("vol0a1b2c3d4e5f60718", True), ("", True), ("vol0ffffffffffffffff", False)])
def test_check_serial(serial, ok):
    if ok:
        volume.check_serial(serial, "vol-0a1b2c3d4e5f60718", DEV)
    else:
        with pytest.raises(PreflightError):
            volume.check_serial(serial, "vol-0a1b2c3d4e5f60718", DEV)


@pytest.mark.parametrize("probe, kw, action", [
    (Probe(), {}, "mkfs"),
    (Probe("ext4", "u", "pgdata"), {}, "use"),
    (Probe("ext4", "u", ""), {"mounted_here": True}, "use"),
    (Probe("ext4", "u", ""), {"in_fstab": True}, "use"),
    (Probe("ext4", "u", ""), {"listing": ["lost+found"]}, "adopt"),
    (Probe("ext4", "u", ""), {"listing": []}, "adopt"),
])
def test_decide_accepts_only_blank_or_ours(probe, kw, action):
    args = {"mounted_here": False, "in_fstab": False, "listing": None} | kw
    assert volume.decide(probe, "ext4", DEV, **args) == action


@pytest.mark.parametrize("probe, listing, fragment", [
    (Probe("xfs", "u", ""), None, "already has a xfs filesystem"),
    (Probe("ext4", "u", "pgdata"), None, None),  # ours: fine even though not listed
    (Probe("ext4", "u", "backup"), ["lost+found", "base", "PG_VERSION"], "foreign ext4 filesystem with data"),
    (Probe("ext4", "u", ""), None, "foreign ext4 filesystem with data"),
    (Probe(pttype="gpt"), None, "partition table"),
])
def test_decide_never_formats_a_filesystem(probe, listing, fragment):
    if fragment is None:
        assert volume.decide(probe, "ext4", DEV, mounted_here=False, in_fstab=False, listing=listing) == "use"
        return
    with pytest.raises(PreflightError) as e:
        volume.decide(probe, "ext4", DEV, mounted_here=False, in_fstab=False, listing=listing)
    assert fragment in e.value.one_line() and "never reformatted" in e.value.one_line()


@pytest.mark.parametrize("fs, cmd", [
    ("ext4", ["mkfs.ext4", "-q", "-L", "pgdata", "-m", "1", DEV]),
    ("xfs", ["mkfs.xfs", "-q", "-L", "pgdata", DEV]),
])
def test_mkfs_command_labels_the_volume(fs, cmd):
    assert volume.mkfs_command(fs, DEV) == cmd


def test_peek_is_read_only_without_journal_replay():
    assert "-o ro,noload" in volume.peek_command("ext4", DEV)
    assert "-o ro,norecovery" in volume.peek_command("xfs", DEV)


LINE = "UUID=abcd /var/lib/postgresql ext4 defaults,nofail 0 2"
ROOT = "UUID=root / ext4 errors=remount-ro 0 1"


@pytest.mark.parametrize("before, after", [
    ("", LINE + "\n"),
    (ROOT + "\n", ROOT + "\n" + LINE + "\n"),
    (ROOT + "\n" + LINE + "\n", ROOT + "\n" + LINE + "\n"),                       # idempotent
    (ROOT + "\nUUID=abcd /var/lib/postgresql/ ext4 defaults 0 0\n", ROOT + "\n" + LINE + "\n"),  # options fixed
    ("# comment /var/lib/postgresql\n" + LINE + "\n" + LINE + "\n", "# comment /var/lib/postgresql\n" + LINE + "\n"),
])
def test_fstab_update(before, after):
    assert volume.fstab_update(before, "abcd", "/var/lib/postgresql", "ext4") == after


def test_fstab_other_device_at_mount_point_is_an_error():
    with pytest.raises(PreflightError):
        volume.fstab_update("/dev/sdb1 /var/lib/postgresql ext4 defaults 0 2\n", "abcd", "/var/lib/postgresql", "ext4")


@pytest.mark.parametrize("text, device, majmin, ok", [
    ('{"filesystems": [{"source": "/dev/loop7", "target": "/var/lib/postgresql", "fstype": "ext4", "maj:min": "7:7"}]}', "/dev/loop7", "7:7", True),
    ('{"filesystems": [{"source": "/dev/mapper/x", "target": "/var/lib/postgresql", "fstype": "ext4", "maj:min": "7:7"}]}', "/dev/loop7", "7:7", True),
    ('{"filesystems": [{"source": "/dev/sda1", "target": "/var/lib/postgresql", "fstype": "ext4", "maj:min": "8:1"}]}', "/dev/loop7", "7:7", False),
    ("", "/dev/loop7", "7:7", False),
])
def test_mount_is_device(text, device, majmin, ok):
    assert volume.mount_is_device(volume.parse_findmnt(text), device, majmin) is ok
