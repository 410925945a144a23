"""Content, not only counts: a digest of every regular table and of every hypertable chunk's range, read on
the source and the target at the same time, compared, each difference named.

What is read (the pre-copy path's prints, ``migrate/delta_sql.py``, reused): both hosts' catalogs
(``CATALOG_SQL``) give the items, matched by what they are -- ``table schema.name``, ``chunk
schema.hypertable [start, end)`` -- never by name or id. Each item's print is rows + the sum of the first
60 bits of md5 of every row's text (order-independent, streaming), over the source's columns in the
source's order. A chunk is read *through its hypertable* for its range, so a chunk compressed on one host
and not on the other digests the same. The continuous aggregates' materialization hypertables are left to
the aggregate checks (a refresh on the target legitimately materializes more); large objects are compared
by the md5 the catalog already reads.

When the two sides can be compared: live against a *frozen* source (``verify --against-source``, which the
cutover's verify phase runs; the freeze's marker says so), or against a manifest whose dump took the same
prints in its snapshot (``dump_digests``: ``invoke dump``, runbook step 4; only the target is read then).
A manifest without them (an older dump, the cutover's own dump, ``--no-digests``) or an unfrozen source:
row counts only, and a note (not a passing check) says so. On the pre-copy path the window's verify reuses
the delta's last round of prints where both hosts' tuple versions say nothing was written since
(``reuse_prints``): the rest, and every difference, is digested again.

Each host is read by its own psql over its own SSH connection, both at once (two threads); the sessions
pin the text forms a row's digest depends on (time zone, date and interval styles, float digits, bytea).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from .. import limits
from . import delta_sql as dq
from ..errors import OpsError
from ..session import Session
from ..settings import Settings
from ..steps import Check, note

CONTENT = "content compared by digest"
SHOW = 4  # differences named per check (the count says how many more)

# Every text form that enters ``row::text`` pinned alike on both hosts (a server's own defaults may differ).
SESSION_SQL = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
               "SET extra_float_digits = 1; SET bytea_output = 'hex'; SET statement_timeout = 0; "
               "SET lc_monetary = 'C';")


# ---- pure: what to read and how ------------------------------------------------------------------

def comparable_items(catalog: dict) -> dict[str, dq.Item]:
    """A host's tables and chunks (``delta_sql.items``) minus the continuous aggregates' materializations."""
    return {k: v for k, v in dq.items(catalog).items()
            if not (v.kind == "chunk" and v.hypertable.startswith("cagg "))}


def digest_sql(key: str, item: dq.Item, columns: list[str]) -> str:
    """One JSON line ``{"k", "n", "d"}``: a table's rows (``ONLY``), or a chunk's range read through its hypertable."""
    frm = f"{item.ht_rel} t WHERE {dq.range_where(item)}" if item.kind == "chunk" else f"ONLY {item.rel} t"
    return dq._line(key, "count(*)", dq._digest(columns), frm)


def digest_script(keys: list[str], items: dict, columns: dict[str, list[str]]) -> str:
    """The script one host runs: the pinned text forms, then one line per item. SESSION_SQL lifts a
    database's own statement_timeout; inside a window phase its limit is set again after it."""
    again = limits.set_sql(limits.active())
    return dq.script([SESSION_SQL + (" " + again if again else "")]
                     + [digest_sql(k, items[k], columns[k]) for k in keys])


def plan(src_items: dict, tgt_items: dict) -> dict:
    """``{"read": [keys on both hosts, same columns], "columns": {key: source's columns},
    "differ": {key: why}}`` -- an item on one host only, or with other columns, differs without a read."""
    read, differ, cols = [], {}, {}
    for key in sorted(set(src_items) | set(tgt_items)):
        s, t = src_items.get(key), tgt_items.get(key)
        if t is None:
            differ[key] = "missing on the target"
        elif s is None:
            differ[key] = "not on the source"
        elif sorted(s.columns) != sorted(t.columns):
            differ[key] = f"columns differ: target ({', '.join(t.columns)}), source ({', '.join(s.columns)})"
        else:
            read.append(key)
            cols[key] = s.columns
    return {"read": read, "columns": cols, "differ": differ}


def _when(internal: int, time_type: str) -> str:
    if internal <= dq.INT64_MIN:
        return "-infinity"
    if internal >= dq.INT64_MAX:
        return "+infinity"
    if time_type in ("timestamp with time zone", "timestamp without time zone", "date"):
        t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(internal))
        midnight = (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0)
        return t.strftime("%Y-%m-%d" if time_type == "date" or midnight else "%Y-%m-%d %H:%M:%S")
    return str(int(internal))


def label(key: str, item: dq.Item | None) -> str:
    """How a difference is named: ``table "s"."t"``, or the hypertable's chunk range with its chunk's name."""
    if item is None or item.kind != "chunk":
        return key
    return (f"{item.hypertable} range [{_when(item.start, item.time_type)}, "
            f"{_when(item.end, item.time_type)}) "
            f"(chunk {item.name})")


def _print_text(p: dict | None) -> str:
    return "absent" if p is None else f"{p['n']} rows, digest {p['d']}"


def compare(src_items: dict, tgt_items: dict, planned: dict, src_prints: dict, tgt_prints: dict,
            how: str) -> list[Check]:
    """One check per regular table, one per hypertable (its chunk ranges), one for every item that could
    not be read; each difference named with both sides' rows and digests. ``how`` says what was compared."""
    groups: dict[str, list[str]] = {}
    for key in sorted(set(src_items) | set(tgt_items)):
        it = src_items.get(key) or tgt_items[key]
        group = f"table {key.split(' ', 1)[1]}" if it.kind == "table" else f"hypertable {it.hypertable}"
        groups.setdefault(group, []).append(key)
    checks = []
    for noun, keys in sorted(groups.items()):
        bad, why = [], []
        for k in keys:
            # each side named by its own chunk (the names may differ; the range is what matches them)
            have, want = label(k, tgt_items.get(k) or src_items[k]), label(k, src_items.get(k) or tgt_items[k])
            if k in planned["differ"]:
                bad.append(k)
                why.append((f"{have}: {planned['differ'][k]}", ""))
            elif (src_prints.get(k) or {}).get("d") is None or (tgt_prints.get(k) or {}).get("d") is None:
                bad.append(k)
                why.append((f"{have}: not read ({'target' if src_prints.get(k) else 'source'} printed nothing)", ""))
            elif (src_prints[k]["n"], src_prints[k]["d"]) != (tgt_prints[k]["n"], tgt_prints[k]["d"]):
                bad.append(k)
                why.append((f"{have}: {_print_text(tgt_prints[k])}", f"{want}: {_print_text(src_prints[k])}"))
        unit = "chunk range(s)" if noun.startswith("hypertable") else "table"
        if not bad:
            one = src_prints[keys[0]] if len(keys) == 1 else None
            by_storage = sum(str(src_prints[k]["d"]).startswith("storage ") for k in keys)  # reused delta prints
            rows = (f", {sum(src_prints[k]['n'] for k in keys)} rows" if not by_storage
                    else f" ({by_storage} compressed by their batches)")
            if one and unit == "table":
                text = f"{one['n']} rows, digest {one['d']}"
            else:
                text = f"{len(keys)} {unit} equal{rows}"
            checks.append(Check(f"{noun} content", True, text, text, how))
            continue
        more = f" (+{len(bad) - SHOW} more)" if len(bad) > SHOW else ""
        checks.append(Check(f"{noun} content", False,
                            f"{len(bad)} of {len(keys)} differ: " + "; ".join(o for o, _ in why[:SHOW]) + more,
                            "; ".join(e for _, e in why[:SHOW] if e) or "present on both hosts with the same columns",
                            how))
    return checks


def large_object_checks(src_cat: dict, tgt_cat: dict, how: str) -> list[Check]:
    """Every large object's bytes (md5) equal; owners and ACLs are the privileges checks'."""
    want = {int(lo["oid"]): lo["md5"] for lo in src_cat.get("large_objects") or []}
    have = {int(lo["oid"]): lo["md5"] for lo in tgt_cat.get("large_objects") or []}
    bad = sorted(o for o in set(want) | set(have) if want.get(o) != have.get(o))
    if not want and not have:
        return []
    if bad:
        observed = f"{len(bad)} differ: " + ", ".join(f"{o} {have.get(o) or 'missing'}" for o in bad[:SHOW])
        expected = ", ".join(f"{o} {want.get(o) or 'absent'}" for o in bad[:SHOW])
    else:
        observed, expected = f"{len(want)} equal (md5)", f"{len(want)} large object(s)"
    return [Check("large objects content", not bad, observed, expected, how)]


NEEDS = ("digests need the frozen source (verify --against-source inside the cutover's freeze) "
         "or a manifest with digests (`invoke dump`)")


def not_compared(why: str, needs: str = NEEDS) -> Check:
    """Said, not hidden, and not counted as a passing check (a check that cannot fail is none): which
    comparison verify did instead of digests (row counts only)."""
    return note(CONTENT, f"not compared: {why}; tables compared by row count only", needs, "row counts")


# ---- executor -------------------------------------------------------------------------------------

class Hosts:
    """psql on the source and on the target at once, each its own SSH connection (one thread per host)."""

    def __init__(self, settings: Settings, session: Session):
        self.settings, self.session = settings, session
        self.elapsed: dict[str, float] = {}

    def _one(self, which: str, sql: str, as_json: bool):
        t0 = time.monotonic()
        try:
            with self.session.own(which) as psql:  # its own connection, the session's secrets masked
                db = self.settings.database
                return psql.json(sql, db) if as_json else psql.run(sql, db).stdout
        finally:
            self.elapsed[which] = self.elapsed.get(which, 0.0) + time.monotonic() - t0

    def run(self, jobs: list[tuple[str, str, bool]]) -> list:
        """``[(host, sql, as_json)]`` all at once; results in order."""
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            return [f.result() for f in [pool.submit(self._one, *j) for j in jobs]]


def reuse_prints(keys: list[str], kept: dict, versions: dict) -> tuple[dict, dict, list[str]]:
    """The pre-copy path's last delta round, reused where it still holds. ``kept``: its prints
    (``{"source", "target": {key: print}, "content": {key: [source, target]}}``), each with the tuple versions
    ``v`` it was read from; ``versions``: ``{host: {key: {"v"}}}`` read now. An item whose versions on both
    hosts are the prints' keeps them (a compressed chunk whose storage differs: its content prints, read
    through the hypertable, when they are from the same versions); every other item is read again.
    Returns (source prints, target prints, keys to read)."""
    src, tgt, again = {}, {}, []
    for k in keys:
        s, t = (kept.get("source") or {}).get(k), (kept.get("target") or {}).get(k)
        vs, vt = (versions.get("source") or {}).get(k, {}).get("v"), (versions.get("target") or {}).get(k, {}).get("v")
        if not s or not t or vs is None or vt is None or s.get("v") != vs or t.get("v") != vt:
            again.append(k)
            continue
        if (s["n"], s["d"]) != (t["n"], t["d"]):
            c = (kept.get("content") or {}).get(k) or [None, None]
            if not (c[0] and c[1] and c[0].get("v") == vs and c[1].get("v") == vt):
                again.append(k)  # a difference is never taken from a storage print: read by content now
                continue
            s, t = c[0], c[1]
        src[k], tgt[k] = s, t
    return src, tgt, again


def digests(settings: Settings, session, reuse: dict | None = None) -> dict:
    """Both hosts' catalogs, then every comparable item's print on both hosts in parallel (with ``reuse``,
    the delta's prints: only the tuple versions are read, and the items written since are digested). Returns
    ``{"source": items, "target": items, "plan", "prints": {host: {key: print}}, "catalogs", "timings", "reused"}``."""
    hosts = Hosts(settings, session)
    t0 = time.monotonic()
    src_cat, tgt_cat = hosts.run([("source", dq.CATALOG_SQL, True), ("target", dq.CATALOG_SQL, True)])
    si, ti = comparable_items(src_cat), comparable_items(tgt_cat)
    planned = plan(si, ti)
    t1 = time.monotonic()
    hosts.elapsed.clear()
    prints: dict = {"source": {}, "target": {}}
    read = planned["read"]
    if reuse and read:
        out = hosts.run([(w, dq.script([dq.version_sql(k, items[k]) for k in read]), False)
                         for w, items in (("source", si), ("target", ti))])
        now = {"source": dq.parse_prints(out[0]), "target": dq.parse_prints(out[1])}
        prints["source"], prints["target"], read = reuse_prints(read, reuse, now)
    if read:
        out = hosts.run([(w, digest_script(read, items, planned["columns"]), False)
                         for w, items in (("source", si), ("target", ti))])
        prints["source"].update(dq.parse_prints(out[0]))
        prints["target"].update(dq.parse_prints(out[1]))
    t2 = time.monotonic()
    return {"source": si, "target": ti, "plan": planned, "catalogs": (src_cat, tgt_cat), "prints": prints,
            "reused": len(planned["read"]) - len(read),
            "timings": {"catalogs_s": round(t1 - t0, 2), "digests_s": round(t2 - t1, 2),
                        **{f"{w}_s": round(v, 2) for w, v in hosts.elapsed.items()}}}


def content_checks(settings: Settings, session, expected: dict | None, against_source: bool,
                   reuse: dict | None = None) -> list[Check]:
    """Verify's content checks: digests on both hosts when the expected side is the frozen live source
    (``reuse``: the pre-copy path's last delta prints, see ``reuse_prints``); otherwise one check saying that
    only row counts were compared, and why."""
    if not against_source:
        return [not_compared("the expected side is a manifest without digests (a dump from before they were taken, "
                             "or the cutover's own dump, whose verify digests the frozen source)")]
    if not (expected or {}).get("frozen"):
        return [not_compared("the source is live and not frozen (it may still change)")]
    try:
        got = digests(settings, session, reuse)
    except OpsError as exc:  # one failing check naming the host and statement, like every other read of verify's
        return [Check(CONTENT, False, exc.one_line()[:300], "every table, chunk range and large object equal",
                      "frozen source")]
    tm = got["timings"]
    n, reused = len(got["plan"]["read"]), got["reused"]
    how = (f"live, frozen source and target read in parallel: {n} tables/chunk ranges in "
           f"{tm['digests_s']} s (source {tm.get('source_s', 0)} s, target {tm.get('target_s', 0)} s)"
           + (f"; {reused} of them by the pre-copy delta's last prints (tuple versions unchanged since), "
              f"{n - reused} digested now" if reuse is not None else ""))
    each = "digests, frozen source vs target"
    checks = compare(got["source"], got["target"], got["plan"], got["prints"]["source"], got["prints"]["target"], each)
    src_cat, tgt_cat = got["catalogs"]
    checks += large_object_checks(src_cat, tgt_cat, each)
    n_bad = sum(not c.ok for c in checks)
    head = Check(CONTENT, n_bad == 0, f"{len(checks) - n_bad} of {len(checks)} equal; {how}",
                 "every table, chunk range and large object equal", "frozen source")
    return [head] + checks
