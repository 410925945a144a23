"""Issue 27: what holds the data volume's space, and the guarded drop of a kept-aside database (pure parts)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from trackerdb.errors import PreflightError
from trackerdb.migrate import kept_aside as ka
from trackerdb.migrate.restore_plan import check_free_space

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
GIB = 1 << 30
FACTS = {
    "databases": [{"name": "tracker", "size": 2 * GIB, "sessions": 3},
                  {"name": "tracker_replaced_20261206100000", "size": GIB, "sessions": 0},
                  {"name": "tracker_replaced_20261204120000", "size": GIB // 2, "sessions": 1},
                  {"name": "tracker_replaced_x", "size": 5, "sessions": 0},
                  {"name": "other_replaced_20261206100000", "size": 5, "sessions": 0},
                  {"name": "postgres", "size": 7, "sessions": 0}],
    "slots": [{"slot": "trackerdb_rollback_1", "database": "tracker_replaced_20261206100000", "retained_bytes": 300 << 20},
              {"slot": "someone_else", "database": None, "retained_bytes": 10 << 20}],
}


def test_kept_aside_is_only_this_databases_renamed_copies_with_their_age():
    kept = ka.kept_aside(FACTS["databases"], "tracker", NOW)
    assert [k["name"] for k in kept] == ["tracker_replaced_20261204120000", "tracker_replaced_20261206100000"]
    assert kept[1]["age_s"] == 7200 and kept[1]["kept_at"] == "2026-12-06T10:00:00Z"
    assert ka.age_text(7200) == "2.0 h" and ka.age_text(600) == "10 min" and ka.age_text(3 * 86400) == "3.0 days"
    assert ka.kept_at("tracker_replaced_20261399000000", "tracker") is None  # not a time


def test_holders_name_each_with_size_age_and_the_command_largest_first():
    lines = ka.holders(FACTS, "tracker", NOW, {"trackerdb_rollback_1": "/state/cutover/w1.jsonl"})
    assert lines[0] == ("tracker_replaced_20261206100000 (kept aside 2.0 h ago, 1.0 GiB): "
                        "`invoke drop-kept-aside --database tracker_replaced_20261206100000`")
    assert lines[1].startswith("tracker_replaced_20261204120000 (kept aside 2.0 days ago, 512.0 MiB)")
    assert lines[2] == ("slot trackerdb_rollback_1 on tracker_replaced_20261206100000 (300.0 MiB WAL retained): "
                        "`invoke cutover-finish --journal /state/cutover/w1.jsonl`")
    assert "pg_drop_replication_slot('someone_else')" in lines[3]
    hint = ka.holders_hint(lines)
    assert hint.startswith("space is held by tracker_replaced_20261206100000") and "grow the EBS data volume" in hint
    assert ka.holders_hint([]) == "grow the EBS data volume (and the filesystem) or free space, then re-run"


def test_the_space_refusal_carries_the_holders_in_one_line():
    with pytest.raises(PreflightError) as e:
        check_free_space(GIB, GIB // 2, GIB, 0, 50, 0, lambda: ka.holders(FACTS, "tracker", NOW, {}))
    line = e.value.one_line()
    assert "\n" not in line and "the data volume has 1.0 GiB free, the restore needs about" in line
    assert "`invoke drop-kept-aside --database tracker_replaced_20261206100000`" in line and "2.0 h ago" in line
    calls = []
    check_free_space(GIB, GIB // 2, 100 * GIB, 0, 50, 0, lambda: calls.append(1) or [])
    assert calls == []  # read only when the space is short


@pytest.mark.parametrize("name, words", [
    ("tracker", "is the live database"),
    ("postgres", "is not a kept-aside database of tracker"),
    ("tracker_replaced_x", "is not a kept-aside database"),
    ("other_replaced_20261206100000", "is not a kept-aside database"),
    ("tracker_replaced_20261201000000", "does not exist on the target"),
    ("tracker_replaced_20261204120000", "has 1 session(s)"),
    ("tracker_replaced_20261206100000", "is used by slot trackerdb_rollback_1 (300.0 MiB WAL retained)"),
])
def test_drop_refusals(name, words):
    with pytest.raises(PreflightError) as e:
        ka.check_drop(name, "tracker", FACTS, NOW)
    assert words in e.value.message and "refused" in e.value.message and e.value.hint


def test_drop_allowed_and_quoted():
    facts = {**FACTS, "slots": []}
    assert ka.check_drop("tracker_replaced_20261206100000", "tracker", facts, NOW)["size"] == GIB
    assert ka.drop_sql("tracker_replaced_20261206100000") == 'DROP DATABASE "tracker_replaced_20261206100000";'
