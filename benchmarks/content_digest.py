"""What verify's content comparison costs (issue 25), measured side by side in one run, projected to 11 GiB.

    TRACKERDB_ENV=lab TRACKERDB_LAB=<name> .venv/bin/python benchmarks/content_digest.py [--prepare /var/tmp/digest]

Needs a lab whose target is provisioned and holds a restore of the source's tracker (``--prepare DIR`` makes
one: `invoke dump` into DIR and `invoke restore` of it). Reads only; nothing is written on either host.
On the same items (every regular table and every hypertable chunk range, ``migrate/content.py``):

- **counts**: ``count(*)`` of every item on both hosts in parallel (what verify compared before);
- **digests, both hosts**: rows + digest of every item, source and target at once (verify's content step
  against the frozen source: ``content.digests``, the code verify runs);
- **the delta's prints** (``delta.fingerprint_all``, both hosts, two sessions each): what the pre-copy path
  reads before the outage (not timed against the window, shown for scale);
- **digests reusing the delta's prints, nothing written since** (the cutover's verify on the pre-copy path):
  the tuple versions of every item on both hosts, no item digested;
- **digest, source alone**: the same on the source only, one session (what the dump's digests would add if
  they ran serially; ``invoke dump`` runs them alongside ``pg_dump``, see ``--dumps``);
- **pg_dump**: ``pg_dump -Fc`` with the dump's ``--compress`` (``dump_compress``: lz4 in production, gzip in
  the lab) of the database to /dev/null on the source (the dump's own work);
- **``invoke dump`` without / with digests** (``--dumps``): the whole dump (facts, pg_dump, fetch, manifest) with
  ``digests=False`` (the cutover's own dump), with the digests in a session of their own on the dump's snapshot
  *alongside* pg_dump (what ``invoke dump`` does), and with them *before* pg_dump (what they would add serially);
  each with the dump script's own timings of pg_dump and of the digest session.

Prints each time, its ratio to pg_dump's, and a linear projection to 11 GiB (time x 11 GiB / database
size): an upper bound for the fixed parts (catalog reads), a plain scale-up for the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trackerdb.cutover import delta as dl  # noqa: E402
from trackerdb.migrate import delta_sql as dq  # noqa: E402
from trackerdb.migrate import content as ct  # noqa: E402
from trackerdb.psql import Psql  # noqa: E402
from trackerdb.session import Session  # noqa: E402
from trackerdb.settings import Settings  # noqa: E402
from trackerdb.sql import literal  # noqa: E402

PRODUCTION_GIB = 11.0


def count_script(keys: list[str], items: dict) -> str:
    """``count(*)`` of each item, read the way the digests read it (a chunk through its hypertable)."""
    lines = []
    for k in keys:
        it = items[k]
        frm = f"{it.ht_rel} t WHERE {dq.range_where(it)}" if it.kind == "chunk" else f"ONLY {it.rel} t"
        lines.append(dq._line(k, "count(*)", "''", frm))
    return dq.script([ct.SESSION_SQL] + lines)


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, round(time.monotonic() - t0, 2)


def prepare(settings, where: str) -> None:
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    art, s = timed(lambda: run_dump(settings, where))
    _, r = timed(lambda: restore(settings, LocalDump(Path(art.dump_path)), art.manifest_path,
                                 RestoreOptions(replace=True)))
    print(f"prepared: dump {s}s, restore {r}s", file=sys.stderr)


def time_dumps(settings, where: str) -> dict:
    """``invoke dump`` three ways, in this order each time: no digests, digests alongside pg_dump, digests before it.
    Each: wall time, and the dump script's own pg_dump / digest-session times (``dump_digests.timings``)."""
    import shutil

    from trackerdb.migrate.dump import run_dump

    out = {}
    for name, kw in (("no digests (the cutover's dump)", {"digests": False}),
                     ("digests alongside pg_dump (invoke dump)", {"digests": True, "overlap": True}),
                     ("digests before pg_dump (serial)", {"digests": True, "overlap": False})):
        d = Path(where) / "bench-dump"
        art, wall = timed(lambda: run_dump(settings, str(d), **kw))
        sec = art.manifest.get("content") or {}
        out[name] = {"wall_s": wall, **(art.manifest["dump"].get("timings") or {}), "items": len(sec.get("prints") or {}),
                     "not_digested": len(sec.get("not_digested") or {})}
        shutil.rmtree(d, ignore_errors=True)
    base = out["no digests (the cutover's dump)"]["wall_s"]
    for v in out.values():
        v["ratio_to_no_digests"] = round(v["wall_s"] / base, 2) if base else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", metavar="DIR", help="dump the source into DIR and restore it on the target first")
    ap.add_argument("--dumps", metavar="DIR", help="also time `invoke dump` without digests, with them alongside pg_dump "
                                                   "and with them before pg_dump (dumps written into DIR, removed after)")
    ap.add_argument("--dumps-only", action="store_true", help="with --dumps: only the three dumps")
    args = ap.parse_args(argv)
    import yaml

    cfg = (yaml.safe_load((Path(__file__).resolve().parents[1] / "invoke.yaml").read_text()) or {}).get("trackerdb", {})
    settings = Settings.load(cfg)
    if args.prepare:
        prepare(settings, args.prepare)
    dumps = time_dumps(settings, args.dumps) if args.dumps else None
    if dumps is not None and args.dumps_only:
        print(json.dumps(dumps, indent=2))
        return 0
    db = settings.database
    with Session(settings) as sess:
        hosts = ct.Hosts(settings, sess)
        db_bytes = int(sess.psql("source").value(f"SELECT pg_database_size({literal(db)});"))
        got, digests_s = timed(lambda: ct.digests(settings, sess))
        keys, si, ti = got["plan"]["read"], got["source"], got["target"]
        _, counts_s = timed(lambda: hosts.run([("source", count_script(keys, si), False), ("target", count_script(keys, ti), False)]))
        kept, prints_s = timed(lambda: dl.fingerprint_all(SimpleNamespace(settings=settings, session=sess)))
        again, reuse_s = timed(lambda: ct.digests(settings, sess, reuse=kept))
        alone, alone_s = timed(lambda: hosts.run([("source", ct.digest_script(keys, si, got["plan"]["columns"]), False)]))
        assert dq.parse_prints(alone[0]) == got["prints"]["source"], "the source's digests are not stable between two reads"
        src = sess.remote("source")
        pg_bin = f"/usr/lib/postgresql/{int(sess.psql('source').value('SHOW server_version_num;')) // 10000}/bin"
        dump, dump_s = timed(lambda: src.run(f"{pg_bin}/pg_dump -Fc --compress={settings.dump_compress} -p {int(settings.source_port)} -d {db} > /dev/null",
                                             user="postgres", check=False))
        if not dump.ok:
            raise SystemExit(f"pg_dump failed: {dump.stderr.strip()[-300:]}")
    checks = ct.compare(si, ti, got["plan"], got["prints"]["source"], got["prints"]["target"], "benchmark")
    ratio = PRODUCTION_GIB * 1024**3 / db_bytes
    times = {"counts (both hosts, parallel)": counts_s, "digests (both hosts, parallel)": digests_s,
             "the delta's prints (both hosts, before the outage)": prints_s,
             "digests reusing the delta's prints (versions only)": reuse_s,
             "digest (source alone, as in the dump's snapshot)": alone_s, f"pg_dump -Fc {settings.dump_compress} (source)": dump_s}
    result = {"database_bytes": db_bytes, "items": len(keys), "reused": again["reused"], "rows": sum(p["n"] for p in got["prints"]["source"].values()),
              "equal": all(c.ok for c in checks),
              "equal_reusing": all(c.ok for c in ct.compare(si, ti, again["plan"], again["prints"]["source"], again["prints"]["target"], "")),
              "timings_s": times, "digest_parts_s": got["timings"],
              "ratio_to_pg_dump": {k: round(v / dump_s, 2) if dump_s else None for k, v in times.items()},
              "projection_11_gib_s": {k: round(v * ratio, 1) for k, v in times.items()}, "scale_factor": round(ratio, 1),
              "dumps": dumps}
    print(json.dumps(result, indent=2))
    print(f"{db_bytes / 1048576:.0f} MiB, {len(keys)} tables/chunk ranges: " + "; ".join(
        f"{k} {v}s ({result['ratio_to_pg_dump'][k]}x pg_dump) -> {result['projection_11_gib_s'][k]}s at {PRODUCTION_GIB:.0f} GiB"
        for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
