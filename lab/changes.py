"""Changes the lab makes to the tracker dataset, as SQL text (pure builders; the callers run them).

- ``day_sql``: one day of new data after the pre-copy, the way production's day looks when the window
  opens at its end: the dataset's last (uncompressed) day copied into today's chunk (the one the live
  writer writes to), every device but the writer's (no key collision with its rows).
- ``source_changes``: what lands on the source between the pre-copy and the window besides new rows:
  updates, deletes and inserts in an old compressed chunk and an old uncompressed one (which the source
  then compresses), a new chunk, the other hypertable, regular tables (a foreign key's child row
  deleted), a sequence advanced, a large object written.
- ``target_changes``: what the application does on the target after a switch besides the writer's
  appends (the rollback drill): late rows in an uncompressed chunk and in a compressed chunk's range, an
  update and a delete inside a compressed chunk, an update of a keyed table, a delete in a composite-key
  table, an update of the key-less hypertable.

``run`` (microseconds) keeps one run's rows from colliding with an earlier run's on a reused lab.
"""

from __future__ import annotations

#: the live writer's device (lab/writer.py's default): the day's copy leaves it out
WRITER_DEVICE = 1
LARGE_OBJECT = 424242


def day_sql(writer_device: int = WRITER_DEVICE) -> str:
    return f"""SET TIME ZONE 'UTC';
INSERT INTO tracker.location_reports
  (device_id, reported_at, received_at, geog, speed_kmh, heading, altitude_m, accuracy_m, battery_pct, satellites,
      ignition)
SELECT device_id, reported_at + s.shift, received_at + s.shift, geog, speed_kmh, heading, altitude_m, accuracy_m,
       battery_pct, satellites, ignition
FROM tracker.location_reports,
     (SELECT date_trunc('day', now()) - (SELECT date_trunc('day', max(reported_at)) FROM tracker.location_reports
                                          WHERE reported_at < date_trunc('day', now())) AS shift) AS s
WHERE reported_at >= date_trunc('day', now()) - s.shift AND reported_at < date_trunc('day', now()) - s.shift + interval
    '1 day'
  AND device_id <> {int(writer_device)};"""


def _first(device: int, day: str, column: str = "reported_at") -> str:
    """The device's first row of one day (constant range and segment-by column: on a compressed chunk
    TimescaleDB decompresses only the batches concerned)."""
    return (f"(SELECT min({column}) FROM tracker.location_reports WHERE device_id = {device} "
            f"AND reported_at >= '{day}' AND reported_at < '{day}'::date + 1)")


def source_changes(run: int, late_device: int = 7) -> str:
    """``late_device``: the device of the inserted rows (one the dataset has: scale 1 has 12, scale 0.5 six)."""
    at = f"interval '{int(run)} microseconds'"
    new_day = f"2024-03-01 10:00:00+00'::timestamptz + interval '{int(run) % 280} days"
    return f"""
-- a compressed old chunk (2024-01-02): an update, a delete, an insert
UPDATE tracker.location_reports SET speed_kmh = 77.5
  WHERE device_id = 5 AND reported_at >= '2024-01-02' AND reported_at < '2024-01-03'
      AND reported_at = {_first(5, '2024-01-02')};
DELETE FROM tracker.location_reports
  WHERE device_id = 6 AND reported_at >= '2024-01-02' AND reported_at < '2024-01-03'
      AND reported_at = {_first(6, '2024-01-02')};
INSERT INTO tracker.location_reports (device_id, reported_at, received_at, geog, speed_kmh, heading, battery_pct,
    satellites, ignition)
VALUES ({int(late_device)}, '2024-01-02 12:00:00+00'::timestamptz + {at}, now(), ST_SetSRID(ST_MakePoint(13.4, 52.5),
    4326)::geography, 13.5, 91, 51, 8, false),
-- the newest chunk, and a chunk that did not exist
       ({int(late_device)}, '2024-01-08 06:00:00+00'::timestamptz + {at}, now(), ST_SetSRID(ST_MakePoint(13.4, 52.5),
           4326)::geography, 12.5, 90, 50, 7, true),
       (3, '{new_day}', now(), ST_SetSRID(ST_MakePoint(2.35, 48.85), 4326)::geography, 40, 180, 90, 9, true);
-- an uncompressed old chunk (2024-01-07): an update and a delete; then the source compresses it
UPDATE tracker.location_reports SET heading = 1
  WHERE device_id = 3 AND reported_at >= '2024-01-07' AND reported_at < '2024-01-08'
      AND reported_at = {_first(3, '2024-01-07')};
DELETE FROM tracker.location_reports
  WHERE device_id = 4 AND reported_at >= '2024-01-07' AND reported_at < '2024-01-08'
      AND reported_at = {_first(4, '2024-01-07')};
SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('tracker.location_reports',
    newer_than => timestamptz '2024-01-07', older_than => timestamptz '2024-01-08 00:00:01') c;
-- the other hypertable: an update in a compressed chunk, an insert through its sequence
UPDATE tracker.device_events SET payload = payload || '{{"corrected": {int(run)}}}'
  WHERE occurred_at < '2024-01-02' AND id = (SELECT min(id) FROM tracker.device_events
      WHERE occurred_at < '2024-01-02');
INSERT INTO tracker.device_events (device_id, occurred_at, event_type, payload)
VALUES (2, '2024-01-09 01:00:00+00'::timestamptz + {at}, 'ignition_on', '{{"late": true}}');
-- regular tables: an update, a delete of a foreign key's child row, an insert through a serial
UPDATE tracker.devices SET name = 'renamed before the window {int(run)}', metadata = metadata || '{{"moved": true}}'
    WHERE id = 2;
DELETE FROM tracker.device_geofences WHERE (device_id, geofence_id) = (SELECT device_id, geofence_id
    FROM tracker.device_geofences
                                                                     ORDER BY 1, 2 LIMIT 1);
INSERT INTO tracker.geofences (name, kind, area, boundary, created_at)
SELECT 'late depot {int(run)}', 'depot', area, boundary, now() FROM tracker.geofences ORDER BY id LIMIT 1;
-- a sequence advanced on its own, a large object written
SELECT nextval('tracker.devices_id_seq');
SELECT lo_put({LARGE_OBJECT}, 0, convert_to('FW{int(run)}', 'UTF8'));
"""


def target_changes(run: int = 0, late_device: int = 7) -> str:
    at = f"interval '{int(run)} microseconds'"
    return f"""
INSERT INTO tracker.location_reports (device_id, reported_at, received_at, geog, speed_kmh, heading, battery_pct,
    satellites, ignition)
VALUES ({int(late_device)}, '2024-01-08 06:00:00+00'::timestamptz + {at}, now(), ST_SetSRID(ST_MakePoint(13.4, 52.5),
    4326)::geography, 12.5, 90, 50, 7, true),
       ({int(late_device)}, '2024-01-02 12:00:00+00'::timestamptz + {at}, now(), ST_SetSRID(ST_MakePoint(13.4, 52.5),
           4326)::geography, 13.5, 91, 51, 8, false);
UPDATE tracker.location_reports SET speed_kmh = 123.25
  WHERE (device_id, reported_at) = (SELECT device_id, reported_at FROM tracker.location_reports
                                    WHERE device_id = 5 AND reported_at >= '2024-01-02' AND reported_at < '2024-01-03'
                                    ORDER BY reported_at LIMIT 1);
DELETE FROM tracker.location_reports
  WHERE (device_id, reported_at) = (SELECT device_id, reported_at FROM tracker.location_reports
                                    WHERE device_id = 6 AND reported_at >= '2024-01-02' AND reported_at < '2024-01-03'
                                    ORDER BY reported_at LIMIT 1);
UPDATE tracker.devices SET name = 'renamed after the switch', metadata = metadata || '{{"moved": true}}' WHERE id = 2;
DELETE FROM tracker.device_geofences WHERE (device_id, geofence_id) = (SELECT device_id, geofence_id
    FROM tracker.device_geofences
                                                                     ORDER BY 1, 2 LIMIT 1);
UPDATE tracker.device_events SET payload = payload || '{{"corrected": true}}'
  WHERE id = (SELECT max(id) FROM tracker.device_events WHERE occurred_at >= '2024-01-07');
"""
