#!/usr/bin/env bash
# The main job: rehearse the whole cutover on the local lab and write the report.
# Usage (as root, on a fresh Debian/Ubuntu machine): scripts/rehearse.sh [--scale N] [--rollback] [--keep-lab] [--lab NAME]
# Installs what it needs (the project's .venv, the lab's host packages), then runs `invoke rehearse`.
# Exit status: 0 when the rehearsal passed, non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "rehearse: run as root (the lab needs network namespaces, overlay mounts and loop devices)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "rehearse: installing python3 and python3-venv" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
command -v git >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git >/dev/null; }
bash scripts/bootstrap.sh
bash scripts/host-deps.sh
export TRACKERDB_ENV=lab
exec .venv/bin/invoke rehearse "$@"
