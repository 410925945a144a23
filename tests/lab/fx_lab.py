"""The `lab` session fixture: brings instance $TRACKERDB_LAB (default "ci") up once, always down at the end,
then asserts that nothing of it is left behind (no netns, mount, loop device or process)."""

from __future__ import annotations

import os
import platform

import pytest

#: The session lab's data volume (a sparse loop file: only what is written takes space). Every module that
#: restores keeps the previous tracker aside (restore never drops one), and each restore reserves max_wal_size
#: (1 GB) as free space on top of the data: the lab's default 2 GB ran out after a dozen restores (test_54's
#: modules were refused "the data volume has 1.1 GiB free, the restore needs about 1.1 GiB").
SESSION_VOLUME_GB = 6


def require_lab_host() -> None:
    """The lab tests are the project's evidence: a machine that cannot run them fails, it does not skip
    (a green run of unit tests alone would claim what was never shown). `scripts/test-unit.sh` is the
    explicit way to run only the unit tests."""
    if platform.system() != "Linux" or os.geteuid() != 0:
        pytest.fail("lab tests need root on Linux (network namespaces, overlayfs, loop devices); "
                    "run scripts/test.sh as root, or scripts/test-unit.sh for the unit tests alone", pytrace=False)


@pytest.fixture(scope="session")
def lab():
    """``lab.status`` of the running instance (dict), with ``TRACKERDB_ENV=lab`` and ``TRACKERDB_LAB`` set."""
    require_lab_host()
    from lab import api

    name = os.environ.get("TRACKERDB_LAB") or "ci"
    saved = {k: os.environ.get(k) for k in ("TRACKERDB_LAB", "TRACKERDB_ENV")}
    os.environ["TRACKERDB_LAB"] = name
    os.environ["TRACKERDB_ENV"] = "lab"
    try:
        status = api.up(name, volume_gb=SESSION_VOLUME_GB)
        assert status["up"], status
        yield status
    finally:
        api.down(name)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        left = api.leftovers(name)
        assert not left, f"lab {name} left {left}"


@pytest.fixture(scope="session")
def lab_settings(lab):
    """Settings loaded exactly as tasks load them against the lab."""
    from trackerdb.settings import Settings

    return Settings.load({}, env={"TRACKERDB_ENV": "lab", "TRACKERDB_LAB": lab["name"]})
