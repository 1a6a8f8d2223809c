#!/usr/bin/env bash
# deps.sh - installs the Debian packages kvsql needs, only those missing.
# Called by `make deps` (and so by make run, make test and .ci/run).
# Usage: scripts/deps.sh [extra package ...]
set -euo pipefail

packages=(gcc make pkg-config libsqlite3-dev libhiredis-dev redis-server redis-tools sqlite3
          python3 python3-redis python3-pytest clang libclang-rt-dev libssl-dev "$@")

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
