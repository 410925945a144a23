"""A cutover journal is bound to its environment: a resumed cutover and a rollback refuse another's."""

import pytest

from tests.conftest import prod_outputs
from trackerdb.cutover import binding as bd
from trackerdb.cutover import ops
from trackerdb.cutover import phases as ph
from trackerdb.cutover import rollback as rb
from trackerdb.cutover.journal import Journal
from trackerdb.errors import PreflightError
from trackerdb.settings import Settings

LAB = Settings.from_parts({"package_source": "debian", "source": {"address": "10.77.0.3"}, "source_pg_port": 5432},
                          prod_outputs(environment="lab", private_ip="10.77.0.2"))


def _journal(tmp_path, settings, *phases):
    j = Journal(tmp_path / "j.jsonl")
    for phase in (ph.PREFLIGHT, *phases):
        j.begin(phase)
        j.end(phase, "ok", {bd.KEY: bd.binding(settings)} if phase == ph.PREFLIGHT else
              {"prior_read_only": None, "frozen_at": "2026-01-01T00:00:00Z"})
    return j


def test_the_binding_names_the_move():
    b = bd.binding(LAB)
    assert b["environment"] == "lab" and b["database"] == LAB.database
    assert "target" not in b  # the target is the stack's instance (its address may be overridden to reach it)
    assert b["source"] == f"{LAB.source.address}:{LAB.source_port}"


def test_another_environments_journal_is_refused_by_a_resumed_cutover_and_by_rollback(tmp_path):
    other = LAB.with_(source_pg_port=LAB.source_port + 1)
    j = _journal(tmp_path, other, ph.FREEZE)
    with pytest.raises(PreflightError) as e:
        ops.run_cutover(LAB, tmp_path / "d", journal_path=j.path)
    line = e.value.one_line()
    assert "belongs to another cutover" in line and f":{LAB.source_port + 1}' recorded" in line
    before = j.path.read_text()
    with pytest.raises(PreflightError, match="belongs to another cutover"):
        rb.run_rollback(LAB, j.path)
    assert j.path.read_text() == before  # nothing written: no rollback began


def test_the_same_environment_and_a_journal_without_a_binding_pass():
    bd.check("j", bd.binding(LAB), LAB)
    bd.check("j", None, LAB)
    assert bd.differences({"a": 1}, {"a": 1}) == []


def test_a_source_thawed_since_the_freeze_stops_the_window_before_the_switch(monkeypatch, tmp_path):
    """The delta, the dump and the switch re-check the source's freeze first: thawed by hand, the window
    stops with one line before anything of theirs runs."""
    from trackerdb.cutover import freeze as fz

    monkeypatch.setattr(fz, "is_read_only", lambda psql, db: False)

    class Ctx:
        settings = LAB

        def psql(self, which):
            assert which == "source"
            return object()

    for phase in (ph.delta, ph.dump, ph.switch):
        with pytest.raises(PreflightError, match="no longer read-only") as e:
            phase(Ctx(), False)
        assert "the switch has not happened" in e.value.hint
    monkeypatch.setattr(fz, "is_read_only", lambda psql, db: True)
    fz.require_frozen(object(), "tracker")


CMD = LAB.with_(switch={"mode": "command", "command": "true {old} {new}"})


def test_a_journal_resumed_against_another_target_cluster_is_refused_in_one_line(tmp_path, monkeypatch):
    """The preflight records the target's system identifier; a resumed cutover reads the one answering now."""
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, s: None)
    j = _journal(tmp_path, LAB)
    j.note(ph.PREFLIGHT, {bd.KEY: {**bd.binding(LAB), bd.SYSTEM_ID: "7390000000000000001"}})
    monkeypatch.setattr(bd, "target_system_identifier", lambda psql: "7390000000000000002")
    ran = []
    with pytest.raises(bd.BindingError) as e:
        ops.run_cutover(CMD, tmp_path / "d", journal_path=j.path, funcs={p: (lambda ctx, r: ran.append(1)) for p in ph.PHASES})
    line = e.value.one_line()
    assert "another target cluster" in line and "7390000000000000001 recorded, 7390000000000000002 now" in line
    assert "new --journal" in line and ran == []
    monkeypatch.setattr(bd, "target_system_identifier", lambda psql: "7390000000000000001")
    ops.run_cutover(CMD, tmp_path / "d", journal_path=j.path, funcs={p: (lambda ctx, r: {}) for p in ph.PHASES})


def test_check_target_accepts_the_same_cluster_an_old_journal_and_a_silent_target():
    bd.check_target("j", {bd.SYSTEM_ID: "1"}, "1")
    bd.check_target("j", {}, "2")  # a journal from before the identifier was recorded
    bd.check_target("j", {bd.SYSTEM_ID: "1"}, None)  # the target does not answer: checked when it does
    with pytest.raises(bd.BindingError, match="1 recorded, 2 now"):
        bd.check_target("j", {bd.SYSTEM_ID: "1"}, "2")
    # the settings check ignores the identifier (it needs the target)
    bd.check("j", {**bd.binding(LAB), bd.SYSTEM_ID: "1"}, LAB)


def test_the_preflight_records_the_identifier_in_the_binding(tmp_path, monkeypatch):
    monkeypatch.setattr(ops, "_add_secrets", lambda ctx, s: None)
    def pre(ctx, resume):
        return {bd.SYSTEM_ID: "7390000000000000009", "other": 1}

    stop = {p: (lambda ctx, r: (_ for _ in ()).throw(KeyboardInterrupt())) for p in ph.PHASES if p != ph.PREFLIGHT}
    with pytest.raises(KeyboardInterrupt):
        ops.run_cutover(CMD, tmp_path / "d", journal_path=tmp_path / "j.jsonl", funcs={ph.PREFLIGHT: pre, **stop})
    facts = Journal(tmp_path / "j.jsonl").state(ph.PREFLIGHT).facts
    assert facts[bd.KEY][bd.SYSTEM_ID] == "7390000000000000009" and bd.SYSTEM_ID not in {k for k in facts if k != bd.KEY}
