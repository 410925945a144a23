"""Every task given a bad path or name: one `error:` line with a hint, exit 1, and no host contacted
(the paths are checked before Settings load, so no stack outputs or hosts exist in this test at all)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]


@pytest.fixture
def places(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    d = tmp_path / "a-dir"
    d.mkdir()
    return {"FILE": str(f), "DIR": str(d), "MISSING": str(tmp_path / "missing" / "x.dump")}


CASES = {
    "journal is a directory": (["cutover", "--dry-run", "--journal", "DIR"], "is a directory"),
    "journal in /proc": (["cutover", "--dry-run", "--journal", "/proc/1/journal.jsonl"], "kernel filesystem"),
    "journal under a file": (["cutover", "--dry-run", "--journal", "FILE/sub/journal.jsonl"], "is a file"),
    "dump dir is a file": (["cutover", "--dry-run", "--dump-dir", "FILE"], "a directory is expected"),
    "dump --out in /proc": (["dump", "--out", "/proc/1"], "kernel filesystem"),
    "dump --out is a file": (["dump", "--out", "FILE"], "a directory is expected"),
    "restore missing dump": (["restore", "--dump", "MISSING"], "does not exist"),
    "restore dump is a dir": (["restore", "--dump", "DIR"], "is a directory"),
    "restore manifest is a dir": (["restore", "--dump", "FILE", "--manifest", "DIR"], "is a directory"),
    "verify missing manifest": (["verify", "--manifest", "MISSING"], "does not exist"),
    "rollback missing journal": (["rollback", "--journal", "MISSING"], "does not exist"),
    "rollback journal is a dir": (["rollback", "--journal", "DIR"], "is a directory"),
    "invalid lab name": (["verify"], "is not valid"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_path_is_one_line_with_a_hint(case, places, tmp_path):
    argv, fragment = CASES[case]
    argv = [next((a.replace(k, v, 1) for k, v in places.items() if a.startswith(k)), a) for a in argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKERDB_")}
    env["TRACKERDB_STATE_DIR"] = str(tmp_path / "state")
    if case == "invalid lab name":
        env |= {"TRACKERDB_ENV": "lab", "TRACKERDB_LAB": "bad name"}
    r = subprocess.run(INVOKE + argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert fragment in lines[0] and "hint:" in lines[0], lines[0]
    assert "Traceback" not in r.stdout + r.stderr
