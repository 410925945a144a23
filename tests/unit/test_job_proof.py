"""Jobs proven by TimescaleDB's scheduler: the plan, the verdicts and the executor against a scripted
scheduler (a fake psql that runs a job only once it was made due)."""

import pytest

from trackerdb.migrate import job_proof as jp


def job(i, proc="policy_compression", ht="tracker.location_reports", scheduled=True, nxt="2026-12-07T00:00:00+00:00",
        ok=0, bad=0, status=None):
    return {"id": i, "proc": f"_timescaledb_functions.{proc}", "hypertable": ht, "scheduled": scheduled,
            "next_start": nxt, "successes": ok, "failures": bad, "last_status": status, "last_success": None,
            "job_status": "Scheduled"}


class Scheduler:
    """Answers like PostgreSQL with TimescaleDB: ``fail`` ids fail when run, ``stuck`` ids never run."""

    def __init__(self, jobs, fail=(), stuck=(), errors=None):
        self.jobs = {j["id"]: dict(j) for j in jobs}
        self.fail, self.stuck, self.errors = set(fail), set(stuck), errors or {}
        self.sql: list[str] = []

    def json(self, sql, db=None):
        self.sql.append(sql)
        if "'impostors'" in sql:
            return {"schema": "public", "impostors": []}
        if "job_errors" in sql:
            return {str(k): v for k, v in self.errors.items()}
        return [dict(j) for j in self.jobs.values()]

    read_only = "off"

    def value(self, sql, db=None):
        self.sql.append(sql)
        return self.read_only if "default_transaction_read_only" in sql else "2026-12-06 10:00:00+00"

    def run(self, sql, db=None, check=True):
        self.sql.append(sql)
        for i, j in self.jobs.items():
            if f"alter_job({i}, next_start => now())" in sql and i not in self.stuck:
                j["failures" if i in self.fail else "successes"] += 1
                j["last_status"] = "Failed" if i in self.fail else "Success"
                j["next_start"] = "2026-12-06T11:00:00+00:00"  # the scheduler's own next start


def _prove(sched, **kw):
    t = [0.0]

    def clock():
        return t[0]

    def sleep(s):
        t[0] += s

    return jp.prove(sched, "tracker", clock=clock, sleep=sleep, wait_s=5, **kw)


def test_every_scheduled_job_made_due_runs_and_its_schedule_goes_back():
    sched = Scheduler([job(1000), job(1001, "policy_refresh_continuous_aggregate", "tracker.hourly"),
                       job(1002, "check_stale_devices", None)])
    checks, notes = _prove(sched)
    assert [c.ok for c in checks] == [True, True, True] and notes == []
    assert checks[0].name == "job 1000 _timescaledb_functions.policy_compression on tracker.location_reports runs in the scheduler"
    assert "succeeded" in checks[0].observed
    put_back = [s for s in sched.sql if "2026-12-07T00:00:00+00:00'::timestamptz" in s]
    assert put_back and all(f"alter_job({i}, next_start => '2026-12-07T00:00:00+00:00'::timestamptz)" in put_back[-1]
                            for i in (1000, 1001, 1002))
    assert "trackerdb refuses to call TimescaleDB" in put_back[-1]  # the guard before every call


def test_a_failing_job_is_named_with_the_scheduler_error_and_a_job_that_never_runs_too():
    sched = Scheduler([job(1000), job(1001, "check_stale_devices", None)], fail=[1001], stuck=[1000],
                      errors={1001: 'invalid input syntax for type interval: "soon"'})
    checks, _ = _prove(sched)
    by = {c.name.split()[1]: c for c in checks}
    assert not by["1001"].ok and 'FAILED: invalid input syntax for type interval: "soon"' in by["1001"].observed
    assert not by["1000"].ok and by["1000"].observed.startswith("did not run within")
    # the schedules go back even when jobs failed
    assert any("alter_job(1000, next_start => '2026-12-07" in s for s in sched.sql)


def test_skipped_deferred_unscheduled_and_paused_jobs():
    sched = Scheduler([job(1000), job(1001, "policy_retention", "tracker.device_events"),
                       job(1002, scheduled=False), job(1003, nxt="infinity"), job(1004)])
    checks, notes = _prove(sched, skip={1004: "held for the rollback window"}, defer=jp.BEFORE_SWITCH)
    assert [c.name.split()[1] for c in checks if c.ok] == ["1000"]
    paused = [c for c in checks if not c.ok]
    assert len(paused) == 1 and "1003" in paused[0].name and "paused" in paused[0].observed
    assert any("1001" in n and "retention deferred" in n for n in notes)
    assert any("1002" in n and "not scheduled" in n for n in notes)
    assert any("1004" in n and "held for the rollback window" in n for n in notes)
    assert not any("alter_job(1003" in s or "alter_job(1001" in s or "alter_job(1004" in s for s in sched.sql)


def test_schedule_check_names_a_job_the_source_schedules_and_the_target_does_not():
    src = [job(1000), job(1001, "policy_retention", "tracker.device_events")]
    ok = jp.schedule_check(src, [job(1000), job(1001, "policy_retention", "tracker.device_events")])
    bad = jp.schedule_check(src, [job(1000), job(1001, "policy_retention", "tracker.device_events", scheduled=False)])
    assert ok.ok and not bad.ok
    assert "policy_retention on tracker.device_events" in bad.observed


def test_without_timescaledb_nothing_is_proven_or_changed():
    class NoTs(Scheduler):
        def json(self, sql, db=None):
            return {"schema": None, "impostors": []} if "'impostors'" in sql else []

    s = NoTs([])
    assert jp.prove(s, "tracker") == ([], [])
    assert not any("alter_job" in x for x in s.sql)


@pytest.mark.parametrize("j, ok, fragment", [
    (job(1000, ok=3, status="Success"), True, "3 successes"),
    (job(1000, ok=3, bad=1, status="Failed"), False, "last run Failed"),
    (job(1000), False, "last run never"),
    (job(1000, ok=1, status="Success", nxt="infinity"), False, "paused"),
])
def test_history_checks_read_the_scheduler_record(j, ok, fragment):
    (c,) = jp.history_checks([j, job(1001, scheduled=False)])
    assert c.ok is ok and fragment in c.observed


def test_a_read_only_database_fails_the_proof_and_nothing_is_made_due():
    sched = Scheduler([job(1000)])
    sched.read_only = "on"
    checks, _ = _prove(sched)
    assert len(checks) == 1 and not checks[0].ok and "read_only = on" in checks[0].observed
    assert not any("next_start =>" in s for s in sched.sql)
