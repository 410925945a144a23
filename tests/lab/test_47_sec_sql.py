"""Superuser sessions never run the database owner's code (issue 23, item 3), on the real hosts.

The owner of ``tracker`` (the role ``tracker``, as the application would) plants on the source what the
issue reproduced: a schema named like our superuser (``postgres``) holding ``timescaledb_pre_restore()``
and ``timescaledb_post_restore()``, overloads of ``refresh_continuous_aggregate`` and ``compress_chunk``
in ``public`` (which the database's owner may write), and ``ALTER DATABASE tracker SET search_path``
naming them first. Each planted routine, and an ALWAYS trigger on a table the delta rewrites, writes a
row (what, who) into ``postgres.sec47_ran``, a table the owner owns. Then the real operations run:
`invoke dump` + `invoke restore` (the planted schema travels), the freeze's aggregate refresh on the
source, the delta's guard, a compression and a table copy on the target. Nothing planted may run as
superuser; what the delta writes into the owner's table runs as the owner. Everything planted is
removed from both hosts at the end (the source's search_path setting put back as it was).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trackerdb import tsdb_api as api
from trackerdb.cutover import delta as dl
from trackerdb.migrate import delta_sql as dq
from trackerdb.cutover import freeze as fz
from trackerdb.cutover import phases as ph
from trackerdb.migrate.dump import run_dump
from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
from trackerdb.psql import Psql, PsqlError
from trackerdb.remote import Remote
from trackerdb.session import cluster, source_cluster, target_cluster

pytestmark = pytest.mark.lab

PLANT = """SET ROLE tracker;
CREATE SCHEMA postgres;
CREATE TABLE postgres.sec47_ran (what text NOT NULL, who text NOT NULL DEFAULT current_user);
CREATE FUNCTION postgres.timescaledb_pre_restore() RETURNS boolean LANGUAGE sql
  AS $$ INSERT INTO postgres.sec47_ran (what) VALUES ('pre_restore') RETURNING true $$;
CREATE FUNCTION postgres.timescaledb_post_restore() RETURNS boolean LANGUAGE sql
  AS $$ INSERT INTO postgres.sec47_ran (what) VALUES ('post_restore') RETURNING true $$;
CREATE PROCEDURE public.refresh_continuous_aggregate(cagg text, window_start text, window_end text) LANGUAGE sql
  AS $$ INSERT INTO postgres.sec47_ran (what) VALUES ('refresh') $$;
CREATE FUNCTION public.compress_chunk(uncompressed_chunk regclass, if_not_compressed boolean) RETURNS regclass LANGUAGE sql
  AS $$ INSERT INTO postgres.sec47_ran (what) VALUES ('compress') RETURNING uncompressed_chunk $$;
ALTER DATABASE tracker SET search_path = postgres, public;
RESET ROLE;
"""

TRIGGER = """SET ROLE tracker;
CREATE FUNCTION postgres.sec47_trg() RETURNS trigger LANGUAGE plpgsql
  AS $$ BEGIN INSERT INTO postgres.sec47_ran (what) VALUES ('delta ' || TG_OP); RETURN NULL; END $$;
CREATE TRIGGER sec47 AFTER INSERT OR DELETE ON tracker.devices FOR EACH STATEMENT EXECUTE FUNCTION postgres.sec47_trg();
ALTER TABLE tracker.devices ENABLE ALWAYS TRIGGER sec47;
RESET ROLE;
"""

SETTING_SQL = """SELECT coalesce((SELECT substr(c, length('search_path=') + 1) FROM pg_db_role_setting s
  JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c
  WHERE d.datname = 'tracker' AND s.setrole = 0 AND c LIKE 'search\\_path=%'), '');"""


def cleanup_sql(search_path: str) -> str:
    put_back = (f"ALTER DATABASE tracker SET search_path = {search_path};" if search_path
                else "ALTER DATABASE tracker RESET search_path;")
    return f"""DROP TRIGGER IF EXISTS sec47 ON tracker.devices;
DROP PROCEDURE IF EXISTS public.refresh_continuous_aggregate(text, text, text);
DROP FUNCTION IF EXISTS public.compress_chunk(regclass, boolean);
DROP SCHEMA IF EXISTS postgres CASCADE;
{put_back}
"""


def ran(psql: Psql) -> list[list[str]]:
    """What the planted code recorded: [[what, who]] (none, when nothing of it ran)."""
    return psql.json("SELECT coalesce(json_agg(json_build_array(what, who) ORDER BY what), '[]') FROM postgres.sec47_ran;",
                     "tracker") or []


@pytest.fixture(scope="module")
def planted(provisioned, tmp_path_factory):
    s = provisioned
    with Remote(s.source) as src:
        sp = source_cluster(src, s)
        original = sp.value(SETTING_SQL, "tracker")
        assert "postgres" not in original, f"a planted search_path is left over: {original!r}"
        sp.run(cleanup_sql(original), "tracker")  # a run killed before its teardown left things behind
        sp.run(PLANT, "tracker")
        try:
            art = run_dump(s, str(tmp_path_factory.mktemp("sec47") / "dump"))
            outcome = restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
            yield {"settings": s, "outcome": outcome, "original": original}
        finally:
            sp.run(cleanup_sql(original), "tracker")
            with Remote(s.target) as tgt:
                target_cluster(tgt, s).run(cleanup_sql(original), "tracker", check=False)


def test_the_owners_search_path_reaches_none_of_our_sessions(planted):
    s = planted["settings"]
    with Remote(s.source) as src, Remote(s.target) as tgt:
        for remote, psql in ((src, source_cluster(src, s)), (tgt, target_cluster(tgt, s))):
            assert Psql(remote, psql.port, pinned=False).value("SHOW search_path;", "tracker") == "postgres, public"
            assert psql.value("SHOW search_path;", "tracker") == "pg_catalog, pg_temp"
            assert psql.value("SHOW standard_conforming_strings;", "tracker") == "on"


def test_the_planted_restore_functions_travelled_and_never_ran(planted):
    s = planted["settings"]
    steps = {st.name: st for st in planted["outcome"].steps}
    assert "restoring=off" in steps["timescaledb_post_restore"].detail
    with Remote(s.target) as tgt:
        t = target_cluster(tgt, s)
        travelled = t.value("SELECT count(*) FROM pg_proc WHERE pronamespace = 'postgres'::regnamespace "
                            "AND proname IN ('timescaledb_pre_restore', 'timescaledb_post_restore');", "tracker")
        assert travelled == "2"  # the dump carried them: they could have run
        assert ran(t) == []
        assert t.value("SELECT current_setting('timescaledb.restoring');", "tracker") == "off"


def test_the_freeze_refresh_refuses_the_public_overload_and_runs_nothing(planted):
    s = planted["settings"]
    with Remote(s.source) as src:
        with pytest.raises(api.ApiImpostor) as e:
            fz.refresh_caggs(cluster(src, s.source_port), s.database)
        assert "public.refresh_continuous_aggregate(text,text,text)" in e.value.one_line()
        assert "\n" not in e.value.one_line()
        sp = source_cluster(src, s)
        assert ran(sp) == []
    # without the impostor the same refresh runs, each aggregate as its owner (the owner may: no error); on the
    # target, whose tracker the next restore replaces, so the source's aggregates keep their pending state
    with Remote(s.target) as tgt:
        tp = target_cluster(tgt, s)
        tp.run("DROP PROCEDURE public.refresh_continuous_aggregate(text, text, text);", s.database)
        assert len(fz.refresh_caggs(cluster(tgt, s.pg_port), s.database)) >= 2
        assert ran(tp) == []


def test_the_delta_refuses_a_compress_chunk_impostor_and_compresses_nothing(planted):
    s = planted["settings"]
    with Remote(s.target) as tgt:
        t = target_cluster(tgt, s)
        with pytest.raises(api.ApiImpostor, match=r"public\.compress_chunk\(regclass,boolean\)"):
            api.api_schema(t, s.database, [api.COMPRESS, api.DECOMPRESS])  # what the delta asks first
        chunk = t.value("SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                        "WHERE hypertable_name = 'location_reports' AND NOT is_compressed ORDER BY range_start LIMIT 1;", s.database)
        assert chunk
        stmts = dq.state_statements(dq.COMPRESS, dq.Item(kind="chunk", rel=chunk, owner=s.owner_role, columns=[]), "public")
        with pytest.raises(PsqlError, match=r"refuses to call TimescaleDB's API: public\.compress_chunk\(regclass,boolean\)"):
            t.run("\n".join(st + ";" for st in stmts), s.database)  # the guard in the script itself
        assert ran(t) == []
        assert t.value(f"SELECT is_compressed FROM timescaledb_information.chunks WHERE format('%I.%I', chunk_schema, chunk_name) "
                       f"= '{chunk}';", s.database) == "f"


def test_the_delta_rewrites_a_table_as_its_owner(planted):
    s = planted["settings"]
    with Remote(s.target) as tgt:
        t = target_cluster(tgt, s)
        t.run("DROP PROCEDURE IF EXISTS public.refresh_continuous_aggregate(text, text, text);\n"
              "DROP FUNCTION IF EXISTS public.compress_chunk(regclass, boolean);\n" + TRIGGER, s.database)
    ctx = ph.Ctx(settings=s, journal=None, dump_dir=None)
    try:
        src_cat = source_cluster(ctx.remote("source"), s).json(dq.CATALOG_SQL, s.database)
        tgt_cat = target_cluster(ctx.remote("target"), s).json(dq.CATALOG_SQL, s.database)
        si, ti = dq.items(src_cat), dq.items(tgt_cat)
        key = "table tracker.devices"
        assert ti[key].owner == s.owner_role
        plan = dq.Plan(actions={key: dq.COPY})
        said: list[str] = []
        assert dl._apply(ctx, plan, si, ti, src_cat, tgt_cat, said.append, [0], {}) == [key]
        records = ran(target_cluster(ctx.remote("target"), s))
        rows = [p.value("SELECT count(*) FROM tracker.devices;", s.database)
                for p in (source_cluster(ctx.remote("source"), s), target_cluster(ctx.remote("target"), s))]
    finally:
        ctx.close()
    assert records == [["delta DELETE", s.owner_role], ["delta INSERT", s.owner_role]], records  # never "postgres"
    assert rows[0] == rows[1] and int(rows[0]) > 0
