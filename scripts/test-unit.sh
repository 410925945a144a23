#!/usr/bin/env bash
# The unit tests alone (no root, no lab): for a machine that cannot run the lab. This is NOT the
# project's test command (scripts/test.sh is): it proves nothing about real hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest tests/unit "$@"
