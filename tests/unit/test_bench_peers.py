"""The peer benchmark's pure parts: the runbook's and pgcopydb's commands, the ratio table, the window."""

from __future__ import annotations

from benchmarks import peer_commands as pc


def test_the_runbook_dump_is_the_runbooks_literal_command():
    argv = pc.runbook_dump_argv("/usr/lib/postgresql/17/bin", "tracker", "/tmp/tracker.dump", 5432)
    # runbook §3: sudo -u postgres pg_dump -Fc --no-owner --no-privileges --file=/tmp/tracker.dump tracker
    assert argv[1:5] == ["-Fc", "--no-owner", "--no-privileges", "--file=/tmp/tracker.dump"]
    assert argv[-1] == "tracker" and "-j" not in argv


def test_the_runbook_restore_runs_pre_restore_then_one_serial_pg_restore_then_post_restore():
    steps = pc.runbook_restore_steps("bench_runbook", "/b", "/d/x.dump", 5432)
    assert [s[0] for s in steps] == ["create database", "create extension", "pre_restore", "pg_restore", "post_restore"]
    pg_restore = steps[3][2]
    assert pg_restore[0] == "/b/pg_restore" and "--dbname=bench_runbook" in pg_restore and pg_restore[-1] == "/d/x.dump"
    assert not any(a.startswith("-j") or a == "--jobs" for a in pg_restore)
    assert steps[2][2] == ("SELECT timescaledb_pre_restore();", "bench_runbook")


def test_pgcopydb_gets_our_parallelism_everywhere_and_no_password():
    argv = pc.pgcopydb_clone_argv(pc.pg_uri("10.0.0.11", 5432, "tracker", "bench_pgcopydb"),
                                  pc.socket_uri("bench_pgcopydb", 5432), "/data/w", 2)
    assert argv[:2] == ["pgcopydb", "clone"]
    for flag in ("--table-jobs", "--index-jobs", "--restore-jobs", "--large-objects-jobs"):
        assert argv[argv.index(flag) + 1] == "2"
    assert argv[argv.index("--source") + 1] == "postgresql://bench_pgcopydb@10.0.0.11:5432/tracker"
    assert argv[argv.index("--target") + 1] == "postgresql://postgres@/bench_pgcopydb?host=/var/run/postgresql&port=5432"
    line = pc.pgcopydb_script(argv, "/var/lib/postgresql/.pgpass x", "/data/w.log")
    assert "PGPASSFILE='/var/lib/postgresql/.pgpass x'" in line and "> /data/w.log 2>&1" in line
    assert line.endswith("exit $rc")


def test_pgpass_escapes_colons_and_backslashes():
    assert pc.pgpass_line("h", 5432, "db", "u", "a:b\\c") == "h:5432:db:u:a\\:b\\\\c\n"


def test_apt_options_point_at_their_own_state_not_the_machines():
    text, opts = pc.apt_options("/var/tmp/s", "http://deb.debian.org/debian")
    assert text == "deb http://deb.debian.org/debian trixie main\n"
    assert "-o=Dir::Etc::SourceList=/var/tmp/s/sources.list" in opts and "-o=Dir::Etc::SourceParts=/dev/null" in opts


def test_ratio_rows_divide_by_ours_and_keep_a_failed_step_visible():
    rows = pc.ratio_rows({"runbook": 300.0, "pgcopydb": None, "ours": 150.0}, "ours")
    assert rows == [{"name": "runbook", "seconds": 300.0, "ratio_to_ours": 2.0},
                    {"name": "pgcopydb", "seconds": None, "ratio_to_ours": None},
                    {"name": "ours", "seconds": 150.0, "ratio_to_ours": 1.0}]
    table = pc.format_table("t", rows)
    assert "failed" in table and "2.00" in table


def test_the_parallel_dump_is_directory_format_with_jobs():
    argv = pc.parallel_dump_argv("/b", "tracker", "/var/tmp/d", 2, 5432)
    assert argv[:4] == ["/b/pg_dump", "-Fd", "-j", "2"] and "--file=/var/tmp/d" in argv and argv[-1] == "tracker"


def test_the_window_projection_scales_every_step_before_the_switch_and_keeps_the_switchs_part():
    from benchmarks.precopy_window import project

    gib = 1024**3
    p = project({"freeze": 2.0, "delta": 10.0, "verify": 8.0, "switch": 6.0}, 23.0, 2 * gib, target_gib=11)
    assert p["ratio"] == 5.5
    assert p["steps_s"] == {"freeze": 11.0, "delta": 55.0, "verify": 44.0, "switch (until in sync)": 3.0}
    assert p["outage_s"] == 113.0
    # the switch's TTL wait after the target is in sync is not outage: its part is never negative
    assert project({"freeze": 1.0, "switch": 9.0}, 0.5, gib, target_gib=1)["outage_s"] == 1.0



def test_pgcopydb_skips_large_objects_only_when_asked():
    base = pc.pgcopydb_clone_argv("postgresql://u@h:5432/tracker", pc.socket_uri("b", 5432), "/w", 2)
    assert "--skip-large-objects" not in base
    assert pc.pgcopydb_clone_argv("postgresql://u@h:5432/tracker", pc.socket_uri("b", 5432), "/w", 2,
                                  skip_large_objects=True) == base + ["--skip-large-objects"]
