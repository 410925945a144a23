"""Digests in the dump's snapshot (issue 25): the digest session's script, the manifest's section, verify's
comparison against it, and the dump script's plumbing (a third session on the snapshot, alongside pg_dump)."""

import json
import subprocess

from trackerdb.migrate import delta_sql as dq
from trackerdb.migrate import content as ct
from trackerdb.migrate import dump as d
from trackerdb.migrate import dump_digests as dd
from trackerdb.steps import Check, checks_to_dict

from tests.unit.test_migrate_content import DAY, DEV, JAN1, K1, K2, catalog, chunk, pr


def out(cat, prints):
    return json.dumps(cat) + "\n" + "".join(json.dumps({"k": k, "n": p["n"], "d": p["d"]}) + "\n" for k, p in prints.items())


def test_the_snapshot_script_reads_the_catalog_first_then_every_item_as_verify_reads_it():
    cat = catalog([chunk("a", JAN1, JAN1 + DAY, compressed=True), chunk("m", 0, 10, ht="cagg tracker.hourly")])
    sql = dd.snapshot_script(cat)
    items = ct.comparable_items(cat)
    assert sql.index(ct.SESSION_SQL) < sql.index("'hypertables', (SELECT") < sql.index(f"'k', {dq.literal(K1)}")
    # the same statements verify runs on the target: the prints compare one to one
    for k in (K1, DEV):
        assert ct.digest_sql(k, items[k], items[k].columns) in sql
    assert "_materialized" not in sql.split("'large_objects'")[1].split("SELECT json_build_object('k'")[-1]
    assert "cagg tracker.hourly" not in "".join(ln for ln in sql.splitlines() if ln.startswith("SELECT json_build_object('k'"))


def test_the_section_keeps_the_snapshots_items_and_names_what_it_could_not_digest():
    planned = catalog([chunk("a", JAN1, JAN1 + DAY)])
    snap = catalog([chunk("a", JAN1, JAN1 + DAY), chunk("b", JAN1 + DAY, JAN1 + 2 * DAY)], cols=("id", "name", "extra"))
    gone = dq.chunk_key("tracker.location_reports", 0, 1)
    sec = dd.section(out(snap, {K1: pr(3, "11"), DEV: pr(2, "33"), gone: pr(1, "9")}), planned, {"digests_s": 1.2})
    assert sec["prints"] == {K1: pr(3, "11")}  # the dropped item's print is not kept, nor the one with other columns
    assert sec["not_digested"] == {K2: "created after the dump planned its digests",
                                   DEV: "its columns changed while the dump planned its digests"}
    assert sec["catalog"] == snap and sec["timings"] == {"digests_s": 1.2}


def test_a_digest_session_that_printed_nothing_is_an_error_not_an_empty_section():
    import pytest

    from trackerdb.errors import OpsError

    with pytest.raises(OpsError):
        dd.section("", catalog([]))


def test_timings_come_from_the_scripts_own_lines():
    err = "pg_dump: warning: x\ntrackerdb: snapshot 0000-1\ntrackerdb: digests 1534 ms\ntrackerdb: pg_dump 20100 ms\n"
    assert dd.timings(err) == {"digests_s": 1.53, "pg_dump_s": 20.1}
    assert d.dump_warnings(err) == ["x"]


def dumped(prints, not_digested=None, los=()):
    return {"catalog": catalog([chunk("a", JAN1, JAN1 + DAY), chunk("b", JAN1 + DAY, JAN1 + 2 * DAY)], los=los),
            "prints": prints, "not_digested": not_digested or {}, "timings": {"digests_s": 4.0}}


def test_a_faithful_target_passes_and_the_head_says_the_digests_are_the_dumps():
    dm = dumped({K1: pr(3, "11"), K2: pr(4, "22"), DEV: pr(2, "33")}, los=[{"oid": 7, "md5": "a"}])
    tgt = catalog([chunk("_hyper_9_1_chunk", JAN1, JAN1 + DAY), chunk("_hyper_9_2_chunk", JAN1 + DAY, JAN1 + 2 * DAY)],
                  los=[{"oid": 7, "md5": "a"}])
    planned = dd.plan_against(dm, tgt)
    checks = dd.checks_against(dm, tgt, {K1: pr(3, "11"), K2: pr(4, "22"), DEV: pr(2, "33")}, planned, 0.5)
    assert all(c.ok and not c.note for c in checks)
    assert [c.name for c in checks] == [ct.CONTENT, "hypertable tracker.location_reports content", "table tracker.devices content",
                                        "large objects content"]
    assert "digests taken in the dump's snapshot (4.0 s, alongside pg_dump)" in checks[0].observed


def test_a_same_count_change_on_the_target_fails_naming_the_chunk_range_and_both_sides():
    dm = dumped({K1: pr(3, "11"), K2: pr(4, "22"), DEV: pr(2, "33")})
    tgt = catalog([chunk("_hyper_9_1_chunk", JAN1, JAN1 + DAY), chunk("_hyper_9_2_chunk", JAN1 + DAY, JAN1 + 2 * DAY)])
    checks = dd.checks_against(dm, tgt, {K1: pr(3, "11"), K2: pr(4, "23"), DEV: pr(2, "33")}, dd.plan_against(dm, tgt), 0.5)
    bad = {c.name: c for c in checks if not c.ok}
    assert set(bad) == {ct.CONTENT, "hypertable tracker.location_reports content"}
    ht = bad["hypertable tracker.location_reports content"]
    assert ht.observed == "1 of 2 differ: tracker.location_reports range [2024-01-02, 2024-01-03) (chunk _hyper_9_2_chunk): 4 rows, digest 23"
    assert ht.expected == "tracker.location_reports range [2024-01-02, 2024-01-03) (chunk b): 4 rows, digest 22"


def test_what_the_dump_could_not_digest_is_a_note_and_a_missing_print_fails():
    dm = dumped({K1: pr(3, "11"), DEV: pr(2, "33")}, not_digested={K2: "created after the dump planned its digests"})
    tgt = catalog([chunk("x", JAN1, JAN1 + DAY), chunk("y", JAN1 + DAY, JAN1 + 2 * DAY)])
    planned = dd.plan_against(dm, tgt)
    assert K2 not in planned[2]["read"]
    checks = dd.checks_against(dm, tgt, {K1: pr(3, "11"), DEV: pr(2, "33")}, planned, 0.1)
    assert all(c.ok for c in checks)
    notes = [c for c in checks if c.note]
    assert len(notes) == 1 and notes[0].observed.startswith("1 compared by row count only: chunk tracker.location_reports [")
    # a print the dump should have had and has not: that fails, never passes silently
    dm2 = dumped({K1: pr(3, "11"), DEV: pr(2, "33")})
    checks = dd.checks_against(dm2, tgt, {K1: pr(3, "11"), K2: pr(4, "22"), DEV: pr(2, "33")}, dd.plan_against(dm2, tgt), 0.1)
    assert [c.name for c in checks if not c.ok] == [ct.CONTENT, "hypertable tracker.location_reports content"]


def test_a_note_is_shown_but_never_counted_as_a_passing_check():
    n = ct.not_compared("the expected side is a manifest without digests")
    assert n.note and n.ok and n.status == "note" and n.observed.startswith("not compared: ")
    doc = checks_to_dict([Check("a", True), n])
    assert doc["ok"] is True and doc["passed"] == 1 and [c["name"] for c in doc["checks"]] == ["a"]
    assert [c["status"] for c in doc["notes"]] == ["note"]


def test_the_cli_table_counts_notes_apart(capsys):
    from trackerdb.cli import common

    ok = common.print_checks("verify", [Check("a", True, "x", "x"), ct.not_compared("why")], as_json=False)
    text = capsys.readouterr().out
    assert ok and "1/1 checks passed; 1 note(s) above" in text and "note" in text


def test_the_dump_script_digests_in_the_snapshot_while_pg_dump_runs(tmp_path):
    """With stand-in psql/pg_dump: the digest session adopts the exported snapshot, runs in the background
    while pg_dump writes, writes its own file, and both report their time; a failing digest session fails
    the dump (after pg_dump), and without overlap it runs before pg_dump starts."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "log"
    (bindir / "psql").write_text(f"""#!/bin/bash
while IFS= read -r line; do
  echo "psql $line" >> {log}
  case "$line" in *pg_export_snapshot*) echo "00000003-0000001B-1";; *"SELECT 1"*) echo '{{"facts": 1}}';;
    *"SELECT 2"*) sleep 0.3; echo '{{"k": "x", "n": 1, "d": "5"}}'; echo "digests done" >> {log};; *"SELECT 3"*) echo "ERROR: boom" >&2; exit 3;; esac
done
""")
    (bindir / "pg_dump").write_text(f"""#!/bin/bash
echo "pg_dump start" >> {log}
sleep 0.1
echo "pg_dump end" >> {log}
printf 'PGDMP-bytes'
""")
    for f in bindir.iterdir():
        f.chmod(0o755)

    def run(sql, overlap=True):
        log.write_text("")
        script = d.dump_script(pg_bin=str(bindir), port=5432, database="tracker", facts_sql=["SELECT 1;"],
                               facts_path=str(tmp_path / "facts"), out_file=None, digest_sql=sql,
                               digests_path=str(tmp_path / "digests"), overlap=overlap)
        return subprocess.run(["bash", "-c", script], capture_output=True, timeout=30)

    p = run("SELECT 2;")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"PGDMP-bytes"  # the digests never enter the dump's stream
    assert (tmp_path / "digests").read_text() == '{"k": "x", "n": 1, "d": "5"}\n'
    text = log.read_text()
    assert text.count("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'") == 2
    assert text.index("pg_dump start") < text.index("digests done")  # alongside pg_dump, not before it
    t = dd.timings(p.stderr.decode())
    assert set(t) == {"digests_s", "pg_dump_s"} and t["digests_s"] >= 0.3
    serial = run("SELECT 2;", overlap=False)
    assert serial.returncode == 0 and log.read_text().index("digests done") < log.read_text().index("pg_dump start")
    bad = run("SELECT 3;")
    assert bad.returncode != 0 and "ERROR: boom" in bad.stderr.decode() and "trackerdb: pg_dump" in bad.stderr.decode()
