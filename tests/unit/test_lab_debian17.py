"""The debian17 layer (lab/debian17.py) and its place in the target (lab/render.py): pure, no root, no network."""

import shlex
from pathlib import Path

import pytest

from lab import debian17, image, render
from lab.util import LabError

BARE = Path("/c/bare-0123456789ab/rootfs")


def test_script_downloads_debians_two_packages_from_the_mirror_in_an_overlay():
    s = debian17.build_script(BARE, Path("/c/debian17-x.tmp"), "http://mirror.example/debian")
    assert s.startswith("set -eu\n")
    assert ("mount -t overlay overlay -o lowerdir=/c/bare-0123456789ab/rootfs,upperdir=/c/debian17-x.tmp/upper,"
            "workdir=/c/debian17-x.tmp/work /c/debian17-x.tmp/merged") in s
    assert "echo 'deb http://mirror.example/debian trixie main' > /c/debian17-x.tmp/merged/etc/apt/sources.list" in s
    assert "rm -f /c/debian17-x.tmp/merged/etc/apt/sources.list.d/*" in s
    assert "apt-get -q download postgresql-17 postgresql-client-17'" in s
    assert "mv /c/debian17-x.tmp/merged/tmp/debian17/*.deb /c/debian17-x.tmp/apt/" in s
    assert "install" not in s  # listed by the target, never installed, here or there
    # every line parses as shell
    for line in s.splitlines():
        shlex.split(line)


def test_paths_are_quoted():
    s = debian17.build_script(Path("/c/a b/rootfs"), Path("/t/x y"), "http://m/debian")
    assert "lowerdir='/c/a b/rootfs',upperdir='/t/x y/upper'" in s


def test_key_follows_the_bare_layer_and_the_script_not_the_mirror_or_the_cache():
    k = debian17.layer_key(BARE)
    assert len(k) == 12 and k == debian17.layer_key(Path("/elsewhere/bare-0123456789ab/rootfs"))
    assert k != debian17.layer_key(Path("/c/bare-ba9876543210/rootfs"))
    assert debian17.repo_path(BARE, Path("/cache")) == Path(f"/cache/debian17-{k}/apt")


def test_image_carries_the_repository_without_changing_the_pg_layer(tmp_path):
    img = image.paths(tmp_path)
    assert img.debian17 == debian17.repo_path(img.bare, tmp_path)
    assert img.debian17.parent.parent == img.pg.parent.parent
    # the pg layer's key has no part of debian17 in it
    bh = img.bare.parent.name.split("-", 1)[1]
    from lab import engine16

    assert img.pg.parent.name == "pg-" + image.layer_hash(image.LAYOUT_VERSION, bh, image.PG_PKGS, engine16.layer_key())


def test_check_debs_wants_exactly_one_of_each():
    debian17.check_debs(["postgresql-17_17.12-0+deb13u1_amd64.deb", "postgresql-client-17_17.12-0+deb13u1_amd64.deb"])
    for bad in ([], ["postgresql-17_17.12-0+deb13u1_amd64.deb"],
                ["postgresql-17_1_amd64.deb", "postgresql-client-17_1_amd64.deb", "libpq5_17.12_amd64.deb"],
                ["postgresql-17_1_amd64.deb", "postgresql-client-17_1_amd64.deb", "stray.txt"]):
        with pytest.raises(LabError, match="one .deb each"):
            debian17.check_debs(bad)


def test_target_mounts_it_read_only_and_only_a_test_makes_it_a_source():
    s = render.launch_script("/x/root", "target", apt_repo="/cache/apt", debian17_repo="/cache/debian17/apt")
    assert "mount --bind /cache/debian17/apt /x/root/srv/lab-apt-debian17" in s
    assert "mount -o remount,bind,ro /x/root/srv/lab-apt-debian17" in s
    assert s.index("lab-apt-debian17") < s.index("exec chroot")
    assert "lab-apt-debian17" not in render.launch_script("/x/root", "repo")
    assert "lab-apt-debian17" not in render.apt_sources()
    assert render.debian17_sources() == "deb [trusted=yes] file:/srv/lab-apt-debian17 ./\n"
    assert render.DEBIAN17_LIST.startswith("/etc/apt/sources.list.d/") and render.DEBIAN17_LIST.endswith(".list")
