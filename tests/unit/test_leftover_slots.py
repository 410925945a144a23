"""Issue 27: a second window never leaves the first one's capture slot behind (pure parts)."""

from __future__ import annotations

import pytest

from trackerdb import capture_registry as reg
from trackerdb.cutover import leftover as lo
from trackerdb.cutover.journal import Journal
from trackerdb.rehearse.signoff import PASS, item_rollback_window

SLOT = "trackerdb_rollback_1700000000"
ROW = {"slot": SLOT, "database": "tracker_replaced_20261206120000", "retained_bytes": 426 * 1048576 + 209715}


def journal(tmp_path, *events) -> Journal:
    j = Journal(tmp_path / "w.jsonl")
    j.begin("capture")
    j.end("capture", "ok", {"slot": SLOT, "lsn": "0/1"})
    for phase, outcome, facts in events:
        j.begin(phase)
        if outcome:
            j.end(phase, outcome, facts)
    return j


EXPORTED = {"capture": "logical decoding", "slot": SLOT, "export_file": "/x/rollback-changes.sql", "exported_rows": 3}


@pytest.mark.parametrize("events, kind, command", [
    ([], lo.OPEN, "invoke cutover-finish --journal"),                                     # cut over, window open
    ([("rollback", "ok", EXPORTED)], lo.OVER, None),                                      # rolled back, exported
    ([("rollback", "ok", {**EXPORTED, "replay_s": 0.4})], lo.OVER, None),                 # ... and replayed
    ([("rollback", "ok", {"exported_rows": None, "target_unreachable": "x"})], lo.OPEN,   # export deferred: stays
     "invoke rollback --journal"),
    ([("rollback", "ok", {"exported_rows": 2, "capture_problem": "slot lost"})], lo.OPEN, "cutover-finish"),
    ([("rollback", "failed", {})], lo.OPEN, "invoke rollback --journal"),                 # replay failed: re-run
    ([("rollback", None, {})], lo.OPEN, "invoke rollback --journal"),                     # killed mid-rollback
    ([("finish", "ok", {"finished_at": "T"})], lo.OVER, None),
    ([("rollback", "ok", {"exported_rows": None}), ("capture_end", "ok", {"ended_at": "T", "by": "x"})], lo.OVER, None),
])
def test_verdict_from_the_journal(tmp_path, events, kind, command):
    j = journal(tmp_path, *events)
    got, why, cmd = lo.verdict(SLOT, j.states(), str(j.path))
    assert got == kind, why
    assert str(j.path) in why
    if command:
        assert command in cmd and str(j.path) in cmd
    else:
        assert cmd is None


def test_a_journal_that_records_another_slot_is_not_its_journal(tmp_path):
    j = journal(tmp_path, ("finish", "ok", {}))
    assert lo.verdict("trackerdb_rollback_2", j.states(), "j")[0] == lo.UNKNOWN


def test_refusal_is_one_line_naming_slot_database_wal_and_command():
    line = lo.refusal(ROW, "journal /j: its rollback window is open", "invoke cutover-finish --journal /j")
    assert "\n" not in line
    assert SLOT in line and ROW["database"] in line and "426.2 MiB" in line and "`invoke cutover-finish --journal /j`" in line
    unknown = lo.refusal(ROW, "no journal records it", None)
    assert "invoke cutover-finish --journal <it>" in unknown


def test_ended_export_only_after_the_slot_ended_and_the_file_exists(tmp_path):
    f = tmp_path / "rollback-changes.sql"
    f.write_text("x")
    exported = {**EXPORTED, "export_file": str(f)}
    assert lo.ended_export(journal(tmp_path / "a", ("rollback", "ok", exported)).states()) is None
    j = journal(tmp_path / "b", ("rollback", "ok", exported), ("capture_end", "ok", {"dropped": True}))
    assert lo.ended_export(j.states())["export_file"] == str(f)
    f.unlink()
    assert lo.ended_export(j.states()) is None  # the file is what a re-run would replay: gone, nothing to reuse


def test_registry_round_trip_and_journal_lookup(tmp_path):
    state = tmp_path / "state"
    j = journal(tmp_path)
    assert reg.journals(state) == {}
    reg.register(state, SLOT, j.path)
    reg.register(state, SLOT, j.path)  # once
    assert reg.path(state).read_text().count("\n") == 1
    assert reg.journals(state) == {SLOT: str(j.path.resolve())}
    assert lo.journal_of(state, SLOT) == j.path.resolve()
    assert reg.parse('{"slot": "a", "journal": "/j"}\nnot json\n{"slot": 1}\n') == {"a": "/j"}
    # a journal under <state_dir>/cutover found without the registry (journals from before it)
    other = Journal(state / "cutover" / "journal.jsonl")
    other.begin("capture")
    other.end("capture", "ok", {"slot": "trackerdb_rollback_2"})
    assert lo.journal_of(state, "trackerdb_rollback_2") == other.path
    assert lo.journal_of(state, "trackerdb_rollback_3") is None


def test_signoff_passes_a_rolled_back_window_whose_slot_was_ended():
    w = {"journal": "/j", "exists": True, "slots": [], "capture": {"slot": SLOT}, "finish": None, "rolled_back": True,
         "capture_end": {"ended_at": "T", "by": "rollback", "why": "rolled back; every change exported to /x"}}
    level, text = item_rollback_window({"rollback_window": w})
    assert level == PASS and "ended at T by rollback" in text
    level, _ = item_rollback_window({"rollback_window": {**w, "capture_end": None}})
    assert level != PASS  # gone without an end recorded: still a failure
