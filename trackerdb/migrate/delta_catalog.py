"""What one host holds, for the pre-copy path (``delta_sql``): hypertables (keyed by what they are), chunks
with their range, regular tables, sequences, large objects and the continuous aggregates' refresh state,
read in one statement as one JSON document."""

from __future__ import annotations

from .. import tsdb_api as api
from ..sql import literal

_HT_KEY = ("CASE WHEN ca.mat_hypertable_id IS NULL THEN format('%I.%I', h.schema_name, h.table_name) "
           "ELSE format('cagg %I.%I', ca.user_view_schema, ca.user_view_name) END")
_COLS = ("(SELECT coalesce(json_agg(a.attname ORDER BY a.attnum), '[]'::json) FROM pg_attribute a WHERE a.attrelid = "
         "{rel} "
         "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '')")
INTERNAL_RE = literal(api.INTERNAL_SCHEMAS_RE)
_USER_NS = f"n.nspname !~ {INTERNAL_RE}"

CATALOG_SQL = f"""SET search_path = pg_catalog, pg_temp;
WITH ht AS (
  SELECT h.id, h.schema_name, h.table_name, {_HT_KEY} AS key,
         (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = format('%I.%I', h.schema_name,
             h.table_name)::regclass) AS owner,
         (SELECT count(*) FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = h.id) AS dims,
         (SELECT d.id FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = h.id
          ORDER BY d.id LIMIT 1) AS dim_id
  FROM _timescaledb_catalog.hypertable h LEFT JOIN _timescaledb_catalog.continuous_agg ca ON ca.mat_hypertable_id = h.id
  WHERE h.compression_state <> 2)
SELECT json_build_object(
  'hypertables', (SELECT coalesce(json_agg(json_build_object('id', ht.id, 'schema', ht.schema_name, 'name',
      ht.table_name,
      'key', ht.key, 'owner', ht.owner, 'dims', ht.dims, 'time_column', d.column_name, 'time_type',
          d.column_type::regtype::text,
      'columns', {_COLS.format(rel="format('%I.%I', ht.schema_name, ht.table_name)::regclass")}) ORDER BY ht.id),
          '[]'::json)
    FROM ht LEFT JOIN _timescaledb_catalog.dimension d ON d.id = ht.dim_id),
  'chunks', (SELECT coalesce(json_agg(json_build_object('hypertable', ht.key, 'schema', ch.schema_name, 'name',
      ch.table_name,
      'start', ds.range_start, 'end', ds.range_end, 'compressed', cz.id IS NOT NULL,
      'compressed_schema', cz.schema_name, 'compressed_name', cz.table_name,
      'owner', pg_get_userbyid((SELECT c.relowner FROM pg_class c WHERE c.oid = format('%I.%I', ch.schema_name,
          ch.table_name)::regclass)),
      'bytes', pg_total_relation_size(format('%I.%I', ch.schema_name, ch.table_name)::regclass)
               + CASE WHEN cz.id IS NULL THEN 0 ELSE pg_total_relation_size(format('%I.%I', cz.schema_name,
                   cz.table_name)::regclass) END)
      ORDER BY ch.id), '[]'::json)
    FROM _timescaledb_catalog.chunk ch JOIN ht ON ht.id = ch.hypertable_id
    JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = ch.id AND cc.dimension_slice_id IS NOT NULL
    JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id AND ds.dimension_id = ht.dim_id
    LEFT JOIN _timescaledb_catalog.chunk cz ON cz.id = ch.compressed_chunk_id
    WHERE NOT ch.dropped AND NOT ch.osm_chunk),
  'tables', (SELECT coalesce(json_agg(json_build_object('schema', n.nspname, 'name', c.relname,
      'key', format('%I.%I', n.nspname, c.relname), 'owner', pg_get_userbyid(c.relowner),
      'columns', {_COLS.format(rel='c.oid')}, 'bytes', pg_total_relation_size(c.oid)) ORDER BY n.nspname,
          c.relname), '[]'::json)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND {_USER_NS}
      AND NOT EXISTS (SELECT 1 FROM ht WHERE ht.schema_name = n.nspname AND ht.table_name = c.relname)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.deptype = 'e')),
  'sequences', (SELECT coalesce(json_agg(json_build_object('schema', s.schemaname, 'name', s.sequencename,
      'last_value', s.last_value::text, 'start_value', s.start_value::text) ORDER BY s.schemaname, s.sequencename),
          '[]'::json)
    FROM pg_sequences s WHERE s.schemaname !~ {INTERNAL_RE}),
  'large_objects', (SELECT coalesce(json_agg(json_build_object('oid', l.oid::bigint, 'owner',
      pg_get_userbyid(l.lomowner),
      'acl', l.lomacl::text, 'md5', md5(lo_get(l.oid))) ORDER BY l.oid), '[]'::json) FROM pg_largeobject_metadata l),
  'cagg_state', json_build_object(
    'thresholds', (SELECT coalesce(json_agg(json_build_object('id', t.hypertable_id, 'watermark',
        t.watermark::text)), '[]'::json)
                   FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold t),
    'watermarks', (SELECT coalesce(json_agg(json_build_object('id', w.mat_hypertable_id, 'watermark',
        w.watermark::text)), '[]'::json)
                   FROM _timescaledb_catalog.continuous_aggs_watermark w),
    'hypertable_log', (SELECT coalesce(json_agg(json_build_object('id', l.hypertable_id, 'low',
        l.lowest_modified_value::text,
                         'high', l.greatest_modified_value::text)), '[]'::json)
                       FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l),
    'materialization_log', (SELECT coalesce(json_agg(json_build_object('id', l.materialization_id,
                              'low', l.lowest_modified_value::text, 'high', l.greatest_modified_value::text)),
                                  '[]'::json)
                            FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l))
);
"""
