"""TimescaleDB 2.18.2 (community, incl. tsl/): the vendored upstream tarball, its pinned SHA-256 and the
measured bootstrap flags. ``engine16.py`` builds it (with PostgreSQL 16.10 and PostGIS 3.5.2) into .debs
named the way Timescale's apt repository names them (``engine16_debs.py``), so provisioning installs it in
the lab through exactly the production path (same package names, pin and hold).

Debian's own ``postgresql-17-timescaledb`` is 2.19.3 and Apache-only (no compression, continuous
aggregates or policies), which is neither production's version nor its licence.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .util import LabError

VERSION = "2.18.2"
SHA256 = "391f9def399283094c013e2b56971dffc0dc2a54a5de1b376322ff68d5ca298b"  # ../shared/vendor/README.md
BOOTSTRAP_FLAGS = (
    "-DREGRESS_CHECKS=OFF",
    "-DTAP_CHECKS=OFF",
    "-DWARNINGS_AS_ERRORS=OFF",
    "-DGENERATE_DOWNGRADE_SCRIPT=OFF",
)

_DEFAULT_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "vendor" / f"timescaledb-{VERSION}.tar.xz"


def tarball() -> Path:
    """The upstream source: ``$TRACKERDB_TSDB_TARBALL`` or ``../shared/vendor/`` next to the checkout."""
    return Path(os.environ.get("TRACKERDB_TSDB_TARBALL") or _DEFAULT_TARBALL)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_tarball(path: Path, want: str = SHA256) -> None:
    if not path.is_file():
        raise LabError(f"TimescaleDB source {path} is missing",
                       hint="the lab builds TimescaleDB from ../shared/vendor (or set TRACKERDB_TSDB_TARBALL)")
    got = sha256_file(path)
    if got != want:
        raise LabError(
            f"TimescaleDB source {path} has SHA-256 {got[:16]}…, expected {want[:16]}…",
            hint="restore the upstream tarball listed in shared/vendor/README.md; never build from an unverified one",
        )
