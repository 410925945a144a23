"""run_rehearsal's pure helpers: the cutover journal as report groups, writer facts, verification rows."""

import json

from trackerdb.cutover.journal import Journal
from trackerdb.rehearse import ops
from trackerdb.rehearse.report import build_report
from trackerdb.session import cluster


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        self.t += 1.5
        return self.t


def _journal(tmp_path, rollback=False):
    j = Journal(tmp_path / "journal.jsonl", clock=_Clock())
    for phase, facts in (("preflight", {}), ("freeze", {"frozen_at": "x", "prior_read_only": None}),
                         ("dump", {"size_bytes": 4096}), ("restore", {}),
                         ("verify", {"manifest": {"checks": 12, "failed": []}, "source": {"checks": 9, "failed": []}}),
                         ("switch", {"old": "10.0.0.2", "new": "10.0.0.3"}),
                         ("post", {"app_path": {"server": "10.0.0.3"}, "backrest_check": "ok"})):
        j.begin(phase)
        if phase == "switch":
            j.note(phase, {"old": "10.0.0.2", "new": "10.0.0.3", "mode": "route53"})
        j.end(phase, "ok", facts)
    if rollback:
        j.begin("rollback", {"replay": True})
        j.end("rollback", "ok", {"exported_rows": 3})
    return j


def test_real_journal_becomes_cutover_and_rollback_groups(tmp_path):
    j = _journal(tmp_path, rollback=True)
    groups = ops.split_journal(j.records())
    assert [g["label"] for g in groups] == ["cutover", "rollback"]
    rep = build_report({"journals": groups, "verification": [{"name": "v", "ok": True}],
                        "counts": {"t": {"source": 1, "target": 1}}, "sizes": {"source_db_bytes": 10_000}})
    phases = {(p["group"], p["phase"]): p for p in rep["phases"]}
    assert phases[("cutover", "switch")]["state"] == "ok"
    # begin at 1000+k*1.5, one note, end: the switch took two clock ticks
    assert phases[("cutover", "switch")]["duration_s"] == 3.0
    assert phases[("rollback", "rollback")]["state"] == "ok"
    assert rep["outage"]["source"] == "journal" and rep["passed"], rep["failures"]
    assert rep["throughput"]["dump_bytes"] == 4096


def test_an_interrupted_phase_is_reported_as_not_finished(tmp_path):
    j = Journal(tmp_path / "j.jsonl", clock=_Clock())
    j.begin("restore")
    j.end("restore", "failed", error="HostError: killed")
    j.begin("restore")  # resumed and killed again
    rep = build_report({"journals": ops.split_journal(j.records())})
    p = rep["phases"][0]
    assert p["state"] == "incomplete" and p["attempts"] == 3
    assert "phase cutover/restore incomplete" in " ".join(rep["failures"])


def test_verification_rows_from_the_journal(tmp_path):
    j = _journal(tmp_path)
    rows = ops.verification_rows({"verification": "ok"}, j.records())
    names = [r["name"] for r in rows]
    assert names == ["verify against the dump manifest", "verify against the frozen source (live)",
                     "application path reaches a writable primary", "backrest.check after the cutover"]
    assert all(r["ok"] for r in rows) and rows[0]["observed"] == "12 checks, 0 failed"


def test_failed_verify_shows_in_rows(tmp_path):
    rec = [{"phase": "verify", "event": "end", "facts": {"manifest": {"checks": 3, "failed": ["rows t: 1 != 2"]}}}]
    rows = ops.verification_rows({}, rec)
    assert rows[0]["ok"] is False and "rows t: 1 != 2" in rows[0]["evidence"]


def test_writer_facts_count_acks_per_endpoint():
    recs = [{"event": "start"}, {"event": "ack", "endpoint": "a"}, {"event": "ack", "endpoint": "a"},
            {"event": "refused", "endpoint": "a"}, {"event": "ack", "endpoint": "b"}, {"event": "stop"}]
    assert ops.writer_facts(recs, "a", "b") == {"acknowledged": 3, "acked_by_source": 2, "acked_by_target": 1, "refused": 1}


def test_acked_rows_query_quotes_timestamps():
    class FakeRemote:
        name = "target"

        def __init__(self):
            self.sql = []

        def run(self, argv, user=None, stdin=None, check=True, timeout=None):
            self.sql.append(stdin)

            class R:
                ok = True
                stdout = json.dumps({"found": 2})
            return R()

    r = FakeRemote()
    acks = [{"device": 1, "reported_at": "2026-01-01 00:00:00.1+00"}, {"device": 1, "reported_at": "2026-01-01 00:00:00.2+00"}]
    assert ops.acked_rows_on_target(cluster(r, 5432), "tracker", acks) == 2
    assert "'{\"2026-01-01 00:00:00.1+00\",\"2026-01-01 00:00:00.2+00\"}'::timestamptz[]" in r.sql[0]


def test_rollback_check_compares_replay_with_the_writer():
    rb = {"exported": {"tracker.location_reports": 40}, "replayed": {"tracker.location_reports": 40}, "export_file": "/x.sql"}
    assert ops.rollback_check(rb, 40)["ok"]
    assert not ops.rollback_check(rb, 41)["ok"]
    short = rb | {"replayed": {"tracker.location_reports": 39}}
    bad = ops.rollback_check(short, 40)
    assert not bad["ok"] and bad["observed"] == "exported 40, replayed 39"


def test_privilege_comparison_is_its_own_verification_row():
    diff = "owner/privileges of view reporting.visible_notes: source: owner=tracker_reporting, target: owner=tracker != equal to the source"
    rec = [{"phase": "verify", "event": "end", "facts": {
        "manifest": {"checks": 30, "failed": [], "privileges": {"ok": True, "observed": "49 objects compared, 0 differ"}},
        "source": {"checks": 30, "failed": [diff, "owners and privileges equal to the source: x != 0 differ"],
                   "privileges": {"ok": False, "observed": "49 objects compared, 1 differ (first: view reporting.visible_notes)"}}}}]
    rows = {r["name"]: r for r in ops.verification_rows({}, rec)}
    ok = rows["owners and privileges equal to the dump manifest"]
    assert ok["ok"] and ok["observed"] == "49 objects compared, 0 differ" and ok["expected"] == "0 differ"
    bad = rows["owners and privileges equal to the frozen source (live)"]
    assert not bad["ok"] and bad["evidence"] == diff


def test_the_content_comparison_is_its_own_row_with_its_path_and_projected_cost():
    rec = [{"phase": "verify", "event": "end", "facts": {
        "manifest": {"checks": 30, "failed": [], "content": {"ok": True, "note": True, "observed": "not compared: …"}},
        "source": {"checks": 30, "failed": [], "content": {"ok": True, "note": False, "observed": "9 of 9 equal; live, frozen …"}},
        "content_path": "content (verify, phase 5): FULL path -- … projected 3.5-9 min for 11.00 GiB"}}]
    rows = {r["name"]: r for r in ops.verification_rows({}, rec)}
    assert "content compared by digest (dump manifest)" not in rows  # a note is not a passing row
    row = rows["content compared by digest (frozen source)"]
    assert row["ok"] and row["observed"].startswith("9 of 9 equal") and "FULL path" in row["expected"]
