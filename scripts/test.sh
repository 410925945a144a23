#!/usr/bin/env bash
# The project's test command: installs what it needs, then runs unit and lab tests.
# Usage: scripts/test.sh [pytest args...]     (as root; the lab needs namespaces and loop devices)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" != Linux ] || [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the lab tests need root on Linux (network namespaces, overlayfs, loop devices); refusing to run" >&2
  echo "test.sh: hint: run as root, or scripts/test-unit.sh for the unit tests alone (that proves less)" >&2
  exit 1
fi
bash scripts/bootstrap.sh
bash scripts/host-deps.sh
exec .venv/bin/python -m pytest "$@"
