"""The delta's records: keys built and read in one place, prints to and from the journal's JSON (old files load)."""

import json

import pytest

from trackerdb.migrate import delta_sql as dq
from trackerdb.migrate.delta_types import Action, ChunkKey, Item, Print, key_kind, prints_from_json, prints_to_json

from .test_cutover_delta import catalog, chunk

# a prints file as the version before these types wrote it (``json.dumps(keep)``)
OLD_PRINTS_FILE = json.dumps({
    "source": {"chunk tracker.location_reports [0, 100)": {"n": 3, "d": "storage 12/1:7", "v": "9/4 z"},
               "table tracker.devices": {"n": 2, "d": "55", "v": "1"}},
    "target": {"chunk tracker.location_reports [0, 100)": {"n": 3, "d": "storage 12/1:8", "v": "8/4 z"}},
    "content": {"chunk tracker.location_reports [0, 100)": [{"n": 3, "d": "40", "v": "9/4 z"}, None]}})


def test_chunk_key_is_the_old_string_and_reads_back():
    k = ChunkKey("cagg tracker.hourly", -9223372036854775808, 100)
    assert str(k) == "chunk cagg tracker.hourly [-9223372036854775808, 100)"
    assert ChunkKey.parse(str(k)) == k
    assert dq.chunk_key("tracker.lr", 0, 10) == "chunk tracker.lr [0, 10)"
    assert str(ChunkKey.parse("chunk tracker.lr [0, 10)")) == "chunk tracker.lr [0, 10)"
    # a quoted name may hold brackets
    assert ChunkKey.parse('chunk "a [1, 2)"."b" [3, 4)') == ChunkKey('"a [1, 2)"."b"', 3, 4)
    assert ChunkKey.parse("table tracker.devices") is None and ChunkKey.parse("chunk x [a, b)") is None
    assert [key_kind(k) for k in (str(k), "table a.b", 'sequence "a"."b"')] == ["chunk", "table", "sequence"]


def test_items_are_records_with_their_chunk_key():
    it = dq.items(catalog([chunk("a", 0, 100, compressed=True)], tables=["devices"]))
    c, t = it["chunk tracker.location_reports [0, 100)"], it["table tracker.devices"]
    assert isinstance(c, Item) and c.chunk_key == ChunkKey("tracker.location_reports", 0, 100)
    assert c.compressed and c.compressed_rel == '"_timescaledb_internal"."compress_a"' and t.chunk_key is None
    with pytest.raises(TypeError):
        c["ht_rel"]  # attributes only: no read access by name
    assert not hasattr(t, "get") and not hasattr(t, "keys")


def test_action_values_are_the_journal_words():
    assert [a.value for a in Action] == ["copy", "new", "drop", "compress", "decompress", "unchanged"]
    assert f"{Action.CREATE}" == "new" and Action("unchanged") is dq.SAME
    plan = dq.Plan(actions={"chunk x [0, 1)": Action.COPY, "chunk x [1, 2)": Action.COPY, "table a.b": Action.SAME})
    counts = plan.counts()
    assert counts == {"chunk": {"copy": 2}, "table": {"unchanged": 1}}
    assert json.loads(json.dumps(counts)) == counts and all(type(a) is str for c in counts.values() for a in c)


def test_print_round_trip_and_old_prints_file_loads():
    p = Print.from_json({"n": "3", "d": 12, "v": "9"})
    assert p == Print(3, "12", "9") and Print.from_json(p.to_json()) == p
    assert Print.from_json({"v": "1"}).to_json() == {"v": "1"}  # a version read: no rows, no digest
    assert p.same_content(Print(3, "12", "other")) and not p.same_content(Print(4, "12")) and not p.same_content(None)
    kept = prints_from_json(json.loads(OLD_PRINTS_FILE))
    k = "chunk tracker.location_reports [0, 100)"
    assert kept["source"][k] == Print(3, "storage 12/1:7", "9/4 z")
    assert kept["content"][k] == [Print(3, "40", "9/4 z"), None]
    assert prints_to_json(kept) == json.loads(OLD_PRINTS_FILE)  # written back byte-for-byte the same shape
    assert prints_from_json(kept) == kept and prints_from_json(None) == {"source": {}, "target": {}, "content": {}}


def test_diff_takes_prints_or_their_json():
    src = dq.items(catalog([chunk("a", 0, 100)], tables=["devices"]))
    as_json = dq.diff(src, {k: {"n": 1, "d": "x"} for k in src}, src, {k: {"n": 1, "d": "y"} for k in src})
    typed = dq.diff(src, {k: Print(1, "x") for k in src}, src, {k: Print(1, "y") for k in src})
    assert as_json.actions == typed.actions == {k: Action.COPY for k in src}
