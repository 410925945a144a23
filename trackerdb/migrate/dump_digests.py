"""Content digests in the dump's own snapshot, so that ``invoke verify`` after ``invoke restore`` (runbook
step 4) compares content and not only row counts.

The dump (``dump.dump_script``) exports a snapshot; besides the facts session and ``pg_dump``, a third
session adopts that snapshot and runs the script built here, *while pg_dump runs* (it overlaps pg_dump
rather than adding to it; ``benchmarks/content_digest.py`` measures both). The script reads the catalog
(``delta_sql.CATALOG_SQL``) and then every regular table's and every hypertable chunk range's print
(``content.digest_sql``: rows + the sum of the first 60 bits of md5 of each row's text, a chunk read through
its hypertable for its range) -- the very prints verify reads on the target, so they compare one to one.

Which items to read is planned in Python from a catalog read just before the snapshot is exported; the
catalog read *in* the snapshot says what the dump holds. An item the snapshot holds and the plan did not
(a chunk created in between), or whose columns changed in between, has no digest: the manifest names it
(``not_digested``) and verify compares it by row count only, and says so. Prints of items the snapshot no
longer holds are dropped.

The manifest's ``content`` section: ``{"catalog": the snapshot's catalog, "prints": {key: {"n", "d"}},
"not_digested": {key: why}, "timings": {...}}``. A manifest without it (older dumps, the cutover's own
dump) still verifies, by row counts, with a note.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from . import delta_sql as dq
from ..errors import OpsError
from ..steps import Check, note
from . import content as ct

if TYPE_CHECKING:
    from ..settings import Settings

SECTION = "content"


# ---- pure: the dump's side ------------------------------------------------------------------------

def snapshot_script(catalog: dict) -> str:
    """The SQL the digest session runs in the dump's snapshot: the pinned text forms, the catalog (first
    line of output), then one print per comparable item of ``catalog`` (the plan, read before the snapshot)."""
    items = ct.comparable_items(catalog)
    keys = sorted(items)
    return dq.script(
        [ct.SESSION_SQL, dq.CATALOG_SQL.strip()] + [ct.digest_sql(k, items[k], items[k].columns) for k in keys]
    )


def section(stdout: str, planned: dict, timings: dict | None = None) -> dict:
    """The manifest's ``content`` section from the digest session's output and the catalog it was planned from."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines or not lines[0].lstrip().startswith("{"):
        raise OpsError(
            "the dump's digest session printed no catalog", hint="re-run `invoke dump`; see the source's log"
        )
    snap = json.loads(lines[0])
    prints = dq.parse_prints("\n".join(lines[1:]))
    plan_items, snap_items = ct.comparable_items(planned), ct.comparable_items(snap)
    not_digested: dict[str, str] = {}
    for key, item in snap_items.items():
        p = plan_items.get(key)
        if p is None:
            not_digested[key] = "created after the dump planned its digests"
        elif p.columns != item.columns:
            not_digested[key] = "its columns changed while the dump planned its digests"
        elif key not in prints:
            not_digested[key] = "no digest printed"
    kept = {k: {"n": v["n"], "d": v["d"]} for k, v in prints.items() if k in snap_items and k not in not_digested}
    return {"catalog": snap, "prints": kept, "not_digested": not_digested, "timings": dict(timings or {}),
            "how": "in the dump's snapshot, a session of its own alongside pg_dump"}


_MS = re.compile(r"^trackerdb: (digests|pg_dump) (\d+) ms$")


def timings(stderr: str) -> dict:
    """``{"digests_s", "pg_dump_s"}`` from the dump script's own lines on stderr."""
    out = {}
    for ln in stderr.splitlines():
        m = _MS.match(ln.strip())
        if m:
            out[f"{m.group(1)}_s"] = round(int(m.group(2)) / 1000, 2)
    return out


# ---- pure: verify's side --------------------------------------------------------------------------

def plan_against(dumped: dict, tgt_catalog: dict) -> tuple[dict, dict, dict]:
    """(source items, target items, plan) for the target read: the dump's not-digested items left out of both."""
    skip = dumped.get("not_digested") or {}
    si = {k: v for k, v in ct.comparable_items(dumped["catalog"]).items() if k not in skip}
    ti = {k: v for k, v in ct.comparable_items(tgt_catalog).items() if k not in skip}
    return si, ti, ct.plan(si, ti)


def checks_against(dumped: dict, tgt_catalog: dict, tgt_prints: dict, planned: tuple, read_s: float) -> list[Check]:
    """The content checks against the manifest's digests: a head, one per table/hypertable (each difference
    named with both sides), large objects, and a note for what the dump could not digest."""
    si, ti, pl = planned
    each = "digests, the dump's snapshot vs target"
    checks = ct.compare(si, ti, pl, dumped.get("prints") or {}, tgt_prints, each)
    checks += ct.large_object_checks(dumped["catalog"], tgt_catalog, each)
    n_bad = sum(not c.ok for c in checks)
    dump_s = (dumped.get("timings") or {}).get("digests_s")
    how = (
        "manifest: digests taken in the dump's "
        f"snapshot{f' ({dump_s} s, alongside pg_dump)' if dump_s is not None else ''}; "
        f"target read: {len(pl['read'])} tables/chunk ranges in {read_s} s"
    )
    out = [Check(ct.CONTENT, n_bad == 0, f"{len(checks) - n_bad} of {len(checks)} equal; {how}",
                 "every table, chunk range and large object equal", "manifest digests")] + checks
    skip = dumped.get("not_digested") or {}
    if skip:
        named = "; ".join(f"{k}: {why}" for k, why in sorted(skip.items())[:ct.SHOW])
        out.append(
            note(
                f"{ct.CONTENT}: not digested by the dump",
                f"{len(skip)} compared by row count only: {named}"
                + (f" (+{len(skip) - ct.SHOW} more)" if len(skip) > ct.SHOW else ""),
                "every item digested in the dump's snapshot",
                "manifest",
            )
        )
    return out


# ---- executor -------------------------------------------------------------------------------------

def manifest_content_checks(settings: Settings, session, dumped: dict) -> list[Check]:
    """Verify's content checks against a manifest that carries digests: the target's catalog and prints
    (one psql over its own SSH connection), compared with the dump's."""
    import time

    hosts = ct.Hosts(settings, session)
    t0 = time.monotonic()
    try:
        tgt_cat = hosts.run([("target", dq.CATALOG_SQL, True)])[0]
        planned = plan_against(dumped, tgt_cat)
        si, ti, pl = planned
        prints = {}
        if pl["read"]:
            prints = dq.parse_prints(hosts.run([("target", ct.digest_script(pl["read"], ti, pl["columns"]), False)])[0])
    except OpsError as exc:
        return [
            Check(
                ct.CONTENT,
                False,
                exc.one_line()[:300],
                "every table, chunk range and large object equal",
                "manifest digests",
            )
        ]
    return checks_against(dumped, tgt_cat, prints, planned, round(time.monotonic() - t0, 2))
