"""The cutover's one phase table, the typed hand-offs and their journal JSON, `cutover-phase`, and the
rehearsal's hook (issue 26, item 1)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from trackerdb.cutover import context as cx
from trackerdb.cutover import facts as fc
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover import table as tb
from trackerdb.cutover.journal import Journal
from trackerdb.errors import OpsError

from tests.unit.test_cutover_ops import Clock, FakeSettings, make_funcs

ROOT = Path(__file__).resolve().parents[2]
#: the runbook's order of the window (docs/architecture.md, the cutover task's --help), as journals since
#: issue 16 hold it: a journal written before the table must resume in the same order
RUNBOOK = ["preflight", "prepare", "app_stop", "freeze", "delta", "dump", "restore", "verify", "switch", "app_start",
           "health", "post", "final_dump"]


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch):
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, s: None)


def test_the_table_is_in_runbook_order_and_complete():
    assert ph.PHASES == RUNBOOK == [p.id for p in ph.TABLE]
    keys = [tb.step_key(p.step) for p in ph.TABLE]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # strictly increasing: 1, 1a, 1b, 2, 2b, 3, ... 8
    assert [p.step for p in ph.TABLE] == ["1", "1a", "1b", "2", "2b", "3", "4", "5", "6", "6b", "6c", "7", "8"]
    for p in ph.TABLE:
        assert p.title and not re.match(r"\d", p.title) and callable(p.fn), p
        assert p.heading == f"{p.step} {p.title}"
        earlier = ph.PHASES[:ph.PHASES.index(p.id)]
        assert set(p.reads) <= set(earlier), f"{p.id} reads a phase that runs after it: {p.reads}"
    assert {p.id for p in ph.TABLE if p.destructive} == {ph.FREEZE, ph.DELTA, ph.RESTORE, ph.SWITCH}
    assert {p.id for p in ph.TABLE if p.alone} == {ph.PREFLIGHT, ph.PREPARE}
    assert "thirteen" in ph.__doc__ and len(ph.TABLE) == 13
    with pytest.raises(ValueError):
        tb.step_key("6.b")


def test_the_dry_run_journal_and_notifier_titles_come_from_the_table(tmp_path):
    out = ops.run_cutover(FakeSettings(), tmp_path / "d", dry_run=True, journal_path=tmp_path / "j.jsonl")
    assert [(r["phase"], r["step"], r["what"], r["destructive"]) for r in out["plan"]] == [
        (p.id, p.step, p.heading, p.destructive) for p in ph.TABLE]
    lines = []
    ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=tmp_path / "j.jsonl", funcs=make_funcs([]),
                    clock=Clock(), progress=lines.append)
    assert f"[{ph.DELTA}] starting: {ph.BY_ID[ph.DELTA].heading}" in lines


def test_dump_facts_round_trip_and_read_an_old_journal(tmp_path):
    d = fc.Dump("/d/tracker.dump", "/d/m.cutover.json", "/d/m.json", "ab" * 32, 123, True, "direct", {"public.t": 3})
    assert fc.Dump.from_json(json.loads(json.dumps(d.to_json()))) == d
    # written by the version before the table (phases.py built this dict by hand): the same keys, so it loads
    old = {"dump_path": "/d/tracker.dump", "manifest_path": "/d/m.cutover.json", "source_manifest_path": "/d/m.json",
           "sha256": "ab" * 32, "size_bytes": 123, "dump_on_target": True, "transfer": "direct",
           "row_counts": {"public.t": 3}}
    assert d.to_json() == old and fc.Dump.from_json(old) == d
    assert fc.Dump.from_json({"deferred": "pre-copy path"}).to_json() == {"deferred": "pre-copy path"}
    assert fc.Dump.from_json({}).dump_on_target is False and fc.Dump.from_json({}).dump_path is None


def test_other_hand_offs_default_what_an_older_journal_lacks():
    assert fc.Transfer.from_preflight({}).transfer == "relay"  # journals before the direct transfer
    assert fc.Transfer.from_preflight({"transfer": {"transfer": "direct", "why": "x"}}).transfer == "direct"
    assert fc.PathChoice.from_json({}).path is fc.CopyPath.FULL  # journals before phase 2b
    choice = fc.PathChoice.from_json({"path": "delta", "reasons": [], "prints_file": "/p.json"})
    assert choice.path == "delta" == fc.CopyPath.DELTA and choice.prints_file == "/p.json"
    assert json.dumps({"path": fc.CopyPath.DELTA}) == '{"path": "delta"}'  # the journal keeps its plain strings
    fr = fc.Freeze.from_json({"prior_read_only": None, "host": "src"})
    assert fr.recorded and fr.prior_read_only is None and not fr.source_was_read_only
    assert not fc.Freeze.from_json({}).recorded
    assert fc.Prepare.from_json({"path_expected": "delta", "prints_file": "/p"}) == fc.Prepare(fc.CopyPath.DELTA, "/p")
    assert fc.Prepare.from_json({}) == fc.Prepare()
    assert fc.Freeze.from_json({"prior_read_only": "default_transaction_read_only=on"}).source_was_read_only
    sw = fc.Switch.from_json({"mode": "command", "old": "a", "new": "b", "insync_at": 5})
    assert sw.recorded and (sw.old, sw.new, sw.insync_at) == ("a", "b", 5.0) and not fc.Switch.from_json({}).recorded
    assert fc.Switch(True, "command", "a", "b").to_note() == {"mode": "command", "old": "a", "new": "b"}


def test_an_interrupted_journal_of_the_old_format_resumes_with_typed_reads(tmp_path):
    """Records exactly as the version before the table wrote them: the next phase reads them typed."""
    j = tmp_path / "j.jsonl"
    dump = {"dump_path": "/d/x.dump", "manifest_path": "/d/x.cutover.json", "source_manifest_path": "/d/x.json",
            "sha256": None, "size_bytes": 9, "dump_on_target": False, "transfer": "relay", "row_counts": {}}
    recs = [("preflight", {"transfer": {"transfer": "relay"}}), ("prepare", {"path_expected": "full", "reasons": []}),
            ("app_stop", {"skipped": "no stop steps configured"}),
            ("freeze", {"prior_read_only": None, "frozen_at": "t"}),
            ("delta", {"path": "full", "reasons": ["--full was given"]}), ("dump", dump)]
    lines = []
    for phase, facts in recs:
        lines.append({"phase": phase, "event": "begin", "start": 1.0, "end": None, "outcome": "started", "facts": {}})
        lines.append({"phase": phase, "event": "end", "start": 1.0, "end": 2.0, "outcome": "ok", "facts": facts})
    j.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    journal = Journal(j)
    assert cx.dump_facts(journal_ctx(journal)).dump_path == "/d/x.dump"
    assert cx.transfer(journal_ctx(journal)) == "relay" and cx.freeze_facts(journal_ctx(journal)).frozen_at == "t"
    assert ph.path(journal_ctx(journal)) is fc.CopyPath.FULL
    seen = {}

    def restore(ctx, resume):
        seen["dump"] = cx.dump_facts(ctx)
        return {}
    funcs = make_funcs([]) | {ph.RESTORE: restore}
    out = ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=funcs, clock=Clock())
    assert out["complete"] and seen["dump"] == fc.Dump.from_json(dump)


class journal_ctx:
    def __init__(self, journal):
        self.journal = journal

    def facts(self, phase):
        return self.journal.state(phase).facts


def test_after_hook_adds_facts_and_refuses_an_unknown_phase(tmp_path):
    j = tmp_path / "j.jsonl"
    seen = []

    def count(ctx, facts):
        seen.append(dict(facts))
        return {"rehearsal_counts": {"t": 1}}
    ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=make_funcs([]), clock=Clock(),
                    after={ph.VERIFY: count})
    verify = Journal(j).state(ph.VERIFY).facts
    assert seen and "n" in seen[0] and verify["rehearsal_counts"] == {"t": 1} and verify["n"] == seen[0]["n"]
    with pytest.raises(OpsError, match="unknown phase") as e:
        ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=tmp_path / "k.jsonl", after={"verfy": count})
    assert "verify" in e.value.hint and not (tmp_path / "k.jsonl").exists()


def test_one_phase_on_its_own_then_the_cutover_resumes_after_it(tmp_path):
    j = tmp_path / "j.jsonl"
    calls = []
    with pytest.raises(OpsError, match="follows preflight") as e:
        ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=make_funcs(calls), only="prepare")
    assert "cutover-phase preflight" in e.value.hint and calls == [] and not j.exists()
    plan = ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, dry_run=True, only="1")
    assert [(r["phase"], r["action"]) for r in plan["plan"]] == [("preflight", "run")] and not j.exists()
    ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=make_funcs(calls), clock=Clock(),
                    only="preflight")
    assert calls == [("preflight", False)] and list(Journal(j).states()) == ["preflight"]
    ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=make_funcs(calls), clock=Clock(),
                    only="prepare")
    out = ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=j, funcs=make_funcs(calls), clock=Clock())
    assert [p for p, _ in calls] == ph.PHASES and out["complete"]  # nothing ran twice
    for name, why in (("freeze", "only inside the window"), ("nosuch", "no cutover phase")):
        with pytest.raises(OpsError, match=why) as e:
            ops.run_cutover(FakeSettings(), tmp_path / "d", journal_path=tmp_path / "k.jsonl", only=name)
        assert "preflight (1), prepare (1a)" in e.value.hint


@pytest.mark.parametrize("name,why", [("nosuch", "no cutover phase 'nosuch'"),
                                      ("switch", "phase switch (6) runs only inside the window")])
def test_the_task_refuses_an_unknown_or_window_only_phase_in_one_line(tmp_path, name, why):
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "invoke"), "cutover-phase", name], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    text = (p.stdout + p.stderr).strip()
    assert p.returncode == 1 and len(text.splitlines()) == 1, text
    assert why in text and "hint: phases that run on their own: preflight (1), prepare (1a)" in text


def test_the_task_has_help_listing_the_phases():
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "invoke"), "--help", "cutover-phase"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "--dry-run" in p.stdout and "preflight (1), prepare (1a)" in p.stdout


def test_the_rehearsal_hooks_in_through_after_not_the_test_seam():
    for path in (ROOT / "rehearsal").rglob("*.py"):
        assert "funcs=" not in path.read_text(), f"{path} replaces a phase through the test seam"
    assert "after={ph.VERIFY: count_after_verify}" in (ROOT / "rehearsal" / "run.py").read_text()


def test_the_report_names_cutover_phases_by_their_runbook_step():
    from trackerdb.rehearse import report, report_html

    entries = [{"phase": "delta", "event": "begin", "start": 1.0}, {"phase": "delta", "event": "end", "start": 1.0,
                                                                     "end": 3.0, "outcome": "ok", "facts": {}},
               {"phase": "lab.up", "start": 0.5, "end": 0.9, "outcome": "ok"}]
    phases, _ = report.build_phases([{"label": "cutover", "entries": entries}])
    by = {p["phase"]: p for p in phases}
    assert (by["delta"]["step"], by["delta"]["title"]) == ("2b", ph.BY_ID["delta"].title)
    assert by["lab.up"]["step"] is None
    svg = report_html.timeline_svg(phases, None)
    assert "cutover / 2b delta" in svg and "cutover / lab.up" in svg
