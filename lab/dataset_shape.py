"""The generated tracker dataset's shape: names, sizes and row counts as a function of scale. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trackerdb.errors import OpsError

DB = "tracker"
OWNER = "tracker"
READONLY = "tracker_readonly"

DEVICES_PER_SCALE = 12
GEOFENCES_PER_SCALE = 4
SPAN_DAYS = 8
REPORT_INTERVAL_S = 300            # one location report per device every 5 minutes
EVENT_INTERVAL_S = 7200            # one device event per device every 2 hours
GEOFENCES_PER_DEVICE = 2
BASE_TIME = "2024-01-01 00:00:00+00"
NULL_ALTITUDE_DAYS = (0, 1)        # altitude_m is NULL in every row of these days' (compressed) chunks
COMPRESS_BEFORE = "2024-01-07 00:00:00+00"   # location_reports chunks ending by then are compressed (6 of 8)
EVENTS_COMPRESS_BEFORE = "2024-01-05 00:00:00+00"
RETENTION = "10 years"             # device_events retention: a real policy that drops nothing of 2024 yet
CAGGS = ("tracker.location_reports_hourly", "tracker.location_reports_daily")
UDA = "tracker.check_stale_devices"
MAX_SCALE = 20000
REFUSAL = "trackerdb-dataset: refusing to touch database tracker"

REPORTS_PER_DAY = 86400 // REPORT_INTERVAL_S
EVENTS_PER_DEVICE = SPAN_DAYS * 86400 // EVENT_INTERVAL_S

TABLES = ("tracker.devices", "tracker.geofences", "tracker.device_geofences",
          "tracker.location_reports", "tracker.device_events")
HYPERTABLES = ("tracker.location_reports", "tracker.device_events")
EVENT_TYPES = ("heartbeat", "ignition_on", "ignition_off", "geofence_enter", "geofence_exit",
               "low_battery", "harsh_braking", "sos")
MODELS = ("GT06N", "TK103B", "FMB920", "FMC130", "Queclink GV300", "Teltonika FMM001")


@dataclass(frozen=True)
class Sizes:
    devices: int
    geofences: int

    @property
    def reports_per_device(self) -> int:
        return SPAN_DAYS * REPORTS_PER_DAY

    def counts(self) -> dict[str, int]:
        return {
            "tracker.devices": self.devices,
            "tracker.geofences": self.geofences,
            "tracker.device_geofences": self.devices * GEOFENCES_PER_DEVICE,
            "tracker.location_reports": self.devices * self.reports_per_device,
            "tracker.device_events": self.devices * EVENTS_PER_DEVICE,
        }


def _check(scale: float, seed: int = 0) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise OpsError(f"dataset scale must be a positive number, got {scale!r}",
                       hint="use e.g. --scale 1 (a few MB) or --scale 1000 (several GB)")
    if scale > MAX_SCALE:
        raise OpsError(f"dataset scale {scale} is above the limit {MAX_SCALE}",
                       hint="scale 1000 is already several GB; raise MAX_SCALE deliberately if you mean it")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise OpsError(f"dataset seed must be an integer in [0, 2^31), got {seed!r}", hint="use e.g. --seed 42")


def sizes(scale: float) -> Sizes:
    _check(scale)
    return Sizes(devices=max(1, round(DEVICES_PER_SCALE * scale)),
                 geofences=max(GEOFENCES_PER_DEVICE, round(GEOFENCES_PER_SCALE * scale)))


def expected_counts(scale: float = 1.0) -> dict[str, int]:
    """Rows per table (schema-qualified) that `generate_sql(scale, ...)` produces, for any seed."""
    return sizes(scale).counts()


class _Rnd:
    """Pseudo-random [0, 1) as a pure SQL expression of a row key: same key + seed -> same value."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, key: str, salt: int) -> str:
        return (f"((hashint8extended(({key})::bigint, {self.seed * 1000 + salt}) & 4503599627370495)::float8"
                f" / 4503599627370496.0)")


def _day_insert(day: int, rnd: _Rnd) -> str:
    n0, n1 = day * REPORTS_PER_DAY, (day + 1) * REPORTS_PER_DAY - 1
    key = "d.id::bigint * 1000000 + n"
    # No altitude at all on the first days (a firmware without barometer): whole compressed chunks where a
    # column is NULL in every row, the shape behind upstream #8893 (such chunks failed to restore).
    altitude = "NULL::real" if day in NULL_ALTITUDE_DAYS else f"(round((20 + {rnd(key, 16)} * 400) * 10) / 10)::real"
    # Each device drives a jittered circle around its home; 30 % of reports are parked (speed 0).
    return f"""
INSERT INTO tracker.location_reports
    (device_id, reported_at, received_at, geog, speed_kmh, heading, altitude_m, accuracy_m,
     battery_pct, satellites, ignition)
SELECT d.id,
       t.ts,
       t.ts + make_interval(secs => floor(1 + {rnd(key, 11)} * 30)),
       ST_SetSRID(ST_MakePoint(
           round((d.home_lon + d.radius * cos(t.angle) + ({rnd(key, 12)} - 0.5) * 0.001) * 1e6) / 1e6,
           round((d.home_lat + d.radius * sin(t.angle) + ({rnd(key, 13)} - 0.5) * 0.001) * 1e6) / 1e6
       ), 4326)::geography,
       CASE WHEN t.parked THEN 0 ELSE (round((5 + {rnd(key, 14)} * 95) * 10) / 10)::real END,
       floor({rnd(key, 15)} * 360)::smallint,
       {altitude},
       (round((2 + {rnd(key, 17)} * 25) * 10) / 10)::real,
       greatest(1, 100 - (n % {REPORTS_PER_DAY}) * 80 / {REPORTS_PER_DAY} - floor({rnd(key, 18)} * 5))::smallint,
       (4 + floor({rnd(key, 19)} * 12))::smallint,
       NOT t.parked
FROM tracker.devices d
CROSS JOIN generate_series({n0}, {n1}) AS n
CROSS JOIN LATERAL (
    SELECT timestamptz '{BASE_TIME}' + make_interval(secs => n * {REPORT_INTERVAL_S} + floor({rnd(key, 10)} *
        {REPORT_INTERVAL_S - 1})) AS ts,
           2 * pi() * (n::float8 / {REPORTS_PER_DAY} + d.id * 0.137) AS angle,
           {rnd(key, 20)} < 0.3 AS parked
) t;"""
