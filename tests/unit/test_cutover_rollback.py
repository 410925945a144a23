"""Rollback: row selection, export and replay SQL, refusals before touching any host."""

import pytest

from trackerdb.cutover import rollback as rb
from trackerdb.cutover.journal import Journal
from trackerdb.errors import OpsError
from trackerdb.window_config import AppHooks, SwitchConfig

FROZEN = "2026-11-21T21:00:00.000000Z"
REPORTS = {"schema": "tracker", "name": "location_reports", "time_column": "reported_at",
           "insert_time_columns": ["received_at"], "int_key": None, "has_unique": True, "generated_columns": 0}
EVENTS = {"schema": "tracker", "name": "device_events", "time_column": "occurred_at", "insert_time_columns": None,
          "int_key": None, "has_unique": False, "generated_columns": 0}
DEVICES = {"schema": "tracker", "name": "devices", "time_column": None, "insert_time_columns": None,
           "int_key": "id", "has_unique": True, "generated_columns": 0}
LINKS = {"schema": "tracker", "name": "device_geofences", "time_column": None, "insert_time_columns": None,
         "int_key": None, "has_unique": True, "generated_columns": 0}


@pytest.mark.parametrize("table, source_max, counts, where", [
    (REPORTS, {}, {}, f"\"reported_at\" > '{FROZEN}'::timestamptz OR \"received_at\" > '{FROZEN}'::timestamptz"),
    (EVENTS, {}, {}, f"\"occurred_at\" > '{FROZEN}'::timestamptz"),
    (DEVICES, {"tracker.devices": 20}, {}, '"id" > 20'),
    (DEVICES, {"tracker.devices": None}, {}, "true"),  # empty on the source: every row is new
    (LINKS, {}, {"tracker.device_geofences": 40}, "COUNT_GREW"),
    (LINKS, {}, {}, "true"),  # a table the manifest never saw
])
def test_selection(table, source_max, counts, where):
    assert rb.selection(table, FROZEN, source_max, counts)[0] == where


def test_maxima_only_for_integer_keyed_plain_tables():
    sql = rb.maxima_sql([REPORTS, DEVICES, LINKS])
    assert sql == "SELECT json_build_object('tracker.devices', (SELECT max(\"id\") FROM \"tracker\".\"devices\"));"
    assert rb.maxima_sql([REPORTS]) == "SELECT '{}'::json;"


def test_existing_sql_asks_the_server_without_failing_on_missing_tables():
    sql = rb.existing_sql([DEVICES])
    assert sql == ("SELECT json_object_agg(k, to_regclass(q) IS NOT NULL) FROM "
                   "(VALUES ('tracker.devices', '\"tracker\".\"devices\"')) v(k, q);")
    assert rb.existing_sql([]) == "SELECT '{}'::json;"


def test_export_sql_exports_whole_rows_as_text():
    assert rb.export_sql(DEVICES, '"id" > 20') == 'COPY (SELECT (t.*)::text FROM "tracker"."devices" t WHERE "id" > 20) TO STDOUT;'


HOSTILE = {**LINKS, "schema": "tracker", "name": "evil\n\\! id > /tmp/pwned\n-- x\t\\."}


@pytest.mark.parametrize("table", [DEVICES, EVENTS, HOSTILE])
def test_replay_rows_carry_names_as_escaped_copy_data(table):
    lines, nxt = rb.replay_rows(5, table, "(21,x)\n(22,\"a\\\\tb\")\n")
    assert nxt == 7 and len(lines) == 2
    for i, ln in enumerate(lines):
        assert "\n" not in ln and "\r" not in ln
        seq, schema, name, row = ln.split("\t")
        assert seq == str(5 + i) and schema == rb.copy_escape(table["schema"]) and name == rb.copy_escape(table["name"])
    assert lines[1].endswith('\t(22,"a\\\\tb")')


def test_copy_escape_round_trips_through_copy_text_rules():
    raw = "a\\b\tc\nd\re"
    esc = rb.copy_escape(raw)
    assert esc == "a\\\\b\\tc\\nd\\re"
    with pytest.raises(ValueError):
        rb.copy_escape("nul\x00")


def _program_lines(script: str) -> list[str]:
    """Every line outside the COPY data block."""
    head, rest = script.split("FROM STDIN;\n", 1)
    _, tail = rest.split("\n\\.\n", 1) if "\n\\.\n" in rest else rest.split("\\.\n", 1)
    return (head + "FROM STDIN;").splitlines() + tail.splitlines()


def test_replay_script_is_fixed_text_whatever_the_names():
    """The injection of issue 11: a name with a newline and a psql backslash command must never become a line of the program."""
    lines, _ = rb.replay_rows(0, HOSTILE, "(1,x)\n")
    hostile = rb.replay_script(lines)
    plain = rb.replay_script(rb.replay_rows(0, DEVICES, "(1,x)\n")[0])
    assert _program_lines(hostile) == _program_lines(plain)
    assert "pwned" not in "\n".join(_program_lines(hostile))
    # the only psql meta-commands are ours: ON_ERROR_STOP and the end of the COPY data
    metas = [ln for ln in hostile.splitlines() if ln.startswith("\\")]
    assert metas == ["\\set ON_ERROR_STOP on", "\\."]
    # one transaction around everything
    prog = _program_lines(hostile)
    assert prog[prog.index("\\set ON_ERROR_STOP on") + 1] == "BEGIN;" and prog[-1] == "COMMIT;"


def test_replay_program_quotes_names_on_the_server_and_runs_as_owner():
    p = rb.REPLAY_PROGRAM
    assert "format('%I.%I', r.nspname, r.relname)" in p and "SET LOCAL ROLE %I" in p and "RESET ROLE;" in p
    assert "ON CONFLICT DO NOTHING" in p and "attgenerated = ''" in p
    # no name reaches the program text except through format()'s %I
    assert "tracker" not in p.replace("trackerdb", "")


def test_no_data_line_can_end_the_copy_early():
    lines, _ = rb.replay_rows(0, HOSTILE, "\\.\n")
    assert all(not ln.startswith("\\") for ln in lines)


def test_count_lines():
    assert rb._count_lines("") == 0 and rb._count_lines("a\nb\n") == 2


class S:
    source_decommissioned = False
    database = "tracker"
    window_limits: dict = {}
    outputs: dict = {}


def test_refuses_when_source_decommissioned(tmp_path):
    s = S()
    s.source_decommissioned = True
    with pytest.raises(OpsError, match="decommissioned"):
        rb.run_rollback(s, tmp_path / "j.jsonl")
    assert not (tmp_path / "j.jsonl").exists()


@pytest.mark.parametrize("phases", [[], ["preflight"]])
def test_refuses_when_nothing_to_roll_back(tmp_path, phases):
    j = Journal(tmp_path / "j.jsonl")
    for p in phases:
        j.begin(p)
        j.end(p, "ok")
    before = j.path.read_text() if j.path.exists() else None
    with pytest.raises(OpsError, match="nothing to roll back"):
        rb.run_rollback(S(), j.path)
    assert (j.path.read_text() if j.path.exists() else None) == before


def test_tables_sql_lists_insert_time_columns():
    sql = rb.tables_sql()
    assert "ARRAY['received_at','created_at','inserted_at','ingested_at']::name[]" in sql and "%(" not in sql


class Settings2(S):
    pg_port = 5433
    source_port = 5433
    switch = SwitchConfig()
    application = AppHooks()


def _journal_after_switch(tmp_path):
    from trackerdb.cutover import phases as ph

    j = Journal(tmp_path / "j.jsonl")
    for phase, facts in ((ph.FREEZE, {"prior_read_only": None, "frozen_at": FROZEN}), (ph.RESTORE, {}),
                         (ph.SWITCH, {"old": "10.0.0.11", "new": "10.0.0.10"})):
        j.begin(phase)
        j.end(phase, "ok", facts)
    return j


def _fake_hosts(monkeypatch, calls, fail_replay):
    from trackerdb.cutover import freeze as fz
    from trackerdb.cutover import phases as ph
    from trackerdb.cutover import switch as sw

    class R:
        def __init__(self, name):
            self.name = name

        def close(self):
            pass

    class P:
        def __init__(self, host, port):
            self.host, self.port = host, port

        def json(self, sql, database="postgres", timeout=None):
            calls.append(("query", self.host.name, self.port))
            return {"exists": True} if "pg_database" in sql else []

    monkeypatch.setattr(ph.Ctx, "psql", lambda self, which: P(R(which), self.settings.pg_port if which == "target"
                                                                  else self.settings.source_port))
    monkeypatch.setattr(fz, "is_read_only", lambda psql, db: False)
    monkeypatch.setattr(fz, "freeze", lambda psql, db, grace_s=5, progress=None:
                        calls.append(("freeze", psql.host.name, psql.port)) or {"prior_read_only": None})
    monkeypatch.setattr(fz, "unfreeze", lambda psql, db, prior=None:
                        calls.append(("unfreeze", psql.host.name, psql.port)) or {"changed": True})
    monkeypatch.setattr(rb, "export_rows", lambda *a: calls.append(("export",)) or {"export_file": "x.sql", "exported_rows": 3})

    def replay(src, f, db):
        calls.append(("replay", src.host.name, src.port))
        if fail_replay:
            raise OpsError("source: replay failed: ERROR: boom")
        return {"replayed": {"tracker.t": 3}}

    monkeypatch.setattr(rb, "replay_export", replay)

    class Sw:
        def describe(self):
            return "fake"

        def apply(self, old, new, progress=None):
            calls.append(("switch", old, new))
            return {"changed": True, "new": new}

    monkeypatch.setattr(sw, "make", lambda settings: Sw())


def test_rollback_replays_before_it_points_the_application_back(tmp_path, monkeypatch):
    calls: list = []
    _fake_hosts(monkeypatch, calls, fail_replay=False)
    res = rb.run_rollback(Settings2(), _journal_after_switch(tmp_path).path, replay=True)
    steps = [c[:2] for c in calls if c[0] != "query"]
    assert steps == [("freeze", "target"), ("export",), ("unfreeze", "source"), ("replay", "source"), ("switch", "10.0.0.10")]
    assert res["replayed"] == {"tracker.t": 3}
    # the cluster's port reaches every statement, on both hosts
    assert {c[2] for c in calls if c[0] in ("query", "freeze", "unfreeze", "replay")} == {5433}


def test_a_failed_replay_leaves_the_application_on_a_writable_database(tmp_path, monkeypatch):
    calls: list = []
    _fake_hosts(monkeypatch, calls, fail_replay=True)
    j = _journal_after_switch(tmp_path)
    with pytest.raises(OpsError) as ei:
        rb.run_rollback(Settings2(), j.path, replay=True)
    steps = [c[:2] for c in calls if c[0] != "query"]
    # never switched; what this run changed is put back: the source frozen again, the target writable
    assert ("switch", "10.0.0.10") not in steps
    assert steps[-2:] == [("freeze", "source"), ("unfreeze", "target")]
    assert "application stays on the target, which is writable again" in ei.value.one_line()
    assert Journal(j.path).state(rb.ROLLBACK).status == "failed"


def test_a_record_the_decoder_cannot_read_falls_back_loudly_to_the_heuristic_export(tmp_path, monkeypatch):
    """Issue 28: the decoder's failure names the LSN and what it could not read; the rollback goes on with the
    heuristic export (said as a warning), never a traceback."""
    from trackerdb.cutover import lossless as ll
    from trackerdb.cutover.decoding import ParseError

    calls: list = []
    _fake_hosts(monkeypatch, calls, fail_replay=False)
    monkeypatch.setattr(ll, "capture_problem", lambda journal, tgt, settings: ({"slot": "trackerdb_rollback_1"}, None))

    def unreadable(*a, **kw):
        raise ParseError("at LSN 0/5A: unknown operation 'MERGE' in 'table a.b: MERGE: …'")

    monkeypatch.setattr(ll, "export_changes", unreadable)
    said: list = []
    res = rb.run_rollback(Settings2(), _journal_after_switch(tmp_path).path, replay=True, progress=said.append)
    assert ("export",) in calls  # the heuristic export ran
    assert "decoder could not read a record: at LSN 0/5A: unknown operation 'MERGE'" in res["capture_problem"]
    assert "CHANGE CAPTURE UNAVAILABLE" in res["warning"] and any("WARNING" in s and "0/5A" in s for s in said)
