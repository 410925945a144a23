#!/usr/bin/env bash
# Debian packages this machine needs to build and run the lab (and the report screenshot).
# Idempotent and quick when everything is present.
set -euo pipefail
pkgs=(debootstrap iproute2 util-linux e2fsprogs xfsprogs nginx-light openssl chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "host-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "host-deps: installing ${missing[*]}" >&2
for i in 1 2 3; do
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null && exit 0
  echo "host-deps: apt failed (try $i), retrying" >&2
  sleep $((i * 5))
done
exit 1
