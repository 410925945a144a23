"""Restore as named stages over one context: which stages run, in which order, for each dump source and option."""

from pathlib import Path

import pytest

from trackerdb.migrate import restore as r
from trackerdb.migrate import restore_staging as rst
from trackerdb.migrate.restore_ctx import DumpOnTarget, LocalDump, RestoreOptions, dump_source

LOCAL, THERE = LocalDump(Path("/d/tracker.dump")), DumpOnTarget("/var/lib/postgresql/trackerdb-upload/x.dump")


def test_dump_source_replaces_the_on_target_flag():
    assert dump_source("/d/tracker.dump") == LOCAL
    assert dump_source(THERE.path, on_target=True) == THERE


@pytest.mark.parametrize("source, opts, ready, attach, names", [
    (LOCAL, RestoreOptions(), False, False, ["upload", "staging", "into place", "record", "remove upload"]),
    (THERE, RestoreOptions(replace=True, keep_upload=True), False, False,
     ["dump on target", "staging", "into place", "record"]),
    (LOCAL, RestoreOptions(replace=True), False, True,
     ["staging", "into place", "record", "remove upload"]),  # attached
    (THERE, RestoreOptions(keep_upload=True), True, False, ["into place", "record"]),  # staging already complete
    (LOCAL, RestoreOptions(dry_run=True, replace=True), False, False, ["plan"]),
    (THERE, RestoreOptions(dry_run=True), True, True, ["plan"]),
])
def test_stage_sequence(source, opts, ready, attach, names):
    got = r.stage_names(source, opts, ready=ready, attach=attach)
    assert got == names
    assert all(n in r.STAGES for n in got)  # every name runs a stage


def test_staging_stages_in_order_and_attaching_keeps_the_staging_database():
    assert [n for n, _ in rst.stages(attach=False)] == ["roles", "staging", "pg_restore", "post restore", "owners",
                                                        "analyze", "database settings"]
    assert [n for n, _ in rst.stages(attach=True)] == ["roles", "pg_restore", "post restore", "owners", "analyze",
                                                       "database settings"]


def test_a_dump_on_target_without_its_manifest_is_refused_before_any_host(tmp_path):
    from types import SimpleNamespace

    from trackerdb.errors import PreflightError

    s = SimpleNamespace(database="tracker", target=SimpleNamespace(name="target"))
    with pytest.raises(PreflightError, match="a dump on the target needs its manifest"):
        r.restore(s, THERE, None, RestoreOptions(replace=True))
