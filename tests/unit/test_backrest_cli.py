import pytest
from invoke import Exit, MockContext

from tests.conftest import prod_outputs
from trackerdb.cli import backrest as cli
from trackerdb.settings import Settings
from trackerdb.steps import Check, Outcome


@pytest.fixture
def wired(monkeypatch):
    s = Settings.from_parts({"repo": {"host_key": "ssh-ed25519 AAAAKEY"}}, prod_outputs())
    monkeypatch.setattr(cli, "settings", lambda c: s)
    return s


def test_tasks_are_setup_check_backup():
    assert [t.name for t in cli.TASKS] == ["setup", "check", "backup"]
    assert all(t.__doc__ for t in cli.TASKS)


def test_waiting_for_the_repository_side_exits_75_with_the_key_on_one_line(wired, monkeypatch, capsys):
    line = "ssh-ed25519 " + "A" * 200 + " postgres@target-trackerdb-backrest"

    def fake_setup(settings, dry_run=False, progress=None):
        out = Outcome("t")
        out.waiting = f"Waiting for the repository side.\n\n{line}\n"
        return out

    monkeypatch.setattr(cli.ops, "setup", fake_setup)
    with pytest.raises(Exit) as e:
        cli.setup(MockContext())
    assert e.value.code == cli.WAITING_EXIT
    assert line in capsys.readouterr().err.splitlines()


def test_check_exits_non_zero_on_any_failed_check(wired, monkeypatch):
    monkeypatch.setattr(cli.ops, "check", lambda s, max_lag=3: [Check("a", True), Check("b", False, "unreachable")])
    with pytest.raises(Exit) as e:
        cli.check(MockContext())
    assert e.value.code == 1
