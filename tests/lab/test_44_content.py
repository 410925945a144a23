"""Verify compares content, not only counts (issue 25, item 1): a same-count UPDATE of one row on the target,
in a regular table and in a compressed chunk's range of a hypertable, fails verify against the frozen source
and against the dump's manifest (its digests, taken in the dump's snapshot: runbook step 4, before any
window), naming the table and the chunk range; undone, verify passes again. A manifest without digests (an
older dump) verifies by row counts, with a note that is not counted as a passing check. The target is put back as it was (row values, chunk compression, the continuous
aggregates' invalidation log) and the source unfrozen, whatever happens."""

from __future__ import annotations

import re

from types import SimpleNamespace

import pytest

from trackerdb.cutover import delta as dl
from trackerdb.cutover import freeze as fz
from trackerdb.migrate import content as ct
from trackerdb.migrate.verify import run_verify
from trackerdb.psql import Psql
from trackerdb.remote import Remote
from trackerdb.session import Session, cluster

pytestmark = pytest.mark.lab

INVALIDATIONS = ("SELECT coalesce(json_agg(json_build_array(hypertable_id, lowest_modified_value, greatest_modified_value) "
                 "ORDER BY 1, 2, 3), '[]'::json) FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log;")


@pytest.fixture(scope="module")
def frozen(restored):
    """The lab's source frozen as the cutover freezes it (the marker included), unfrozen at the end."""
    s = restored["settings"]
    src = Remote(s.require_source())
    facts = fz.freeze(cluster(src, s.source_port), s.database, grace_s=2)
    try:
        yield s
    finally:
        fz.unfreeze(cluster(src, s.source_port), s.database, facts["prior_read_only"])
        src.close()


def _content_failures(s) -> dict:
    """Verify live against the frozen source; the failed checks by name (our freeze's own flag excepted, as the
    cutover excepts it) and the content checks."""
    checks = run_verify(s, against_source=True, expect_backrest=False, app_login=False, probes=False)
    failed = {c.name: c for c in checks if not c.ok and c.name != "database settings present"}
    content = {c.name: c for c in checks if c.name == ct.CONTENT or c.name.endswith(" content")}
    return {"failed": failed, "content": content}


def _on_manifest(s, manifest) -> dict:
    """``invoke verify`` after ``invoke restore``: against the dump's manifest."""
    return {c.name: c for c in run_verify(s, manifest=manifest, expect_backrest=False, app_login=False, probes=False)}


def _reusing(s, sess, kept) -> dict:
    """The content checks as the cutover's verify runs them on the pre-copy path: the delta's prints reused
    where both hosts' tuple versions are unchanged, the rest digested."""
    return {c.name: c for c in ct.content_checks(s, sess, {"frozen": {"marker": "cutover"}}, True, kept)}


def test_a_same_count_update_on_the_target_fails_verify_naming_table_and_chunk(frozen, restored):
    s, db = frozen, frozen.database
    t = Remote(s.target)
    p = Psql(t, s.pg_port, pinned=False)  # the dataset's own search_path: TimescaleDB's API unqualified
    chunk = p.json("SELECT json_build_object('schema', chunk_schema, 'name', chunk_name, 'start', range_start::text, "
                   "'end', range_end::text, 'day', to_char(range_start AT TIME ZONE 'UTC', 'YYYY-MM-DD')) "
                   "FROM timescaledb_information.chunks WHERE hypertable_schema = 'tracker' AND hypertable_name = 'location_reports' AND is_compressed ORDER BY range_start DESC LIMIT 1;", db)
    assert chunk, "the lab's dataset has compressed chunks"
    in_range = f"reported_at >= '{chunk['start']}' AND reported_at < '{chunk['end']}'"
    row = p.json("SELECT json_build_object('device', device_id, 'at', reported_at::text, 'sat', satellites) "
                 f"FROM tracker.location_reports WHERE {in_range} AND satellites IS NOT NULL ORDER BY reported_at, device_id LIMIT 1;", db)
    fence = p.json("SELECT json_build_object('id', id, 'active', active) FROM tracker.geofences ORDER BY id LIMIT 1;", db)
    log_before = p.json(INVALIDATIONS, db)
    where_row = f"device_id = {int(row['device'])} AND reported_at = '{row['at']}'::timestamptz"
    # replica: no trigger runs (TimescaleDB's invalidation trigger neither): the change is the rows' alone
    replica = "BEGIN; SET LOCAL session_replication_role = replica; SET LOCAL TimeZone = 'UTC';"
    sess = Session(s)
    try:
        clean = _content_failures(s)
        assert clean["content"][ct.CONTENT].ok, clean["content"][ct.CONTENT]
        assert "frozen source and target read in parallel" in clean["content"][ct.CONTENT].observed
        assert clean["content"]["table tracker.geofences content"].ok
        assert clean["content"]["hypertable tracker.location_reports content"].ok
        baseline = set(clean["failed"])
        manifest = restored["dump"].manifest
        assert manifest.get("content", {}).get("prints"), "the dump took digests in its snapshot"
        m_clean = _on_manifest(s, manifest)
        for name in (ct.CONTENT, "table tracker.geofences content", "hypertable tracker.location_reports content"):
            assert m_clean[name].ok and not m_clean[name].note, m_clean[name]
        assert "digests taken in the dump's snapshot" in m_clean[ct.CONTENT].observed, m_clean[ct.CONTENT]
        m_baseline = {n for n, c in m_clean.items() if not c.ok}
        # an older manifest (no digests): counts only, said in a note that is not a passing check
        old = {k: v for k, v in manifest.items() if k != "content"}
        noted = _on_manifest(s, old)[ct.CONTENT]
        assert noted.note and noted.status == "note" and noted.observed.startswith("not compared: the expected side is a manifest without digests")
        kept = dl.fingerprint_all(SimpleNamespace(settings=s, session=sess))  # the pre-copy path's prints, before the change
        before = _reusing(s, sess, kept)
        # the prints are reused for what nobody wrote since (the target's scheduler may have rewritten a few
        # tuples in between: those are digested again, never taken from the old print)
        reused = re.search(r"(\d+) of them by the pre-copy delta's last prints", before[ct.CONTENT].observed)
        assert all(c.ok for c in before.values()) and reused and int(reused.group(1)) >= 1, before[ct.CONTENT]

        # the same number of rows, one value changed in each
        p.run(f"{replica} UPDATE tracker.geofences SET active = NOT active WHERE id = {int(fence['id'])}; "
              f"UPDATE tracker.location_reports SET satellites = satellites + 1 WHERE {where_row}; COMMIT;", db)
        broken = _content_failures(s)
        new = {n: c for n, c in broken["failed"].items() if n not in baseline}
        assert set(new) == {ct.CONTENT, "table tracker.geofences content", "hypertable tracker.location_reports content"}, new
        # counts alone could not see it: every row count still passes
        assert not [n for n in new if n.endswith(" rows")]
        fence_check = new["table tracker.geofences content"]
        assert fence_check.observed.startswith("1 of 1 differ: table tracker.geofences: ") and "digest" in fence_check.expected
        ht = new["hypertable tracker.location_reports content"]
        assert ht.observed.startswith("1 of ") and f"(chunk {chunk['name']})" in ht.observed, ht
        assert f"range [{chunk['day']}" in ht.observed, ht
        n_rows = ht.observed.split(": ")[-1].split(" rows")[0]
        assert f"{n_rows} rows" in ht.expected  # same count, another digest
        # prints taken before the change are never trusted for what was written since: read again, found
        reused = _reusing(s, sess, kept)
        assert {n for n, c in reused.items() if not c.ok} == {ct.CONTENT, "table tracker.geofences content",
                                                              "hypertable tracker.location_reports content"}
        assert "2 digested now" in reused[ct.CONTENT].observed, reused[ct.CONTENT]
        assert f"(chunk {chunk['name']})" in reused["hypertable tracker.location_reports content"].observed
        # against the dump's manifest (step 4, before any window): its digests find the same two, named
        on_manifest = _on_manifest(s, manifest)
        m_new = {n for n, c in on_manifest.items() if not c.ok} - m_baseline
        assert m_new == {ct.CONTENT, "table tracker.geofences content", "hypertable tracker.location_reports content"}, m_new
        assert not [n for n in m_new if n.endswith(" rows")]
        assert on_manifest["table tracker.geofences content"].observed.startswith("1 of 1 differ: table tracker.geofences: ")
        m_ht = on_manifest["hypertable tracker.location_reports content"]
        assert m_ht.observed.startswith("1 of ") and f"(chunk {chunk['name']})" in m_ht.observed and f"range [{chunk['day']}" in m_ht.observed, m_ht
        assert f"{n_rows} rows" in m_ht.expected, m_ht
    finally:
        p.run(f"{replica} UPDATE tracker.geofences SET active = {'true' if fence['active'] else 'false'} WHERE id = {int(fence['id'])}; "
              f"UPDATE tracker.location_reports SET satellites = {int(row['sat'])} WHERE {where_row}; COMMIT;", db)
    try:
        undone = _content_failures(s)
        assert set(undone["failed"]) == baseline, undone["failed"]
        assert undone["content"][ct.CONTENT].ok
        assert {n for n, c in _on_manifest(s, manifest).items() if not c.ok} == m_baseline
        assert all(c.ok for c in _reusing(s, sess, kept).values())
    finally:
        # the target as it was: the chunk compressed again (an UPDATE leaves it partly compressed), no invalidation added
        p.run(f"SELECT compress_chunk('{chunk['schema']}.{chunk['name']}'::regclass);", db)
        if p.json(INVALIDATIONS, db) != log_before:
            p.run("BEGIN; DELETE FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log; "
                  + "".join(f"INSERT INTO _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log VALUES ({a}, {b}, {c}); "
                            for a, b, c in log_before) + "COMMIT;", db)
        assert p.json(INVALIDATIONS, db) == log_before
        assert p.value(f"SELECT is_compressed FROM timescaledb_information.chunks WHERE chunk_name = '{chunk['name']}';", db) == "t"
        t.close()
        sess.close()
