"""owner_map's roles are checked before a restore changes anything (security issue 23).

`invoke restore` with an owner_map naming a role that exists nowhere used to upload the dump, create
roles and a staging database, run the whole pg_restore, and only then fail on ``ALTER … OWNER TO``.
Now it refuses in its preflight with one line naming the role: observed here on the target's
catalogs and files, which must be exactly as before.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from trackerdb.migrate.restore_plan import staging_name, upload_dir
from trackerdb.session import target_cluster
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
GHOST = "ghost_owner_46"

STATE_SQL = """SELECT json_build_object(
  'databases', (SELECT json_agg(datname ORDER BY datname) FROM pg_database),
  'roles', (SELECT json_agg(rolname ORDER BY rolname) FROM pg_roles),
  'pg_restore', (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_restore'));"""


def target_state(settings) -> dict:
    with Remote(settings.target) as t:
        state = target_cluster(t, settings).json(STATE_SQL)
        files = t.run(["sh", "-c", f"ls -A {upload_dir(settings.data_mount)} 2>/dev/null; "
                                   f"ls /etc/postgresql/*/main/conf.d/ 2>/dev/null; true"], sudo=True).stdout
        procs = t.run(["sh", "-c", "pgrep -a pg_restore || true"]).stdout
    return {**state, "files": sorted(files.split()), "pg_restore_procs": procs.strip()}


def invoke_restore(dump, tmp_path, *flags):
    from tests.lab.fx_provision import lab_env

    cfg = tmp_path / "owner_map.yaml"
    cfg.write_text(yaml.safe_dump({"trackerdb": {"owner_map": [{"from": "postgres", "to": GHOST,
                                                                "schemas": ["reporting"]}]}}))
    env = dict(lab_env(), COLUMNS="400")
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), "-f", str(cfg), "restore", "--dump", str(dump.dump_path),
                           "--replace", *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("flags", [("--dry-run",), ()])
def test_restore_with_a_missing_owner_map_role_refuses_before_pg_restore(provisioned, dumped, tmp_path, flags):
    s = provisioned
    before = target_state(s)
    assert GHOST not in before["roles"]
    r = invoke_restore(dumped, tmp_path, *flags)
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0, text[-2000:]
    errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, text[-2000:]
    assert f"role '{GHOST}' does not exist on the target" in errors[0] and "(hint: create the role" in errors[0]
    assert "Traceback" not in r.stderr
    after = target_state(s)
    # nothing changed: no role the dump names was created, no staging database, no upload, no tuning file
    assert after == before
    assert staging_name(s.database) not in after["databases"]
