"""`dump --on-host DIR` on the real source: a system, foreign-owned or linked directory is refused and left
exactly as it was (owner, group, mode read back from the host); only a new directory is made, for postgres."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trackerdb.errors import PreflightError
from trackerdb.remote import Remote

from .fx_lab import lab  # noqa: F401  (the session fixture: brings $TRACKERDB_LAB up and down)

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
BASE = "/var/tmp/trackerdb-t41"


@pytest.fixture(scope="module")
def settings(lab):  # noqa: F811
    from trackerdb.settings import Settings

    return Settings.load({}, env={"TRACKERDB_ENV": "lab", "TRACKERDB_LAB": lab["name"]})


@pytest.fixture
def source(settings):
    with Remote(settings.source) as src:
        src.run(["rm", "-rf", "--", f"{BASE}-root", f"{BASE}-link", f"{BASE}-new"], sudo=True)
        yield src
        src.run(["rm", "-rf", "--", f"{BASE}-root", f"{BASE}-link", f"{BASE}-new"], sudo=True)


def stat(src, path: str) -> str:
    return src.run(["stat", "-c", "%F %U %G %a", "--", path], sudo=True).stdout.strip()


def test_on_host_tmp_is_refused_through_invoke_and_tmp_is_unchanged(lab, source):  # noqa: F811
    before = stat(source, "/tmp")
    env = os.environ | {"TRACKERDB_ENV": "lab", "TRACKERDB_LAB": lab["name"]}
    r = subprocess.run([str(Path(sys.executable).parent / "invoke"), "dump", "--on-host", "/tmp"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "--on-host '/tmp'" in lines[0] and "system directory" in lines[0], r.stderr
    assert stat(source, "/tmp") == before == "directory root root 1777"
    assert not source.exists("/tmp/tracker.dump")


def test_existing_directory_of_another_owner_is_never_reowned(settings, source):
    from trackerdb.migrate.dump import run_dump

    source.run(["install", "-d", "-m", "0755", "-o", "root", "-g", "root", f"{BASE}-root"], sudo=True)
    with pytest.raises(PreflightError, match="owned by 'root', not postgres"):
        run_dump(settings, f"{BASE}-root", on_host=True)
    assert stat(source, f"{BASE}-root") == "directory root root 755"
    assert source.run(["ls", "-A", f"{BASE}-root"], sudo=True).stdout.strip() == ""


def test_a_symlink_is_refused_and_its_target_untouched(settings, source):
    from trackerdb.migrate.dump import run_dump

    etc = stat(source, "/etc")
    source.run(["ln", "-s", "/etc", f"{BASE}-link"], sudo=True)
    with pytest.raises(PreflightError, match="symbolic link"):
        run_dump(settings, f"{BASE}-link", on_host=True)
    assert stat(source, "/etc") == etc and stat(source, f"{BASE}-link").startswith("symbolic link root")
    assert not source.exists("/etc/tracker.dump")


def test_a_new_directory_is_made_for_postgres_and_reused_next_time(settings, source):
    from trackerdb.migrate.dump import run_dump

    art = run_dump(settings, f"{BASE}-new", on_host=True)
    assert stat(source, f"{BASE}-new") == "directory postgres postgres 750"
    assert source.run(["head", "-c", "5", art.dump_path], sudo=True).stdout == "PGDMP"
    again = run_dump(settings, f"{BASE}-new", on_host=True)  # its own directory: reused, not re-made
    assert again.dump_path == art.dump_path and stat(source, f"{BASE}-new") == "directory postgres postgres 750"
