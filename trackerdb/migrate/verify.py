"""Verify the restored database: runbook §4 and §6 plus the manifest. The result decides a cutover.

Checks read as properties of nouns (testinfra style) and never use ``assert``: each is a
``Check(name, ok, observed, expected)``. ``compare_facts`` is pure (facts in, checks out); the
executor reads facts from the target (and, with ``against_source``, live from the source).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import OpsError
from ..session import scoped
from ..steps import Check
from . import app_probe
from . import dump_digests as dd
from . import manifest as mf
from . import privileges as pv
from . import sqltext as sq
from .content import content_checks
from ..psql import Psql
from .restore import parse_marker, staging_name, tuning_path

if TYPE_CHECKING:
    from ..settings import Settings

ARCHIVE_CATCH_UP_S = 300  # verify waits this long for segments left behind (not for a failing archiver)

SERVER_SQL = """SELECT json_build_object(
  'version', current_setting('server_version'),
  'shared_preload_libraries', current_setting('shared_preload_libraries'),
  'databases', (SELECT json_agg(json_build_object('name', datname, 'comment', shobj_description(oid, 'pg_database'))) FROM pg_database),
  'restoring', (SELECT coalesce(json_agg(c), '[]'::json) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase,
                unnest(s.setconfig) c WHERE c LIKE 'timescaledb.restoring=%%' AND d.datname = %(db)s),
  'schedulers', (SELECT count(*) FROM pg_stat_activity WHERE datname = %(db)s
                 AND backend_type = 'TimescaleDB Background Worker Scheduler')
);"""


def server_sql(db: str) -> str:
    return SERVER_SQL.replace("%%", "%").replace("%(db)s", sq.literal(db))


# ---- pure comparison ------------------------------------------------------------------------

def _fmt(v) -> str:
    return "" if v is None else str(v)


def compare_facts(expected: dict, observed: dict, source_label: str = "manifest", mapping=()) -> list[Check]:
    """Every comparison between the source's facts (manifest or live) and the target's.

    Owners and privileges are compared object by object (``privileges.compare_privileges``), with
    the explicit ``mapping`` (Settings.owner_map) applied to the source's side."""
    checks: list[Check] = []
    for ext in ("timescaledb", "postgis"):
        want = mf.extension_version(expected, ext)
        if want:
            have = mf.extension_version(observed, ext)
            checks.append(Check(f"extension {ext} version", have == want, _fmt(have), want, source_label))
    want_s, have_s = set(expected.get("schemas") or []), set(observed.get("schemas") or [])
    checks.append(Check("schemas present", want_s <= have_s, ", ".join(sorted(have_s)), ", ".join(sorted(want_s))))

    have_t = {(t["schema"], t["name"]): t["rows"] for t in observed.get("tables") or []}
    want_t = {(t["schema"], t["name"]): t["rows"] for t in expected.get("tables") or []}
    for key, rows in sorted(want_t.items()):
        got = have_t.get(key)
        checks.append(Check(f"table {key[0]}.{key[1]} rows", got == rows, "missing" if got is None else str(got), str(rows)))
    extra = sorted(set(have_t) - set(want_t))
    checks.append(Check("no unexpected tables", not extra, ", ".join(f"{s}.{n}" for s, n in extra) or "none", "none"))

    def ht_key(h):
        return f"{h['schema']}.{h['name']}"

    have_h = {ht_key(h): h for h in observed.get("hypertables") or []}
    want_h = {ht_key(h): h for h in expected.get("hypertables") or []}
    checks.append(Check("hypertables match", set(have_h) == set(want_h), ", ".join(sorted(have_h)) or "none",
                        ", ".join(sorted(want_h)) or "none"))
    for name, h in sorted(want_h.items()):
        got = have_h.get(name)
        if got is None:
            continue
        dims_ok = _dims(got) == _dims(h)
        checks.append(Check(f"hypertable {name} dimensions", dims_ok, _dims_text(got), _dims_text(h)))
        checks.append(Check(f"hypertable {name} chunks", got.get("num_chunks") == h.get("num_chunks"),
                            _fmt(got.get("num_chunks")), _fmt(h.get("num_chunks"))))
        checks += _compression_checks(name, h, got)

    have_c = {f"{c['schema']}.{c['name']}": c for c in observed.get("continuous_aggregates") or []}
    want_c = {f"{c['schema']}.{c['name']}": c for c in expected.get("continuous_aggregates") or []}
    checks.append(Check("continuous aggregates match", set(have_c) == set(want_c), ", ".join(sorted(have_c)) or "none",
                        ", ".join(sorted(want_c)) or "none"))
    for name, c in sorted(want_c.items()):
        if name in have_c:
            checks += _cagg_checks(name, c, have_c[name])

    have_j = {(j["proc"], j.get("hypertable")): j for j in observed.get("jobs") or []}
    for j in expected.get("jobs") or []:
        got = have_j.get((j["proc"], j.get("hypertable")))
        label = f"job {j['proc']}" + (f" on {j['hypertable']}" if j.get("hypertable") else "")
        ok = got is not None and got.get("scheduled") == j.get("scheduled") and got.get("schedule_interval") == j.get("schedule_interval")
        checks.append(Check(f"{label} scheduled", ok, "missing" if got is None else
                            f"scheduled={got.get('scheduled')} every {got.get('schedule_interval')}",
                            f"scheduled={j.get('scheduled')} every {j.get('schedule_interval')}"))
        if got is not None and ("config" in j or "owner" in j):
            want_d, have_d = _job_definition(j), _job_definition(got)
            checks.append(Check(f"{label} definition", want_d == have_d, _diff_text(have_d, want_d), _diff_text(want_d, have_d)))

    have_q = {(s["schema"], s["name"]): s["last_value"] for s in observed.get("sequences") or []}
    for s in expected.get("sequences") or []:
        key = (s["schema"], s["name"])
        got = have_q.get(key, "missing")
        ok = got != "missing" and (got or 0) >= (s["last_value"] or 0)
        checks.append(Check(f"sequence {key[0]}.{key[1]} >= source", ok, _fmt(got), f">= {_fmt(s['last_value'])}"))

    want_set = expected.get("db_settings") or {}
    have_set = observed.get("db_settings") or {}
    missing = [f"{r or '*'}: {v}" for r, vals in want_set.items() for v in vals if v not in (have_set.get(r) or [])]
    checks.append(Check("database settings present", not missing, "missing: " + "; ".join(missing) if missing else "all present",
                        "; ".join(f"{r or '*'}: {v}" for r, vals in want_set.items() for v in vals) or "none"))
    want_db, have_db = expected.get("database") or {}, observed.get("database") or {}
    if not want_db.get("acl_is_default", True):
        want_g = {(g["grantee"], g["privilege"]) for g in expected.get("db_grants") or []}
        have_g = {(g["grantee"], g["privilege"]) for g in observed.get("db_grants") or []}
        missing_g = sorted(want_g - have_g)
        checks.append(Check("database grants present", not missing_g and not have_db.get("acl_is_default", True),
                            "missing: " + ", ".join(f"{p} to {g}" for g, p in missing_g) if missing_g else "all present",
                            ", ".join(f"{p} to {g}" for g, p in sorted(want_g))))
    else:
        checks.append(Check("database grants present", True, "default ACL", "default ACL"))
    if want_db.get("owner"):
        checks.append(Check("database owner", have_db.get("owner") == want_db["owner"], _fmt(have_db.get("owner")), want_db["owner"]))
    gap = pv.maintain_gap(expected.get("server_version_num", 0) // 10000, observed.get("server_version_num", 0) // 10000)
    checks += pv.compare_privileges(expected.get("privileges"), observed.get("privileges"), source_label, mapping, gap)
    checks += pv.job_owner_checks(expected, observed)
    return checks


def _compression_checks(name: str, want: dict, got: dict) -> list[Check]:
    """Compressed/uncompressed chunk counts, rows through the hypertable, rows of each compressed chunk."""
    if "compressed_chunks" not in want:  # a manifest from before these facts were recorded
        return []
    out = []
    for key, label in (("compressed_chunks", "compressed chunks"), ("uncompressed_chunks", "uncompressed chunks"),
                       ("rows", "rows through the hypertable"), ("compressed_rows", "rows in compressed chunks")):
        out.append(Check(f"hypertable {name} {label}", got.get(key) == want.get(key), _fmt(got.get(key)), _fmt(want.get(key))))
    want_r, have_r = want.get("compressed_chunk_rows") or {}, got.get("compressed_chunk_rows") or {}
    differ = sorted(c for c in set(want_r) | set(have_r) if want_r.get(c) != have_r.get(c))
    out.append(Check(f"hypertable {name} compressed chunk rows", not differ,
                     "differ: " + ", ".join(f"{c} {_fmt(have_r.get(c)) or 'missing'}" for c in differ[:4]) if differ
                     else f"{len(have_r)} chunk(s) equal",
                     ", ".join(f"{c} {_fmt(want_r.get(c)) or 'absent'}" for c in differ[:4]) if differ else f"{len(want_r)} chunk(s)"))
    return out


def _cagg_checks(name: str, want: dict, got: dict) -> list[Check]:
    if "definition" not in want:
        return []
    out = [
        Check(f"continuous aggregate {name} definition", _norm_sql(got.get("definition")) == _norm_sql(want.get("definition")),
              "same" if _norm_sql(got.get("definition")) == _norm_sql(want.get("definition")) else _fmt(got.get("definition"))[:200],
              "as on the source"),
        Check(f"continuous aggregate {name} materialized_only", got.get("materialized_only") == want.get("materialized_only"),
              _fmt(got.get("materialized_only")), _fmt(want.get("materialized_only"))),
        Check(f"continuous aggregate {name} refresh policy", got.get("refresh_policy") == want.get("refresh_policy"),
              _policy_text(got.get("refresh_policy")), _policy_text(want.get("refresh_policy"))),
        Check(f"continuous aggregate {name} content", (got.get("rows"), got.get("digest")) == (want.get("rows"), want.get("digest")),
              f"{_fmt(got.get('rows'))} rows, checksum {_fmt(got.get('digest'))}",
              f"{_fmt(want.get('rows'))} rows, checksum {_fmt(want.get('digest'))}"),
    ]
    return out


def _norm_sql(text) -> str:
    return " ".join((text or "").split())


def _policy_text(p) -> str:
    if not p:
        return "none"
    return (f"every {p.get('schedule_interval')}, start_offset {p.get('start_offset')}, end_offset {p.get('end_offset')}, "
            f"scheduled={p.get('scheduled')}")


def _job_definition(j: dict) -> dict:
    # the owner has its own check (privileges.job_owner_checks: "source: …, target: …")
    return {"proc": j.get("proc"), "schedule_interval": j.get("schedule_interval"), "config": j.get("config")}


def _diff_text(a: dict, b: dict) -> str:
    keys = [k for k in a if a.get(k) != b.get(k)]
    return "; ".join(f"{k}={a.get(k)}" for k in keys) if keys else "same"


def _dims(h: dict) -> list[tuple]:
    return [(d.get("column"), d.get("type"), d.get("time_interval"), d.get("integer_interval"), d.get("num_partitions"))
            for d in h.get("dimensions") or []]


def _dims_text(h: dict) -> str:
    return "; ".join(f"{c} {t} {ti or ii or np or ''}".strip() for c, t, ti, ii, np in _dims(h))


def server_checks(server: dict, db: str, staging_exists: bool, tuning_left: bool, ts_expected: bool, jobs_expected: int) -> list[Check]:
    checks = [Check("postgresql up", True, server.get("version", ""), "answers queries")]
    spl = server.get("shared_preload_libraries", "")
    checks.append(Check("timescaledb in shared_preload_libraries", "timescaledb" in spl, spl, "contains timescaledb"))
    names = {d["name"]: d for d in server.get("databases") or []}
    checks.append(Check(f"database {db} exists", db in names, "present" if db in names else "missing", "present"))
    if db in names:
        checks.append(Check(f"database {db} is not a staging leftover", parse_marker(names[db].get("comment")) is None,
                            names[db].get("comment") or "no marker", "no trackerdb staging marker"))
    checks.append(Check("timescaledb restore mode off", not server.get("restoring"),
                        ", ".join(server.get("restoring") or []) or "off", "off (timescaledb_post_restore ran)"))
    checks.append(Check("no staging database left", not staging_exists, "present" if staging_exists else "none", "none"))
    checks.append(Check("restore-time settings removed", not tuning_left, "present" if tuning_left else "none", "none"))
    if ts_expected:
        n = int(server.get("schedulers") or 0)
        checks.append(Check("timescale job scheduler running", n >= 1 or jobs_expected == 0, f"{n} scheduler(s)",
                            ">= 1" if jobs_expected else ">= 0 (no jobs)"))
    return checks


# ---- executor -------------------------------------------------------------------------------

def run_verify(settings: Settings, manifest: dict | None = None, against_source: bool = False, expect_backrest: bool = True,
               app_login: bool = True, probes: bool = True, session=None, content_reuse: dict | None = None) -> list:
    """All checks against the target. Expected facts: the manifest, or live from the source.
    ``session``: the task's (its connections and secrets); a new one otherwise. ``content_reuse``: the
    pre-copy path's last delta prints (``content.reuse_prints``)."""
    db = settings.database
    checks: list[Check] = []
    sess, owned = scoped(settings, session)
    t = sess.remote("target")
    try:
        psql = Psql.target(t, settings)
        try:
            server = psql.json(server_sql(db))
        except OpsError as exc:
            return [Check("postgresql up", False, exc.one_line()[:200], "answers queries")]
        observed = mf.collect_facts(psql, db) if any(d["name"] == db for d in server.get("databases") or []) else None
        expected = None
        label = "manifest"
        if against_source:
            expected = mf.collect_facts(sess.psql("source"), db)
            label = "live source"
        elif manifest is not None:
            expected = mf.validate_manifest(manifest)["facts"]
        staging_exists = any(d["name"] == staging_name(db) for d in server.get("databases") or [])
        tuning_left = t.exists(tuning_path(settings.postgres_major))
        jobs_expected = len((expected or {}).get("jobs") or [])
        checks += server_checks(server, db, staging_exists, tuning_left, True, jobs_expected)
        if observed is None:
            return checks
        want_ts = mf.extension_version(expected, "timescaledb") if expected else settings.timescaledb_version
        want_gis = mf.extension_version(expected, "postgis") if expected else settings.postgis_version
        if expected is None:
            for ext, want in (("timescaledb", want_ts), ("postgis", want_gis)):
                have = mf.extension_version(observed, ext)
                checks.append(Check(f"extension {ext} version", have == want, _fmt(have), _fmt(want), "settings"))
            checks.append(Check("manifest comparison", False, "no manifest given", "--manifest or --against-source"))
        else:
            _align_cagg_content(psql, db, expected, observed)
            checks += compare_facts(expected, observed, label, settings.owner_map)
            dumped = None if against_source else (manifest or {}).get(dd.SECTION)
            if dumped:  # digests taken in the dump's snapshot, compared with the target's
                checks += dd.manifest_content_checks(settings, sess, dumped)
            else:  # the frozen source: both hosts digested; a manifest without digests or a live source: a note
                checks += content_checks(settings, sess, expected, against_source, content_reuse)
        if app_login:
            checks.append(app_login_check(settings, expected or observed, sess))
        if probes:
            # after the comparison; the probes write nothing that outlives them (caggs: read-only checks)
            from .probes import run_probes

            checks += run_probes(psql, db, observed, expected, label)
        checks.append(wal_archiving_check(settings, expect_backrest, sess, catch_up_s=ARCHIVE_CATCH_UP_S))
    finally:
        if owned:
            sess.close()
    return checks


def _align_cagg_content(psql, db: str, expected: dict, observed: dict) -> None:
    """Compare a continuous aggregate's content up to the source's watermark: a refresh on the target
    (a policy run after the restore) legitimately materializes newer buckets."""
    want = {f"{c['schema']}.{c['name']}": c for c in expected.get("continuous_aggregates") or []}
    for c in observed.get("continuous_aggregates") or []:
        w = want.get(f"{c['schema']}.{c['name']}")
        if not w or w.get("watermark") is None or c.get("watermark") is None or w["watermark"] == c["watermark"]:
            continue
        if c["watermark"] > w["watermark"] and c.get("time_column"):
            got = psql.json(mf.cagg_content_sql(c["schema"], c["name"], c["time_column"], w["watermark"]), db) or {}
            c.update(rows=got.get("rows"), digest=got.get("digest"), content_cutoff=w["watermark"])


def probe_table(facts: dict, writable: list[dict] | None = None) -> tuple[str, str] | None:
    """The table the login probe writes to: the biggest hypertable with rows the application role may
    write (``writable``: ``app_probe.WRITABLE_SQL``'s answer on the target), else the biggest such table."""
    return app_probe.choose(facts, writable)


def app_login_check(settings: Settings, facts: dict, session=None) -> Check:
    """The application role logs in over the network (TCP, its password, TLS) and writes a row, rolled back,
    only where the target says that role may (``app_probe``: INSERT on the table, else a temporary table).

    TLS is demanded from both ends: libpq refuses a server without it (``require``/``verify-full``,
    never ``prefer``), and the server must report our own session as TLS in ``pg_stat_ssl``.
    """
    import psycopg

    from .. import tls
    from ..secrets import fetch_secret, mask

    name = f"{settings.owner_role} logs in over the network and writes"
    try:
        secret = session.secret(settings.app_secret_name) if session else fetch_secret(settings, settings.app_secret_name)
    except OpsError as exc:
        return Check(name, False, exc.one_line(), "login + write")
    host = settings.target.address
    try:
        client_tls = tls.client_kwargs(settings)
    except OpsError as exc:
        return Check(name, False, exc.one_line(), "login + write")
    try:
        with psycopg.connect(host=host, port=settings.pg_port, dbname=settings.database, user=settings.owner_role,
                             password=secret.reveal(), connect_timeout=10, application_name="trackerdb-verify",
                             **client_tls) as conn:
            try:
                session = tls.session_tls(conn)
            except OpsError as exc:
                return Check(name, False, exc.one_line(), "login + write over TLS")
            with conn.cursor() as cur:
                evidence = app_probe.write_probe(cur, facts, settings.owner_role)
            conn.rollback()  # the probe row never persists
        return Check(name, True, f"{host}:{settings.pg_port} ({session}, sslmode={client_tls['sslmode']}); {evidence}",
                     "login + write over TLS")
    except psycopg.Error as exc:
        msg = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__, secret)
        return Check(name, False, msg[:200], "login + write")


def wal_archiving_check(settings: Settings, expect_backrest: bool, session=None, catch_up_s: float = 0.0, every_s: float = 5.0,
                        sleep=time.sleep, clock=time.monotonic) -> Check:
    """pgBackRest's checks on the target, as one. With ``catch_up_s``: when the only failures are
    segments not archived yet (a big copy or a VACUUM after it left archiving behind), poll until they
    are, for at most that long; a failing archiver, a foreign stanza or dropped WAL fail at once."""
    try:
        from ..backrest import ops as backrest_ops  # built by the pgBackRest area; optional here
        from ..backrest.checks import LAG_CHECK
    except ImportError:
        return Check("WAL archiving healthy (pgBackRest)", not expect_backrest, "not configured",
                     "backrest check passes" if expect_backrest else "skipped")
    if not expect_backrest:
        return Check("WAL archiving healthy (pgBackRest)", True, "skipped (--no-backrest)", "skipped")
    t0 = clock()
    while True:
        try:
            sub = backrest_ops.check(settings, session=session)
        except OpsError as exc:
            return Check("WAL archiving healthy (pgBackRest)", False, exc.one_line()[:200], "backrest check passes")
        bad = [c for c in sub if not c.ok]
        waited = clock() - t0
        if not bad or not all(c.name.endswith(" " + LAG_CHECK) for c in bad) or waited + every_s > catch_up_s:
            break
        sleep(every_s)
    caught_up = f" (archiving caught up after {waited:.0f}s)" if waited >= every_s and not bad else ""
    return Check("WAL archiving healthy (pgBackRest)", not bad,
                 ("; ".join(f"{c.name}: {c.observed}" for c in bad)[:300] or f"{len(sub)} backrest checks ok{caught_up}")
                 + (f" (still behind after {waited:.0f}s)" if bad and waited >= every_s else ""),
                 "backrest check passes" + (f" (segments archived within {catch_up_s:.0f}s)" if catch_up_s else ""))
