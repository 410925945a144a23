"""The engine compatibility gate: the table, its matching, and every caller's refusal (no hosts)."""

import pytest

from tests.unit.test_provision_ops import CHANGING, MADISON, S, ScriptedHost, fake_secret  # noqa: F401 (fixture)
from trackerdb import compat
from trackerdb.errors import PreflightError
from trackerdb.migrate import restore_plan as rp
from trackerdb.provision import apt, ops

pytestmark = pytest.mark.usefixtures("fake_secret")


def test_the_table_loads_and_every_row_names_its_upstream_reference():
    rows = compat.load()
    assert len(rows) >= 3
    for b in rows:
        assert b.reference and b.symptom and b.hint and b.timescaledb and b.postgresql
    assert any("#11015" in b.reference for b in rows)


@pytest.mark.parametrize("pg, ts, broken", [
    ("16.10", "2.18.2", None),                                  # production today
    ("16.15", "2.18.2", None),
    ("16.16", "2.18.2", "scheduler jobs fail"),
    ("17.12", "2.18.2", "scheduler jobs fail"),                  # the lab's old engine
    ("17.11", "2.18.2", None),
    ("18.7", "2.27.2", "scheduler jobs fail"),
    ("15.20", "2.20.0", "scheduler jobs fail"),
    ("16.16", "2.27.3", None),                                   # fixed releases
    ("16.16", "2.28.3", "scheduler jobs fail"),
    ("16.16", "2.28.4", None),
    ("16.16", "2.30.1", "scheduler jobs fail"),                   # branches without a fix
    ("16.16", "2.31.1", "scheduler jobs fail"),
    ("16.16", "2.31.2", None),
    ("17.12", "2.32.0", "scheduler jobs fail"),                   # 2.32.0: compatible up to 17.11
    ("16.5", "2.18.2", "reverted ABI break"),
    ("17.1", "2.18.2", "reverted ABI break"),
    ("16.6", "2.18.2", None),
    ("18.1", "2.18.2", "major not supported"),
    ("13.20", "2.18.2", "major not supported"),
    ("16.10 (Debian 16.10-1.pgdg120+1)", "2.18.2", None),        # server_version text
    ("16.16-1.pgdg13+1", "2.18.2~debian13", "scheduler jobs fail"),  # package versions
])
def test_known_combinations(pg, ts, broken):
    found = compat.breaks(pg, ts)
    if broken is None:
        assert found == []
    else:
        assert [b.name for b in found] and broken in found[0].name


@pytest.mark.parametrize("pg, ts", [(None, "2.18.2"), ("16.16", None), ("16.16", ""), ("", "")])
def test_an_unknown_version_is_not_judged(pg, ts):
    assert compat.breaks(pg, ts) == []


def test_a_row_without_its_reference_is_refused():
    bad = '[[broken]]\nname = "x"\ntimescaledb = ["2.18.2"]\npostgresql = ["16.5"]\nsymptom = "s"\nhint = "h"\n'
    with pytest.raises(ValueError, match="lacks reference"):
        compat.parse_matrix(bad)


def test_spans_and_bounds():
    assert (16, 20) in compat.parse_span("16.16 - 16.*") and (17, 0) not in compat.parse_span("16.16 - 16.*")
    assert (1, 0, 0) in compat.parse_span("* - 2.27.2") and (2, 27, 3) not in compat.parse_span("* - 2.27.2")
    assert (99, 1) in compat.parse_span("18.0 - *")
    assert compat.pg_version_from_num(160010) == "16.10" and compat.pg_version_from_num("170012") == "17.12"


def test_check_raises_one_line_with_the_symptom_the_reference_and_a_hint():
    with pytest.raises(PreflightError) as e:
        compat.check("target", "16.16", "2.18.2")
    line = e.value.one_line()
    assert line.startswith("target: PostgreSQL 16.16 with TimescaleDB 2.18.2 is a known-broken combination")
    assert "every job the scheduler runs fails" in line and "#11015" in line
    assert "pin PostgreSQL's minor" in e.value.hint and "upgrade TimescaleDB first" in e.value.hint
    assert "\n" not in e.value.message


# ---- provision -------------------------------------------------------------------------------
def test_provision_refuses_a_broken_pin_before_running_anything_on_the_host():
    host = ScriptedHost()
    with pytest.raises(PreflightError, match="PostgreSQL 16.16 with TimescaleDB 2.18.2"):
        ops.provision(S.with_(postgres_version="16.16"), host=host)
    assert host.ran == [] and host.writes == []


def test_provision_judges_the_apt_candidate_of_a_major_only_pin_before_installing():
    """``postgresVersion: "17"`` takes apt's newest 17 minor: 17.12 with 2.18.2 is refused by the gate (not as
    a missing TimescaleDB build), before any change."""
    madison = MADISON.replace("-16", "-17").replace("16.10-1", "17.12-1")
    host = ScriptedHost()
    host.answers.insert(0, ("apt-cache madison", 0, madison))
    s = S.with_(postgres_major=17, postgres_version="17")
    with pytest.raises(PreflightError) as e:
        ops.provision(s, host=host)
    assert "apt candidate postgresql-17=17.12-1.pgdg13+1" in e.value.one_line()
    assert "PostgreSQL 17.12 with TimescaleDB 2.18.2 is a known-broken combination" in e.value.one_line()
    assert host.writes == [] and not [c for c in host.ran if CHANGING.search(c)]


def test_a_major_only_pin_matches_any_minor_and_an_exact_one_only_itself():
    assert apt.same_version("17", "17.12") and apt.same_version("16.10", "16.10")
    assert not apt.same_version("16.10", "16.16") and not apt.same_version("16", "17.1")
    specs = apt.package_specs(S.with_(postgres_version="16"))
    assert apt.server_candidate(specs, {"postgresql-16": ["16.16-1", "16.10-1"]}, 16) == "16.16-1"
    assert apt.server_candidate(apt.package_specs(S), {"postgresql-16": ["16.16-1", "16.10-1"]}, 16) == "16.10-1"


# ---- restore and cutover preflight -----------------------------------------------------------
def _target(num=160010, ts="2.18.2"):
    return {"server_version_num": num, "timescaledb_default": ts, "shared_preload_libraries": "timescaledb",
            "postgis_available": ["3.5.2"]}


def test_restore_refuses_a_broken_target_and_a_broken_source():
    ok = {"timescaledb": "2.18.2", "postgresql_major": 16, "postgresql": "16.10", "postgis": "3.5.2"}
    assert rp.check_target_versions(ok, _target()) is None
    with pytest.raises(PreflightError, match=r"^target: PostgreSQL 16.16 with TimescaleDB 2.18.2"):
        rp.check_target_versions(ok, _target(num=160016))
    with pytest.raises(PreflightError, match=r"^source: PostgreSQL 16.5 with TimescaleDB 2.18.2"):
        rp.check_target_versions(dict(ok, postgresql="16.5 (Debian 16.5-1.pgdg120+1)"), _target())


# ---- backrest.check and signoff: the running host --------------------------------------------
def test_engine_verdict_of_a_running_host():
    ok, seen, hint = compat.engine_verdict("target", {"server_version_num": "160010", "timescaledb": "2.18.2"})
    assert ok and seen == "target: PostgreSQL 16.10, TimescaleDB 2.18.2: no known break" and hint == ""
    ok, seen, hint = compat.engine_verdict("target", {"server_version_num": "160016", "timescaledb": "2.18.2"})
    assert not ok and "known-broken" in seen and "#11015" in seen and hint
