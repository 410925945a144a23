"""The cutover's pre-copy path in the lab (issue 15, item 3).

One module-scoped world: `invoke dump` + `invoke restore` + `invoke verify` put the pre-copy on the
target. A schema change on the source (ADD COLUMN) then makes the window take the full dump path,
loudly (dry run, progress, journal, summary); that window is stopped before its dump and rolled back
(nothing was switched). With the column gone again, the source receives updates, deletes and inserts in
old and new chunks (one compressed, one compressed only on the source afterwards), a new chunk, changes
in regular tables, a sequence advance and a large object write; one more change lands after the
fingerprints taken before the outage. The window then moves only what changed -- killed once in the
middle of its copies and re-run -- and source and target are equal by content, chunk by chunk.
The module ends rolled back (the source serving again) and the rollback capture finished.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lab import changes, dataset
from trackerdb.cutover import delta as dl
from trackerdb.migrate import delta_sql as dq
from trackerdb.cutover import hooks as hk
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.lossless import finish
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.remote import Remote

from .test_50_cutover import Killed, ensure_app_password_on_source, query_json, run_sql

pytestmark = [pytest.mark.lab]

RUN = random.randrange(1, 10_000_000)  # microseconds: this run's rows never collide with an earlier run's
NEW_DAY = f"2024-03-01 10:00:00+00'::timestamptz + interval '{RUN % 280} days"


def mutations() -> str:
    return changes.source_changes(RUN)


LATE = """UPDATE tracker.location_reports SET battery_pct = 1
  WHERE device_id = 8 AND reported_at >= '2024-01-04' AND reported_at < '2024-01-05'
    AND reported_at = (SELECT min(reported_at) FROM tracker.location_reports WHERE device_id = 8 AND reported_at >= '2024-01-04' AND reported_at < '2024-01-05')
  RETURNING device_id || ' ' || reported_at::text;"""
# (constant ranges and the segment-by column in every predicate: on a compressed chunk TimescaleDB then
# decompresses only the batches concerned, not every chunk's)


class Stop(Exception):
    """Stands in for an operator who stops the window before its dump."""


def _stop(ctx, resume):
    raise Stop("stopped before the dump")


def _chunks(remote, database: str = "tracker") -> dict:
    """{chunk key: (chunk name, compressed, compressed chunk name)} of the raw hypertables on one host (the
    continuous aggregates' may legitimately grow on the target once it serves: its refresh policies run there)."""
    cat = query_json(remote, dq.CATALOG_SQL, database=database)
    return {k: (v.name, v.compressed, v.compressed_name) for k, v in dq.items(cat).items()
            if v.kind == "chunk" and not v.hypertable.startswith("cagg ")}


@pytest.fixture(scope="module")
def world(backrest_ready, tmp_path_factory):
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.manifest import load_manifest
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
    from trackerdb.migrate.verify import run_verify

    s = backrest_ready
    ensure_app_password_on_source(s)
    work = tmp_path_factory.mktemp("precopy")
    # Invalidations an earlier module left pending on the source would be materialized by the restored
    # copy's own refresh policy, and the pre-copy's verify would compare a refreshed aggregate with the
    # dump's: refresh them on the source first, so the pre-copy is compared like with like.
    with Remote(s.source) as src:
        run_sql(src, "CALL refresh_continuous_aggregate('tracker.location_reports_hourly', NULL, NULL);\n"
                     "CALL refresh_continuous_aggregate('tracker.location_reports_daily', NULL, NULL);", database="tracker")
    # the pre-copy, as the runbook does it before the window
    art = run_dump(s, str(work / "dump"))
    restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
    pre = run_verify(s, manifest=load_manifest(art.manifest_path))
    res = {"settings": s, "work": work, "precopy_failed": [f"{c.name}: {c.observed}" for c in pre if not c.ok]}

    # 1. a schema change since the pre-copy: the full dump path, loudly; stopped before the dump, rolled back
    j1 = work / "full.jsonl"
    with Remote(s.source) as src:
        run_sql(src, "ALTER TABLE tracker.devices ADD COLUMN precopy_probe text;", database="tracker")
    try:
        res["full_dry"] = run_cutover(s, work / "d1", dry_run=True, journal_path=j1)
        lines1: list[str] = []
        with pytest.raises(Stop):
            run_cutover(s, work / "d1", journal_path=j1, progress=lines1.append, funcs={ph.DUMP: _stop})
        res.update(full_journal=j1, full_lines=lines1, full_summary=ops.summary(Journal(j1)))
        run_rollback(s, j1)
    finally:
        with Remote(s.source) as src:
            run_sql(src, "ALTER TABLE tracker.devices DROP COLUMN IF EXISTS precopy_probe;", database="tracker")

    # 2. changes after the pre-copy, one more after the fingerprints taken before the outage; the window
    # killed after its first copy, then re-run
    with Remote(s.source) as src:
        run_sql(src, mutations(), database="tracker")
    late: dict = {}

    def late_then_stop_app(ctx, resume):
        with Remote(s.source) as src:
            late["row"] = run_sql(src, LATE, database="tracker").stdout.strip().splitlines()[0]
        return hk.app_stop(ctx, resume)

    j2 = work / "delta.jsonl"
    res["dry"] = run_cutover(s, work / "d2", dry_run=True, journal_path=j2)
    seen: dict = {}

    def kill_in_the_window(msg: str) -> None:  # 1a copies too (before the outage): the kill is for 2b's
        seen["delta"] = seen.get("delta") or msg.startswith("[delta] starting")
        if seen["delta"] and msg.startswith("copied "):
            raise Killed(msg)

    with pytest.raises(Killed):
        run_cutover(s, work / "d2", journal_path=j2, progress=kill_in_the_window, funcs={ph.APP_STOP: late_then_stop_app})
    lines: list[str] = []
    res["summary"] = run_cutover(s, work / "d2", journal_path=j2, progress=lambda m: (lines.append(m), print(m)))
    res.update(journal=j2, lines=lines, late=late)
    with Remote(s.source) as src, Remote(s.target) as tgt:
        res["checksums"] = (dataset.checksums(src), dataset.checksums(tgt))
        res["chunks"] = (_chunks(src), _chunks(tgt))
        seq = "SELECT json_object_agg(sequencename, last_value) FROM pg_sequences WHERE schemaname = 'tracker';"
        lo = "SELECT md5(lo_get(424242));"
        res["sequences"] = (query_json(src, seq, "tracker"), query_json(tgt, seq, "tracker"))
        res["lo"] = (run_sql(src, lo, "tracker").stdout.strip(), run_sql(tgt, lo, "tracker").stdout.strip())
        res["late_on_target"] = run_sql(tgt, "SELECT battery_pct FROM tracker.location_reports WHERE device_id || ' ' || reported_at::text = "
                                             f"'{late['row']}';", "tracker").stdout.strip()
    # every chunk's rows, read through its hypertable on both hosts (content, whatever the storage)
    ctx = ph.Ctx(settings=s, journal=Journal(j2), dump_dir=work)
    try:
        hosts = dl._Hosts(ctx)
        cats = hosts.run([("source", dq.CATALOG_SQL, True), ("target", dq.CATALOG_SQL, True)])
        si, ti = dq.items(cats[0]), dq.items(cats[1])
        raw = [k for k, v in si.items() if v.kind == "chunk" and not v.hypertable.startswith("cagg ")]
        res["content"] = dl._prints(hosts, {"source": dl._jobs("source", si, si, raw, kind="content"),
                                            "target": dl._jobs("target", ti, si, raw, kind="content")})
        res["raw_keys"] = raw
    finally:
        ctx.close()
    yield res
    run_rollback(s, j2)  # leave the source serving, as the cutover module does
    finish(s, j2)


def test_the_precopy_was_restored_and_verified(world):
    assert world["precopy_failed"] == [], world["precopy_failed"]


def test_a_schema_change_takes_the_full_path_loudly(world):
    dry = "\n".join(world["full_dry"]["details"])
    assert "path: FULL DUMP -- the source's schema changed since the pre-copy: columns: + tracker.devices.precopy_probe text" in dry
    loud = [ln for ln in world["full_lines"] if ln.startswith("FULL DUMP PATH")]
    assert loud and "precopy_probe" in loud[0], world["full_lines"]
    facts = Journal(world["full_journal"]).state(ph.DELTA).facts
    assert facts["path"] == "full" and any("precopy_probe" in r for r in facts["reasons"])
    assert world["full_summary"]["path"] == "full" and any("precopy_probe" in r for r in world["full_summary"]["path_reasons"])
    st = Journal(world["full_journal"]).states()
    assert st[ph.DUMP].status == "failed" and ph.SWITCH not in st  # stopped where the full path's dump begins
    assert Journal(world["full_journal"]).state(ph.PREPARE).facts["path_expected"] == "full"


def test_the_window_took_the_delta_path_resumed_after_a_kill(world):
    s = world["summary"]
    assert s["complete"] and s["verification"] == "ok" and s["path"] == "delta" and s["path_reasons"] == []
    assert any(d.startswith("path: pre-copy (delta)") for d in world["dry"]["details"]), world["dry"]["details"]
    assert any(ln.startswith("pre-copy path: schema unchanged") for ln in world["lines"])
    begins: dict = {}
    for rec in Journal(world["journal"]).records():
        if rec["event"] == "begin":
            begins[rec["phase"]] = begins.get(rec["phase"], 0) + 1
    assert begins[ph.DELTA] == 2 and all(n == 1 for p, n in begins.items() if p != ph.DELTA), begins
    st = Journal(world["journal"]).states()
    # 1a, before the outage: the changes since the pre-copy were moved while the source still served
    pre = st[ph.PREPARE].facts["before_the_freeze"]
    plan = pre["plan"]
    assert plan["chunk"].get("copy", 0) + plan["chunk"].get("new", 0) >= 4, plan
    assert plan["table"].get("copy", 0) >= 2 and plan["table"].get("unchanged", 0) >= 1, plan
    assert pre["sequences_set"] >= 1 and pre["large_objects_copied"] == 1 and pre["cagg_state_copied"] is True, pre
    # the changed uncompressed chunks moved in part: only their differing slices (the equality test below proves the rest)
    sliced = {**pre.get("slices_moved", {}), **st[ph.DELTA].facts.get("slices_moved", {})}
    assert any(k.startswith("chunk tracker.location_reports [") and 0 < n < 64 for k, n in sliced.items()), (pre, st[ph.DELTA].facts)
    # 2b, in the window: the change made after 1a was found (and copied, then killed); the re-run found it done
    notes = [r["facts"]["progress"] for r in Journal(world["journal"]).records()
             if r["phase"] == ph.DELTA and r["event"] == "note" and "progress" in r["facts"]]
    assert notes[0]["round"] == 1 and notes[0]["plan"]["chunk"].get("copy", 0) >= 1, notes
    d = st[ph.DELTA].facts
    assert d["path"] == "delta" and d["rounds"] >= 1 and d["tables_and_chunks"]["moved"] < d["tables_and_chunks"]["compared"], d
    # the prints taken before the outage were reused where nothing was written since
    assert d["content_reread"]["round 1"]["source"] < d["tables_and_chunks"]["compared"], d
    assert "deferred" in st[ph.DUMP].facts and "skipped" in st[ph.RESTORE].facts
    assert "manifest" not in st[ph.VERIFY].facts and st[ph.VERIFY].facts["source"]["failed"] == []  # live only
    assert st[ph.VERIFY].facts["source"]["content"]["ok"], st[ph.VERIFY].facts["source"]
    assert st[ph.VERIFY].facts["content_path"].startswith("content (verify, phase 5): pre-copy path"), st[ph.VERIFY].facts
    fd = st[ph.FINAL_DUMP].facts
    assert fd["off_critical_path"] and st[ph.FINAL_DUMP].start > st[ph.SWITCH].end
    if fd.get("dump_on_target"):  # the direct transfer left it on the target (the only copy)
        with Remote(world["settings"].target) as t:
            assert t.exists(fd["dump_path"]), fd
    else:
        assert Path(fd["dump_path"]).is_file(), fd
    assert s["window_steps_s"][ph.DELTA] is not None and s["delta"]["timings"]["fingerprint_s"] > 0
    print("pre-copy window:", json.dumps({k: s[k] for k in ("outage_s", "window_steps_s", "delta")}, indent=1))


def test_source_and_target_equal_by_content(world):
    src, tgt = world["checksums"]
    assert src == tgt, {k: (src[k], tgt.get(k)) for k in src if src[k] != tgt.get(k)}
    c = world["content"]
    rows = {w: {k: (c[w][k].n, c[w][k].d) for k in world["raw_keys"]} for w in ("source", "target")}
    assert world["raw_keys"] and rows["source"] == rows["target"]  # the versions ("v") are each host's own
    assert world["sequences"][0] == world["sequences"][1] and world["lo"][0] == world["lo"][1]
    assert world["late_on_target"] == "1", "the change made after the fingerprints before the outage was not moved"


def test_chunks_match_by_range_name_and_compression(world):
    src, tgt = world["chunks"]
    assert src == tgt  # same ranges, names (verify compares grants and rows by chunk name) and compression state
    starts = {int(k.split("[")[1].split(",")[0]): v for k, v in src.items() if k.startswith("chunk tracker.location_reports [")}
    assert starts[1704153600000000][1] is True  # 2024-01-02: compressed before, changed, compressed again
    assert starts[1704585600000000][1] is True  # 2024-01-07: compressed on the source after the pre-copy
    assert max(starts) >= 1709251200000000  # the chunk that did not exist at the pre-copy (March 2024 or later)
