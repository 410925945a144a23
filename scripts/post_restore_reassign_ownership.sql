-- Give the application's objects back to their owner role after `pg_restore --no-owner`
-- (which leaves everything owned by the restoring superuser).
--
--   psql -X -v ON_ERROR_STOP=1 -v owner=tracker -d <database> -f post_restore_reassign_ownership.sql
--
-- Targeted: one ALTER … OWNER per object of the application's schemas, generated from the catalog
-- and run with \gexec. Deliberately NOT `REASSIGN OWNED BY postgres TO tracker`: that would also
-- hand over the extensions' objects (TimescaleDB's catalog, PostGIS' spatial_ref_sys, …) and
-- everything else postgres owns in this database. Extension members are skipped everywhere.
-- Idempotent: objects already owned by the role generate no statement.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

SELECT oid AS owner_oid FROM pg_roles WHERE rolname = :'owner' \gset
SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL AS has_timescaledb \gset

CREATE TEMP VIEW trackerdb_app_ns AS
  SELECT n.oid, n.nspname, n.nspowner FROM pg_namespace n
  WHERE n.nspname !~ '^(pg_|_timescaledb|timescaledb_|information_schema$|toolkit_experimental$|_prom)'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                    AND d.objid = n.oid AND d.deptype = 'e');

-- Schemas (public is owned by pg_database_owner, i.e. the database owner: leave it).
SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, :'owner')
FROM trackerdb_app_ns WHERE nspname <> 'public' AND nspowner <> :owner_oid
ORDER BY nspname \gexec

\if :has_timescaledb
-- Continuous aggregates: ALTER MATERIALIZED VIEW on the user view carries the change to its
-- materialization hypertable and internal views.
SELECT format('ALTER MATERIALIZED VIEW %I.%I OWNER TO %I', a.user_view_schema, a.user_view_name, :'owner')
FROM _timescaledb_catalog.continuous_agg a
JOIN pg_class c ON c.oid = format('%I.%I', a.user_view_schema, a.user_view_name)::regclass
WHERE c.relowner <> :owner_oid ORDER BY 1 \gexec
\endif

-- Relations (caggs done above). Sequences owned by a column (serial/identity) follow their table.
SELECT format('ALTER %s %I.%I OWNER TO %I',
       CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW'
                      WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE' END,
       n.nspname, c.relname, :'owner')
FROM pg_class c JOIN trackerdb_app_ns n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relowner <> :owner_oid
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
           AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
ORDER BY CASE c.relkind WHEN 'r' THEN 0 WHEN 'p' THEN 0 WHEN 'S' THEN 1 ELSE 2 END, n.nspname, c.relname \gexec

-- Functions, procedures, aggregates.
SELECT format('ALTER %s %s OWNER TO %I',
       CASE p.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       p.oid::regprocedure, :'owner')
FROM pg_proc p JOIN trackerdb_app_ns n ON n.oid = p.pronamespace
WHERE p.proowner <> :owner_oid
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1 \gexec

-- Types: domains, enums, ranges, standalone composite types (table row types follow their table).
SELECT format('ALTER %s %I.%I OWNER TO %I', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
       n.nspname, t.typname, :'owner')
FROM pg_type t JOIN trackerdb_app_ns n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE t.typowner <> :owner_oid
  AND (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
ORDER BY 1 \gexec

\if :has_timescaledb
-- Hypertables in TimescaleDB's internal schema (materialization and compressed hypertables)
-- and every chunk: altering a hypertable propagates to its chunks, this catches what did not.
SELECT format('ALTER TABLE %I.%I OWNER TO %I', h.schema_name, h.table_name, :'owner')
FROM _timescaledb_catalog.hypertable h
JOIN pg_class c ON c.oid = format('%I.%I', h.schema_name, h.table_name)::regclass
WHERE c.relowner <> :owner_oid ORDER BY 1 \gexec

SELECT format('ALTER TABLE %I.%I OWNER TO %I', ch.schema_name, ch.table_name, :'owner')
FROM _timescaledb_catalog.chunk ch
JOIN pg_class c ON c.oid = format('%I.%I', ch.schema_name, ch.table_name)::regclass
WHERE NOT ch.dropped AND c.relowner <> :owner_oid ORDER BY 1 \gexec

-- Background jobs run as their owner (Timescale docs, "Ownership of background jobs").
UPDATE _timescaledb_config.bgw_job SET owner = :'owner'::regrole
WHERE id >= 1000 AND owner <> :'owner'::regrole;
\endif
