"""Restore's pure decisions: versions, locale, existing databases, space, markers, tuning."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from trackerdb.errors import PreflightError
from trackerdb.migrate import restore as r
from trackerdb.migrate.manifest import build_manifest, load_manifest, manifest_path_for


def manifest(ts="2.18.2", pg_major_num=160004, gis="3.5.2", size=10 << 30, dump=2 << 30):
    facts = {"server_version": "16.4", "server_version_num": pg_major_num,
             "extensions": [{"name": "timescaledb", "version": ts, "schema": "public"},
                            {"name": "postgis", "version": gis, "schema": "public"}],
             "database": {"name": "tracker", "owner": "tracker", "encoding": "UTF8", "collate": "C.UTF-8",
                          "ctype": "C.UTF-8", "size_bytes": size, "acl_is_default": True, "comment": None},
             "tables": [], "hypertables": [], "continuous_aggregates": [], "jobs": [], "sequences": [],
             "roles": [{"name": "tracker", "login": True, "superuser": False}], "db_settings": {}, "db_grants": []}
    return build_manifest(facts, source_host="source", database="tracker", dump_file="tracker.dump", dump_size=dump,
                          dump_sha256="a" * 64, pg_dump_version="pg_dump (PostgreSQL) 16.4", consistency="test")


def target(ts="2.18.2", num=160004, spl="timescaledb", gis=("3.5.2",), dbs=(), collations=("C.utf8",)):
    return {"server_version_num": num, "timescaledb_default": ts, "shared_preload_libraries": spl,
            "postgis_available": list(gis), "databases": list(dbs), "roles": ["postgres"],
            "collations": list(collations), "template0_collate": "C.UTF-8"}


@pytest.mark.parametrize("tgt", [
    target(),                                                    # the same everything
    target(num=170011),                                          # a newer PostgreSQL major, below the broken minors
    target(gis=("3.4.0", "3.5.2"), spl="pg_stat_statements,timescaledb"),
])
def test_versions_that_match_pass(tgt):
    assert r.check_versions(manifest(), tgt) is None
    # and the same target is refused as soon as one version differs: the pass above was a real comparison
    with pytest.raises(PreflightError):
        r.check_versions(manifest(ts="2.17.0"), tgt)
    with pytest.raises(PreflightError):
        r.check_versions(manifest(gis="3.5.3"), tgt)


@pytest.mark.parametrize("tgt,needle", [
    (target(ts="2.19.3"), "TimescaleDB on the target is 2.19.3, the dump is from 2.18.2"),
    (target(ts=None), "not installed"),
    (target(num=150008), "older than the dump's source"),
    (target(spl="pg_stat_statements"), "shared_preload_libraries"),
    (target(gis=("3.4.0",)), "PostGIS 3.5.2"),
])
def test_version_refusals_are_one_line_with_a_hint(tgt, needle):
    with pytest.raises(PreflightError) as e:
        r.check_versions(manifest(), tgt)
    assert needle in e.value.message
    assert e.value.hint


def test_version_hint_says_how_to_fix():
    with pytest.raises(PreflightError) as e:
        r.check_versions(manifest(), target(ts="2.19.3"))
    assert "2.18.2" in e.value.hint and "provision" in e.value.hint


def test_locale_normalised_and_missing():
    r.check_locale(manifest(), target())
    m = manifest()
    m["facts"]["database"]["collate"] = "de_DE.UTF-8"
    with pytest.raises(PreflightError):
        r.check_locale(m, target())


def test_databases_fresh_target():
    assert r.check_databases(target(), "tracker", False) == {"tracker_exists": False, "staging": None}


def test_existing_tracker_refused_without_replace():
    t = target(dbs=[{"name": "tracker", "comment": None, "sessions": 0}])
    with pytest.raises(PreflightError) as e:
        r.check_databases(t, "tracker", False)
    assert "--replace" in e.value.hint
    assert r.check_databases(t, "tracker", True)["tracker_exists"] is True


def test_replace_refused_while_clients_are_connected():
    t = target(dbs=[{"name": "tracker", "comment": None, "sessions": 3}])
    with pytest.raises(PreflightError) as e:
        r.check_databases(t, "tracker", True)
    assert "3 client session" in e.value.message


def test_foreign_staging_db_refused_ours_reused():
    foreign = target(dbs=[{"name": "tracker_restore_staging", "comment": "someone's", "sessions": 0}])
    with pytest.raises(PreflightError):
        r.check_databases(foreign, "tracker", False)
    ours = target(dbs=[{"name": "tracker_restore_staging", "comment": r.marker_comment("b" * 64, "loading"), "sessions": 1}])
    assert r.check_databases(ours, "tracker", False)["staging"] == {"sha256": "b" * 64, "state": "loading"}


@pytest.mark.parametrize("comment,parsed", [
    (None, None), ("", None), ("trackerdb:restore-stagingX", None), ("a comment", None),
    ("trackerdb:restore-staging sha256=ab state=ready", {"sha256": "ab", "state": "ready"}),
])
def test_parse_marker(comment, parsed):
    assert r.parse_marker(comment) == parsed


def test_space_refusal_and_pass():
    m = manifest(size=10 << 30, dump=2 << 30)
    need = r.check_space(m, 100 << 30, 0, 50)
    assert need == int((10 << 30) * 1.3) + (2 << 30) + (5120 << 20)
    with pytest.raises(PreflightError) as e:
        r.check_space(m, need - 1, 0, 50)
    assert "grow" in e.value.hint
    # a half-done upload needs less
    assert r.check_space(m, need - 1, 1 << 30, 50) == need - (1 << 30)
    # a small volume reserves less WAL (and the restore runs with a smaller max_wal_size)
    assert r.check_space(m, 100 << 30, 0, 2) == int((10 << 30) * 1.3) + (2 << 30) + (1024 << 20)


@pytest.mark.parametrize("gb,mb", [(2, 1024), (50, 5120), (200, 8192)])
def test_restore_wal(gb, mb):
    assert r.restore_wal_mb(gb) == mb
    assert r.restore_tuning(4 << 30, gb)["max_wal_size"] == f"{mb}MB"


def test_names_and_paths():
    assert r.staging_name("tracker") == "tracker_restore_staging"
    assert r.replaced_name("tracker", datetime(2026, 11, 21, 21, 5, 9)) == "tracker_replaced_20261121210509"
    assert r.upload_path("/var/lib/postgresql/", "tracker", "0123456789abcdef" * 4) == \
        "/var/lib/postgresql/trackerdb-restore/tracker-0123456789abcdef.dump"
    assert r.tuning_path(16) == "/etc/postgresql/16/main/conf.d/90-trackerdb-restore.conf"


def test_tuning_is_reloadable_only_and_bounded():
    t = r.restore_tuning(4 << 30)
    assert t["maintenance_work_mem"] == "1024MB"
    assert r.restore_tuning(64 << 30)["maintenance_work_mem"] == "2048MB"
    assert r.restore_tuning(512 << 20)["maintenance_work_mem"] == "256MB"
    # nothing that needs a restart (wal_level, shared_buffers, fsync…) may appear here
    assert not set(t) & {"wal_level", "shared_buffers", "fsync", "full_page_writes", "archive_mode"}
    text = r.tuning_text(t)
    assert "max_wal_size = '5120MB'" in text and text.startswith("#")


def test_create_db_sql_uses_manifest_locale_and_owner():
    sql = r.create_db_sql("tracker_restore_staging", manifest()["facts"]["database"], True)
    assert sql == ("CREATE DATABASE \"tracker_restore_staging\" OWNER \"tracker\" TEMPLATE template0 ENCODING 'UTF8' "
                   "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8';")


def test_manifest_roundtrip_and_validation(tmp_path):
    dump = tmp_path / "tracker.dump"
    mp = manifest_path_for(dump)
    assert mp.name == "tracker.manifest.json"
    mp.write_text(json.dumps(manifest()))
    assert load_manifest(mp)["versions"]["timescaledb"] == "2.18.2"
    bad = manifest()
    bad["dump"]["sha256"] = "nope"
    mp.write_text(json.dumps(bad))
    with pytest.raises(PreflightError):
        load_manifest(mp)
    mp.write_text("{not json")
    with pytest.raises(PreflightError):
        load_manifest(mp)
    with pytest.raises(PreflightError):
        load_manifest(tmp_path / "missing.json")


def test_restore_local_preflight_refuses_bad_files(tmp_path):
    """Before any host is contacted: random file, truncated file, checksum mismatch."""
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
    from tests.conftest import prod_outputs
    from trackerdb.settings import Settings

    s = Settings.from_parts({"target": {"known_hosts": str(tmp_path / "kh")}}, prod_outputs())
    body = b"PGDMP\x01\x10\x00\x04\x08\x01" + b"x" * 1000
    import hashlib

    def write(content, sha=None, size=None):
        d = tmp_path / "tracker.dump"
        d.write_bytes(content)
        m = manifest(dump=size if size is not None else len(body))
        m["dump"]["sha256"] = sha or hashlib.sha256(body).hexdigest()
        manifest_path_for(d).write_text(json.dumps(m))
        return str(d)

    with pytest.raises(PreflightError, match="not a pg_dump archive"):
        restore(s, LocalDump(Path(write(b"\x00" * 2000, size=2000))), opts=RestoreOptions())
    with pytest.raises(PreflightError, match="bytes, the manifest says"):
        restore(s, LocalDump(Path(write(body[:500]))), opts=RestoreOptions())
    with pytest.raises(PreflightError, match="SHA-256 does not match"):
        restore(s, LocalDump(Path(write(body, sha="0" * 64))), opts=RestoreOptions())
