"""Lab preflight and image-cache keys (pure parts of lab.api / lab.image)."""

from pathlib import Path

import pytest

from lab import api, image
from lab.util import LabError


def test_not_root_is_one_line_error(monkeypatch):
    monkeypatch.setattr(api.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(api.platform, "system", lambda: "Linux")
    with pytest.raises(LabError) as exc:
        api.preflight()
    line = exc.value.one_line()
    assert "needs root" in line and "\n" not in line


def test_not_linux(monkeypatch):
    monkeypatch.setattr(api.platform, "system", lambda: "Darwin")
    with pytest.raises(LabError, match="needs Linux"):
        api.preflight()


def test_missing_tools_point_at_host_deps(monkeypatch):
    monkeypatch.setattr(api.os, "geteuid", lambda: 0)
    monkeypatch.setattr(api.platform, "system", lambda: "Linux")
    monkeypatch.setattr(api.shutil, "which", lambda t: None if t == "debootstrap" else "/usr/bin/" + t)
    with pytest.raises(LabError) as exc:
        api.preflight()
    assert "debootstrap" in exc.value.one_line() and "host-deps.sh" in exc.value.one_line()


def test_cache_layers_are_keyed_by_their_package_lists(monkeypatch):
    a = image.paths(Path("/c"))
    monkeypatch.setattr(image, "PG_PKGS", image.PG_PKGS + ("postgresql-16-pgaudit",))
    b = image.paths(Path("/c"))
    assert a.bare == b.bare and a.pg != b.pg and a.apt != b.apt
    monkeypatch.setattr(image, "BARE_PKGS", image.BARE_PKGS + ("vim",))
    c = image.paths(Path("/c"))
    assert c.bare != b.bare and c.pg != b.pg  # the pg layer sits on bare: it changes too


def test_lowerdir_stacks_pg_over_bare():
    img = image.paths(Path("/c"))
    assert img.lowerdir("bare") == str(img.bare)
    assert img.lowerdir("pg") == f"{img.pg}:{img.bare}"


def test_pg_build_keeps_downloaded_packages_and_retries():
    s = image.pg_build_script(Path("/c/bare/rootfs"), Path("/c/pg.tmp"), mirror="http://m/debian")
    assert "APT::Keep-Downloaded-Packages=true" in s
    assert "for i in 1 2 3" in s
    assert "deb http://m/debian trixie main" in s
    for p in image.PG_PKGS:
        assert p in s
    assert image.debootstrap_cmd(Path("/r"), "http://m/debian")[:2] == ["debootstrap", "--variant=minbase"]
