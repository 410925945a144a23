"""The engine gate on a real host: provisioning for Debian's PostgreSQL 17 with TimescaleDB 2.18.2 is
refused in one line, before anything is installed (trackerdb/compat.py, timescale/timescaledb#11015).

The target lists Debian trixie's real ``postgresql-17`` (lab/debian17.py, mounted read-only at
render.LAB_APT_DEBIAN17) only while a test here adds it as an apt source. Works on a bare target and on a
provisioned one (whichever order the session runs this and test_20 in): what is there before is there after.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from lab import render
from tests.lab.fx_provision import ROOT, lab_env, load_lab_settings
from trackerdb import compat
from trackerdb.errors import PreflightError
from trackerdb.provision import apt
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab
BROKEN = "with TimescaleDB 2.18.2 is a known-broken combination (scheduler jobs fail on new PostgreSQL minors)"
MEASURED: dict = {}


def fingerprint(t, s) -> str:
    """What the refusal must leave as it was: packages and holds, apt's configuration and pins, PostgreSQL's
    configuration, fstab and mounts, the volume's filesystem, the clusters and whether they run."""
    dev = t.run(["readlink", "-e", s.data_volume_by_id], sudo=True, check=False).stdout.strip()
    parts = [
        "dpkg-query -W -f='${Package}=${Version} ${db:Status-Abbrev}\\n' | sort",
        "apt-mark showhold",
        "find /etc/apt /etc/postgresql /etc/postgresql-common /etc/fstab -xdev \\( -type f -o -type l \\) "
        "-printf '%p %m %u:%g %l\\n' 2>&1 | sort",
        "find /etc/apt /etc/postgresql /etc/postgresql-common /etc/fstab -xdev -type f -exec sha256sum {} + 2>&1 | sort",
        "findmnt -rn -o TARGET,SOURCE,FSTYPE | sort",
        f"blkid -p -o export {shlex.quote(dev)}" if dev else "true",
        "command -v pg_lsclusters >/dev/null && pg_lsclusters -h",
    ]
    return t.run(" ; ".join(parts), sudo=True, check=False).stdout


def online_16(t) -> bool:
    r = t.run("command -v pg_lsclusters >/dev/null && pg_lsclusters -h", sudo=True, check=False)
    return any(l.split()[:2] == ["16", "main"] and l.split()[3].startswith("online")
               for l in r.stdout.splitlines() if len(l.split()) > 3)


@pytest.fixture(scope="module")
def target(lab):
    """(remote, settings) of the lab's target, as it is: bare or provisioned."""
    s = load_lab_settings(lab["name"])
    with Remote(s.target) as t:
        yield t, s


@pytest.fixture
def debian17(target):
    """The target with Debian's PostgreSQL 17 among its apt sources for the test's duration: yields
    (remote, settings, apt's candidate version). The source file goes and apt's lists are refreshed
    again afterwards, whatever the test did."""
    t, s = target
    if not t.run(["test", "-f", f"{render.LAB_APT_DEBIAN17}/Packages"], check=False).ok:
        pytest.fail(f"the target has no {render.LAB_APT_DEBIAN17}: this lab was brought up before lab/debian17.py "
                    "(run lab.down and lab.up)", pytrace=False)
    assert t.read_file(render.DEBIAN17_LIST) is None
    try:
        t.write_file(render.DEBIAN17_LIST, render.debian17_sources())
        t.run(apt.update_command(), sudo=True, timeout=300)
        madison = t.run(apt.madison_command(["postgresql-17", "postgresql-client-17"]), sudo=True).stdout
        origins = apt.madison_origins(madison)
        versions = apt.parse_madison(madison).get("postgresql-17", [])
        assert versions and render.LAB_APT_DEBIAN17 in origins[("postgresql-17", versions[0])], madison
        yield t, s, versions[0]
    finally:
        t.run(["rm", "-f", render.DEBIAN17_LIST], sudo=True, check=False)
        t.run(apt.update_command(), sudo=True, check=False, timeout=300)
        assert not t.exists(render.DEBIAN17_LIST)
        assert "lab-apt-debian17" not in t.run("apt-cache policy", sudo=True).stdout


def test_debian17_repository_is_debians_real_postgresql_17(debian17):
    t, _, candidate = debian17
    fields = t.run(f"grep -E '^(Package|Version|Maintainer|Filename):' {render.LAB_APT_DEBIAN17}/Packages").stdout
    assert "Package: postgresql-17\n" in fields and "Package: postgresql-client-17\n" in fields
    assert f"Version: {candidate}\n" in fields and "+deb13u" in candidate  # Debian trixie's own build
    assert "Debian PostgreSQL Maintainers" in fields
    # at or past the minor the scheduler breaks on: the gate must refuse it with TimescaleDB 2.18.2
    assert compat.version(apt.upstream(candidate)[0]) >= (17, 12), candidate


def test_provision_for_debian_17_is_refused_before_anything_is_installed(debian17):
    from trackerdb.provision.ops import provision

    t, s, candidate = debian17
    had_16 = online_16(t)
    pins = t.read_file(apt.PIN_FILE)
    holds = t.run(["apt-mark", "showhold"], sudo=True).stdout
    before = fingerprint(t, s)
    t0 = time.monotonic()
    with pytest.raises(PreflightError) as err:
        provision(s.with_(postgres_major=17, postgres_version="17"))
    MEASURED["refusal_s"] = round(time.monotonic() - t0, 1)
    line = err.value.one_line()
    minor = apt.upstream(candidate)[0]
    assert "\n" not in str(err.value)
    assert f"(apt candidate postgresql-17={candidate}): PostgreSQL {minor} {BROKEN}" in line, line
    assert "timescale/timescaledb#11015" in line and "hint:" in line
    # nothing installed, pinned, held or written; PostgreSQL 16 as it was
    installed = t.run("dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' 'postgresql*' 2>/dev/null; true").stdout
    assert not [l for l in installed.splitlines() if l.split()[0] in ("postgresql-17", "postgresql-client-17")
                and not l.split()[1].startswith("u")], installed
    assert t.read_file(apt.PIN_FILE) == pins
    assert t.run(["apt-mark", "showhold"], sudo=True).stdout == holds
    assert fingerprint(t, s) == before
    assert online_16(t) == had_16
    if had_16:
        assert t.run(["psql", "-XAtc", "SELECT current_setting('server_version_num')"], user="postgres").stdout.strip() == "160010"
    else:
        assert not [l for l in installed.splitlines() if not l.split()[1].startswith("u")], installed
    print(f"\n{'provisioned' if had_16 else 'bare'} target, refused in {MEASURED['refusal_s']}s: {line}")


def test_cli_refuses_a_broken_pin_in_one_line_before_reaching_the_host(target, tmp_path):
    """Through `invoke provision`: a stack pinned at 17.12 (the CLI's settings take exact minors only) is
    refused in one line on the configured pin, the host untouched."""
    from trackerdb.settings import lab_dir

    t, s = target
    env = lab_env()
    outputs = json.loads((lab_dir(env) / "stack-outputs.json").read_text()) | {"postgres_major": 17, "postgres_version": "17.12"}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    env["TRACKERDB_STACK_OUTPUTS"] = str(tmp_path / "outputs.json")
    before = fingerprint(t, s)
    r = subprocess.run([str(ROOT / ".venv/bin/invoke"), "provision"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip() and not l.lstrip().startswith("…")]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert f"target (postgresVersion): PostgreSQL 17.12 {BROKEN}" in lines[0] and "hint:" in lines[0], lines[0]
    assert fingerprint(t, s) == before
