"""Verify's content comparison, pure parts: what is read on each host, the SQL, and how differences are named."""

from dataclasses import replace

from trackerdb.migrate import delta_sql as dq
from trackerdb.migrate import content as ct
from trackerdb.steps import Check

DAY = 86_400_000_000  # TimescaleDB's internal unit for time: microseconds since 1970
JAN1 = 1_704_067_200_000_000  # 2024-01-01 00:00 UTC

HT = {"id": 1, "schema": "tracker", "name": "location_reports", "key": "tracker.location_reports", "owner": "tracker", "dims": 1,
      "time_column": "reported_at", "time_type": "timestamp with time zone", "columns": ["device_id", "reported_at", "speed"]}
MAT = {"id": 5, "schema": "_timescaledb_internal", "name": "_materialized_hypertable_5", "key": "cagg tracker.hourly", "dims": 1,
       "time_column": "bucket", "time_type": "timestamp with time zone", "columns": ["bucket", "n"]}


def chunk(name, start, end, compressed=False, ht="tracker.location_reports"):
    return {"hypertable": ht, "schema": "_timescaledb_internal", "name": name, "start": start, "end": end, "compressed": compressed,
            "compressed_schema": "_timescaledb_internal" if compressed else None,
            "compressed_name": f"compress_{name}" if compressed else None, "owner": "tracker", "bytes": 100}


def catalog(chunks, tables=("devices",), cols=("id", "name"), los=()):
    return {"hypertables": [HT, MAT], "chunks": list(chunks), "large_objects": list(los),
            "tables": [{"schema": "tracker", "name": t, "key": f"tracker.{t}", "owner": "tracker", "columns": list(cols), "bytes": 10}
                       for t in tables]}


K1 = dq.chunk_key("tracker.location_reports", JAN1, JAN1 + DAY)
K2 = dq.chunk_key("tracker.location_reports", JAN1 + DAY, JAN1 + 2 * DAY)
DEV = "table tracker.devices"


def pr(n, d):
    return {"n": n, "d": d}


def test_materialized_hypertables_are_left_to_the_aggregate_checks():
    items = ct.comparable_items(catalog([chunk("a", JAN1, JAN1 + DAY), chunk("m", 0, 10, ht="cagg tracker.hourly")]))
    assert set(items) == {K1, DEV}


def test_a_chunk_is_read_through_its_hypertable_for_its_range_whatever_its_compression():
    for compressed in (False, True):
        item = ct.comparable_items(catalog([chunk("_hyper_1_1_chunk", JAN1, JAN1 + DAY, compressed)]))[K1]
        sql = ct.digest_sql(K1, item, ["device_id", "reported_at", "speed"])
        assert 'FROM "tracker"."location_reports" t WHERE "reported_at" >= _timescaledb_functions.to_timestamp(' in sql
        assert f"to_timestamp({JAN1 + DAY})" in sql and "_hyper_1_1_chunk" not in sql and "compress_" not in sql
        assert "md5(ROW(t.\"device_id\", t.\"reported_at\", t.\"speed\")::text)" in sql
        # the print only: no tuple versions (the pre-copy's "v") are read for verify
        assert "ctid" not in sql and "xmin" not in sql


def test_a_table_is_read_without_its_children():
    item = ct.comparable_items(catalog([]))[DEV]
    sql = ct.digest_sql(DEV, item, ["id", "name"])
    assert 'FROM ONLY "tracker"."devices" t' in sql and "'k', 'table tracker.devices'" in sql


def test_the_script_pins_every_text_form_a_digest_depends_on_before_the_first_read():
    items = ct.comparable_items(catalog([chunk("a", JAN1, JAN1 + DAY)]))
    script = ct.digest_script([DEV, K1], items, {DEV: ["id", "name"], K1: HT["columns"]})
    head = script.split("SELECT json_build_object", 1)[0]
    for setting in ("TimeZone = 'UTC'", "DateStyle = 'ISO, YMD'", "IntervalStyle = 'postgres'", "extra_float_digits = 1",
                    "bytea_output = 'hex'", "statement_timeout = 0"):
        assert setting in head
    assert script.count("json_build_object('k'") == 2


def test_plan_reads_the_common_items_with_the_sources_column_order():
    src = ct.comparable_items(catalog([chunk("a", JAN1, JAN1 + DAY), chunk("b", JAN1 + DAY, JAN1 + 2 * DAY)], tables=("devices", "old")))
    tgt = ct.comparable_items(catalog([chunk("z", JAN1, JAN1 + DAY)], tables=("devices", "new")))
    tgt[DEV] = replace(tgt[DEV], columns=["name", "id"])  # same columns, another order: read in the source's order
    p = ct.plan(src, tgt)
    assert p["read"] == sorted([K1, DEV]) and p["columns"][DEV] == ["id", "name"]
    assert p["differ"] == {K2: "missing on the target", "table tracker.old": "missing on the target",
                           "table tracker.new": "not on the source"}
    tgt[DEV] = replace(tgt[DEV], columns=["id"])
    assert ct.plan(src, tgt)["differ"][DEV].startswith("columns differ: target (id), source (id, name)")


def _compare(sp, tp, src=None, tgt=None):
    src = src or ct.comparable_items(catalog([chunk("a", JAN1, JAN1 + DAY), chunk("b", JAN1 + DAY, JAN1 + 2 * DAY, True)]))
    tgt = tgt or ct.comparable_items(catalog([chunk("x", JAN1, JAN1 + DAY), chunk("y", JAN1 + DAY, JAN1 + 2 * DAY)]))
    return {c.name: c for c in ct.compare(src, tgt, ct.plan(src, tgt), sp, tp, "how")}


def test_equal_prints_pass_one_check_per_table_and_per_hypertable():
    same = {K1: pr(3, "11"), K2: pr(4, "22"), DEV: pr(2, "33")}
    checks = _compare(same, dict(same))
    assert set(checks) == {"table tracker.devices content", "hypertable tracker.location_reports content"}
    assert all(c.ok for c in checks.values())
    assert checks["hypertable tracker.location_reports content"].observed == "2 chunk range(s) equal, 7 rows"
    assert checks["table tracker.devices content"].observed == "2 rows, digest 33"
    assert checks["table tracker.devices content"].evidence == "how"


def test_a_same_count_difference_fails_naming_the_chunk_range_and_both_prints():
    src = {K1: pr(3, "11"), K2: pr(4, "22"), DEV: pr(2, "33")}
    checks = _compare(src, {K1: pr(3, "11"), K2: pr(4, "99"), DEV: pr(2, "34")})
    ht = checks["hypertable tracker.location_reports content"]
    assert not ht.ok
    assert ht.observed == "1 of 2 differ: tracker.location_reports range [2024-01-02, 2024-01-03) (chunk y): 4 rows, digest 99"
    assert ht.expected == "tracker.location_reports range [2024-01-02, 2024-01-03) (chunk b): 4 rows, digest 22"
    dev = checks["table tracker.devices content"]
    assert not dev.ok and "table tracker.devices: 2 rows, digest 34" in dev.observed and "digest 33" in dev.expected


def test_an_item_without_a_print_fails_rather_than_passing_unread():
    src = {K1: pr(3, "11"), K2: pr(4, "22"), DEV: pr(2, "33")}
    checks = _compare(src, {K1: pr(3, "11"), DEV: pr(2, "33")})
    ht = checks["hypertable tracker.location_reports content"]
    assert not ht.ok and "not read (target printed nothing)" in ht.observed


def test_a_range_on_one_host_only_fails_and_many_differences_are_counted():
    src_cat = catalog([chunk(f"c{i}", JAN1 + i * DAY, JAN1 + (i + 1) * DAY) for i in range(6)])
    src, tgt = ct.comparable_items(src_cat), ct.comparable_items(catalog([]))
    sp = {k: pr(1, "1") for k in src}
    c = {c.name: c for c in ct.compare(src, tgt, ct.plan(src, tgt), sp, {DEV: sp[DEV]}, "how")}
    ht = c["hypertable tracker.location_reports content"]
    assert not ht.ok and ht.observed.startswith("6 of 6 differ: ") and ht.observed.endswith("(+2 more)")
    assert "range [2024-01-01, 2024-01-02) (chunk c0): missing on the target" in ht.observed
    assert c["table tracker.devices content"].ok


def test_range_labels():
    item = dq.Item(kind="chunk", rel="", owner="", columns=[], hypertable="m.t", name="c", start=dq.INT64_MIN,
                   end=1_800_000_000, time_type="timestamp with time zone")
    assert ct.label("k", item) == "m.t range [-infinity, 1970-01-01 00:30:00) (chunk c)"
    assert ct.label("k", replace(item, start=10, end=dq.INT64_MAX, time_type="bigint")) == "m.t range [10, +infinity) (chunk c)"
    assert ct.label("table s.t", dq.Item(kind="table", rel="s.t", owner="", columns=[])) == "table s.t"


def test_large_objects_compared_by_md5():
    assert ct.large_object_checks({}, {}, "how") == []
    src = catalog([], los=[{"oid": 7, "md5": "a"}, {"oid": 8, "md5": "b"}])
    ok = ct.large_object_checks(src, src, "how")[0]
    assert ok.ok and ok.observed == "2 equal (md5)"
    bad = ct.large_object_checks(src, catalog([], los=[{"oid": 7, "md5": "x"}]), "how")[0]
    assert not bad.ok and bad.observed == "2 differ: 7 x, 8 missing" and bad.expected == "7 a, 8 b"


def test_without_a_frozen_source_verify_says_it_compared_counts_only_and_reads_nothing():
    class NoHosts:
        def spec(self, which):
            raise AssertionError("no host may be read")

    on_manifest = ct.content_checks(None, NoHosts(), {"frozen": None}, against_source=False)
    live = ct.content_checks(None, NoHosts(), {}, against_source=True)
    for checks, why in ((on_manifest, "manifest"), (live, "not frozen")):
        assert len(checks) == 1 and isinstance(checks[0], Check) and checks[0].name == ct.CONTENT
        assert checks[0].observed.startswith("not compared: ") and why in checks[0].observed
        assert "row count only" in checks[0].observed


def test_a_host_that_cannot_be_read_fails_the_content_check_in_one_line(monkeypatch):
    from trackerdb.errors import HostError

    def boom(settings, session, reuse=None):
        raise HostError("source: psql (port 5432, database tracker) failed at `SELECT …`: ERROR: canceled", hint="h")

    monkeypatch.setattr(ct, "digests", boom)
    checks = ct.content_checks(None, None, {"frozen": {"marker": "cutover"}}, against_source=True)
    assert [(c.name, c.ok) for c in checks] == [(ct.CONTENT, False)]
    assert "failed at `SELECT …`: ERROR: canceled" in checks[0].observed and "\n" not in checks[0].observed


def test_against_the_frozen_source_every_item_is_checked_and_the_head_says_how(monkeypatch):
    src = ct.comparable_items(catalog([chunk("a", JAN1, JAN1 + DAY)]))
    lo = [{"oid": 7, "md5": "a"}]
    prints = {K1: pr(3, "11"), DEV: pr(2, "33")}

    def fake(settings, session, reuse=None, target_prints=prints, los=lo):
        return {"source": src, "target": src, "plan": ct.plan(src, src), "catalogs": (catalog([], los=lo), catalog([], los=los)),
                "prints": {"source": prints, "target": target_prints}, "reused": 0, "timings": {"digests_s": 1.5, "source_s": 1.2, "target_s": 1.4}}

    monkeypatch.setattr(ct, "digests", fake)
    checks = ct.content_checks(None, None, {"frozen": {"marker": "cutover"}}, against_source=True)
    assert [c.name for c in checks] == [ct.CONTENT, "hypertable tracker.location_reports content", "table tracker.devices content",
                                        "large objects content"]
    assert all(c.ok for c in checks)
    assert checks[0].observed.startswith("3 of 3 equal; live, frozen source and target read in parallel: 2 tables/chunk ranges in 1.5 s")
    monkeypatch.setattr(ct, "digests", lambda s, x, r=None: fake(s, x, target_prints={K1: pr(3, "12"), DEV: pr(2, "33")}))
    bad = ct.content_checks(None, None, {"frozen": {"marker": "cutover"}}, against_source=True)
    assert [c.name for c in bad if not c.ok] == [ct.CONTENT, "hypertable tracker.location_reports content"]


def vp(n, d, v):
    return {"n": n, "d": d, "v": v}


def test_the_delta_prints_are_reused_only_where_both_hosts_tuple_versions_are_unchanged():
    keys = ["a", "b", "c", "d", "e"]
    kept = {"source": {"a": vp(1, "x", "s1"), "b": vp(2, "y", "s2"), "c": vp(0, "storage 1/2:3", "s3"), "d": vp(0, "storage 4/5:6", "s4"),
                       "e": vp(5, "z", "s5")},
            "target": {"a": vp(1, "x", "t1"), "b": vp(2, "y", "t2"), "c": vp(0, "storage 1/2:999", "t3"), "d": vp(0, "storage 4/5:7", "t4"),
                       "e": vp(5, "zz", "t5")},
            # c: storage differs, its content prints (through the hypertable) are from the same versions; d: they are stale
            "content": {"c": [vp(9, "cc", "s3"), vp(9, "cc", "t3")], "d": [vp(9, "dd", "s4"), vp(9, "dd", "old")]}}
    now = {"source": {k: {"v": f"s{i}"} for i, k in enumerate(keys, 1)},
           "target": {k: {"v": f"t{i}"} for i, k in enumerate(keys, 1)}}
    now["target"]["b"] = {"v": "t2-written-since"}
    src, tgt, again = ct.reuse_prints(keys, kept, now)
    assert set(src) == set(tgt) == {"a", "c"}
    assert (src["a"], tgt["a"]) == (kept["source"]["a"], kept["target"]["a"])
    assert (src["c"], tgt["c"]) == (vp(9, "cc", "s3"), vp(9, "cc", "t3"))
    # b written since; d's content prints stale; e differs: a difference is always read again, by content
    assert again == ["b", "d", "e"]
    # nothing kept for a key, or no version read now: read again
    assert ct.reuse_prints(["a"], {"source": {}, "target": {}}, now)[2] == ["a"]
    assert ct.reuse_prints(["a"], kept, {"source": {}, "target": now["target"]})[2] == ["a"]
