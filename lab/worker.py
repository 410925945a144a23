"""A small background worker for the lab's application stand-in: it works off a queue (a file
holding the number of jobs waiting), one job per ``--interval`` seconds, and records what it does.
Producers (the test, standing in for the application) add jobs with ``--enqueue N``. It stops when
``<queue>.stop`` appears or on SIGTERM, leaving the jobs it has not done in the queue.

    python -m lab.worker --queue /tmp/q [--interval 0.3]      # work
    python -m lab.worker --queue /tmp/q --enqueue 10          # add 10 jobs
    python -m lab.worker --queue /tmp/q --produce F --interval 0.04   # the application: a job per
                                                              # interval until the file F appears
    cat /tmp/q                                                # the drain probe: jobs waiting
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import time
from pathlib import Path


def _update(queue: Path, delta: int) -> int:
    """Add ``delta`` (may be negative, never below 0) under a lock; returns the new size."""
    with open(queue, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        raw = f.read().strip()
        n = max(0, (int(raw) if raw.isdigit() else 0) + delta)
        f.seek(0)
        f.truncate()
        f.write(f"{n}\n")
        f.flush()
        os.fsync(f.fileno())
        return n


def work(queue: Path, interval: float) -> None:
    stop = Path(str(queue) + ".stop")
    done_log = Path(str(queue) + ".done")
    running = {"on": True}
    signal.signal(signal.SIGTERM, lambda *a: running.update(on=False))
    while running["on"] and not stop.exists():
        before = int((queue.read_text().strip() or "0")) if queue.exists() else 0
        if before > 0:
            _update(queue, -1)
            with open(done_log, "a") as f:
                f.write(f"{time.time():.3f}\n")
        time.sleep(interval)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", required=True)
    ap.add_argument("--interval", type=float, default=0.3)
    ap.add_argument("--enqueue", type=int, default=None)
    ap.add_argument("--produce", default=None, help="add a job per interval until this file exists")
    a = ap.parse_args(argv)
    q = Path(a.queue)
    if a.produce:
        while not Path(a.produce).exists():
            _update(q, 1)
            time.sleep(a.interval)
        return 0
    if a.enqueue is not None:
        print(_update(q, a.enqueue))
        return 0
    work(q, a.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
