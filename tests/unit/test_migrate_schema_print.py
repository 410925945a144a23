"""The schema fingerprint and the pre-copy guard (pure parts)."""

import json

from trackerdb.migrate import schema_print as sp

BASE = {"columns": ["tracker.devices.id integer NOT NULL", "tracker.devices.name text NOT NULL"],
        "indexes": ["CREATE UNIQUE INDEX devices_pkey ON tracker.devices USING btree (id)"],
        "extensions": ["timescaledb 2.18.2"], "database": {"owner": "tracker"}}
PRIV = {"privileges": {"objects": {
    "table tracker.devices": {"kind": "table", "name": "tracker.devices", "schema": "tracker", "owner": "tracker", "acl": ["a"]},
    "table _timescaledb_internal._hyper_1_1_chunk": {"kind": "table", "name": "_hyper_1_1_chunk", "schema": "_timescaledb_internal",
                                                     "owner": "tracker"},
    "large object 424242": {"kind": "large object", "name": "424242", "schema": None, "owner": "tracker"}}}}
IDENT = {"system_identifier": "7", "database_oid": 16386}


def doc(**over):
    return sp.schema_doc(dict(BASE, **over), PRIV)


def test_doc_leaves_out_what_moves_with_data_and_is_order_independent():
    d = doc()
    assert d["privileges"] == ['table tracker.devices {"acl":["a"],"owner":"tracker"}']
    shuffled = sp.schema_doc(dict(BASE, columns=list(reversed(BASE["columns"]))), PRIV)
    assert sp.digest(shuffled) == sp.digest(d)
    assert sp.digest(doc(indexes=BASE["indexes"] + ["CREATE INDEX x ON tracker.devices USING btree (name)"])) != sp.digest(d)


def test_guard_passes_only_when_record_target_and_source_agree():
    rec = sp.precopy_record("tracker", IDENT, doc(), "ab" * 32, recorded_at="2026-12-01T10:00:00Z")
    assert json.loads(json.dumps(rec)) == rec and rec["schema_digest"] == sp.digest(doc())
    assert sp.guard(rec, "tracker", IDENT, doc(), doc()) == []
    assert "no pre-copy is recorded" in sp.guard(None, "tracker", IDENT, doc(), doc())[0]
    assert "not 'tracker'" in sp.guard(dict(rec, database="other"), "tracker", IDENT, doc(), doc())[0]
    other = dict(IDENT, database_oid=99999)
    assert "is not the recorded pre-copy" in sp.guard(rec, "tracker", other, doc(), doc())[0]


def test_guard_names_what_changed_on_which_side():
    rec = sp.precopy_record("tracker", IDENT, doc(), None)
    added = doc(columns=BASE["columns"] + ["tracker.devices.note text"])
    reasons = sp.guard(rec, "tracker", IDENT, added, doc())
    assert len(reasons) == 1 and reasons[0].startswith("the source's schema changed since the pre-copy: columns: + tracker.devices.note text")
    granted = sp.schema_doc(BASE, {"privileges": {"objects": {
        "table tracker.devices": dict(PRIV["privileges"]["objects"]["table tracker.devices"], acl=["a", "ro=r/tracker"])}}})
    reasons = sp.guard(rec, "tracker", IDENT, granted, granted)
    assert [r.split(":")[0] for r in reasons] == ["the source's schema changed since the pre-copy",
                                                  "the target's schema changed since the pre-copy"]
    assert "ro=r/tracker" in reasons[0]


def test_differences_of_scalars_and_lists():
    assert sp.differences({"a": [1, 2], "b": "x"}, {"a": [2, 3], "b": "y"}) == ["a: + 3; - 1", "b: y (was x)"]
    assert sp.differences(doc(), doc()) == []


def test_record_round_trip(tmp_path):
    assert sp.load_record(tmp_path) is None
    sp.record_path(tmp_path).write_text("not json")
    assert sp.load_record(tmp_path) is None
    rec = sp.precopy_record("tracker", IDENT, doc(), None)
    sp.record_path(tmp_path).write_text(json.dumps(rec))
    assert sp.load_record(tmp_path) == rec
    sp.record_path(tmp_path).write_text(json.dumps(dict(rec, format=99)))
    assert sp.load_record(tmp_path) is None


def test_a_frozen_target_is_not_a_precopy_to_write_into():
    rec = sp.precopy_record("tracker", IDENT, doc(), None)
    assert sp.guard(rec, "tracker", IDENT, doc(), doc(), target_read_only="default_transaction_read_only=off") == []
    out = sp.guard(rec, "tracker", IDENT, doc(), doc(), target_read_only="default_transaction_read_only=on")
    assert len(out) == 1 and "is read-only" in out[0] and "invoke restore" in out[0]


def test_privileges_in_timescaledbs_schemas_are_schema_not_data():
    # issue 25: a default privilege or grant set in TimescaleDB's schemas after the pre-copy must send the
    # window to the full path (the delta moves rows, never privileges); chunks still follow their data
    objs = dict(PRIV["privileges"]["objects"])
    tsdb = {
        "schema _timescaledb_internal": {"kind": "schema", "name": "_timescaledb_internal", "schema": "_timescaledb_internal",
                                         "owner": "postgres", "acl": ["postgres=UC/postgres"]},
        "default privileges for role postgres in schema _timescaledb_internal on tables": {
            "kind": "default privileges", "name": "x", "schema": "_timescaledb_internal", "acl": ["reporting=r/postgres"]},
        "function _timescaledb_internal.f()": {"kind": "function", "name": "x", "schema": "_timescaledb_internal",
                                               "owner": "postgres", "acl": ["reporting=X/postgres"], "extension_member": True},
    }
    d = sp.schema_doc(BASE, {"privileges": {"objects": dict(objs, **tsdb)}})
    assert sorted(p.split(" {")[0] for p in d["privileges"]) == sorted(["table tracker.devices", *tsdb])
    rec = sp.precopy_record("tracker", IDENT, d, None)
    revoked = dict(tsdb, **{"default privileges for role postgres in schema _timescaledb_internal on tables": dict(
        tsdb["default privileges for role postgres in schema _timescaledb_internal on tables"], acl=[])})
    changed = sp.schema_doc(BASE, {"privileges": {"objects": dict(objs, **revoked)}})
    reasons = sp.guard(rec, "tracker", IDENT, changed, d)
    assert len(reasons) == 1 and "in schema _timescaledb_internal on tables" in reasons[0]


def test_a_frozen_target_after_a_completed_rollback_is_a_precopy_the_window_writes_through(tmp_path):
    from trackerdb.cutover import freeze as fz

    rec = sp.precopy_record("tracker", IDENT, doc(), None)
    rec["rolled_back"] = {"journal": "/j.jsonl", "how": "every change replayed from the capture"}
    assert sp.guard(rec, "tracker", IDENT, doc(), doc(), target_read_only="default_transaction_read_only=on") == []
    # only our own sessions write through the freeze: the connecting role's per-database setting
    assert fz.our_writes_sql("tracker", True) == 'ALTER ROLE CURRENT_USER IN DATABASE "tracker" SET default_transaction_read_only = off;'
    assert fz.our_writes_sql("tracker", False).endswith("RESET default_transaction_read_only;")


def test_a_rollback_is_noted_only_on_the_record_of_that_database(tmp_path):
    import json

    rec = sp.precopy_record("tracker", IDENT, doc(), None)
    sp.record_path(tmp_path).write_text(json.dumps(rec))
    other = dict(IDENT, database_oid=IDENT["database_oid"] + 1)
    assert sp.note_rollback(tmp_path, "tracker", other, "/j", "how") is False  # another database now: not this pre-copy
    assert sp.note_rollback(tmp_path, "elsewhere", IDENT, "/j", "how") is False
    assert "rolled_back" not in sp.load_record(tmp_path)
    assert sp.note_rollback(tmp_path, "tracker", IDENT, "/j", "replayed") is True
    assert sp.load_record(tmp_path)["rolled_back"]["journal"] == "/j"
    assert sp.note_rollback(tmp_path / "none", "tracker", IDENT, "/j", "how") is False  # no pre-copy recorded
