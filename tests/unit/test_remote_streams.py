"""Streams and resumable uploads on LocalHost (the same methods as Remote's; tests/lab/test_15 runs Remote's)."""

import hashlib
import io

import pytest

from trackerdb.errors import HostError
from trackerdb.remote import LocalHost


@pytest.fixture
def host():
    return LocalHost("local")


def test_stream_stdout_writes_bytes_and_hashes_them(host):
    sink = io.BytesIO()
    seen = []
    res = host.stream_stdout("printf 'a\\000b'; head -c 3000000 /dev/zero; echo oops >&2; exit 4", sink,
                             progress=lambda n, total: seen.append(n))
    data = sink.getvalue()
    assert data[:3] == b"a\x00b" and len(data) == 3 + 3000000 == res.bytes
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    assert res.exit_code == 4 and res.stderr.strip() == "oops"
    assert seen and seen[-1] == res.bytes


def test_feed_stdin_sends_a_file(host, tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(b"x" * 100000)
    code, out, err = host.feed_stdin("wc -c", str(f))
    assert code == 0 and out.strip() == "100000" and err == ""


def test_feed_stdin_tolerates_a_reader_that_stops_early(host, tmp_path):
    f = tmp_path / "big.bin"
    f.write_bytes(b"y" * 5_000_000)
    code, out, _ = host.feed_stdin("head -c 10", str(f))
    assert code == 0 and out == "y" * 10


def test_append_file_resumes_from_an_offset(host, tmp_path):
    src = tmp_path / "dump"
    payload = bytes(range(256)) * 20000
    src.write_bytes(payload)
    dst = tmp_path / "up" / "dump.part"
    dst.parent.mkdir()
    dst.write_bytes(payload[:1000])  # an interrupted earlier run
    done = []
    sent = host.append_file(str(src), str(dst), 1000, len(payload), progress=lambda d, t: done.append((d, t)))
    assert sent == len(payload) - 1000 and dst.read_bytes() == payload
    assert done[-1] == (len(payload), len(payload))
    assert oct(dst.stat().st_mode & 0o777) == "0o640"
    assert host.append_file(str(src), str(dst), len(payload)) == 0  # complete: nothing sent


def test_run_with_large_stdin(host):
    data = "z" * 3_000_000
    assert host.run("wc -c", stdin=data).stdout.strip() == "3000000"


def test_a_failing_command_is_a_host_error_with_secrets_masked():
    h = LocalHost("local", secrets=["s3cr3t"])
    with pytest.raises(HostError) as e:
        h.run("echo 'ERROR: bad s3cr3t' >&2; exit 1")
    assert "s3cr3t" not in e.value.one_line() and "***" in e.value.one_line()
