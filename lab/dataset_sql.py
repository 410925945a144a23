"""The psql script that generates the tracker dataset (see lab/dataset.py). Pure text builders."""

from __future__ import annotations

import json
import re

from trackerdb.errors import OpsError

from .dataset_shape import (  # noqa: F401
    BASE_TIME,
    COMPRESS_BEFORE,
    DB,
    EVENTS_COMPRESS_BEFORE,
    EVENTS_PER_DEVICE,
    EVENT_INTERVAL_S,
    EVENT_TYPES,
    MODELS,
    OWNER,
    READONLY,
    REFUSAL,
    RETENTION,
    SPAN_DAYS,
    TABLES,
    UDA,
    _Rnd,
    _check,
    _day_insert,
    sizes,
)


def generate_sql(scale: float = 1.0, seed: int = 42, *, timescale_features: bool = True,
                 timescaledb_version: str | None = None, database: str = DB) -> str:
    """The psql script (run as postgres: ``psql -X -v ON_ERROR_STOP=1 -d postgres``).

    ``timescale_features`` adds a block that creates a continuous aggregate and compression only
    when the server runs the Timescale-licensed edition; the Apache edition skips it at run time.
    ``database`` names the database (the schema stays ``tracker``): the rehearsal's calibration copy
    is generated next to the real one.
    """
    _check(scale, seed)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
        raise OpsError(f"database name {database!r} is not a plain lower-case identifier", hint="e.g. tracker_calib")
    sz = sizes(scale)
    rnd = _Rnd(seed)
    dkey, gkey, ekey = "g", "g + 500000000", "d.id::bigint * 100000 + n"
    days = "\n".join(_day_insert(day, rnd) for day in range(SPAN_DAYS))
    event_types = "ARRAY[" + ", ".join(f"'{e}'" for e in EVENT_TYPES) + "]"
    models = "ARRAY[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    ts_block = _timescale_block() if timescale_features else ""
    if timescaledb_version is not None and not re.fullmatch(r"\d+\.\d+\.\d+", timescaledb_version):
        raise OpsError(f"TimescaleDB version {timescaledb_version!r} is not x.y.z", hint="e.g. 2.18.2")
    ts_version = f" VERSION '{timescaledb_version}'" if timescaledb_version else ""
    return f"""-- trackerdb dataset: scale={scale!r} seed={seed} devices={sz.devices} geofences={sz.geofences}
-- expected rows: {json.dumps(sz.counts(), sort_keys=True)}
-- Run as the postgres superuser: psql -X -v ON_ERROR_STOP=1 -d postgres -f <this file>
\\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET statement_timeout = 0;

-- 1. Refuse a tracker database that already has relations (checked before any change).
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{database}') AS tracker_db_exists \\gset
\\if :tracker_db_exists
\\c {database}
SET client_min_messages = warning;
DO $check$
DECLARE n bigint;
BEGIN
    SELECT count(*) INTO n
    FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg\\_toast%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e');
    IF n > 0 OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{DB}') THEN
        RAISE EXCEPTION '{REFUSAL}: it already holds % relation(s); the generator never drops or overwrites data', n
            USING HINT = 'generate into a fresh cluster, or remove that database yourself if it is disposable';
    END IF;
END
$check$;
\\c postgres
SET client_min_messages = warning;
\\endif

-- 2. Roles (cluster-wide). No password here: provisioning sets it from Secrets Manager.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN
        CREATE ROLE {OWNER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READONLY}') THEN
        CREATE ROLE {READONLY} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
END
$roles$;
COMMENT ON ROLE {OWNER} IS 'Owner of the tracker database and the application login';
COMMENT ON ROLE {READONLY} IS 'Read-only access to the tracker schema (grant it to reporting logins)';

-- 3. The database.
SELECT 'CREATE DATABASE {database} OWNER {OWNER} ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{database}') \\gexec
ALTER DATABASE {database} OWNER TO {OWNER};
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {OWNER};
GRANT CONNECT ON DATABASE {database} TO {READONLY};
COMMENT ON DATABASE {database} IS 'GPS tracker positions and events (generated dataset, scale {scale!r}, seed {seed})';

\\c {database}
SET client_min_messages = warning;
SET statement_timeout = 0;
SET timezone = 'UTC';
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS timescaledb{ts_version};
CREATE SCHEMA {DB} AUTHORIZATION {OWNER};
COMMENT ON SCHEMA {DB} IS 'Tracker application data';

-- 4. Objects, created by (and so owned by) the tracker role.
SET ROLE {OWNER};

CREATE TYPE tracker.device_status AS ENUM ('active', 'inactive', 'maintenance', 'retired');
COMMENT ON TYPE tracker.device_status IS 'Lifecycle state of a tracker device';

CREATE SEQUENCE tracker.device_event_id_seq AS bigint;
COMMENT ON SEQUENCE tracker.device_event_id_seq IS 'Standalone sequence for device_events.id';

CREATE TABLE tracker.devices (
    id            integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    serial_number text NOT NULL UNIQUE,
    imei          text NOT NULL UNIQUE CHECK (imei ~ '^[0-9]{{15}}$'),
    name          text NOT NULL,
    model         text NOT NULL,
    firmware      text NOT NULL,
    status        tracker.device_status NOT NULL DEFAULT 'active',
    home_lon      double precision NOT NULL,
    home_lat      double precision NOT NULL,
    radius        double precision NOT NULL,
    home          geography(Point, 4326) NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{{}}',
    installed_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tracker.devices IS 'GPS tracker devices installed in vehicles';
COMMENT ON COLUMN tracker.devices.imei IS '15-digit modem IMEI';
COMMENT ON COLUMN tracker.devices.home IS 'Depot the vehicle returns to';
COMMENT ON COLUMN tracker.devices.radius IS 'Radius in degrees of the route the generator drives';

CREATE TABLE tracker.geofences (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('depot', 'customer', 'restricted', 'city')),
    area        geography(Polygon, 4326) NOT NULL,
    boundary    geometry(Polygon, 4326) NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL
);
CREATE INDEX geofences_area_gist ON tracker.geofences USING gist (area);
CREATE INDEX geofences_boundary_gist ON tracker.geofences USING gist (boundary);
COMMENT ON TABLE tracker.geofences IS 'Named polygons; devices raise events when they cross them';

CREATE TABLE tracker.device_geofences (
    device_id   integer NOT NULL REFERENCES tracker.devices (id) ON DELETE CASCADE,
    geofence_id integer NOT NULL REFERENCES tracker.geofences (id) ON DELETE CASCADE,
    PRIMARY KEY (device_id, geofence_id)
);
COMMENT ON TABLE tracker.device_geofences IS 'Which geofences each device is watched against';

CREATE TABLE tracker.location_reports (
    device_id    integer NOT NULL,
    reported_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    geog         geography(Point, 4326) NOT NULL,
    speed_kmh    real,
    heading      smallint CHECK (heading BETWEEN 0 AND 359),
    altitude_m   real,
    accuracy_m   real,
    battery_pct  smallint CHECK (battery_pct BETWEEN 0 AND 100),
    satellites   smallint,
    ignition     boolean
);
SELECT create_hypertable('tracker.location_reports', 'reported_at',
                         chunk_time_interval => interval '1 day', create_default_indexes => false);
COMMENT ON TABLE tracker.location_reports IS 'Position fixes reported by devices (hypertable, 1-day chunks)';
COMMENT ON COLUMN tracker.location_reports.geog IS 'WGS84 position';
COMMENT ON COLUMN tracker.location_reports.received_at IS 'When the server received the fix';

CREATE TABLE tracker.device_events (
    id          bigint NOT NULL DEFAULT nextval('tracker.device_event_id_seq'),
    device_id   integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    event_type  text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{{}}'
);
ALTER SEQUENCE tracker.device_event_id_seq OWNED BY tracker.device_events.id;
SELECT create_hypertable('tracker.device_events', 'occurred_at',
                         chunk_time_interval => interval '2 days', create_default_indexes => false);
COMMENT ON TABLE tracker.device_events IS 'Discrete device events with a JSON payload (hypertable, 2-day chunks)';

-- 5. Data, generated on the server.
INSERT INTO tracker.devices (id, serial_number, imei, name, model, firmware, status,
                             home_lon, home_lat, radius, home, metadata, installed_at, updated_at)
SELECT g,
       'TRK-' || lpad(g::text, 7, '0'),
       lpad((350000000000000 + g * 7919)::text, 15, '0'),
       'Vehicle ' || g,
       ({models})[1 + floor({rnd(dkey, 1)} * {len(MODELS)})::int],
       format('%s.%s.%s', 1 + floor({rnd(dkey, 2)} * 3)::int, floor({rnd(dkey, 3)} * 10)::int, floor({rnd(dkey, 4)} *
           40)::int),
       (CASE WHEN {rnd(dkey, 5)} < 0.85 THEN 'active' WHEN {rnd(dkey, 5)} < 0.93 THEN 'inactive'
             WHEN {rnd(dkey, 5)} < 0.97 THEN 'maintenance' ELSE 'retired' END)::tracker.device_status,
       p.lon, p.lat, p.radius,
       ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
       jsonb_build_object('fleet', 'fleet-' || (1 + g % 17), 'plate', 'TR-' || lpad((g * 37 % 100000)::text, 5, '0'),
                          'sim', jsonb_build_object('iccid', '8901' || lpad((g * 104729)::text, 15, '0'), 'apn',
                              'iot.example')),
       timestamptz '{BASE_TIME}' - make_interval(days => 30 + floor({rnd(dkey, 6)} * 700)::int),
       timestamptz '{BASE_TIME}'
FROM generate_series(1, {sz.devices}) AS g
CROSS JOIN LATERAL (
    SELECT round((-9 + {rnd(dkey, 7)} * 38)::numeric, 6)::float8 AS lon,
           round((36 + {rnd(dkey, 8)} * 22)::numeric, 6)::float8 AS lat,
           round((0.01 + {rnd(dkey, 9)} * 0.09)::numeric, 4)::float8 AS radius
) p;

INSERT INTO tracker.geofences (id, name, kind, area, boundary, created_at)
SELECT g, 'Geofence ' || g,
       (ARRAY['depot', 'customer', 'restricted', 'city'])[1 + g % 4],
       b::geography, b,
       timestamptz '{BASE_TIME}' - make_interval(days => g % 365)
FROM generate_series(1, {sz.geofences}) AS g
CROSS JOIN LATERAL (
    SELECT ST_MakeEnvelope(x - w, y - h, x + w, y + h, 4326) AS b
    FROM (SELECT round((-9 + {rnd(gkey, 31)} * 38)::numeric, 5)::float8 AS x,
                 round((36 + {rnd(gkey, 32)} * 22)::numeric, 5)::float8 AS y,
                 round((0.005 + {rnd(gkey, 33)} * 0.05)::numeric, 5)::float8 AS w,
                 round((0.005 + {rnd(gkey, 34)} * 0.05)::numeric, 5)::float8 AS h) c
) p;

INSERT INTO tracker.device_geofences (device_id, geofence_id)
SELECT d, f
FROM generate_series(1, {sz.devices}) AS d
CROSS JOIN LATERAL (SELECT 1 + floor({rnd('d', 41)} * {sz.geofences})::int AS f1) a
CROSS JOIN LATERAL (VALUES (a.f1), (a.f1 % {sz.geofences} + 1)) AS v (f);
{days}

INSERT INTO tracker.device_events (id, device_id, occurred_at, event_type, payload)
SELECT (d.id - 1)::bigint * {EVENTS_PER_DEVICE} + n + 1,
       d.id,
       timestamptz '{BASE_TIME}' + make_interval(secs => n * {EVENT_INTERVAL_S} + floor({rnd(ekey, 51)} *
           {EVENT_INTERVAL_S - 1})),
       e.type,
       jsonb_build_object('seq', n, 'firmware', d.firmware)
         || CASE e.type
              WHEN 'low_battery' THEN jsonb_build_object('battery_pct', floor({rnd(ekey, 52)} * 15)::int)
              WHEN 'harsh_braking' THEN jsonb_build_object('decel_ms2', round((3 + {rnd(ekey, 53)} * 6)::numeric, 2))
              WHEN 'geofence_enter' THEN jsonb_build_object('geofence_id', 1 + floor({rnd(ekey, 54)} *
                  {sz.geofences})::int)
              WHEN 'geofence_exit' THEN jsonb_build_object('geofence_id', 1 + floor({rnd(ekey, 54)} *
                  {sz.geofences})::int)
              WHEN 'sos' THEN jsonb_build_object('acknowledged', {rnd(ekey, 55)} < 0.5, 'note', 'driver pressed SOS')
              ELSE '{{}}'::jsonb END
FROM tracker.devices d
CROSS JOIN generate_series(0, {EVENTS_PER_DEVICE - 1}) AS n
CROSS JOIN LATERAL (SELECT ({event_types})[1 + floor({rnd(ekey, 50)} * {len(EVENT_TYPES)})::int] AS type) e;

SELECT setval(pg_get_serial_sequence('tracker.devices', 'id'), {sz.devices});
SELECT setval(pg_get_serial_sequence('tracker.geofences', 'id'), {sz.geofences});
SELECT setval('tracker.device_event_id_seq', {sz.devices * EVENTS_PER_DEVICE});

-- 6. Vacuum the heaps before the big indexes exist (sets hint bits and the visibility map without
-- a full GiST cleanup scan), then build indexes and constraints in one pass each, then analyze.
VACUUM tracker.devices, tracker.geofences, tracker.device_geofences,
       tracker.location_reports, tracker.device_events;
CREATE UNIQUE INDEX location_reports_device_time ON tracker.location_reports (device_id, reported_at DESC);
CREATE INDEX location_reports_time ON tracker.location_reports (reported_at DESC);
CREATE INDEX location_reports_geog_gist ON tracker.location_reports USING gist (geog);
ALTER TABLE tracker.location_reports
    ADD CONSTRAINT location_reports_device_fk FOREIGN KEY (device_id) REFERENCES tracker.devices (id);
CREATE INDEX device_events_time ON tracker.device_events (occurred_at DESC);
CREATE UNIQUE INDEX device_events_id ON tracker.device_events (id, occurred_at);
CREATE INDEX device_events_device_time ON tracker.device_events (device_id, occurred_at DESC);
CREATE INDEX device_events_type ON tracker.device_events (event_type) WHERE event_type IN ('sos', 'low_battery');
ALTER TABLE tracker.device_events
    ADD CONSTRAINT device_events_device_fk FOREIGN KEY (device_id) REFERENCES tracker.devices (id);

-- 7. A view and functions.
CREATE VIEW tracker.latest_positions AS
SELECT DISTINCT ON (r.device_id)
       r.device_id, d.serial_number, d.name, r.reported_at, r.geog, r.speed_kmh, r.battery_pct
FROM tracker.location_reports r
JOIN tracker.devices d ON d.id = r.device_id
ORDER BY r.device_id, r.reported_at DESC;
COMMENT ON VIEW tracker.latest_positions IS 'Most recent position per device';

CREATE FUNCTION tracker.track_length_m(p_device integer, p_from timestamptz, p_to timestamptz)
RETURNS double precision
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    total double precision;
BEGIN
    IF p_to <= p_from THEN
        RAISE EXCEPTION 'track_length_m: empty interval % .. %', p_from, p_to;
    END IF;
    SELECT coalesce(ST_Length(ST_MakeLine(geog::geometry ORDER BY reported_at)::geography), 0)
      INTO total
      FROM tracker.location_reports
     WHERE device_id = p_device AND reported_at >= p_from AND reported_at < p_to;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION tracker.track_length_m(integer, timestamptz, timestamptz)
    IS 'Distance in metres a device drove in [p_from, p_to)';

CREATE FUNCTION tracker.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$fn$;
CREATE TRIGGER devices_touch_updated_at BEFORE UPDATE ON tracker.devices
    FOR EACH ROW EXECUTE FUNCTION tracker.touch_updated_at();
{ts_block}
RESET ROLE;

-- 8. Grants for the read-only role, now and for future tables.
GRANT USAGE ON SCHEMA tracker TO {READONLY};
GRANT SELECT ON ALL TABLES IN SCHEMA tracker TO {READONLY};
GRANT SELECT ON ALL SEQUENCES IN SCHEMA tracker TO {READONLY};
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA tracker GRANT SELECT ON TABLES TO {READONLY};
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA tracker GRANT SELECT ON SEQUENCES TO {READONLY};

-- 9. Database-level settings (pg_dump without --create leaves these out).
ALTER DATABASE {database} SET timezone = 'UTC';
ALTER DATABASE {database} SET statement_timeout = '15min';
ALTER DATABASE {database} SET idle_in_transaction_session_timeout = '10min';
ALTER DATABASE {database} SET search_path = "$user", public, tracker;
ALTER DATABASE {database} SET tracker.app_name = 'tracker-api';
{privileges_block()}
ANALYZE tracker.devices, tracker.geofences, tracker.device_geofences,
        tracker.location_reports, tracker.device_events;
"""


# ---- privileges the restore must keep exactly (kept apart so it merges on its own) -------------

REPORTING = "tracker_reporting"
REPORTING_SCHEMA = "reporting"
LARGE_OBJECT_OID = 424242


def privileges_block() -> str:
    """Objects whose owners and ACLs a restore must carry over exactly (issue 13), run as postgres in
    the tracker database after everything else: a second schema, a view owned by a reporting role
    over a table under row-level security (a view runs with its owner's rights, so the owner decides
    which rows readers see), column grants, a SECURITY DEFINER function with EXECUTE revoked from
    PUBLIC and a per-function setting, a function the postgres role owns, a large object with a
    grant, a domain and an enum, and default privileges in the new schema."""
    r, s = REPORTING, REPORTING_SCHEMA
    return f"""
-- 10. Privileges a restore must keep exactly (owners, ACLs, RLS, SECURITY DEFINER).
DO $reporting$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{r}') THEN
        CREATE ROLE {r} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
END
$reporting$;
CREATE SCHEMA {s} AUTHORIZATION {OWNER};
GRANT USAGE ON SCHEMA {s} TO {r};
GRANT USAGE ON SCHEMA {s} TO {READONLY};
SET ROLE {OWNER};
CREATE DOMAIN {s}.percent AS smallint CHECK (VALUE BETWEEN 0 AND 100);
CREATE TYPE {s}.severity AS ENUM ('info', 'warning', 'critical');
CREATE TABLE {s}.device_notes (
    id         integer PRIMARY KEY,
    device_id  integer NOT NULL REFERENCES {DB}.devices (id),
    fleet      text NOT NULL,
    severity   {s}.severity NOT NULL,
    battery    {s}.percent,
    note       text NOT NULL,
    internal   text
);
INSERT INTO {s}.device_notes (id, device_id, fleet, severity, battery, note, internal)
SELECT g, d.id, d.metadata->>'fleet', (ARRAY['info', 'warning', 'critical'])[1 + g % 3]::{s}.severity,
       (g * 7 % 101)::smallint, 'note ' || g, 'internal remark ' || g
FROM generate_series(1, 12) AS g JOIN {DB}.devices d ON d.id = 1 + (g - 1) % (SELECT count(*) FROM {DB}.devices);
ALTER TABLE {s}.device_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY device_notes_warnings ON {s}.device_notes FOR SELECT TO {r} USING (severity <> 'info');
GRANT SELECT (id, device_id, fleet, severity, battery, note) ON {s}.device_notes TO {r};
GRANT UPDATE (note) ON {s}.device_notes TO {r};
CREATE FUNCTION {s}.note_count() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT count(*) FROM {s}.device_notes $fn$;
REVOKE EXECUTE ON FUNCTION {s}.note_count() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {s}.note_count() TO {r};
SELECT lo_from_bytea({LARGE_OBJECT_OID}, convert_to('firmware image v1', 'UTF8'));
GRANT SELECT ON LARGE OBJECT {LARGE_OBJECT_OID} TO {READONLY};
RESET ROLE;
CREATE VIEW {s}.visible_notes AS SELECT id, device_id, severity, note FROM {s}.device_notes;
ALTER VIEW {s}.visible_notes OWNER TO {r};
GRANT SELECT ON {s}.visible_notes TO {READONLY};
CREATE FUNCTION {s}.maintenance_window() RETURNS text LANGUAGE sql IMMUTABLE
    AS $fn$ SELECT 'sun 02:00-04:00'::text $fn$;
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA {s} GRANT SELECT ON TABLES TO {r};
"""


def _timescale_block() -> str:
    """What production uses, in the Timescale-licensed edition only (checked at run time; the Apache
    edition skips it): compression with a policy, hierarchical continuous aggregates with refresh
    policies, a retention policy and a user-defined action, all owned by tracker.

    The data lives in January 2024, so "now"-relative policies are chosen to be deterministic:
    the compression policy's ``compress_after`` is computed at generation time so that a run compresses
    exactly the chunks ending by COMPRESS_BEFORE (the same ones compressed here) for a day after
    generation; the retention policy keeps 10 years (drops nothing); refreshes are idempotent.
    psql's \\if (not a DO block) because CALL refresh_continuous_aggregate cannot run in a transaction.
    """
    return f"""
SELECT current_setting('timescaledb.license', true) = 'timescale' AS tsl_edition \\gset
\\if :tsl_edition
-- compression: segment by device, order by time; all but the newest chunks compressed
ALTER TABLE tracker.location_reports SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'reported_at');
SELECT count(compress_chunk(c, if_not_compressed => true))
  FROM show_chunks('tracker.location_reports', older_than => timestamptz '{COMPRESS_BEFORE}') AS c;
ALTER TABLE tracker.device_events SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'occurred_at DESC');
SELECT count(compress_chunk(c, if_not_compressed => true))
  FROM show_chunks('tracker.device_events', older_than => timestamptz '{EVENTS_COMPRESS_BEFORE}') AS c;

-- continuous aggregates: hourly positions per device, and a daily one built on it (hierarchical)
CREATE MATERIALIZED VIEW tracker.location_reports_hourly WITH (timescaledb.continuous) AS
SELECT time_bucket('1 hour', reported_at) AS bucket, device_id,
       count(*) AS reports, last(geog, reported_at) AS last_geog,
       avg(speed_kmh) AS avg_speed_kmh, min(battery_pct) AS min_battery_pct
FROM tracker.location_reports GROUP BY 1, 2 WITH NO DATA;
COMMENT ON VIEW tracker.location_reports_hourly IS 'Hourly positions per device (continuous aggregate)';
CALL refresh_continuous_aggregate('tracker.location_reports_hourly', NULL, NULL);
CREATE MATERIALIZED VIEW tracker.location_reports_daily WITH (timescaledb.continuous) AS
SELECT time_bucket('1 day', bucket) AS day, device_id,
       sum(reports) AS reports, max(avg_speed_kmh) AS max_hourly_speed_kmh, min(min_battery_pct) AS min_battery_pct
FROM tracker.location_reports_hourly GROUP BY 1, 2 WITH NO DATA;
COMMENT ON VIEW tracker.location_reports_daily IS 'Daily summary per device, built on the hourly aggregate';
CALL refresh_continuous_aggregate('tracker.location_reports_daily', NULL, NULL);

-- a user-defined action (read-only: it reports devices that went quiet)
CREATE PROCEDURE {UDA}(job_id integer, config jsonb)
LANGUAGE plpgsql AS $uda$
DECLARE stale bigint;
BEGIN
    SELECT count(*) INTO stale FROM tracker.devices d
     WHERE d.status = 'active' AND NOT EXISTS (
           SELECT 1 FROM tracker.location_reports r WHERE r.device_id = d.id
              AND r.reported_at > now() - (config->>'stale_after')::interval);
    RAISE LOG 'job %: % active device(s) silent for %', job_id, stale, config->>'stale_after';
END
$uda$;
COMMENT ON PROCEDURE {UDA}(integer, jsonb) IS 'User-defined action: count active devices without recent reports';

-- policies last, so the scheduler never races the compression and refreshes above
SELECT add_compression_policy('tracker.location_reports',
    compress_after => date_trunc('hour', now() - timestamptz '{COMPRESS_BEFORE}'), schedule_interval => interval
        '12 hours');
SELECT add_retention_policy('tracker.device_events', drop_after => interval '{RETENTION}');
SELECT add_continuous_aggregate_policy('tracker.location_reports_hourly',
    start_offset => NULL, end_offset => interval '1 hour', schedule_interval => interval '1 hour');
SELECT add_continuous_aggregate_policy('tracker.location_reports_daily',
    start_offset => NULL, end_offset => interval '1 day', schedule_interval => interval '1 day');
SELECT add_job('{UDA}', interval '6 hours', config => '{{"stale_after": "1 day"}}');
\\endif
"""
