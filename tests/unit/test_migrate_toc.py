"""TOC split, archive header, pg_restore error parsing/allowlist, space maths (pure)."""

import pytest

from trackerdb.errors import PreflightError
from trackerdb.migrate import toc

TOC = """;
; Archive created at 2026-11-21 21:00:00 UTC
;     dbname: tracker
;     Format: CUSTOM
;
; Selected TOC Entries:
;
4372; 0 0 ENCODING - ENCODING
4373; 0 0 STDSTRINGS - STDSTRINGS
2; 3079 16385 EXTENSION - timescaledb
4374; 0 0 COMMENT - EXTENSION timescaledb
7; 2615 17000 SCHEMA - tracker tracker
250; 1259 17010 TABLE tracker location_reports postgres
4200; 0 16420 TABLE DATA _timescaledb_catalog hypertable postgres
4201; 0 16440 TABLE DATA _timescaledb_catalog chunk postgres
4202; 0 16500 TABLE DATA _timescaledb_catalog metadata postgres
4380; 0 0 SEQUENCE SET _timescaledb_catalog chunk_id_seq postgres
4300; 0 17010 TABLE DATA tracker location_reports postgres
4301; 0 17100 TABLE DATA _timescaledb_internal _hyper_1_1_chunk postgres
3900; 2606 17200 CONSTRAINT tracker devices devices_pkey postgres
3901; 2606 17300 FK CONSTRAINT tracker device_events device_events_device_id_fkey postgres
"""


def test_split_puts_catalog_first_and_drops_metadata():
    s = toc.split_toc(TOC)
    assert [ln.split(";")[0] for ln in s.catalog] == ["4200", "4201", "4380"]
    assert s.excluded == ["4202; 0 16500 TABLE DATA _timescaledb_catalog metadata postgres"]
    rest_ids = [ln.split(";")[0] for ln in s.rest]
    assert "4300" in rest_ids and "4301" in rest_ids and "2" in rest_ids and "3901" in rest_ids
    assert not set(rest_ids) & {"4200", "4201", "4202", "4380"}
    assert s.table_data == 2
    assert s.entries == 14


@pytest.mark.parametrize("line,type_,schema", [
    ("4300; 0 17010 TABLE DATA tracker location_reports postgres", "TABLE DATA", "tracker"),
    ("250; 1259 17010 TABLE tracker location_reports postgres", "TABLE", "tracker"),
    ("4380; 0 0 SEQUENCE SET _timescaledb_catalog chunk_id_seq postgres", "SEQUENCE SET", "_timescaledb_catalog"),
    ("3901; 2606 17300 FK CONSTRAINT tracker t t_fkey postgres", "FK CONSTRAINT", "tracker"),
    ("2; 3079 16385 EXTENSION - timescaledb", "EXTENSION", None),
    ("; comment", None, None),
])
def test_parse_toc_line(line, type_, schema):
    e = toc.parse_toc_line(line)
    if type_ is None:
        assert e is None
    else:
        assert (e.type, e.schema) == (type_, schema)


def test_empty_toc_is_refused():
    with pytest.raises(PreflightError):
        toc.split_toc(";\n; nothing\n")


@pytest.mark.parametrize("head,ok", [
    (b"PGDMP\x01\x10\x00\x04\x08\x01rest", True),
    (b"PGDMP\x01\x10\x00\x04\x08\x03rest", False),   # tar format
    (b"-- PostgreSQL database dump\n", False),       # plain SQL
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", False),
    (b"PGD", False),
])
def test_archive_header(head, ok):
    if ok:
        assert toc.parse_archive_header(head)["archive_version"] == "1.16.0"
    else:
        with pytest.raises(PreflightError):
            toc.parse_archive_header(head)


STDERR = """pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 4202; 0 16500 TABLE DATA _timescaledb_catalog metadata postgres
pg_restore: error: COPY failed for table "metadata": ERROR:  duplicate key value violates unique constraint "metadata_pkey"
DETAIL:  Key (key)=(exported_uuid) already exists.
CONTEXT:  COPY metadata, line 1
pg_restore: from TOC entry 250; 1259 17010 TABLE tracker location_reports postgres
pg_restore: error: could not execute query: ERROR:  relation "location_reports" already exists
Command was: CREATE TABLE tracker.location_reports (
pg_restore: warning: errors ignored on restore: 2
"""


def test_errors_are_parsed_and_only_the_allowlisted_one_passes():
    errs = toc.parse_restore_errors(STDERR)
    assert len(errs) == 2
    assert errs[0].allowed == "timescaledb-metadata-exported-uuid"
    assert errs[0].details[0].startswith("DETAIL:")
    assert errs[1].allowed is None
    assert errs[1].message == 'ERROR:  relation "location_reports" already exists'
    assert errs[1].toc.startswith("TOC entry 250;")


def test_same_message_on_another_table_is_not_allowed():
    text = STDERR.replace("TABLE DATA _timescaledb_catalog metadata", "TABLE DATA tracker metadata")
    assert toc.parse_restore_errors(text)[0].allowed is None


def test_no_errors_on_clean_stderr():
    assert toc.parse_restore_errors("") == []


def test_pg_restore_cmd_has_runbook_flags_and_jobs():
    cmd = toc.pg_restore_cmd("/usr/lib/postgresql/16/bin", "tracker_restore_staging", "/d/x.dump", list_file="/d/l", jobs=4)
    assert cmd[0] == "/usr/lib/postgresql/16/bin/pg_restore"
    # owners and ACLs are restored as dumped (verify compares them with the source)
    assert "--no-owner" not in cmd and "--no-privileges" not in cmd and "--exit-on-error" not in cmd
    assert cmd[cmd.index("-j") + 1] == "4" and cmd[cmd.index("-L") + 1] == "/d/l" and cmd[-1] == "/d/x.dump"
    assert "-j" not in toc.pg_restore_cmd("/b", "db", "/f", jobs=1)


@pytest.mark.parametrize("db,dump,up,wal,expect", [
    (10 << 30, 3 << 30, 0, 4 << 30, int((10 << 30) * 1.3) + (3 << 30) + (4 << 30)),
    (10 << 30, 3 << 30, 3 << 30, 0, int((10 << 30) * 1.3)),
    (0, 100, 200, 0, 0),
])
def test_space_needed(db, dump, up, wal, expect):
    assert toc.space_needed(db, dump, up, wal) == expect


def test_df_parse():
    assert toc.parse_df_avail("    Avail\n 123456\n") == 123456
    with pytest.raises(PreflightError):
        toc.parse_df_avail("df: /nope: No such file")


def test_restore_phases_create_every_table_before_the_catalog_data_then_load_the_rest_in_parallel():
    # compression_settings has regclass columns: its COPY needs tracker's tables (pre-data) to exist first
    s = toc.split_toc(TOC)
    schema, catalog, data = toc.restore_phases(s, 4)
    assert (schema.name, schema.sections, schema.jobs) == ("schema", ("pre-data",), 1)
    assert (catalog.name, catalog.sections, catalog.jobs) == ("catalog", ("data",), 1)
    assert (data.name, data.sections, data.jobs) == ("data", ("data", "post-data"), 4)
    ids = lambda lines: [ln.split(";")[0] for ln in lines]  # noqa: E731
    assert "4202" not in ids(schema.lines)  # the excluded metadata row stays excluded in every phase
    assert ids(schema.lines) == [i for i in ids(TOC.splitlines()[7:]) if i != "4202"]  # archive order kept
    assert ids(catalog.lines) == ["4200", "4201", "4380"] and ids(data.lines) == ids(s.rest)
    cmd = toc.pg_restore_cmd("/b", "db", "/f", list_file="/l", jobs=1, sections=schema.sections)
    assert "--section=pre-data" in cmd and cmd[-1] == "/f"
    cmd = toc.pg_restore_cmd("/b", "db", "/f", list_file="/l", jobs=4, sections=data.sections)
    assert cmd.count("--section=data") == 1 and "--section=post-data" in cmd


# Lines as `pg_restore -l` printed them for the lab's source with privileges set inside TimescaleDB's schemas
# (issue 25): schema and member ACLs sit next to their objects (pre-data), default ACLs after post-data.
TSDB_ACL_TOC = TOC + """5271; 0 0 ACL - SCHEMA _timescaledb_internal postgres
5278; 0 0 ACL _timescaledb_functions FUNCTION cagg_watermark(hypertable_id integer) postgres
5282; 0 0 ACL _timescaledb_catalog TABLE hypertable postgres
3620; 826 19532 DEFAULT ACL _timescaledb_catalog DEFAULT PRIVILEGES FOR SEQUENCES postgres
3619; 826 19531 DEFAULT ACL _timescaledb_catalog DEFAULT PRIVILEGES FOR TABLES postgres
3621; 826 19533 DEFAULT ACL _timescaledb_internal DEFAULT PRIVILEGES FOR TABLES postgres
"""


def test_default_acls_in_the_catalog_schema_are_restored_with_the_post_data():
    # the serial catalog phase restores --section=data only: a DEFAULT ACL listed there was skipped
    s = toc.split_toc(TSDB_ACL_TOC)
    schema, catalog, data = toc.restore_phases(s, 2)
    ids = lambda lines: [ln.split(";")[0] for ln in lines]  # noqa: E731
    assert ids(catalog.lines) == ["4200", "4201", "4380"]
    assert {"3619", "3620", "3621"} <= set(ids(data.lines)) and "post-data" in data.sections
    assert {"5271", "5278", "5282"} <= set(ids(schema.lines))
    # every kept entry is in the list of the phase that restores its section: pre-data in `schema`,
    # every other entry in `data` unless it is catalog data (then in `catalog`)
    for e in toc.parse_toc(TSDB_ACL_TOC):
        if e.line in s.excluded:
            continue
        assert e.line in schema.lines
        assert (e.line in catalog.lines) != (e.line in data.lines), e.line
        assert (e.line in catalog.lines) == (e.schema == "_timescaledb_catalog" and e.type in ("TABLE DATA", "SEQUENCE SET"))
