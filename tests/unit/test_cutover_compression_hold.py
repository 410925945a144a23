"""The target's compression policies are unscheduled from the switch until cutover-finish (a recompression
in the rollback window writes chunk rows without TimescaleDB's markers, indistinguishable from the
application's writes in the decoded stream), recorded in the journal, and scheduled again at the end."""

from __future__ import annotations

import pytest

from trackerdb.cutover import compression_hold as ch
from trackerdb.cutover.journal import Journal


class FakePsql:
    """Answers like the target: the extension in ``public``, ``scheduled`` jobs; records every script."""

    def __init__(self, scheduled=(1000, 1002), impostors=()):
        self.scheduled = set(scheduled)
        self.impostors = list(impostors)
        self.sql: list[str] = []

    running: list = []

    def json(self, sql, db):
        self.sql.append(sql)
        if "'impostors'" in sql:
            return {"schema": "public", "impostors": self.impostors}
        if "job_status = 'Running'" in sql:
            return self.running.pop(0) if self.running else []
        return sorted(self.scheduled)

    def value(self, sql, db):
        self.sql.append(sql)
        flag = "next_start => now()" in sql
        ids = [int(x) for x in sql.split("j.job_id IN (")[1].split(")")[0].split(", ") if x != "NULL"]
        changed = [i for i in ids if (i in self.scheduled) != flag]
        self.scheduled = (self.scheduled | set(ids)) if flag else (self.scheduled - set(ids))
        return str(len(changed))


def test_builders_are_guarded_qualified_and_name_only_compression_policies():
    assert "j.proc_name = 'policy_compression' AND j.scheduled;" in ch.scheduled_sql()  # paused ones too (a 2nd window)
    q = ch.set_paused_sql("public", [1000, 1002], True)
    assert q.startswith("SET default_transaction_read_only = off;\nDO $trackerdb_guard$") and "ARRAY['alter_job']" in q
    assert 'LATERAL "public".alter_job(t.job_id, next_start => \'infinity\') a' in q and "j.job_id IN (1000, 1002)" in q
    assert "WITH t AS MATERIALIZED" in q  # alter_job returns a set: called once per chosen job, never in an aggregate
    assert "scheduled =>" not in q  # scheduled and the interval stay as the source's (verify compares them)
    r = ch.set_paused_sql("public", [1000], False)
    assert 'alter_job(t.job_id, next_start => now())' in r and "j.next_start = 'infinity'" in r
    assert "IN (NULL)" in ch.set_paused_sql("public", [], False)
    with pytest.raises(ValueError):
        ch.set_paused_sql("public", ["1; DROP TABLE x"], True)


def test_hold_records_before_it_changes_then_release_schedules_again_once(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    p, said = FakePsql(), []
    rec = ch.hold(p, "tracker", j, said.append)
    assert rec["held"] == [1000, 1002] and rec["released"] is False and p.scheduled == set()
    notes = [r for r in j.records() if r["phase"] == ch.PHASE]
    assert notes[0]["facts"]["held"] == [1000, 1002]  # journaled before the alter_job script ran
    assert "until cutover-finish" in said[0]
    # a re-run (a resumed cutover) keeps what it held and adds policies scheduled since
    p.scheduled = {1004}
    assert ch.hold(p, "tracker", j, said.append)["held"] == [1000, 1002, 1004]
    rec = ch.release(p, "tracker", j, said.append)
    assert rec["released"] is True and p.scheduled == {1000, 1002, 1004}
    n = len(p.sql)
    assert ch.release(p, "tracker", j, said.append)["released"] is True and len(p.sql) == n  # nothing twice


def test_nothing_to_hold_is_recorded_and_release_does_nothing(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    p = FakePsql(scheduled=())
    assert ch.hold(p, "tracker", j, lambda m: None)["held"] == []
    n = len(p.sql)
    ch.release(p, "tracker", j, lambda m: None)
    assert len(p.sql) == n


def test_an_impostor_alter_job_is_refused_before_anything_changes(tmp_path):
    from trackerdb.tsdb_api import ApiImpostor

    j = Journal(tmp_path / "j.jsonl")
    p = FakePsql(impostors=["public.alter_job(integer,boolean)"])
    with pytest.raises(ApiImpostor):
        ch.hold(p, "tracker", j, lambda m: None)
    assert p.scheduled == {1000, 1002} and not j.records()


def test_a_run_under_way_is_waited_for_and_paused_again_after_it(tmp_path):
    """A run that was going when paused sets its own next start when it ends: the pause is applied again
    until a check finds nothing running, and only then may the capture start."""
    j = Journal(tmp_path / "j.jsonl")
    p, said, t = FakePsql(), [], [0.0]
    p.running = [[1000], [1000], []]
    ch.hold(p, "tracker", j, said.append, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + 10))
    pauses = [q for q in p.sql if "next_start => 'infinity'" in q]
    assert len(pauses) == 3 and j.state(ch.PHASE).facts["waited_s"] == 20.0
    assert any("waiting for compression job 1000" in m for m in said)


def test_a_run_that_never_ends_stops_the_switch_before_the_capture(tmp_path):
    from trackerdb.errors import HostError

    j = Journal(tmp_path / "j.jsonl")
    p, t = FakePsql(), [0.0]
    p.running = [[1000]] * 100
    with pytest.raises(HostError) as e:
        ch.hold(p, "tracker", j, lambda m: None, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + 60), wait_s=120)
    assert "still running after 120s" in e.value.message and e.value.hint
