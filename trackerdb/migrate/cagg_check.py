"""Continuous aggregates checked by reading only: their buckets against their own query, their refresh
state against the source's.

- **Content.** The buckets a refresh has written (below the watermark) must equal what the aggregate's
  own query gives now over its raw rows for the same buckets. The query is TimescaleDB's *direct view*
  of the aggregate (its definition over the raw hypertable, or over the parent aggregate for a
  hierarchical one), so any aggregate function and any time type compare alike. Rows are paired on
  their non-float columns; ``real``/``double precision`` values may differ in the last bits (a sum
  depends on the order rows are read in), so they compare within a relative tolerance.
  Excluded, and named in the result: buckets inside *pending invalidation ranges* (the raw
  hypertable's log and the aggregate's own: TimescaleDB knows they are stale and a refresh would
  recompute them; they may differ on both hosts). Raw chunks dropped by retention are among them:
  ``drop_chunks`` logs their range as invalidated (the aggregate keeps what the raw table lost).
  All buckets where the raw side is cheap (``FULL_BYTES``), else a deterministic sample: the
  ``SAMPLE_BUCKETS`` materialized buckets first in md5 order of their value (the same choice on any
  host holding the same buckets), each read on its own so the raw side is read only for that bucket.
- **Refresh state.** Watermark, invalidation threshold and the pending invalidation ranges (both logs,
  merged) equal to the source's, or ahead of them the way a refresh on the target moves them (a
  policy run after the restore): watermark and threshold not behind, every pending range on the
  target inside one the source had (its own or an ancestor's, widened by a bucket: a refresh moves
  raw ranges into the aggregate's log on bucket boundaries) or above the source's threshold. A lost
  invalidation shows twice: as a range missing here and as a stale bucket in the content check.

Everything runs in ``READ ONLY`` transactions; the aggregates' queries run as their owner (``SET
LOCAL ROLE``), never as superuser. Pure builders first; ``run_cagg_checks`` is the executor.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..sql import ident, literal
from ..steps import Check

FULL_BYTES = 1 << 30  # raw side (chunks + compressed chunks) read whole up to 1 GiB; sampled above
SAMPLE_BUCKETS = 24
TOLERANCE = {"real": 1e-5, "double precision": 1e-9}
INT_TYPES = ("smallint", "integer", "bigint")
_FROM_INTERNAL = {"timestamp with time zone": "_timescaledb_functions.to_timestamp",
                  "timestamp without time zone": "_timescaledb_functions.to_timestamp_without_timezone",
                  "date": "_timescaledb_functions.to_date"}
MIN_INTERNAL, MAX_INTERNAL = -(1 << 63), (1 << 63) - 1
_TSF = "_timescaledb_functions"
_CAT = "_timescaledb_catalog"

# ---- the facts, read from the catalog ---------------------------------------------------------------

# one row per aggregate: the state a refresh reads and writes (also part of the manifest's facts)
REFRESH_STATE_SQL = f"""(SELECT coalesce(json_agg(json_build_object(
    'cagg', ca.user_view_schema || '.' || ca.user_view_name,
    'parent', (SELECT p.user_view_schema || '.' || p.user_view_name FROM {_CAT}.continuous_agg p
               WHERE p.mat_hypertable_id = ca.parent_mat_hypertable_id),
    'time_type', (SELECT format_type(d.column_type, NULL) FROM {_CAT}.dimension d
                  WHERE d.hypertable_id = ca.mat_hypertable_id AND d.interval_length IS NOT NULL ORDER BY d.id LIMIT 1),
    'bucket_width', (SELECT CASE WHEN bf.bucket_width ~ '^[0-9]+$' THEN bf.bucket_width::bigint
                                 ELSE {_TSF}.interval_to_usec(bf.bucket_width::interval) * CASE
                                     WHEN bf.bucket_fixed_width THEN 1 ELSE 2 END END
                     FROM {_CAT}.continuous_aggs_bucket_function bf WHERE bf.mat_hypertable_id = ca.mat_hypertable_id),
    'watermark', (SELECT w.watermark FROM {_CAT}.continuous_aggs_watermark w
        WHERE w.mat_hypertable_id = ca.mat_hypertable_id),
    'threshold', (SELECT t.watermark FROM {_CAT}.continuous_aggs_invalidation_threshold t
        WHERE t.hypertable_id = ca.raw_hypertable_id),
    'pending', (SELECT coalesce(json_agg(json_build_array(l.lo, l.hi) ORDER BY l.lo, l.hi), '[]'::json) FROM (
        SELECT h.lowest_modified_value AS lo, h.greatest_modified_value AS hi
          FROM {_CAT}.continuous_aggs_hypertable_invalidation_log h WHERE h.hypertable_id = ca.raw_hypertable_id
        UNION ALL
        SELECT m.lowest_modified_value, m.greatest_modified_value
          FROM {_CAT}.continuous_aggs_materialization_invalidation_log m
              WHERE m.materialization_id = ca.mat_hypertable_id) l))
    ORDER BY ca.user_view_schema, ca.user_view_name), '[]'::json)
  FROM {_CAT}.continuous_agg ca)"""

_AGGS_SQL = f"""(SELECT coalesce(json_agg(json_build_object(
    'cagg', ca.user_view_schema || '.' || ca.user_view_name,
    'view', format('%I.%I', ca.user_view_schema, ca.user_view_name),
    'direct', format('%I.%I', ca.direct_view_schema, ca.direct_view_name),
    'raw', (SELECT format('%I.%I', h.schema_name, h.table_name) FROM {_CAT}.hypertable h
        WHERE h.id = ca.raw_hypertable_id),
    'hierarchical', ca.parent_mat_hypertable_id IS NOT NULL, 'materialized_only', ca.materialized_only,
    'bucket_column', d.column_name, 'bucket_type', format_type(d.column_type, NULL),
    'bucket_width', bf.bucket_width,
    'integer_now', (SELECT format('%I.%I', rd.integer_now_func_schema, rd.integer_now_func) FROM {_CAT}.dimension rd
                    WHERE rd.hypertable_id = ca.raw_hypertable_id AND rd.integer_now_func IS NOT NULL LIMIT 1),
    'columns', (SELECT json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, NULL))
        ORDER BY a.attnum)
                FROM pg_attribute a WHERE a.attrelid = format('%I.%I', ca.user_view_schema, ca.user_view_name)::regclass
                  AND a.attnum > 0 AND NOT a.attisdropped),
    'watermark', (SELECT w.watermark FROM {_CAT}.continuous_aggs_watermark w
        WHERE w.mat_hypertable_id = ca.mat_hypertable_id),
    'raw_bytes', (SELECT coalesce(sum(pg_total_relation_size(format('%I.%I', ch.schema_name, ch.table_name)::regclass)),
        0)
                  FROM {_CAT}.chunk ch WHERE NOT ch.dropped AND ch.hypertable_id IN (
                    SELECT h.id FROM {_CAT}.hypertable h WHERE h.id = ca.raw_hypertable_id
                    UNION SELECT h.compressed_hypertable_id FROM {_CAT}.hypertable h
                        WHERE h.id = ca.raw_hypertable_id)))
    ORDER BY ca.user_view_schema, ca.user_view_name), '[]'::json)
  FROM {_CAT}.continuous_agg ca
  JOIN {_CAT}.dimension d ON d.hypertable_id = ca.mat_hypertable_id AND d.interval_length IS NOT NULL
  LEFT JOIN {_CAT}.continuous_aggs_bucket_function bf ON bf.mat_hypertable_id = ca.mat_hypertable_id)"""


def read_only(body: str, owner_of: str | None = None) -> str:
    """``body`` in a READ ONLY, REPEATABLE READ transaction (one snapshot), as the owner of
    ``owner_of`` (a quoted relation name) when given: ``SET LOCAL``, gone with the transaction."""
    role = ("SELECT pg_catalog.set_config('role', pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text, true) "
            f"FROM pg_catalog.pg_class c WHERE c.oid = {literal(owner_of)}::pg_catalog.regclass;\n") if owner_of else ""
    return f"BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n{role}{body}\nCOMMIT;"


def meta_sql() -> str:
    """Every aggregate's shape and refresh state, as the catalog has them (one JSON document)."""
    return read_only(f"SELECT json_build_object('caggs', {_AGGS_SQL}, 'state', {REFRESH_STATE_SQL});")


# ---- builders of the comparison ---------------------------------------------------------------------

def from_internal(value: int, time_type: str) -> str:
    """SQL for an internal time value (TimescaleDB's bigint) in the bucket column's type."""
    if time_type in INT_TYPES:
        return str(int(value))
    if time_type not in _FROM_INTERNAL:
        raise ValueError(f"bucket type {time_type} not supported")
    return f"{_FROM_INTERNAL[time_type]}({int(value)})"


def _width(meta: dict) -> str | None:
    w = meta.get("bucket_width")
    if not w:
        return None
    return str(int(w)) if meta["bucket_type"] in INT_TYPES else f"{literal(w)}::interval"


def keep_sql(meta: dict, pending: list[tuple[int, int]]) -> str:
    """The predicate on ``t.<bucket>`` that keeps buckets outside every pending range, in internal units
    (ranges may reach TimescaleDB's -infinity/+infinity)."""
    b = f"t.{ident(meta['bucket_column'])}"
    start = f"{_TSF}.time_to_internal({b})"
    width = _width(meta)
    conds = []
    for lo, hi in pending:
        # a bucket [b, b + width) overlaps [lo, hi]; without a known width, every bucket up to hi goes
        end = f"{_TSF}.time_to_internal({b} + {width})" if width else None
        conds.append(f"({start} <= {int(hi)}" + (f" AND {end} > {int(lo)})" if end else ")"))
    return "NOT (" + " OR ".join(conds) + ")" if conds else "true"


def _source(rel: str, meta: dict, watermark: int, sample: list[str] | None) -> str:
    col, typ = ident(meta["bucket_column"]), meta["bucket_type"]
    if sample is None:
        return f"SELECT * FROM {rel} WHERE {col} < {from_internal(watermark, typ)}"
    # one bounded read per bucket: TimescaleDB turns time_bucket(w, t) >= x / <= x into a range on t
    return (
        "\n    UNION ALL ".join(
            f"SELECT * FROM {rel} WHERE {col} >= {literal(b)}::{typ} AND {col} <= {literal(b)}::{typ}" for b in sample
        )
        or f"SELECT * FROM {rel} WHERE false"
    )


def compare_sql(meta: dict, watermark: int, pending: list[tuple[int, int]], sample: list[str] | None = None) -> str:
    """Materialized rows (the aggregate's view below the watermark: its materialization, whatever
    ``materialized_only`` says) against its direct view over the raw rows, for the same buckets; JSON."""
    cols = meta["columns"]
    floats = [c for c in cols if c["type"] in TOLERANCE]
    keys = [c for c in cols if c["type"] not in TOLERANCE]
    key = "ROW(" + ", ".join(f"t.{ident(c['name'])}" for c in keys) + ")::text"
    farr = "ARRAY[" + ", ".join(f"t.{ident(c['name'])}::float8" for c in floats) + "]::float8[]"
    keep = keep_sql(meta, pending)
    b = f"t.{ident(meta['bucket_column'])}::text"

    def side(rel):
        return (f"SELECT {b} AS b, {key} AS k, {farr} AS f FROM (\n"
                f"    {_source(rel, meta, watermark, sample)}) t WHERE {keep}")

    same = (
        " AND ".join(
            f"coalesce(mm.f[{i}] = rr.f[{i}] OR abs(mm.f[{i}] - rr.f[{i}]) <= {TOLERANCE[c['type']]} * "
            f"greatest(abs(mm.f[{i}]), abs(rr.f[{i}])), "
            f"mm.f[{i}] IS NULL AND rr.f[{i}] IS NULL)"
            for i, c in enumerate(floats, 1)
        )
        or "true"
    )
    return f"""WITH m AS ({side(meta['view'])}),
r AS ({side(meta['direct'])}),
mm AS (SELECT m.*, row_number() OVER (PARTITION BY m.k ORDER BY m.f) AS n FROM m),
rr AS (SELECT r.*, row_number() OVER (PARTITION BY r.k ORDER BY r.f) AS n FROM r),
j AS (SELECT coalesce(mm.b, rr.b) AS b, rr.k IS NULL AS only_mat, mm.k IS NULL AS only_raw,
             (mm.k IS NOT NULL AND rr.k IS NOT NULL AND NOT ({same})) AS differ
        FROM mm FULL JOIN rr ON mm.k = rr.k AND mm.n = rr.n)
SELECT json_build_object('materialized', (SELECT count(*) FROM m), 'raw', (SELECT count(*) FROM r),
  'buckets', (SELECT count(DISTINCT m.b) FROM m),
  'only_materialized', count(*) FILTER (WHERE only_mat), 'only_raw', count(*) FILTER (WHERE only_raw),
  'values_differ', count(*) FILTER (WHERE differ),
  'first_bucket', min(b) FILTER (WHERE only_mat OR only_raw OR differ)) FROM j;"""


def sample_sql(meta: dict, watermark: int, pending: list[tuple[int, int]], size: int) -> str:
    """The sampled buckets: materialized, compared ones only, first ``size`` in md5 order of their text."""
    col = ident(meta["bucket_column"])
    return (
        f"SELECT coalesce(json_agg(s.b ORDER BY s.b), '[]'::json) FROM (SELECT DISTINCT t.{col}::text AS b, "
        f"md5(t.{col}::text) AS h "
        f"FROM {meta['view']} t WHERE t.{col} < {from_internal(watermark, meta['bucket_type'])} AND "
        f"{keep_sql(meta, pending)} ORDER BY h LIMIT {int(size)}) s;"
    )


# ---- pure helpers on the refresh state ----------------------------------------------------------------

def merge_ranges(ranges) -> list[tuple[int, int]]:
    """Invalidation ranges as TimescaleDB would cover them: sorted, overlapping or adjacent ones merged."""
    out: list[list[int]] = []
    for lo, hi in sorted((int(a), int(b)) for a, b in ranges or []):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def internal_text(value, time_type: str | None) -> str:
    """An internal time value for people: the integer itself, or UTC time; TimescaleDB's extremes as ±infinity."""
    if value is None:
        return "none"
    v = int(value)
    if v <= MIN_INTERNAL + 1 or v >= MAX_INTERNAL - 1 or abs(v) > 10**17:
        return "-infinity" if v < 0 else "+infinity"
    if time_type in INT_TYPES:
        return str(v)
    t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=v)
    return (
        t.date().isoformat()
        if time_type == "date"
        else t.strftime("%Y-%m-%d %H:%M:%S.%f").rstrip("0").rstrip(".") + "+00"
    )


def _ranges_text(ranges, time_type) -> str:
    return ", ".join(f"[{internal_text(a, time_type)} .. {internal_text(b, time_type)}]" for a, b in ranges) or "none"


def state_text(s: dict) -> str:
    t = s.get("time_type")
    return (f"watermark {internal_text(s.get('watermark'), t)}, threshold {internal_text(s.get('threshold'), t)}, "
            f"pending {_ranges_text(merge_ranges(s.get('pending')), t)}")


def _covered(ranges, by) -> bool:
    cover = merge_ranges(by)
    return all(any(lo >= a and hi <= b for a, b in cover) for lo, hi in ranges)


def _or_min(value: int | None) -> int:
    """A watermark or threshold; none yet counts as the lowest internal time."""
    return MIN_INTERNAL if value is None else value


def state_checks(expected: list[dict], observed: list[dict], source_label: str = "source") -> list[Check]:
    """Each aggregate's refresh state on the target against the source's (see the module's doc)."""
    want = {s["cagg"]: s for s in expected or []}
    have = {s["cagg"]: s for s in observed or []}
    out = []
    for name, w in sorted(want.items()):
        label = f"continuous aggregate {name} refresh state"
        expect = f"as on the {source_label}: {state_text(w)} (or ahead of it by a refresh on the target)"
        g = have.get(name)
        if g is None:
            out.append(Check(label, False, "missing", expect))
            continue
        wp, gp = merge_ranges(w.get("pending")), merge_ranges(g.get("pending"))
        same = (w.get("watermark"), w.get("threshold"), wp) == (g.get("watermark"), g.get("threshold"), gp)
        if same:
            out.append(Check(label, True, f"equal: {state_text(g)}", expect))
            continue
        behind = [k for k in ("watermark", "threshold") if _or_min(g.get(k)) < _or_min(w.get(k))]
        allowed = list(wp)
        parent = w.get("parent")
        while parent and parent in want:  # a parent's refresh on the target invalidates its children
            allowed += merge_ranges(want[parent].get("pending"))
            parent = want[parent].get("parent")
        if w.get("threshold") is not None:
            allowed.append((int(w["threshold"]), MAX_INTERNAL))
        # a refresh moves the raw hypertable's entries into the aggregate's log widened to whole buckets
        slack = int(w.get("bucket_width") or 0)
        allowed = [(max(MIN_INTERNAL, a - slack), min(MAX_INTERNAL, b + slack)) for a, b in allowed]
        outside = [r for r in gp if not _covered([r], allowed)]
        ok = not behind and not outside
        why = "; ".join(
            x
            for x in (
                (f"{' and '.join(behind)} behind the {source_label}'s" if behind else ""),
                (
                    f"pending here, not on the {source_label}: {_ranges_text(outside, g.get('time_type'))}"
                    if outside
                    else ""
                ),
            )
            if x
        )
        out.append(
            Check(label, ok, f"{state_text(g)}" + (f" ({why})" if why else " (ahead: refreshed on the target)"), expect)
        )
    extra = sorted(set(have) - set(want))
    if extra:
        out.append(Check("continuous aggregates' refresh state: none unexpected", False, ", ".join(extra), "none"))
    return out


# ---- the executor -------------------------------------------------------------------------------------

def content_label(meta: dict) -> str:
    return f"continuous aggregate {meta['cagg']} buckets equal its query"


def plan(meta: dict, full_bytes: int = FULL_BYTES) -> str:
    """'all' when the raw side is cheap to read whole, else 'sample'."""
    return "all" if int(meta.get("raw_bytes") or 0) <= full_bytes else "sample"


def content_check(
    psql, db: str, meta: dict, pending, full_bytes: int = FULL_BYTES, sample_size: int = SAMPLE_BUCKETS
) -> Check:
    """One aggregate: the comparison, read-only, as the aggregate's owner."""
    from ..errors import OpsError

    label = content_label(meta)
    over = f"its parent {meta.get('raw')}" if meta.get("hierarchical") else (meta.get("raw") or "its raw hypertable")
    if meta.get("integer_now"):
        over += f" (integer time, now() by {meta['integer_now']})"
    expected = f"materialized buckets below the watermark = the aggregate's query over {over} for the same buckets"
    if meta.get("watermark") is None:
        return Check(label, False, "no watermark in the catalog", expected)
    if meta["bucket_type"] not in INT_TYPES and meta["bucket_type"] not in _FROM_INTERNAL:
        return Check(label, False, f"bucket type {meta['bucket_type']} not supported by the check", expected)
    wm = int(meta["watermark"])
    ranges = merge_ranges(pending)
    try:
        sample = None
        if plan(meta, full_bytes) == "sample":
            sample = psql.json(read_only(sample_sql(meta, wm, ranges, sample_size), meta["view"]), db) or []
        res = psql.json(read_only(compare_sql(meta, wm, ranges, sample), meta["view"]), db) or {}
    except OpsError as exc:
        return Check(label, False, exc.one_line()[:300], expected)
    t = meta["bucket_type"]
    scope = (
        f"all {res.get('buckets')} bucket(s)"
        if sample is None
        else f"a sample of {len(sample)} bucket(s) (first {sample_size} in md5 order; raw side "
             f"{int(meta.get('raw_bytes') or 0) >> 20} MiB)"
        + (f": {', '.join(sample[:3])}{' …' if len(sample) > 3 else ''}" if sample else "")
    )
    scope += f" below the watermark {internal_text(wm, t)}"
    notes = []
    if ranges:
        notes.append(f"{len(ranges)} pending invalidation range(s) excluded {_ranges_text(ranges, t)}")
    bad = {k: int(res.get(k) or 0) for k in ("only_materialized", "only_raw", "values_differ")}
    ok = not any(bad.values()) and bool(res)
    head = (f"{res.get('materialized')} row(s) equal in {scope}" if ok else
            f"{bad['only_materialized']} row(s) only materialized, {bad['only_raw']} only in the query, "
            f"{bad['values_differ']} with other values; first at bucket {res.get('first_bucket')} ({scope})")
    return Check(label, ok, "; ".join([head] + notes)[:600], expected)


def run_cagg_checks(psql, db: str, expected: dict | None = None, source_label: str = "source",
                    full_bytes: int | None = None, sample_size: int | None = None) -> list[Check]:
    """Every aggregate's content, and its refresh state against ``expected`` (the source's facts, from the
    manifest or live) when they carry it. Reads only. Limits: ``FULL_BYTES``/``SAMPLE_BUCKETS`` unless given."""
    from ..errors import OpsError

    full_bytes = FULL_BYTES if full_bytes is None else full_bytes
    sample_size = SAMPLE_BUCKETS if sample_size is None else sample_size

    try:
        meta = psql.json(meta_sql(), db) or {}
    except OpsError as exc:
        return [Check("continuous aggregates readable", False, exc.one_line()[:300], "catalog read")]
    state = {s["cagg"]: s for s in meta.get("state") or []}
    checks = [content_check(psql, db, c, (state.get(c["cagg"]) or {}).get("pending"), full_bytes, sample_size)
              for c in meta.get("caggs") or []]
    if expected is not None and "cagg_refresh_state" in expected:
        checks += state_checks(expected["cagg_refresh_state"], meta.get("state") or [], source_label)
    return checks
