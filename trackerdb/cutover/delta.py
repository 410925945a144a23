"""The pre-copy path in the window: move only what changed since `invoke restore` put a copy on the target.

``choose_path`` is the schema guard (``migrate/schema_print.py``): the frozen source, the target and
the record the restore left must have one schema fingerprint, and the target's database must be the
recorded one; otherwise the window takes the full dump path, and says why.

``run_delta`` works in rounds. Each round reads both hosts' catalogs and fingerprints every chunk and
table (the source once: it is frozen), both hosts at once and each in ``PARTS`` sessions; compares
storage-different compressed chunks again by content; copies what differs (COPY streamed source ->
target, one transaction per table or chunk, triggers and foreign keys off), drops chunks the source no
longer has, fixes compression state, names, sequences, large objects and the continuous aggregates'
refresh state. The round after the last change finds nothing to do: that full comparison is the proof
(at most ``MAX_ROUNDS``). Nothing is assumed unchanged: an UPDATE or DELETE in an old chunk changes
its fingerprint. Safe to re-run after a kill: every round starts from fresh fingerprints.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import limits
from .. import tsdb_api as api
from ..errors import OpsError
from ..migrate import schema_print as sp
from ..psql import Psql, blocked_statement
from ..remote import wrap
from . import delta_slices as ds
from .facts import CopyPath
from ..migrate import delta_sql as dq
from ..migrate.delta_types import Item, Print, prints_from_json, prints_to_json
from . import freeze as fz

PARTS = 2  # sessions per host for fingerprints (the hosts run at the same time)
MAX_ROUNDS = 4


class DeltaError(OpsError):
    pass


class _Hosts:
    """Parallel psql on the source and the target, each job on its own SSH connection."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.db = ctx.settings.database

    def _one(self, which: str, sql: str, as_json: bool):
        with self.ctx.session.own(which) as psql:  # its own connection, the session's secrets masked
            return psql.json(sql, self.db) if as_json else psql.run(sql, self.db).stdout

    def run(self, jobs: list[tuple[str, str, bool]]) -> list:
        """``[(host, sql, as_json)]`` at once; results in order."""
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            return [f.result() for f in [pool.submit(self._one, *j) for j in jobs]]


# ---- the guard ------------------------------------------------------------------------------------

def choose_path(ctx, full: bool) -> dict:
    """``{"path": "delta"|"full", "reasons": [...]}``: the pre-copy path only when every check holds."""
    if full:
        return {"path": CopyPath.FULL, "reasons": ["--full was given"]}
    s = ctx.settings
    hosts = _Hosts(ctx)
    record = sp.load_record(s.state_dir)
    if record is None:
        return {"path": CopyPath.FULL, "reasons": sp.guard(None, s.database, {}, {}, {})}
    s_base, s_priv, t_base, t_priv, ident, s_cat, t_state = hosts.run([
        ("source", sp.SCHEMA_SQL, True), ("source", sp.pv.PRIVILEGES_SQL, True),
        ("target", sp.SCHEMA_SQL, True), ("target", sp.pv.PRIVILEGES_SQL, True),
        ("target", sp.identity_sql(s.database), True), ("source", dq.CATALOG_SQL, True),
        ("target", fz.facts_sql(s.database), True)])
    reasons = sp.guard(record, s.database, ident, sp.schema_doc(s_base, s_priv), sp.schema_doc(t_base, t_priv),
                       target_read_only=t_state.get("read_only_setting"))
    reasons += dq.unsupported(s_cat)
    out = {
        "path": CopyPath.FULL if reasons else CopyPath.DELTA,
        "reasons": reasons,
        "schema_digest": record.get("schema_digest"),
        "precopy_recorded_at": record.get("recorded_at"),
    }
    if not reasons and sp.frozen(t_state.get("read_only_setting")):  # left frozen by a completed rollback
        out["through_freeze"] = record["rolled_back"]
    return out


# ---- fingerprints ---------------------------------------------------------------------------------

def _columns(key: str, src_items: dict[str, Item], items: dict[str, Item]) -> list[str]:
    return (src_items.get(key) or items[key]).columns


def _jobs(which: str, items: dict[str, Item], src_items: dict[str, Item], keys: list[str] | None = None,
          kind: str = "print") -> list[tuple[str, str, bool]]:
    keys = list(items) if keys is None else [k for k in keys if k in items]
    if kind == "version":
        def build(k):
            return dq.version_sql(k, items[k])
    else:
        fn = dq.content_sql if kind == "content" else dq.fingerprint_sql

        def build(k):
            return fn(k, items[k], _columns(k, src_items, items))
    groups = dq.split_balanced(keys, {k: items[k].bytes for k in keys}, PARTS)
    return [(which, dq.script([build(k) for k in g]), False) for g in groups]


def _prints(hosts: _Hosts, per_host: dict[str, list]) -> dict[str, dict[str, Print]]:
    """``{host: jobs}`` all at once -> ``{host: {key: print}}``."""
    jobs = [j for js in per_host.values() for j in js]
    out: dict[str, dict[str, Print]] = {w: {} for w in per_host}
    for (which, _, _), res in zip(jobs, hosts.run(jobs)):
        out[which].update({k: Print.from_json(p) for k, p in dq.parse_prints(res).items()})
    return out


def _v(p: Print | None) -> str | None:
    return None if p is None else p.v


def fingerprint_all(ctx) -> dict:
    """Every chunk's and table's fingerprint on both hosts (before the freeze: the window then reads
    again only what the tuple versions say was written since)."""
    hosts = _Hosts(ctx)
    src_cat, tgt_cat = hosts.run([("source", dq.CATALOG_SQL, True), ("target", dq.CATALOG_SQL, True)])
    si, ti = dq.items(src_cat), dq.items(tgt_cat)
    got = _prints(hosts, {"source": _jobs("source", si, si), "target": _jobs("target", ti, si)})
    return {w: {k: p.to_json() for k, p in ps.items()} for w, ps in got.items()}


Wanted = dict[str, tuple[dict[str, Item], dict[str, Item], dict[str, Print]]]


def _current(hosts: _Hosts, wanted: Wanted) -> tuple[dict[str, dict[str, Print]], dict[str, int]]:
    """``{host: (items, src_items, cached prints)}`` -> (prints now, number re-read per host): tuple
    versions of every item (a cheap scan); the content only where they differ from the cached print's."""
    vers = _prints(hosts, {w: _jobs(w, it, si, kind="version") for w, (it, si, _) in wanted.items()})
    reuse: dict[str, dict[str, Print]] = {}
    redo: dict[str, list[str]] = {}
    for w, (it, si, cached) in wanted.items():
        reuse[w] = {k: cached[k] for k in it
                    if k in cached and cached[k].v is not None and cached[k].v == _v(vers[w].get(k))}
        redo[w] = [k for k in it if k not in reuse[w]]
    fresh = _prints(hosts, {w: _jobs(w, wanted[w][0], wanted[w][1], redo[w]) for w in wanted if redo[w]})
    return {w: {**reuse[w], **fresh.get(w, {})} for w in wanted}, {w: len(redo[w]) for w in wanted}


# ---- the delta ------------------------------------------------------------------------------------

def run_delta(ctx, note=None, cached: dict | None = None, converge: bool = True, keep: dict | None = None) -> dict:
    """Make the target's tracker equal to the frozen source's, by fingerprints. ``cached``: prints taken
    before the freeze (``prepare``), reused where the tuple versions are unchanged. ``converge=False``: one
    round only, no proof (before the freeze, while the source still changes). ``keep`` receives the prints
    (``source``, ``target``, ``content``) for a later run. Returns the facts."""
    say = ctx.say
    note = note or (lambda facts: None)
    hosts = _Hosts(ctx)
    timings = {"fingerprint_s": 0.0, "content_s": 0.0, "copy_s": 0.0}
    totals: dict = {}
    reread: dict = {}
    copied_keys: list[str] = []
    moved = [0]  # bytes of COPY text streamed
    sliced: dict = {}  # chunk key -> slices moved (of ds.SLICES), for uncompressed chunks moved in part
    src_cat: dict = {}
    src_items: dict[str, Item] = {}
    kept = prints_from_json(cached)  # the prints file's JSON (or a ``keep`` of this run) -> Prints, in one place
    cache: dict[str, dict[str, Print]] = {"source": kept["source"], "target": kept["target"]}
    src_prints: dict[str, Print] = {}
    src_content: dict[str, Print] = {}
    content_cache: dict[str, list] = kept["content"]  # key -> [source print, target print] by content
    for rnd in range(1, MAX_ROUNDS + 1):
        t0 = time.monotonic()
        if rnd == 1:
            src_cat, tgt_cat = hosts.run([("source", dq.CATALOG_SQL, True), ("target", dq.CATALOG_SQL, True)])
            src_items = dq.items(src_cat)
        else:
            tgt_cat = hosts.run([("target", dq.CATALOG_SQL, True)])[0]
        tgt_items = dq.items(tgt_cat)
        renames = dq.rename_statements(src_items, tgt_items)
        if renames:
            _target(ctx).run("BEGIN;\n" + "\n".join(renames) + "\nCOMMIT;", ctx.settings.database)
            tgt_cat = hosts.run([("target", dq.CATALOG_SQL, True)])[0]
            tgt_items = dq.items(tgt_cat)
        wanted: Wanted = {"target": (tgt_items, src_items, cache["target"])}
        if not src_prints:
            wanted["source"] = (src_items, src_items, cache["source"])
        now, n_redo = _current(hosts, wanted)
        reread[f"round {rnd}"] = n_redo
        src_prints = src_prints or now["source"]
        tgt_prints = cache["target"] = now["target"]
        timings["fingerprint_s"] += time.monotonic() - t0
        plan = dq.diff(src_items, src_prints, tgt_items, tgt_prints)
        if plan.recheck:
            t1 = time.monotonic()
            # a content print stays valid while the tuple versions it was read from are the ones now
            for k in plan.recheck:
                old = content_cache.get(k)
                if old and k not in src_content and old[0] and old[0].v == _v(src_prints.get(k)):
                    src_content[k] = old[0]
            tgt_content = {k: content_cache[k][1] for k in plan.recheck if content_cache.get(k) and content_cache[k][1]
                           and content_cache[k][1].v == _v(tgt_prints.get(k))}
            need_src = [k for k in plan.recheck if k not in src_content]
            need_tgt = [k for k in plan.recheck if k not in tgt_content]
            got = _prints(hosts, {"source": _jobs("source", src_items, src_items, need_src, kind="content"),
                                  "target": _jobs("target", tgt_items, src_items, need_tgt, kind="content")})
            src_content.update(got["source"])
            tgt_content.update(got["target"])
            content = {k: (src_content.get(k), tgt_content.get(k)) for k in plan.recheck}
            content_cache.update({k: list(v) for k, v in content.items()})
            plan = dq.diff(src_items, src_prints, tgt_items, tgt_prints, content)
            timings["content_s"] += time.monotonic() - t1
        seqs = dq.sequence_statements(src_cat, tgt_cat)
        lo_copy, lo_drop = dq.large_object_diff(src_cat, tgt_cat)
        cagg_differs = dq.cagg_state(src_cat) != dq.cagg_state(tgt_cat)
        todo = [k for k, a in plan.actions.items() if a != dq.SAME]
        counts = plan.counts()
        say(f"delta round {rnd}: " + "; ".join(f"{kind}: " + ", ".join(f"{n} {a}" for a, n in sorted(c.items()))
                                              for kind, c in sorted(counts.items()))
            + f"; {len(seqs)} sequence(s), {len(lo_copy) + len(lo_drop)} large object(s) differ"
            + ("; refresh state differs" if cagg_differs else ""))
        note({"round": rnd, "plan": counts,
              "to_do": len(todo) + len(seqs) + len(lo_copy) + len(lo_drop) + int(cagg_differs)})
        if rnd == 1:
            totals = {"plan": counts, "sequences_set": len(seqs), "large_objects_copied": len(lo_copy) + len(lo_drop),
                      "cagg_state_copied": cagg_differs}
        done = not todo and not seqs and not lo_copy and not lo_drop and not cagg_differs
        if keep is not None:
            keep.update(prints_to_json({"source": src_prints, "target": tgt_prints, "content": content_cache}))
        if done or (not converge and rnd == 2):
            return {
                "path": CopyPath.DELTA,
                "rounds": rnd,
                **totals,
                "copied": copied_keys[:100],
                "content_reread": reread,
                "timings": {k: round(v, 2) for k, v in timings.items()},
                "bytes_copied": moved[0],
                "slices_moved": sliced,
                "tables_and_chunks": {"compared": len(src_items), "moved": len(set(copied_keys))},
            }
        t2 = time.monotonic()
        copied_keys += _apply(ctx, plan, src_items, tgt_items, src_cat, tgt_cat, say, moved, sliced)
        _apply_small(ctx, seqs, lo_copy, lo_drop, {int(lo["oid"]) for lo in tgt_cat.get("large_objects") or []},
                     dq.cagg_state_sql(src_cat, tgt_cat) if cagg_differs else [])
        timings["copy_s"] += time.monotonic() - t2
        if not converge:
            continue  # round 2 only refreshes the target's prints after the copies (kept for the window)
    raise DeltaError(f"the target still differs from the frozen source after {MAX_ROUNDS} rounds",
                     hint="something else writes to the target's tracker; find it, then re-run `invoke cutover` "
                          "(or `invoke cutover --full` with a new --journal)")


def run_delta_kept(ctx, **kw) -> dict:
    """``run_delta``, its last round's prints written beside the journal: verify reuses them where the tuple
    versions are still the same (``migrate/content.reuse_prints``) instead of reading every item again."""
    from ..files import write_private

    keep: dict = {}
    facts = run_delta(ctx, keep=keep, **kw)
    path = ctx.journal.path.with_name(ctx.journal.path.stem + ".delta-prints.json")
    write_private(path, json.dumps(keep))
    return {**facts, "prints_file": str(path)}


def kept_prints(facts: dict) -> dict | None:
    """The prints ``run_delta_kept`` wrote (None without them: verify then digests every item)."""
    pf = (facts or {}).get("prints_file")
    return json.loads(Path(pf).read_text()) if pf and Path(pf).is_file() else None


def _target(ctx) -> Psql:
    return ctx.psql("target")


def _apply(ctx, plan, src_items, tgt_items, src_cat, tgt_cat, say, moved: list, sliced: dict) -> list[str]:
    s = ctx.settings
    src, tgt = ctx.remote("source"), ctx.remote("target")
    src_psql, tgt_psql = ctx.psql("source"), _target(ctx)
    hts = {h["key"]: h for h in tgt_cat.get("hypertables") or []}
    # TimescaleDB's schema on the target, impostors refused before anything is written (tsdb_api)
    api_schema = api.api_schema(tgt_psql, s.database, [api.COMPRESS, api.DECOMPRESS]) if hts else None
    done = []
    for key in plan.keys(dq.COPY, dq.CREATE):
        item, t = src_items[key], tgt_items.get(key)
        cols = item.columns
        part = _differing_slices(ctx, key, item, t) if plan.actions[key] == dq.COPY and ds.sliceable(item, t) else None
        where = None if part is None else ds.where(item, part)  # the source's bounds: the chunk matched by range
        if part is not None:
            sliced[key] = sliced.get(key, 0) + len(part)
        stmts = dq.copy_in_statements(plan.actions[key], item, t, hts.get(item.hypertable), cols, where, api_schema)
        out_argv = src_psql.stream(s.database, [dq.copy_out_sql(item, cols, where)])
        # the receiver reads its script and the rows from one stdin; its COMMIT travels only after the
        # source's COPY ended well (a cut stream is valid COPY data: the transaction must not commit it)
        header, trailer = dq.copy_in_script(stmts)
        res, code, err = src.pipe_to(wrap(out_argv, user="postgres"), tgt,
                                     wrap(tgt_psql.argv(s.database), user="postgres"),
                                     header=header, trailer=trailer)
        if res.exit_code != 0 or code != 0:
            _limit_hit(s.database, (tgt_psql, err, header.decode(errors="replace")), (src_psql, res.stderr, "COPY"))
            raise DeltaError(f"copying {key} failed: source exit {res.exit_code} {res.stderr.strip()[-300:]}; "
                             f"target exit {code} {err.strip()[-300:]}",
                             hint="re-run `invoke cutover`: the delta starts again from fingerprints")
        say(f"copied {key}: {res.bytes / 1048576:.1f} MiB"
            + (f" ({len(part)} of {ds.SLICES} slices)" if part is not None else ""))
        moved[0] += res.bytes
        done.append(key)
    for key in plan.keys(dq.DROP, dq.COMPRESS, dq.DECOMPRESS):
        tgt_psql.run("\n".join(st + ";" for st in dq.state_statements(plan.actions[key], tgt_items[key], api_schema)),
                     s.database)
        say(f"{plan.actions[key]} {key}")
        done.append(key)
    return done


def _limit_hit(database: str, *sides) -> None:
    """A side of a copy cancelled by its window time limit: that one line (``limits``), not a copy failure.
    ``sides``: ``(psql, its error output, the script it ran)``."""
    lim = limits.active()
    for psql, err, script in sides:
        which = limits.hit(err) if lim is not None else None
        if which:
            raise psql.limit_error(lim, which, database, blocked_statement(script, err))


def _differing_slices(ctx, key: str, src: Item, tgt: Item) -> list[int] | None:
    """The slices of an uncompressed chunk that differ (both hosts at once), or None: move it whole."""
    sql = [dq.script([ds.slices_sql(key, it, src.columns)]) for it in (src, tgt)]
    got = _Hosts(ctx).run([("source", sql[0], False), ("target", sql[1], False)])
    src_slices, tgt_slices = (ds.parse(g) for g in got)
    if src_slices is None or tgt_slices is None:
        return None
    part = ds.differing(src_slices, tgt_slices)
    return part if len(part) <= ds.MOST else None


def _apply_small(ctx, seqs: dict, lo_copy: list[int], lo_drop: list[int], tgt_los: set[int],
                 cagg_sql: list[str]) -> None:
    s = ctx.settings
    tgt, src = _target(ctx), ctx.psql("source")
    stmts = list(seqs.values())
    for oid in lo_copy:
        d = src.json(dq.LO_DATA_SQL.format(oid=int(oid)), s.database)
        stmts.append(dq.large_object_sql(oid, d["data"], d["owner"], [tuple(g) for g in d["grants"]], oid in tgt_los))
    stmts += [f"SELECT lo_unlink({int(oid)});" for oid in lo_drop]
    stmts += cagg_sql
    if stmts:
        tgt.run("BEGIN;\n" + "\n".join(stmts) + "\nCOMMIT;", s.database)
