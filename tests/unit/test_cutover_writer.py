"""The live writer's log reading: the measured outage is first refusal -> first ack by the target."""

from lab.writer import load, outage


def test_outage_from_log(tmp_path):
    recs = [
        {"event": "start", "t": 0.0},
        {"event": "ack", "t": 1.0, "endpoint": "10.0.0.1"},
        {"event": "refused", "t": 2.0, "endpoint": "10.0.0.1", "error": "ReadOnlySqlTransaction"},
        {"event": "refused", "t": 3.0, "endpoint": "10.0.0.1", "error": "ReadOnlySqlTransaction"},
        {"event": "ack", "t": 9.5, "endpoint": "10.0.0.2"},
        {"event": "ack", "t": 9.6, "endpoint": "10.0.0.2"},
    ]
    assert outage(recs, "10.0.0.2")["duration_s"] == 7.5
    assert outage(recs[:2], "10.0.0.2") is None
    assert outage(recs[:4], "10.0.0.2")["end"] is None
    p = tmp_path / "w.jsonl"
    p.write_text('{"event": "ack", "t": 1}\n{"event": "ac')
    assert load(p) == [{"event": "ack", "t": 1}]
