"""Remote's streams and resumable upload over real SSH to the lab's target (the transport dump/restore use)."""

from __future__ import annotations

import hashlib
import io

import pytest

from trackerdb.errors import HostError
from trackerdb.remote import Remote, wrap

from .test_10_lab import spec

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def target(lab):
    r = Remote(spec(lab, "target"), secrets=["not-in-any-message"])
    yield r
    r.run(["rm", "-rf", "/tmp/trackerdb-streams"], sudo=True, check=False)
    r.close()


def test_stream_stdout_carries_bytes_exactly(target):
    sink = io.BytesIO()
    res = target.stream_stdout("printf 'a\\000b'; head -c 5000000 /dev/urandom | tee /tmp/trackerdb-s.bin; "
                               "echo done >&2", sink)
    data = sink.getvalue()
    remote_sha = target.run("sha256sum /tmp/trackerdb-s.bin && rm -f /tmp/trackerdb-s.bin").stdout.split()[0]
    assert res.exit_code == 0 and res.bytes == len(data) == 5000003 and data[:3] == b"a\x00b"
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(data[3:]).hexdigest() == remote_sha and res.stderr.strip() == "done"


def test_feed_stdin_and_an_early_stop(target, tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(b"q" * 3_000_000)
    assert target.feed_stdin("wc -c", str(f)) == (0, "3000000\n", "")
    code, out, _ = target.feed_stdin("head -c 5", str(f))
    assert code == 0 and out == "qqqqq"


def test_append_file_resumes_an_interrupted_upload(target, tmp_path):
    payload = bytes(range(256)) * 16000
    src = tmp_path / "dump"
    src.write_bytes(payload)
    target.run(["install", "-d", "-m", "0700", "-o", target.spec.user, "/tmp/trackerdb-streams"], sudo=True)
    remote = "/tmp/trackerdb-streams/dump"
    prefix = tmp_path / "prefix"
    prefix.write_bytes(payload[:4096])  # what a dropped connection leaves: a prefix of the same file
    target.put(str(prefix), remote)
    offset = int(target.run(["stat", "-c", "%s", remote]).stdout)
    assert offset == 4096
    sent = target.append_file(str(src), remote, offset, len(payload))
    assert sent == len(payload) - offset
    assert target.run(["sha256sum", remote]).stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    assert target.run(["stat", "-c", "%a", remote]).stdout.strip() == "640"


def test_failure_is_one_line_and_masked(target):
    with pytest.raises(HostError) as e:
        target.run("echo 'ERROR: not-in-any-message' >&2; exit 3")
    assert "not-in-any-message" not in e.value.one_line()


def test_pipe_to_streams_one_commands_stdout_into_anothers_stdin(target):
    """The pre-copy path's COPY between hosts: bytes exactly, both exit codes, the receiver's complaint."""
    target.run(["install", "-d", "-m", "0700", "-o", target.spec.user, "/tmp/trackerdb-streams"], sudo=True)
    src = "printf 'a\\000b'; head -c 4000000 /dev/urandom | tee /tmp/trackerdb-streams/sent"
    res, code, err = target.pipe_to(src, target, "sha256sum > /tmp/trackerdb-streams/got; echo fine >&2")
    assert res.exit_code == 0 and code == 0 and res.bytes == 4000003 and err.strip() == "fine"
    got = target.run("cat /tmp/trackerdb-streams/got").stdout.split()[0]
    want = target.run("(printf 'a\\000b'; cat /tmp/trackerdb-streams/sent) | sha256sum").stdout.split()[0]
    assert got == want == res.sha256
    res, code, err = target.pipe_to("head -c 100000 /dev/zero", target, "head -c 10 > /dev/null; echo 'ERROR: nope' >&2; exit 3")
    assert code == 3 and "ERROR: nope" in err


@pytest.mark.parametrize("sender_rc, rows", [(1, 0), (0, 3)])
def test_a_copy_whose_sender_fails_commits_nothing(lab_settings, sender_rc, rows):
    """The pre-copy window's receiver (``delta_sql.copy_in_script``): a sender that stops on a row boundary
    and fails (exit 1 after three whole rows, valid COPY data) leaves the table as it was, because the COMMIT
    travels in the trailer only after a sender that succeeded. With the old receiver (psql -1 -c COPY) the
    same stream committed its prefix (reproduced by the issue: 3 of 1000 rows)."""
    from trackerdb.migrate import delta_sql as dq
    from trackerdb.session import source_cluster

    s = lab_settings
    with Remote(s.require_source()) as src:
        p = source_cluster(src, s)
        p.run("DROP TABLE IF EXISTS public.trackerdb_stream_probe; CREATE TABLE public.trackerdb_stream_probe (x int); "
              "INSERT INTO public.trackerdb_stream_probe VALUES (42);")
        try:
            header, trailer = dq.copy_in_script(["DELETE FROM ONLY public.trackerdb_stream_probe",
                                                 "COPY public.trackerdb_stream_probe (x) FROM STDIN"])
            res, code, err = src.pipe_to(f"printf '1\\n2\\n3\\n'; exit {sender_rc}", src,
                                         wrap(p.argv("postgres"), user="postgres"), header=header, trailer=trailer)
            assert res.exit_code == sender_rc and code == 0, err
            got = p.value("SELECT string_agg(x::text, ',' ORDER BY x) FROM public.trackerdb_stream_probe;")
            assert got == ("42" if rows == 0 else "1,2,3"), got
        finally:
            p.run("DROP TABLE IF EXISTS public.trackerdb_stream_probe;")


def test_a_stream_past_its_deadline_is_ended_on_both_hosts_by_pid(target):
    """issue 28, item 6: a stream whose sender never ends (a stuck COPY) stops at its deadline; the two
    commands we started are ended on the host by their pids (and what they started), one line says so."""
    import re
    import time

    t0 = time.monotonic()
    with pytest.raises(HostError) as e:
        target.pipe_to("sleep 300; echo never", target, wrap("sleep 301; cat > /dev/null", sudo=True), deadline_s=3)
    took = time.monotonic() - t0
    line = e.value.one_line()
    assert "stream still running after its deadline of 3s (0 bytes moved): ended pid(s)" in line and took < 15, (line, took)
    ended = [int(p) for p in re.findall(r"\d+", line.split("ended pid(s)")[1].split("(hint")[0])]
    assert len(ended) == 2
    time.sleep(1)
    alive = target.run("ps -eo pid=,args= | grep -E 'sleep 30[01]' | grep -v grep || true").stdout
    assert "sleep 300" not in alive and "sleep 301" not in alive, alive
    assert all(not target.exists(f"/proc/{p}/cmdline") for p in ended)
