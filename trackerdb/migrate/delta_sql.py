"""The pre-copy path's pure parts: what each host holds (catalog), content fingerprints of every chunk and
table, the difference of two hosts' fingerprints as a plan, and the statements that carry it out.

Items, matched between the hosts by *what they are*, never by name or id:
- a chunk: ``chunk <hypertable key> [start, end)`` -- the hypertable key is ``schema.table``, or
  ``cagg schema.view`` for a continuous aggregate's materialization hypertable (its name carries an id);
  the range is the chunk's slice of the hypertable's (only) dimension, in TimescaleDB's internal units;
- a regular table: ``table schema.name``; a sequence: ``sequence "schema"."name"``; a large object: ``lo <oid>``.
  Names in keys are quoted as ``format('%I.%I')`` quotes them (hypertables and tables: by the server), so
  ``"a.b"."c"`` and ``"a"."b.c"`` are two items, never one;
- the continuous aggregates' refresh state (invalidation threshold, watermark, both invalidation logs),
  with hypertable ids replaced by hypertable keys: ``cagg-state``.

Fingerprints: rows + the sum of the first 60 bits of md5 of each row's text (the manifest's digest,
order-independent, streaming), over the columns named in the source's order. A compressed chunk's
first fingerprint is its storage (the compressed batches + the rows outside them): a logical restore
copies batches verbatim, so equal storage is equal content; when storage differs (recompressed, or
changed), both sides are compared again *by content*, rows read through the hypertable for the
chunk's range (``content_sql``), and only a content difference is copied.

Writes to the application's tables (DELETE, COPY, TimescaleDB's compress/decompress) run as the table's
owner (``SET LOCAL ROLE``, after the superuser-only ``session_replication_role``, with ``row_security
= off``: a policy that would filter them fails instead): index expressions and ALWAYS triggers are the
owner's code and must not run as superuser. Catalog work that needs superuser (creating a chunk,
renames, sequences, large objects, the refresh state) stays superuser's. TimescaleDB's API is called by
its schema (``api_schema``), after ``tsdb_api``'s guard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from .. import tsdb_api as api
from ..psql import pin_line
from ..sql import ident, literal
from .delta_catalog import CATALOG_SQL as CATALOG_SQL  # what each host holds: one JSON document
from .delta_types import Action, ChunkKey, Item, Print, as_print, key_kind

INT64_MIN, INT64_MAX = -9223372036854775808, 9223372036854775807
CAGG_STATE = "cagg-state"

# ---- items ------------------------------------------------------------------------------------


def chunk_key(hypertable_key: str, start: int, end: int) -> str:
    return str(ChunkKey(hypertable_key, int(start), int(end)))


def unsupported(catalog: dict) -> list[str]:
    """What the pre-copy path does not handle (the window takes the full path instead)."""
    return [f"hypertable {h['key']} has {h['dims']} dimensions (the pre-copy path matches chunks by one time range)"
            for h in catalog.get("hypertables") or [] if int(h.get("dims") or 0) != 1]


def items(catalog: dict) -> dict[str, Item]:
    """Every chunk and regular table of one host's catalog, by its matching key."""
    hts = {h["key"]: h for h in catalog.get("hypertables") or []}
    out: dict[str, Item] = {}
    for t in catalog.get("tables") or []:
        out[f"table {t['key']}"] = Item(kind="table", rel=f"{ident(t['schema'])}.{ident(t['name'])}", owner=t["owner"],
                                        columns=t["columns"], bytes=t.get("bytes") or 0)
    for c in catalog.get("chunks") or []:
        h = hts[c["hypertable"]]
        zrel = f"{ident(c['compressed_schema'])}.{ident(c['compressed_name'])}" if c["compressed"] else None
        out[chunk_key(c["hypertable"], c["start"], c["end"])] = Item(
            kind="chunk", rel=f"{ident(c['schema'])}.{ident(c['name'])}", hypertable=c["hypertable"],
            schema=c["schema"], name=c["name"], compressed_schema=c.get("compressed_schema"),
            compressed_name=c.get("compressed_name"), owner=c["owner"], ht_schema=h["schema"], ht_name=h["name"],
            ht_rel=f"{ident(h['schema'])}.{ident(h['name'])}", columns=h["columns"], time_column=h["time_column"],
            time_type=h["time_type"], start=int(c["start"]), end=int(c["end"]), compressed=bool(c["compressed"]),
            compressed_rel=zrel, bytes=c.get("bytes") or 0)
    return out


def _bound(internal: int, time_type: str) -> str:
    if time_type == "timestamp with time zone":
        return f"_timescaledb_functions.to_timestamp({int(internal)})"
    if time_type == "timestamp without time zone":
        return f"_timescaledb_functions.to_timestamp_without_timezone({int(internal)})"
    if time_type == "date":
        return f"_timescaledb_functions.to_date({int(internal)})"
    return str(int(internal))


def range_where(item: Item) -> str:
    """The chunk's range as a condition on its hypertable's time column."""
    col = ident(item.time_column)
    conds = []
    if item.start != INT64_MIN:
        conds.append(f"{col} >= {_bound(item.start, item.time_type)}")
    if item.end != INT64_MAX:
        conds.append(f"{col} < {_bound(item.end, item.time_type)}")
    return " AND ".join(conds) or "true"


def _digest(columns: list[str], alias: str = "t") -> str:
    row = f"ROW({', '.join(f'{alias}.{ident(c)}' for c in columns)})::text" if columns else f"{alias}::text"
    return f"coalesce(sum(('x' || left(md5({row}), 15))::bit(60)::bigint), 0)::text"


def _line(key: str, n: str, d: str, frm: str, v: str | None = None) -> str:
    ver = f", 'v', {v}" if v else ""
    return f"SELECT json_build_object('k', {literal(key)}, 'n', {n}, 'd', {d}{ver})::text FROM {frm};"


def _version(alias: str) -> str:
    """Which tuple versions are there: any INSERT, UPDATE or DELETE makes a new tuple (new ctid and xmin)
    or removes one, so an equal sum on the *same host* means the relation was not written in between
    (VACUUM FULL or a freeze change it too: then the content is fingerprinted again, never trusted)."""
    return f"coalesce(sum(hashtextextended({alias}.ctid::text || {alias}.xmin::text, 0)), 0)::text"


def version_expr(item: Item) -> str:
    heap = f"(SELECT {_version('t')} FROM ONLY {item.rel} t)"
    if item.kind == "chunk" and item.compressed:
        zrel = item.zrel
        return f"{heap} || '/' || (SELECT {_version('z')} FROM {zrel} z) || ' ' || {literal(zrel)}"
    return heap


def fingerprint_sql(key: str, item: Item, columns: list[str]) -> str:
    """One line of JSON ``{"k", "n", "d", "v"}``: rows and digest of a table or uncompressed chunk; for a
    compressed chunk its storage (batches + rows outside them, ``d`` = ``storage rows-digest/batches:digest``);
    ``v``: the tuple versions the digest was read from, in the same scan (compared only with the same host's)."""
    if item.kind == "chunk" and item.compressed:
        zrel = item.zrel
        return (f"SELECT json_build_object('k', {literal(key)}, 'n', h.n, 'd', 'storage ' || h.d || '/' || z.n || "
                "':' || z.d, "
                f"'v', h.v || '/' || z.v || ' ' || {literal(zrel)})::text "
                f"FROM (SELECT count(*) AS n, {_digest(columns)} AS d, {_version('t')} AS v FROM ONLY {item.rel} t) h, "
                f"(SELECT count(*) AS n, {_digest([], 'z')} AS d, {_version('z')} AS v FROM {zrel} z) z;")
    return _line(key, "count(*)", _digest(columns), f"ONLY {item.rel} t", _version("t"))


def version_sql(key: str, item: Item) -> str:
    """One line ``{"k", "v"}``: only the tuple versions (a scan without reading the rows' content)."""
    return f"SELECT json_build_object('k', {literal(key)}, 'v', {version_expr(item)})::text;"


def content_sql(key: str, item: Item, columns: list[str]) -> str:
    """A chunk's rows read through its hypertable for its range (compressed or not: the same rows, the same digest)."""
    return _line(key, "count(*)", _digest(columns), f"{item.ht_rel} t WHERE {range_where(item)}", version_expr(item))


def script(lines: list[str]) -> str:
    return "SET search_path = pg_catalog, pg_temp;\n" + "\n".join(lines) + "\n"


def parse_prints(stdout: str) -> dict[str, dict]:
    out = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            out[d["k"]] = {k: (int(v) if k == "n" else str(v)) for k, v in d.items() if k != "k"}
    return out


def split_balanced(keys: list[str], weight: dict[str, int], parts: int) -> list[list[str]]:
    """Keys in ``parts`` groups of about equal weight (largest first into the lightest group)."""
    groups: list[list[str]] = [[] for _ in range(max(1, parts))]
    load = [0] * len(groups)
    for k in sorted(keys, key=lambda k: (-weight.get(k, 0), k)):
        i = load.index(min(load))
        groups[i].append(k)
        load[i] += weight.get(k, 0) + 1
    return [g for g in groups if g]


# ---- the plan ---------------------------------------------------------------------------------

COPY, CREATE, DROP, COMPRESS = Action.COPY, Action.CREATE, Action.DROP, Action.COMPRESS
DECOMPRESS, SAME = Action.DECOMPRESS, Action.SAME

PrintLike = Print | dict  # a print, or its JSON form (``delta_types.Print.from_json``)


@dataclass
class Plan:
    actions: dict[str, Action] = field(default_factory=dict)  # key -> action
    recheck: list[str] = field(default_factory=list)  # keys whose storage differs: compare by content first

    def keys(self, *actions: Action) -> list[str]:
        return sorted(k for k, a in self.actions.items() if a in actions)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {action: n}}`` (plain strings: this goes to the journal)."""
        out: dict[str, dict[str, int]] = {}
        for k, a in self.actions.items():
            kind = out.setdefault(key_kind(k), {})
            kind[a.value] = kind.get(a.value, 0) + 1
        return out


def _nd(p: PrintLike | None) -> tuple[int | None, str | None] | None:
    q = as_print(p)
    return None if q is None else (q.n, q.d)


def diff(src_items: Mapping[str, Item], src_prints: Mapping[str, PrintLike], tgt_items: Mapping[str, Item],
         tgt_prints: Mapping[str, PrintLike], content: Mapping | None = None) -> Plan:
    """The plan that makes the target's chunks and tables equal to the source's. ``content``:
    ``{key: (source print, target print)}`` by content, for keys whose storage fingerprints differed."""
    plan = Plan()
    content = content or {}
    for key, s in src_items.items():
        t = tgt_items.get(key)
        sp, tp = as_print(src_prints.get(key)), as_print(tgt_prints.get(key))
        if t is None:
            plan.actions[key] = SAME if sp is not None and sp.n == 0 else CREATE  # an empty chunk holds nothing to move
            continue
        if sp is not None and sp.same_content(tp):
            same = True
        elif key in content:
            same = _nd(content[key][0]) == _nd(content[key][1])
        elif s.kind == "chunk" and (s.compressed or t.compressed):
            plan.recheck.append(key)
            continue
        else:
            same = False
        if not same:
            plan.actions[key] = COPY
        elif s.kind == "chunk" and s.compressed != t.compressed:
            plan.actions[key] = COMPRESS if s.compressed else DECOMPRESS
        else:
            plan.actions[key] = SAME
    for key in tgt_items:
        if key not in src_items:
            plan.actions[key] = DROP
    plan.recheck.sort()
    return plan


# ---- statements on the target -----------------------------------------------------------------

def copy_out_sql(item: Item, columns: list[str], where: str | None = None) -> str:
    """On the source: the item's rows, as COPY text (a chunk's through its hypertable, decompressed).
    ``where``: only a chunk's rows that match it (on ``t``: the slices ``delta_slices.where`` names)."""
    cols = ", ".join(ident(c) for c in columns)
    if item.kind == "chunk":
        part = f" AND {where}" if where else ""
        return f"COPY (SELECT {cols} FROM {item.ht_rel} t WHERE {range_where(item)}{part}) TO STDOUT"
    return f"COPY (SELECT {cols} FROM ONLY {item.rel}) TO STDOUT"


def find_chunk_sql(ht_schema: str, ht_name: str, start: int, end: int) -> str:
    """The chunk of hypertable ``ht_schema.ht_name`` with range [start, end), as a regclass (no row when none)."""
    return ("SELECT format('%I.%I', ch.schema_name, ch.table_name)::regclass AS c FROM _timescaledb_catalog.chunk ch "
            "JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id "
            "JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = ch.id "
            "JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id "
            f"WHERE h.schema_name = {literal(ht_schema)} AND h.table_name = {literal(ht_name)} AND NOT ch.dropped "
            f"AND ds.range_start = {int(start)} AND ds.range_end = {int(end)}")


def _as_owner(owner: str) -> list[str]:
    """From here to the end of the transaction, as ``owner`` (the replication role set before stays)."""
    return [f"SET LOCAL ROLE {ident(owner)}", "SET LOCAL row_security = off"]


def _need_schema(schema: str | None, routine: str, chunk: str) -> str:
    if not schema:
        raise ValueError(f"{routine} of {chunk}: TimescaleDB is not installed on the target")
    return schema


def _chunk_api(schema: str | None, routine: str, chunk: str) -> str:
    schema = _need_schema(schema, routine, chunk)
    flag = "if_not_compressed" if routine == api.COMPRESS else "if_compressed"
    return f"SELECT {api.call(schema, routine, f'{chunk}, {flag} => true')}"


def copy_in_script(stmts: list[str]) -> tuple[bytes, bytes]:
    """``copy_in_statements`` as a psql script around the COPY rows, for ``Remote.pipe_to``: (header, trailer).
    The header pins the session and opens the transaction up to ``COPY … FROM STDIN``; the trailer ends
    the rows (``\\.``), runs what follows the COPY and commits. Sent only after a complete stream, so a
    sender that fails leaves psql at end of input inside an open transaction, which the server rolls back."""
    at = next(i for i, st in enumerate(stmts) if st.startswith("COPY ") and st.endswith(" FROM STDIN"))
    head = [pin_line(), "BEGIN;"] + [st + ";" for st in stmts[: at + 1]]
    tail = ["\\."] + [st + ";" for st in stmts[at + 1:]] + ["COMMIT;"]
    return ("\n".join(head) + "\n").encode(), ("\n".join(tail) + "\n").encode()


def _existing(tgt: Item | None, action: Action, src: Item) -> Item:
    if tgt is None:
        raise ValueError(f"{action} of {src.rel}: the target has no such item")
    return tgt


def copy_in_statements(action: Action, src: Item, tgt: Item | None, target_ht: dict | None, columns: list[str],
                       where: str | None = None, schema: str | None = None) -> list[str]:
    """On the target, one transaction: triggers and foreign keys off (``session_replication_role =
    replica``: the rows are the source's, already checked there), then as the table's owner the old rows
    out, the source's in (COPY FROM STDIN), and a chunk compressed on the source compressed again.
    ``target_ht``: the target's hypertable of a chunk (``schema``, ``name``, ``owner``). ``where`` (a
    chunk uncompressed on both hosts, ``COPY``): only the rows that match it go out and come in.
    ``schema``: TimescaleDB's (``tsdb_api.api_schema``), for compress/decompress (guarded first)."""
    cols = ", ".join(ident(c) for c in columns)
    stmts = ["SET LOCAL session_replication_role = replica"]
    if src.kind == "table":
        t = _existing(tgt, action, src)
        return stmts + _as_owner(t.owner) + [f"DELETE FROM ONLY {t.rel}", f"COPY {t.rel} ({cols}) FROM STDIN"]
    uses = ([api.DECOMPRESS] if action == COPY and tgt is not None and tgt.compressed else []) + (
        [api.COMPRESS] if src.compressed else [])
    guard = [api.guard_sql(schema, uses)] if uses and schema else []
    if action == COPY:
        tgt = _existing(tgt, action, src)
        stmts += guard + _as_owner(tgt.owner)
        if tgt.compressed:
            stmts.append(_chunk_api(schema, api.DECOMPRESS, f"{literal(tgt.rel)}::regclass"))
        stmts += [f"DELETE FROM ONLY {tgt.rel}" + (f" t WHERE {where}" if where else ""),
                  f"COPY {tgt.rel} ({cols}) FROM STDIN"]
        if src.compressed:
            stmts.append(_chunk_api(schema, api.COMPRESS, f"{literal(tgt.rel)}::regclass"))
        return stmts
    if target_ht is None:
        raise ValueError(f"{action} of {src.rel}: the target has no hypertable {src.hypertable}")
    # a chunk the target does not have: created (superuser: catalog work) with the source's range (and name,
    # when free), then filled through its hypertable as the hypertable's owner
    ht = f"{ident(target_ht['schema'])}.{ident(target_ht['name'])}"
    slices = json.dumps({target_ht["time_column"]: [int(src.start), int(src.end)]})
    name = f"{ident(src.schema)}.{ident(src.name)}"
    stmts.append(f"SELECT _timescaledb_functions.create_chunk({literal(ht)}::regclass, {literal(slices)}::jsonb, "
                 f"{literal(src.schema)}, "
                 f"CASE WHEN to_regclass({literal(name)}) IS NULL THEN {literal(src.name)} END)")
    stmts += guard + _as_owner(target_ht["owner"]) + [f"COPY {ht} ({cols}) FROM STDIN"]
    if src.compressed:
        stmts.append(_chunk_api(schema, api.COMPRESS, "x.c") + " FROM "
                     f"({find_chunk_sql(target_ht['schema'], target_ht['name'], src.start, src.end)}) x")
    return stmts


def state_statements(action: Action, tgt: Item, schema: str | None = None) -> list[str]:
    """One transaction. DROP as superuser (catalog work); compress/decompress as the chunk's owner."""
    if action == DROP:
        return ["BEGIN", f"DROP TABLE {tgt.rel}", "COMMIT"]
    if action in (COMPRESS, DECOMPRESS):
        routine = api.COMPRESS if action == COMPRESS else api.DECOMPRESS
        return (["BEGIN", api.guard_sql(_need_schema(schema, routine, tgt.rel), [routine])] + _as_owner(tgt.owner)
                + [_chunk_api(schema, routine, f"{literal(tgt.rel)}::regclass"), "COMMIT"])
    raise ValueError(action)


# ---- sequences, large objects, continuous aggregates' refresh state ---------------------------

def sequence_statements(src_cat: dict, tgt_cat: dict) -> dict[str, str]:
    """``{sequence key: setval}`` for every sequence whose state differs."""
    have = {(s["schema"], s["name"]): s for s in tgt_cat.get("sequences") or []}
    out = {}
    for s in src_cat.get("sequences") or []:
        t = have.get((s["schema"], s["name"]))
        if t is not None and t.get("last_value") == s.get("last_value"):
            continue
        rel = literal(f"{ident(s['schema'])}.{ident(s['name'])}")
        out[f"sequence {ident(s['schema'])}.{ident(s['name'])}"] = (
            f"SELECT setval({rel}, {int(s['last_value'])}, true);" if s.get("last_value") is not None
            else f"SELECT setval({rel}, {int(s['start_value'])}, false);")
    return out


def large_object_diff(src_cat: dict, tgt_cat: dict) -> tuple[list[int], list[int]]:
    """(oids to copy, oids to remove) on the target."""
    want = {int(lo["oid"]): lo for lo in src_cat.get("large_objects") or []}
    have = {int(lo["oid"]): lo for lo in tgt_cat.get("large_objects") or []}
    copy = sorted(o for o, lo in want.items() if have.get(o) != lo)
    return copy, sorted(set(have) - set(want))


def large_object_sql(oid: int, data_b64: str, owner: str, acl_grants: list[tuple[str, str]], exists: bool) -> str:
    stmts = [f"SELECT lo_unlink({int(oid)});"] if exists else []
    stmts.append(f"SELECT lo_from_bytea({int(oid)}, decode({literal(data_b64)}, 'base64'));")
    stmts.append(f"ALTER LARGE OBJECT {int(oid)} OWNER TO {ident(owner)};")
    stmts += [f"GRANT {priv} ON LARGE OBJECT {int(oid)} TO {'PUBLIC' if g == 'PUBLIC' else ident(g)};" for g,
              priv in acl_grants]
    return "\n".join(stmts)


LO_DATA_SQL = ("SELECT json_build_object('data', encode(lo_get({oid}), 'base64'), 'owner', "
               "pg_get_userbyid(l.lomowner), "
               "'grants', (SELECT coalesce(json_agg(json_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE "
               "pg_get_userbyid(a.grantee) END, "
               "a.privilege_type)), '[]'::json) FROM aclexplode(l.lomacl) a WHERE a.grantee <> l.lomowner)) "
               "FROM pg_largeobject_metadata l WHERE l.oid = {oid};")


def cagg_state(catalog: dict) -> dict:
    """The refresh state with hypertable ids replaced by keys: comparable between hosts."""
    key = {h["id"]: h["key"] for h in catalog.get("hypertables") or []}
    st = catalog.get("cagg_state") or {}
    out = {}
    for name, fields in (("thresholds", ("watermark",)), ("watermarks", ("watermark",)),
                         ("hypertable_log", ("low", "high")), ("materialization_log", ("low", "high"))):
        out[name] = sorted([key.get(r["id"], f"id {r['id']}")] + [r[f] for f in fields] for r in st.get(name) or [])
    return out


def cagg_state_sql(src_cat: dict, tgt_cat: dict) -> list[str]:
    """Statements that give the target the source's refresh state (its own hypertable ids)."""
    ids = {h["key"]: int(h["id"]) for h in tgt_cat.get("hypertables") or []}
    want = cagg_state(src_cat)
    tables = {"thresholds": ("continuous_aggs_invalidation_threshold", "hypertable_id", ("watermark",)),
              "watermarks": ("continuous_aggs_watermark", "mat_hypertable_id", ("watermark",)),
              "hypertable_log": ("continuous_aggs_hypertable_invalidation_log", "hypertable_id",
                                 ("lowest_modified_value", "greatest_modified_value")),
              "materialization_log": ("continuous_aggs_materialization_invalidation_log", "materialization_id",
                                      ("lowest_modified_value", "greatest_modified_value"))}
    stmts = []
    for name, (table, idcol, cols) in tables.items():
        stmts.append(f"DELETE FROM _timescaledb_catalog.{table};")
        for row in want[name]:
            if row[0] not in ids:
                raise ValueError(f"the target has no hypertable {row[0]} for {table}")
            stmts.append(f"INSERT INTO _timescaledb_catalog.{table} ({idcol}, {', '.join(cols)}) VALUES "
                         f"({ids[row[0]]}, {', '.join(str(int(v)) for v in row[1:])});")
    return stmts


def rename_statements(src_items: Mapping[str, Item], tgt_items: Mapping[str, Item]) -> list[str]:
    """Matched chunks (and their compressed chunks) get the source's names: verify compares chunks'
    grants and rows by name. Two steps (temporary names first), so names may swap without collisions."""
    moves = []
    for key, s in src_items.items():
        t = tgt_items.get(key)
        if s.kind != "chunk" or t is None:
            continue
        if t.name != s.name:
            moves.append((t.schema, t.name, s.name))
        if s.compressed and t.compressed and t.compressed_name != s.compressed_name:
            moves.append((t.zpart("compressed_schema"), t.zpart("compressed_name"), s.zpart("compressed_name")))
    first = [f"ALTER TABLE {ident(sch)}.{ident(old)} RENAME TO {ident(f'trackerdb_rename_{i}')};" for i,
             (sch, old, _) in enumerate(moves)]
    second = [f"ALTER TABLE {ident(sch)}.{ident(f'trackerdb_rename_{i}')} RENAME TO {ident(new)};" for i,
              (sch, _, new) in enumerate(moves)]
    return first + second
