"""The rehearsal's calibration: the cutover's data phases measured again on a copy of another size.

One cutover at one size cannot split a data phase into a fixed cost and a per-byte cost. So the
rehearsal generates a second tracker database on the source, ``tracker_calib``, shaped like the
real one (hypertables with compressed chunks, PostGIS, continuous aggregates, indexes, privileges)
at a different scale (``prepare``: in a thread while provisioning works on the target, joined before
the cutover starts), and after the cutover (off its window, the writer stopped) runs the same
production code on it that the cutover's data phases run (``calibrate``): the detached dump and its
fetch, the restore (staging database renamed into place), and verify against the manifest and live
against the source. Each phase's wall time is one more point for ``trackerdb.rehearse.fit``.

Lab only: it refuses Settings that are not the lab's. It drops nothing: ``tracker_calib`` stays on
both hosts (the lab goes down after the rehearsal); a lab that already holds the calibration copy
at the same scale (a reused lab) measures that copy again instead of generating it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from lab import changes, dataset
from lab import tsdb
from trackerdb.errors import OpsError
from trackerdb.session import cluster, connect, source_cluster

if TYPE_CHECKING:
    from trackerdb.settings import Settings

if TYPE_CHECKING:
    from trackerdb.settings import Settings

CALIB_DB = "tracker_calib"
#: ~320 MiB with the Timescale-licensed dataset (15x the default rehearsal's 22 MiB, a 35th of
#: production): far enough from the run's own size that the per-byte cost stands out of the timing
#: noise (a 96 MiB copy left a +-72 % uncertainty, this one +-10 %); measured in ~77 s on 2 loaded cores.
DEFAULT_SCALE = 100.0


def _exists(src, port: int) -> bool:
    return cluster(src, port).value(f"SELECT count(*) FROM pg_database WHERE datname = '{CALIB_DB}';") != "0"


def prepare(settings: Settings, scale: float = DEFAULT_SCALE, say=None) -> dict:
    """Generate ``tracker_calib`` on the source (or find it, at this scale, from an earlier run)."""
    say = say or (lambda m: None)
    if not settings.is_lab:
        raise OpsError("the calibration copy is generated on the lab's source only", hint="set TRACKERDB_ENV=lab")
    with connect(settings.require_source()) as src:
        started = time.time()
        if _exists(src, settings.source_port):
            have = dataset.facts(src, settings.source_port, CALIB_DB)
            if have["rows"] != dataset.expected_counts(scale):
                raise OpsError(
                    f"{CALIB_DB} on the source holds another calibration scale ({sum(have['rows'].values())} rows)",
                    hint=f"rehearse with the scale it was made with, or drop {CALIB_DB} on the lab's source yourself",
                )
            say(f"calibration: reusing {CALIB_DB} on the source (scale {scale:g})")
        else:
            say(f"calibration: generating {CALIB_DB} on the source (scale {scale:g}), while the target is prepared")
            dataset.run(src, scale, port=settings.source_port, database=CALIB_DB, timescaledb_version=tsdb.VERSION)
        return {"scale": scale, "generated_s": round(time.time() - started, 2),
                "db_bytes": int(dataset.facts(src, settings.source_port, CALIB_DB)["bytes"])}


class Background:
    """``prepare`` in a thread: the copy is generated on the source while provisioning works on the
    target, and joined before the cutover starts (so it never competes with the measured window)."""

    def __init__(self, fn, *args, **kw):
        import threading

        self.result, self.error = None, None

        def run():
            try:
                self.result = fn(*args, **kw)
            except BaseException as exc:  # noqa: BLE001 - handed to join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="calibration-prepare", daemon=True)
        self.thread.start()

    def join(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


def calibrate(settings: Settings, run_dir: Path, prepared: dict, say=None) -> dict:
    """Time dump, restore and verify of the prepared copy, as the cutover's phases run them:
    ``{"db_bytes", "scale", "generated_s", "phases": {"dump": s, "restore": s, "verify": s}, "rows"}``."""
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.dump_job import run_dump_detached
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
    from trackerdb.migrate.verify import run_verify
    from trackerdb.rehearse.ops import table_counts

    say = say or (lambda m: None)
    cs = dataclasses.replace(settings, database=CALIB_DB)
    out_dir = Path(run_dir) / "calibration"
    db_bytes = prepared["db_bytes"]
    phases: dict[str, float] = {}

    t = time.time()
    say(f"calibration: dump of {CALIB_DB} ({db_bytes >> 20} MiB), as the cutover's dump phase does it")
    art = run_dump_detached(cs, str(out_dir), f"calib-{uuid.uuid4().hex[:12]}", say=say)
    if art is None:
        art = run_dump(cs, str(out_dir), digests=False)  # as the cutover's dump: its verify digests the frozen source
    phases["dump"] = time.time() - t

    t = time.time()
    say(f"calibration: restore of {CALIB_DB} on the target")
    restore(cs, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
    phases["restore"] = time.time() - t

    t = time.time()
    say(f"calibration: verify {CALIB_DB} against its manifest and the source")
    failed = []
    # the application's login check is left out: pg_hba lets the application into tracker only
    for kwargs in ({"manifest": art.manifest}, {"against_source": True}):
        failed += [
            f"{c.name}: {c.observed} != {c.expected}" for c in run_verify(cs, app_login=False, **kwargs) if not c.ok
        ]
    # the rehearsal's verify phase also counts the rows on both hosts
    with connect(settings.require_source()) as s_host, connect(settings.target) as t_host:
        counts = {"source": table_counts(cluster(s_host, settings.source_port), CALIB_DB, dataset.TABLES),
                  "target": table_counts(cluster(t_host, settings.pg_port), CALIB_DB, dataset.TABLES)}
    phases["verify"] = time.time() - t
    if failed or counts["source"] != counts["target"]:
        raise OpsError(f"calibration copy {CALIB_DB} did not verify: {'; '.join(failed[:3]) or 'row counts differ'}",
                       hint="the measurement is void; the cutover itself was judged on its own")
    return {"database": CALIB_DB, "scale": prepared["scale"], "db_bytes": int(db_bytes),
            "dump_bytes": art.manifest["dump"]["size_bytes"], "generated_s": prepared["generated_s"],
            "phases": {k: round(v, 3) for k, v in phases.items()}, "rows": sum(counts["source"].values())}


#: rows the live writer adds between the pre-copy's last round (1a) and the freeze, at its ~20 rows/s
WRITER_ROWS = 400


def calibrate_window(settings: Settings, run_dir: Path, say=None) -> dict:
    """The pre-copy window's data phases on the restored calibration copy, as the window runs them: a day
    of new data on the source, 1a's round (``prepare``: fingerprint both hosts, copy what differs), the
    writer's rows since, the freeze, 2b (``delta``: only what changed since 1a, by tuple versions) and
    verify against the frozen copy (reusing 2b's prints). The copy is frozen only for 2b and verify and
    made writable again. ``{"phases": {"prepare", "delta", "verify"}, "rows_today", "bytes_copied"}``."""
    from trackerdb.cutover import delta as dl
    from trackerdb.cutover import freeze as fz
    from trackerdb.cutover.journal import Journal
    from trackerdb.cutover.phases import Ctx
    from trackerdb.migrate.verify import run_verify
    from lab.client import app_psql

    say = say or (lambda m: None)
    cs = dataclasses.replace(settings, database=CALIB_DB)
    out_dir = Path(run_dir) / "calibration"
    out_dir.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}
    ctx = Ctx(cs, Journal(out_dir / "window.jsonl"), out_dir / "window-dump", progress=say)
    with connect(settings.require_source()) as src:
        psql = app_psql(src, settings.source_port)  # the application's SQL: PostGIS types by name
        say(f"calibration: a day of new data on {CALIB_DB}, then the pre-copy window's data phases")
        psql.run(changes.day_sql(changes.WRITER_DEVICE), CALIB_DB, timeout=3600)
        try:
            t = time.time()
            keep: dict = {}
            dl.run_delta(ctx, converge=False, keep=keep)
            phases["prepare"] = time.time() - t
            psql.run(_writer_rows_sql(WRITER_ROWS), CALIB_DB)
            prior = fz.freeze(source_cluster(src, settings), CALIB_DB, grace_s=5).get("prior_read_only")
            try:
                t = time.time()
                facts = dl.run_delta_kept(ctx, cached=keep)
                phases["delta"] = time.time() - t
                t = time.time()
                checks = run_verify(cs, against_source=True, app_login=False, session=ctx.session,
                                    content_reuse=dl.kept_prints(facts))
                phases["verify"] = time.time() - t
            finally:
                fz.unfreeze(source_cluster(src, settings), CALIB_DB, prior=prior)
        finally:
            ctx.close()
    failed = [f"{c.name}: {c.observed}" for c in checks if not c.ok]
    if failed:
        raise OpsError(f"calibration window on {CALIB_DB} did not verify: {'; '.join(failed[:3])}",
                       hint="the measurement is void; the cutover itself was judged on its own")
    return {"phases": {k: round(v, 3) for k, v in phases.items()}, "bytes_copied": facts.get("bytes_copied"),
            "rounds": facts.get("rounds")}


def _writer_rows_sql(n: int) -> str:
    """``n`` rows of the writer's device in today's chunk, as the live writer adds them (one per instant)."""
    return f"""INSERT INTO tracker.location_reports (device_id, reported_at, received_at, geog, speed_kmh, heading,
        battery_pct, satellites, ignition)
SELECT {changes.WRITER_DEVICE}, date_trunc('day', now()) + g * interval '1 millisecond' + interval '1 microsecond' *
    (extract(epoch FROM now())::bigint % 1000),
       now(), ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326)::geography, 10, 90, 50, 7, true
FROM generate_series(1, {int(n)}) g ON CONFLICT DO NOTHING;"""

