"""ruff (E, F, W; line length 120) and mypy over the paths pyproject.toml gives mypy: no finding is allowed.

Both tools come from the venv that runs the tests (next to sys.executable). The probes show that each
check can fail: a 130-character line and a type error, in temporary files, must be reported.
"""

import subprocess
import sys
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUFF = BIN / "ruff"
MYPY = BIN / "mypy"
#: the checked paths: [tool.mypy] files (trackerdb, infra, lab, rehearsal, tasks.py); tests/ and benchmarks/ are not
PATHS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]

def run(argv: list, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_tools_are_installed():
    assert set(PATHS) >= {"trackerdb", "infra", "lab", "rehearsal"}, PATHS
    assert RUFF.is_file(), f"{RUFF} missing: pip install -e '.[test]'"
    assert MYPY.is_file(), f"{MYPY} missing: pip install -e '.[test]'"


def test_ruff_reports_nothing():
    p = run([RUFF, "check", "--no-cache", "--output-format", "concise", *PATHS])
    assert p.returncode == 0, p.stdout + p.stderr


def test_mypy_reports_nothing():
    p = run([MYPY])
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff_probe_fails_on_a_long_line(tmp_path):
    bad = tmp_path / "long.py"
    bad.write_text("x = " + repr("a" * 124) + "\n")
    assert len(bad.read_text().splitlines()[0]) == 130
    p = run([RUFF, "check", "--no-cache", "--output-format", "concise", "--config", ROOT / "pyproject.toml", bad],
            cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "E501" in p.stdout
    bad.write_text("x = 1\n")
    ok = run([RUFF, "check", "--no-cache", "--config", ROOT / "pyproject.toml", bad], cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_mypy_probe_fails_on_a_type_error(tmp_path):
    bad = tmp_path / "typed.py"
    bad.write_text("def f(n: int) -> int:\n    return n\n\n\nf('one')\n")
    p = run([MYPY, "--no-incremental", "--config-file", ROOT / "pyproject.toml", bad], cwd=tmp_path, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "arg-type" in p.stdout
    bad.write_text("def f(n: int) -> int:\n    return n\n\n\nf(1)\n")
    ok = run([MYPY, "--no-incremental", "--config-file", ROOT / "pyproject.toml", bad], cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
