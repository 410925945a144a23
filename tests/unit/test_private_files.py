"""Artifacts are private from their first byte, and root's remote writes never follow a planted link."""

import os
import stat
import subprocess
import sys

import pytest

from trackerdb import files
from trackerdb.remote import atomic_write_argv, error_text


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_private_file_and_dirs_under_a_permissive_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = files.write_private(tmp_path / "a" / "b" / "tracker.manifest.json", "{}")
    finally:
        os.umask(old)
    assert mode(p) == 0o600 and mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700


def test_existing_file_is_tightened_and_existing_dir_left_alone(tmp_path):
    tmp_path.chmod(0o755)
    f = tmp_path / "old.sql"
    f.write_text("x")
    f.chmod(0o644)
    files.write_private(f, "y")
    assert mode(f) == 0o600 and f.read_text() == "y" and mode(tmp_path) == 0o755


def test_never_writes_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError):
        files.write_private(tmp_path / "link", "overwritten")
    assert victim.read_text() == "keep"


def test_mode_is_set_before_data_is_written(tmp_path):
    with files.open_private(tmp_path / "dump.partial") as f:
        assert mode(tmp_path / "dump.partial") == 0o600
        f.write(b"data")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_atomic_write_replaces_a_planted_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "conf.d"
    target.mkdir()
    (target / "50-trackerdb.conf").symlink_to(victim)
    argv = atomic_write_argv(str(target / "50-trackerdb.conf"), "0640", "root", "root")
    argv[0] = sys.executable
    subprocess.run(argv, input=b"a = 1\n", check=True)
    out = target / "50-trackerdb.conf"
    assert not out.is_symlink() and out.read_text() == "a = 1\n" and mode(out) == 0o640
    assert victim.read_text() == "keep"
    assert sorted(p.name for p in target.iterdir()) == ["50-trackerdb.conf"]  # no temp file left


def test_atomic_write_refuses_a_symlinked_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "dir").symlink_to(real)
    argv = atomic_write_argv(str(tmp_path / "dir" / "f"), "0600", "root", "root")
    argv[0] = sys.executable
    r = subprocess.run(argv, input=b"x", capture_output=True)
    assert r.returncode != 0 and not (real / "f").exists()


@pytest.mark.parametrize("out, want", [
    ("psql:<stdin>:12: ERROR:  syntax error at or near \"x\"\nLINE 1: x\n        ^\n",
     'psql:<stdin>:12: ERROR:  syntax error at or near "x" / LINE 1: x'),
    ("NOTICE: a\nERROR:  boom\nDETAIL:  why\nHINT:  do this\n", "ERROR:  boom / DETAIL:  why / HINT:  do this"),
    ("just one line\nlast line\n", "last line"),
    ("", "(no output)"),
])
def test_error_text_keeps_psqls_whole_message(out, want):
    assert error_text(out) == want
