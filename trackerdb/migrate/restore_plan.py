"""Restore's plan and preflight: names, restore-time tuning, the checks a restore refuses on, and the
read-only preflights the cutover runs before it freezes the source. Builders are pure; the two
``preflight_*`` functions read the target and change nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from .. import compat
from ..errors import OpsError, PreflightError
from ..psql import Psql
from ..session import connection, target_cluster
from . import kept_aside as ka
from . import manifest as mf
from . import sqltext as sq
from . import toc

if TYPE_CHECKING:
    from ..settings import Settings

MARKER = "trackerdb:restore-staging"
TUNING_NAME = "90-trackerdb-restore.conf"


def staging_name(db: str) -> str:
    return f"{db}_restore_staging"


def replaced_name(db: str, when: datetime) -> str:
    return f"{db}_replaced_{when.strftime('%Y%m%d%H%M%S')}"


def marker_comment(sha256: str, state: str) -> str:
    return f"{MARKER} sha256={sha256} state={state}"


def parse_marker(comment: str | None) -> dict | None:
    """Our staging marker -> {sha256, state}; anything else (not ours) -> None."""
    if not comment or not comment.startswith(MARKER + " "):
        return None
    return dict(kv.split("=", 1) for kv in comment[len(MARKER) + 1:].split() if "=" in kv)


def upload_path(data_mount: str, db: str, sha256: str) -> str:
    # Named by content: a partial file is always a prefix of this very dump, so resuming is safe.
    return f"{upload_dir(data_mount)}/{db}-{sha256[:16]}.dump"


PHASES = ("schema", "catalog", "data")


def list_path(remote_dump: str, phase: str) -> str:
    return f"{remote_dump}.{phase}.list"


def upload_dir(data_mount: str) -> str:
    return f"{data_mount.rstrip('/')}/trackerdb-restore"


def tuning_path(postgres_major: int) -> str:
    return f"/etc/postgresql/{postgres_major}/main/conf.d/{TUNING_NAME}"


def restore_wal_mb(volume_gb: int) -> int:
    """max_wal_size during the restore: a tenth of the data volume, 1-8 GB (it is also reserved as free space)."""
    return max(1024, min(8192, volume_gb * 1024 // 10))


def restore_tuning(mem_bytes: int, volume_gb: int = 50) -> dict[str, str]:
    """Settings that speed a bulk load up and are safe *for the load only* (all reloadable).

    synchronous_commit=off and autovacuum=off are fine because a failed restore is redone from the
    dump anyway and we ANALYZE at the end; bigger max_wal_size/checkpoint_timeout mean fewer
    checkpoints (and full-page images) during COPY and index builds.
    """
    mem_mb = mem_bytes // (1 << 20)
    return {
        "maintenance_work_mem": f"{max(256, min(2048, mem_mb // 4))}MB",
        "max_wal_size": f"{restore_wal_mb(volume_gb)}MB",
        "checkpoint_timeout": "30min",
        "synchronous_commit": "off",
        "autovacuum": "off",
    }


def tuning_text(values: dict[str, str]) -> str:
    return ("# trackerdb restore: temporary, removed when the restore ends (if you find this file, no restore is\n"
            "# running: delete it and `SELECT pg_reload_conf()`).\n"
            + "".join(f"{k} = '{v}'\n" for k, v in values.items()))


def create_db_sql(name: str, facts_db: dict, owner_exists: bool) -> str:
    owner = f" OWNER {sq.ident(facts_db['owner'])}" if owner_exists and facts_db.get("owner") else ""
    return (f"CREATE DATABASE {sq.ident(name)}{owner} TEMPLATE template0 ENCODING "
            f"{sq.literal(facts_db.get('encoding', 'UTF8'))} "
            f"LC_COLLATE {sq.literal(facts_db['collate'])} LC_CTYPE {sq.literal(facts_db['ctype'])};")


TARGET_FACTS_SQL = """SELECT json_build_object(
  'server_version_num', current_setting('server_version_num')::int,
  'shared_preload_libraries', current_setting('shared_preload_libraries'),
  'timescaledb_default', (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
  'postgis_available', (SELECT coalesce(json_agg(version), '[]'::json) FROM pg_available_extension_versions
                        WHERE name = 'postgis'),
  'databases', (SELECT coalesce(json_agg(json_build_object('name', d.datname,
      'comment', shobj_description(d.oid, 'pg_database'),
      'size', pg_database_size(d.oid),
      'sessions', (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.backend_type = 'client backend'
                   AND a.pid <> pg_backend_pid()))), '[]'::json) FROM pg_database d),
  'roles', (SELECT json_agg(rolname) FROM pg_roles),
  'collations', (SELECT json_agg(DISTINCT collcollate) FROM pg_collation WHERE collcollate IS NOT NULL),
  'template0_collate', (SELECT datcollate FROM pg_database WHERE datname = 'template0')
);"""


def check_versions(manifest: dict, target: dict) -> None:
    check_target_versions(manifest["versions"], target)


def check_target_versions(versions: dict, target: dict) -> None:
    """No known-broken engine on either host (``compat``), TimescaleDB exactly the source's, PostgreSQL the
    same major or newer, timescaledb preloaded, the source's PostGIS installable."""
    want = versions.get("timescaledb")
    have = target.get("timescaledb_default")
    if target.get("server_version_num") and have:
        compat.check("target", compat.pg_version_from_num(target["server_version_num"]), have)
    if versions.get("postgresql") and want:
        compat.check("source", versions["postgresql"], want)
    if want and have != want:
        raise PreflightError(
            f"TimescaleDB on the target is {have or 'not installed'}, the dump is from {want}",
            hint=f"install exactly TimescaleDB {want} on the target (set timescaledb_version={want} and re-run "
                 f"`invoke provision`; Timescale's apt: timescaledb-2-postgresql-<major>={want}~… held), "
                 "or dump from a source running the target's version")
    src_major = versions["postgresql_major"]
    tgt_major = int(target["server_version_num"]) // 10000
    if tgt_major < src_major:
        raise PreflightError(f"the target runs PostgreSQL {tgt_major}, older than the dump's source ({src_major})",
                             hint="restore into the same or a newer PostgreSQL major")
    if want and "timescaledb" not in target.get("shared_preload_libraries", ""):
        raise PreflightError("timescaledb is not in the target's shared_preload_libraries",
                             hint="run `invoke provision` (it configures and restarts PostgreSQL)")
    gis = versions.get("postgis")
    if gis and gis not in (target.get("postgis_available") or []):
        raise PreflightError(f"PostGIS {gis} is not installable on the target",
                             hint=f"install PostGIS {gis} for PostgreSQL {tgt_major} (`invoke provision`)")


def check_locale(manifest: dict, target: dict) -> None:
    check_target_locale(manifest["facts"]["database"], target)


def check_target_locale(db: dict, target: dict) -> None:
    """The source database's collation and ctype exist on the target."""
    norm = lambda s: (s or "").lower().replace("-", "")  # noqa: E731  (C.UTF-8 == C.utf8)
    known = {norm(c) for c in (target.get("collations") or [])} | {norm(target.get("template0_collate")), "c", "posix"}
    for key in ("collate", "ctype"):
        if norm(db.get(key)) not in known:
            raise PreflightError(f"locale {db.get(key)!r} of the source database is not available on the target",
                                 hint="generate it on the target (locales package) so text sorts the same way")


def check_databases(target: dict, db: str, replace: bool) -> dict:
    """Existing tracker / staging databases -> what to do. Raises when it must not go on."""
    dbs = {d["name"]: d for d in target.get("databases") or []}
    staging = staging_name(db)
    plan: dict = {"tracker_exists": db in dbs, "staging": None}
    if db in dbs:
        if not replace:
            raise PreflightError(f"database {db!r} already exists on the target",
                                 hint="pass --replace to keep it renamed as tracker_replaced_<time> and restore a "
                                      "new one")
        if dbs[db]["sessions"]:
            raise PreflightError(f"database {db!r} has {dbs[db]['sessions']} client session(s)",
                                 hint="stop the application (and other clients) first; sessions are never terminated "
                                      "for you")
    if staging in dbs:
        marker = parse_marker(dbs[staging].get("comment"))
        if marker is None:
            raise PreflightError(f"database {staging!r} exists and is not marked as ours",
                                 hint="someone else created it: rename or remove it yourself")
        plan["staging"] = marker
    return plan


def reclaimable_bytes(target: dict, db: str) -> int:
    """Space held by our own leftover staging database: a re-run rebuilds it (or finishes it), so it
    counts as free for the space check (a killed run's partial staging must not block its re-run)."""
    staging = next((d for d in target.get("databases") or [] if d["name"] == staging_name(db)), None)
    if staging is None or parse_marker(staging.get("comment")) is None:
        return 0
    return int(staging.get("size") or 0)


def check_space(manifest: dict, avail: int, uploaded: int, volume_gb: int = 50, reclaim: int = 0, report=None) -> int:
    return check_free_space(manifest["facts"]["database"]["size_bytes"], manifest["dump"]["size_bytes"], avail,
                            uploaded,
                            volume_gb, reclaim, report)


def check_free_space(db_bytes: int, dump_bytes: int, avail: int, uploaded: int, volume_gb: int = 50, reclaim: int = 0,
                     report=None) -> int:
    """``report()``: what holds space on the target, one line each with the command that releases it
    (``kept_aside.space_report``); read only when the space is short, and named in the refusal's hint."""
    need = toc.space_needed(db_bytes, dump_bytes, uploaded, restore_wal_mb(volume_gb) << 20)
    if avail + reclaim < need:
        extra = f" (+{toc.human_bytes(reclaim)} held by our unfinished staging database)" if reclaim else ""
        raise PreflightError(
            f"the data volume has {toc.human_bytes(avail)} free{extra}, "
            f"the restore needs about {toc.human_bytes(need)}",
            hint=ka.holders_hint(report() if report else []))
    return need


def space_report(settings: Settings, psql: Psql):
    """The target's space holders for :func:`check_free_space` (``kept_aside.space_report``)."""
    return lambda: ka.space_report(settings, psql)


def preflight_target(settings: Settings, session=None) -> dict:
    """The refusals that need no dump (used by the cutover before it freezes the source): the target
    answers, TimescaleDB there is the configured version, no foreign staging database is in the way."""
    with connection(settings, session) as (_, t):
        tf = target_cluster(t, settings).json(TARGET_FACTS_SQL)
    want = settings.timescaledb_version
    if tf.get("timescaledb_default") != want:
        raise PreflightError(f"TimescaleDB on the target is {tf.get('timescaledb_default') or 'not installed'}, "
                             f"expected {want}",
                             hint="run `invoke provision` (it installs the pinned version)")
    dbs = {d["name"]: d for d in tf.get("databases") or []}
    staging = staging_name(settings.database)
    if staging in dbs and parse_marker(dbs[staging].get("comment")) is None:
        raise PreflightError(f"database {staging!r} exists and is not marked as ours",
                             hint="rename or remove it yourself")
    return {"timescaledb": want, "tracker_exists": settings.database in dbs}


def preflight_from_source(settings: Settings, source_facts: dict, session=None, replace: bool = True) -> dict:
    """What a restore of a dump of ``source_facts`` (the live source's, as ``manifest.collect_facts``
    reads them) would refuse, before the dump exists: TimescaleDB/PostGIS/PostgreSQL versions,
    locale, the target's databases, free space (the dump taken as half the database: custom format
    compresses). Read-only. Returns ``{"problems": [one line each], ...facts}``."""
    versions = {"timescaledb": mf.extension_version(source_facts, "timescaledb"),
                "postgis": mf.extension_version(source_facts, "postgis"),
                "postgresql_major": mf.server_major(source_facts), "postgresql": source_facts.get("server_version")}
    db_bytes = source_facts["database"]["size_bytes"]
    problems, plan = [], {}
    with connection(settings, session) as (_, t):
        psql = target_cluster(t, settings)
        try:
            tf = psql.json(TARGET_FACTS_SQL)
        except OpsError as exc:
            raise PreflightError(f"PostgreSQL on the target does not answer: {exc.message}",
                                 hint="run `invoke provision` (nothing was changed)") from None
        avail = toc.parse_df_avail(t.run(["df", "-B1", "--output=avail", settings.data_mount]).stdout)
        for check in (lambda: check_target_versions(versions, tf),
                      lambda: check_target_locale(source_facts["database"], tf),
                      lambda: plan.update(check_databases(tf, settings.database, replace=replace)),
                      lambda: check_free_space(db_bytes, db_bytes // 2, avail, 0, settings.data_volume_size_gb,
                                               reclaimable_bytes(tf, settings.database), space_report(settings, psql))):
            try:
                check()
            except OpsError as exc:
                problems.append(exc.one_line())
    return {"problems": problems, "timescaledb": versions["timescaledb"], "target_free_bytes": avail,
            "target_has_tracker": plan.get("tracker_exists")}
