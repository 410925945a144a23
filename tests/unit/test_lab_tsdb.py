"""TimescaleDB built from the vendored source: cache key, tarball check, packaging (pure parts of lab.tsdb / lab.image)."""

from pathlib import Path

import pytest

from lab import image, tsdb
from lab.util import LabError


def test_tsdb_layer_is_keyed_by_the_tarball_hash_and_feeds_the_pg_layer(monkeypatch):
    a = image.paths(Path("/c"))
    assert a.tsdb.parent.name.startswith("tsdb-") and a.tsdb.name == "debs"
    monkeypatch.setattr(tsdb, "SHA256", "0" * 64)
    b = image.paths(Path("/c"))
    assert b.bare == a.bare and b.tsdb != a.tsdb and b.pg != a.pg and b.apt != a.apt


def test_pg_layer_installs_the_built_debs_not_debians_timescaledb():
    assert not [p for p in image.PG_PKGS if "timescaledb" in p]
    s = image.pg_build_script(Path("/c/bare/rootfs"), Path("/c/pg.tmp"), mirror="http://m/debian", tsdb_debs=Path("/c/tsdb-x/debs"))
    assert "cp /c/tsdb-x/debs/*.deb" in s
    assert "/tmp/tsdb/timescaledb-2-loader-postgresql-17_*.deb /tmp/tsdb/timescaledb-2-postgresql-17_*.deb" in s
    assert s.index("archives/*.deb /c/pg.tmp/apt/") < s.index("mv /c/pg.tmp/merged/tmp/tsdb/*.deb /c/pg.tmp/apt/")  # served by the flat repo


def test_build_uses_the_measured_flags_and_keeps_build_packages_out_of_the_repo():
    s = tsdb.build_script(Path("/c/bare"), Path("/c/t.tmp"), "http://m/debian", "trixie")
    assert ("./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DGENERATE_DOWNGRADE_SCRIPT=OFF" in s)
    assert "make -C build -j2" in s and "DESTDIR=/stage/all" in s
    assert "Keep-Downloaded-Packages" not in s  # build deps are never kept as .debs
    for p in ("postgresql-server-dev-17", "cmake", "gcc", "libssl-dev", "libkrb5-dev"):
        assert p in s
    p = tsdb.package_script(Path("/c/t.tmp"))
    assert "/out/timescaledb-2-postgresql-17_2.18.2~debian13_$arch.deb" in p
    assert "/out/timescaledb-2-loader-postgresql-17_2.18.2~debian13_$arch.deb" in p
    assert "mv /stage/timescaledb-2-postgresql-17/usr/lib/postgresql/17/lib/timescaledb.so" in p


def test_control_files_are_named_and_versioned_like_timescales_repository():
    main = tsdb.control(tsdb.MAIN_PKG, "amd64", 12000)
    assert "Package: timescaledb-2-postgresql-17\nVersion: 2.18.2~debian13\nArchitecture: amd64\n" in main
    assert "Depends: postgresql-17, timescaledb-2-loader-postgresql-17 (= 2.18.2~debian13)\n" in main
    loader = tsdb.control(tsdb.LOADER_PKG, "amd64", 100)
    assert "Package: timescaledb-2-loader-postgresql-17\n" in loader and "Depends: postgresql-17\n" in loader
    env = tsdb.control_env()
    assert "@ARCH@" in env["CONTROL_MAIN"] and "Installed-Size: @KB@" in env["CONTROL_LOADER"]


def test_tarball_must_match_the_pinned_sha256(tmp_path):
    bad = tmp_path / "timescaledb-2.18.2.tar.xz"
    bad.write_bytes(b"not the release")
    with pytest.raises(LabError) as e:
        tsdb.verify_tarball(bad)
    line = e.value.one_line()
    assert "SHA-256" in line and "expected 391f9def39928309" in line and "hint:" in line
    with pytest.raises(LabError, match="missing"):
        tsdb.verify_tarball(tmp_path / "absent.tar.xz")
    good = tmp_path / "ok"
    good.write_bytes(b"x")
    tsdb.verify_tarball(good, want=tsdb.sha256_file(good))


def test_lab_stack_outputs_carry_productions_timescaledb_version():
    from lab.outputs import VERSIONS

    assert VERSIONS["timescaledb_version"] == "2.18.2" == tsdb.VERSION
