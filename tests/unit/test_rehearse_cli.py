"""`invoke signoff` / `invoke rehearse` wiring: exit codes and output, with the operations replaced."""

import json

import pytest
from invoke import Context, Exit

from rehearsal import tasks as rehearsal_cli
from trackerdb.cli import rehearse as cli
from trackerdb.rehearse import signoff as S


def _items(*statuses):
    return [S.Item(key, name, st, f"evidence {i}") for i, ((key, name), st) in enumerate(zip(S.ITEMS, statuses))]


@pytest.fixture
def fake_settings(monkeypatch):
    class FakeSettings:
        environment = "lab"

    monkeypatch.setattr(cli, "settings", lambda c: FakeSettings())


@pytest.mark.parametrize("statuses, code, verdict", [
    ([S.PASS] * 12, 0, "SIGNOFF COMPLETE"),
    ([S.PASS] * 8 + [S.HUMAN] + [S.PASS] * 3, 2, "SIGNOFF PENDING HUMAN DECISIONS"),
    ([S.PASS] * 4 + [S.FAIL] + [S.PASS] * 3 + [S.HUMAN] + [S.PASS] * 3, 1, "SIGNOFF FAILED"),
])
def test_signoff_exit_code_and_json(monkeypatch, capsys, fake_settings, statuses, code, verdict):
    monkeypatch.setattr(S, "run_signoff", lambda settings, progress=None, journal=None: _items(*statuses))
    if code:
        with pytest.raises(Exit) as e:
            cli.signoff(Context(), json=True)
        assert e.value.code == code
    else:
        cli.signoff(Context(), json=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == code and doc["summary"].startswith(verdict)
    assert [i["status"] for i in doc["items"]] == statuses


def test_signoff_table_names_the_failed_item(monkeypatch, capsys, fake_settings):
    statuses = [S.PASS] * 4 + [S.FAIL] + [S.PASS] * 7
    monkeypatch.setattr(S, "run_signoff", lambda settings, progress=None, journal=None: _items(*statuses))
    with pytest.raises(Exit):
        cli.signoff(Context(), json=False)
    out = capsys.readouterr().out
    assert "SIGNOFF FAILED" in out and "WAL archiving is healthy" in out


@pytest.mark.parametrize("passed, code", [(True, None), (False, 1)])
def test_rehearse_ends_with_the_verdict_and_paths(monkeypatch, capsys, passed, code):
    from rehearsal import run as ops

    seen = {}

    def fake_run(scale, **kw):
        seen.update(kw, scale=scale)
        return {"passed": passed, "verdict": "PASS" if passed else "FAIL", "failures": [] if passed else ["phase cutover/restore failed"],
                "report_json": "/s/report.json", "report_html": "/s/report.html", "copy_dir": "/r",
                "report": {"outage": None, "projection": None}}

    monkeypatch.setattr(ops, "run_rehearsal", fake_run)
    if code:
        with pytest.raises(Exit) as e:
            rehearsal_cli.rehearse(Context(), scale=0.25, rollback=True, lab="x", full=True)
        assert e.value.code == code
    else:
        rehearsal_cli.rehearse(Context(), scale=0.25, rollback=True, lab="x", full=True)
    out = capsys.readouterr().out
    assert f"REHEARSAL {'PASS' if passed else 'FAIL'}" in out and "/s/report.html" in out and "/s/report.json" in out
    assert seen["scale"] == 0.25 and seen["replay_rollback"] is True and seen["lab_name"] == "x" and seen["keep_lab"] is False
    assert seen["full"] is True


def test_rehearse_takes_the_precopy_path_with_the_drill_by_default_and_refuses_rollback_without_full(monkeypatch, capsys):
    from rehearsal import run as ops

    seen = {}

    def fake_run(scale, **kw):
        seen.update(kw)
        return {"passed": True, "verdict": "PASS", "failures": [], "report_json": "/s/report.json",
                "report_html": "/s/report.html", "copy_dir": "/r", "report": {"outage": None, "projection": None}}

    monkeypatch.setattr(ops, "run_rehearsal", fake_run)
    rehearsal_cli.rehearse(Context(), lab="x")
    assert seen["full"] is False and seen["drill"] is True
    seen.clear()
    with pytest.raises(Exit) as e:
        rehearsal_cli.rehearse(Context(), rollback=True, lab="x")
    assert e.value.code == 1 and not seen  # refused before anything ran
    assert "--rollback goes with --full" in capsys.readouterr().err
