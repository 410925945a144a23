"""provision -> backrest -> cutover -> rollback with each cluster on its own non-default port.

The source's cluster is moved to 5434 (the lab records it as ``source_pg_port`` in its settings) and
the target is provisioned with ``pg_port: 5433``: different ports, so a step that reaches one host on
the other's port fails here (the cutover's detached dump once read the source on the target's port).
Every step must reach each cluster on its own port: the freeze on the source, the dump, restore and
verify on the target, the application's path after the switch, the rollback. Observed on the hosts:
which ports the clusters listen on, the source's read-only flag read on 5434, the row counts on both
sides, Route53 back at the source.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from lab import api as lab_api
from lab.dataset import TABLES
from trackerdb.cutover import freeze as fz
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.psql import Psql
from trackerdb.rehearse.ops import table_counts
from trackerdb.remote import Remote
from trackerdb.sql import ident, literal
from trackerdb.session import cluster

from .fx_provision import load_lab_settings

pytestmark = [pytest.mark.lab]
PORT = 5433  # the target's
SOURCE_PORT = 5434


def listening(remote) -> set[int]:
    """TCP ports a postgres process listens on, read from the host's socket table."""
    out = remote.run("ss -Hltnp | grep -F '\"postgres\"' || true", sudo=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def clusters(remote) -> dict[str, int]:
    """pg_lsclusters: cluster -> port."""
    out = remote.run("pg_lsclusters -h 2>/dev/null || true").stdout
    return {f"{f[0]}/{f[1]}": int(f[2]) for f in (ln.split() for ln in out.splitlines()) if len(f) > 3}


NAME = "port-ci"


@pytest.fixture(scope="module")
def moved():
    """Its own lab instance (the session's lab has a target provisioned on 5432 already, and provision
    does not move a running cluster to another port): the source's cluster moved to 5433 and Settings
    for a target provisioned on 5433. Always brought down at the end, and checked for leftovers."""
    from tests.lab.fx_lab import require_lab_host

    require_lab_host()
    try:
        lab_api.up(NAME)
        lab_api.set_source_port(NAME, SOURCE_PORT)
        loaded = load_lab_settings(NAME)
        assert loaded.source_port == SOURCE_PORT and loaded.source_pg_port == SOURCE_PORT  # the lab's setting reaches Settings
        yield dataclasses.replace(loaded, pg_port=PORT)
    finally:
        lab_api.down(NAME)
        assert not lab_api.leftovers(NAME)


@pytest.fixture(scope="module")
def cut_over(moved, tmp_path_factory):
    from trackerdb.backrest import ops as backrest
    from trackerdb.provision.ops import provision
    from trackerdb.secrets import fetch_secret

    s = moved
    provision(s)
    backrest.setup(s)
    secret = fetch_secret(s, s.app_secret_name)
    with Remote(s.require_source(), secrets=[secret]) as src:  # the application logs in on the old host today
        Psql(src, SOURCE_PORT).run(f"ALTER ROLE {ident(s.owner_role)} LOGIN PASSWORD {literal(secret.reveal())};")
    work = tmp_path_factory.mktemp("port")
    journal = work / "journal.jsonl"
    summary = run_cutover(s, work / "dump", journal_path=journal, full=True)  # the full path, each host on its own port
    with Remote(s.require_source()) as src, Remote(s.target) as tgt:
        after_cutover = {"source_read_only": fz.is_read_only(cluster(src, SOURCE_PORT), s.database),
                         "source_counts": table_counts(cluster(src, SOURCE_PORT), s.database, TABLES),
                         "target_counts": table_counts(cluster(tgt, PORT), s.database, TABLES),
                         "target_listening": listening(tgt), "target_clusters": clusters(tgt),
                         "source_listening": listening(src)}
    return {"settings": s, "journal": journal, "summary": summary, **after_cutover}


def test_both_clusters_listen_only_on_the_configured_port(cut_over):
    assert cut_over["target_listening"] == {PORT}, cut_over["target_listening"]
    assert set(cut_over["target_clusters"].values()) == {PORT}
    assert cut_over["source_listening"] == {SOURCE_PORT}


def test_cutover_completes_against_the_clusters_on_that_port(cut_over):
    summary = cut_over["summary"]
    assert summary["complete"] and summary["verification"] == "ok", json.dumps(summary, default=str)[:2000]
    # the freeze reached the source's cluster on 5434 (on 5432 nothing listens any more)
    assert cut_over["source_read_only"] is True
    assert cut_over["target_counts"] == cut_over["source_counts"] and sum(cut_over["source_counts"].values()) > 0
    post = Journal(cut_over["journal"]).facts()["post"]
    assert post["app_path"]["writable"] is True and post["backrest_check"] == "ok"


def test_rollback_makes_the_source_on_that_port_writable_and_points_back(cut_over):
    s = cut_over["settings"]
    facts = run_rollback(s, cut_over["journal"])
    with Remote(s.require_source()) as src:
        assert fz.is_read_only(cluster(src, SOURCE_PORT), s.database) is False
        assert Psql(src, SOURCE_PORT).value("SELECT current_setting('port');") == str(SOURCE_PORT)
    assert facts["source"]["changed"] is True
    from trackerdb.cutover import switch

    recorded = Journal(cut_over["journal"]).facts()["switch"]
    assert switch.make(s).current() == recorded["old"] != recorded["new"]  # Route53 reads the source again
