"""The vendored TimescaleDB source and the pg layer over the engine16 .debs: cache keys, tarball check, the
pg layer's install (pure parts of lab.tsdb / lab.image)."""

from pathlib import Path

import pytest

from lab import image, tsdb
from lab.util import LabError


def test_pg_layer_is_keyed_by_the_engine_and_reads_its_repository(monkeypatch):
    from lab import engine16

    a = image.paths(Path("/c"))
    assert a.engine == engine16.paths().debs and a.engine.parent.name.startswith("engine16-")
    monkeypatch.setattr(tsdb, "SHA256", "0" * 64)  # the engine's key covers the TimescaleDB tarball
    b = image.paths(Path("/c"))
    assert b.bare == a.bare and b.engine != a.engine and b.pg != a.pg and b.apt != a.apt


def test_pg_layer_installs_productions_engine_exactly_from_the_engine_repository():
    from lab import engine16_debs as debs

    assert sorted(p.split("=")[0] for p in image.PG_PKGS if "=" in p) == sorted(debs.PACKAGES)
    for p in image.PG_PKGS:
        if "=" in p:
            name, version = p.split("=")
            assert version == debs.VERSIONS[name]  # 16.10-1.pgdg13+1, 3.5.2+dfsg-1.pgdg13+1, 2.18.2~debian13
    assert {"pgbackrest", "ssl-cert"} <= set(image.PG_PKGS) and "postgresql-17" not in " ".join(image.PG_PKGS)
    s = image.pg_build_script(Path("/c/bare/rootfs"), Path("/c/pg.tmp"), mirror="http://m/debian",
                              engine_debs=Path("/c/engine16-x/debs"))
    assert "cp /c/engine16-x/debs/*.deb /c/engine16-x/debs/Packages /c/engine16-x/debs/Release /c/pg.tmp/merged/tmp/engine16/" in s
    assert "echo 'deb [trusted=yes] file:/tmp/engine16 ./' > /c/pg.tmp/merged/etc/apt/sources.list.d/engine16.list" in s
    assert "postgresql-16=16.10-1.pgdg13+1" in s and "'timescaledb-2-postgresql-16=2.18.2~debian13'" in s
    assert "pg_dropcluster --stop 16 main" in s
    # apt installs a file: repository's .debs in place: the flat repository takes all six from there
    assert s.index("archives/*.deb /c/pg.tmp/apt/") < s.index("mv /c/pg.tmp/merged/tmp/engine16/*.deb /c/pg.tmp/apt/")
    assert "rm -f /c/pg.tmp/merged/usr/sbin/policy-rc.d /c/pg.tmp/merged/etc/apt/sources.list.d/engine16.list" in s


def test_the_tsdb_module_keeps_only_what_the_engine_build_reads():
    for gone in ("PG_MAJOR", "BUILD_PKGS", "build_script", "package_script", "control_env", "MAIN_PKG", "LOADER_PKG"):
        assert not hasattr(tsdb, gone)
    assert tsdb.BOOTSTRAP_FLAGS == ("-DREGRESS_CHECKS=OFF", "-DTAP_CHECKS=OFF", "-DWARNINGS_AS_ERRORS=OFF",
                                    "-DGENERATE_DOWNGRADE_SCRIPT=OFF")


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

    assert VERSIONS == {"postgres_major": 16, "postgres_version": "16.10", "postgis_version": "3.5.2",
                        "timescaledb_version": "2.18.2"}
    assert VERSIONS["timescaledb_version"] == tsdb.VERSION
