"""A small live writer for the lab: a real client that keeps inserting tracker reports through the
switchable endpoint, the way an application honouring DNS does.

On every (re)connect it resolves the endpoint from the lab's Route53 record (moto), connects as the
application role with the password from Secrets Manager, and inserts one location report per
interval in autocommit. Every acknowledged insert (device, reported_at, endpoint) and every refused
write (error class, endpoint) goes to a JSON-lines log, flushed per line. It stops by itself after
``--seconds`` or ``--count`` acknowledged inserts, on SIGTERM, or when ``<log>.stop`` appears.

    python -m lab.writer --log /tmp/w.jsonl --seconds 120 [--interval 0.05] [--device 1]

``load``/``outage`` read a log back for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trackerdb.settings import Settings

INSERT = """INSERT INTO tracker.location_reports
  (device_id, reported_at, received_at, geog, speed_kmh, heading, battery_pct, satellites, ignition)
VALUES (%(device)s, clock_timestamp(), clock_timestamp(),
        ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography, %(speed)s, %(heading)s, 80, 9, true)
RETURNING reported_at::text, inet_server_addr()::text"""


def _now() -> float:
    return time.time()


class Log:
    def __init__(self, path: Path):
        self.f = open(path, "a", buffering=1)

    def write(self, **rec) -> None:
        rec.setdefault("t", _now())
        self.f.write(json.dumps(rec, sort_keys=True) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def resolve(settings: Settings) -> str:
    from trackerdb.cutover.switch import Route53Switch

    return Route53Switch(settings).current()


def run(settings: Settings, log_path: Path, seconds: float, count: int | None, interval: float, device: int) -> dict:
    import psycopg

    from trackerdb.secrets import fetch_secret

    password = fetch_secret(settings, settings.app_secret_name)
    log = Log(log_path)
    stop_file = Path(str(log_path) + ".stop")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    deadline = time.monotonic() + seconds
    acked = refused = 0
    seq = 0
    conn, endpoint = None, None
    log.write(event="start", pid=os.getpid(), device=device)
    try:
        while not stopping and time.monotonic() < deadline and (count is None or acked < count) and not stop_file.exists():
            try:
                if conn is None:
                    endpoint = resolve(settings)
                    conn = psycopg.connect(host=endpoint, port=settings.pg_port, dbname=settings.database,
                                           user=settings.owner_role, password=password.reveal(), connect_timeout=2,
                                           autocommit=True)
                seq += 1
                row = conn.execute(INSERT, {"device": device, "lon": -0.1 + (seq % 1000) * 1e-4, "lat": 51.5,
                                            "speed": float(seq % 120), "heading": seq % 360}).fetchone()
                acked += 1
                log.write(event="ack", seq=seq, device=device, reported_at=row[0], server=row[1], endpoint=endpoint)
            except Exception as exc:  # noqa: BLE001 - every failure is a refused write, recorded
                refused += 1
                msg = str(exc).splitlines()[0][:160] if str(exc) else ""
                log.write(event="refused", seq=seq, endpoint=endpoint, error=type(exc).__name__,
                          detail=msg.replace(password.reveal(), "***"))
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
                time.sleep(0.2)
                continue
            time.sleep(interval)
    finally:
        if conn is not None:
            conn.close()
        log.write(event="stop", acked=acked, refused=refused)
        log.close()
    return {"acked": acked, "refused": refused}


# ---- reading a log back ----------------------------------------------------------------------
def load(path) -> list[dict]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line from a killed writer
    return out


def outage(records: list[dict], new_endpoint: str) -> dict | None:
    """First refused write -> first write acknowledged by ``new_endpoint`` after it."""
    first_refused = next((r for r in records if r["event"] == "refused"), None)
    if first_refused is None:
        return None
    first_new = next((r for r in records if r["event"] == "ack" and r["endpoint"] == new_endpoint
                      and r["t"] >= first_refused["t"]), None)
    if first_new is None:
        return {"start": first_refused["t"], "end": None, "duration_s": None}
    return {"start": first_refused["t"], "end": first_new["t"], "duration_s": round(first_new["t"] - first_refused["t"], 3),
            "source": "writer", "detail": "first refused write -> first write acknowledged by the target"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", required=True)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--device", type=int, default=1)
    a = ap.parse_args(argv)
    from trackerdb.settings import Settings

    settings = Settings.load({})
    res = run(settings, Path(a.log), a.seconds, a.count, a.interval, a.device)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
