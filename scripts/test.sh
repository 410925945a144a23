#!/usr/bin/env bash
# The project's test command: installs what it needs, then runs unit and lab tests.
# Usage: scripts/test.sh [pytest args...]     (as root; the lab needs namespaces and loop devices)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/host-deps.sh
exec .venv/bin/python -m pytest "$@"
