#!/usr/bin/env bash
# Debian packages the board needs: installed only when missing, and only as root (others get
# a hint). Usage: scripts/system-packages.sh PACKAGE...
# Two names are not Debian's own: `msgpack-c` stands for msgpack-c's development package,
# libmsgpack-c-dev on Debian 13 and later, libmsgpack-dev on Debian 12 (on 13 that one is an
# empty transitional package); `nodejs` and `npm` count as present when the commands are.
set -euo pipefail

has_msgpack_c() {
  pkg-config --exists msgpack-c 2>/dev/null || pkg-config --exists msgpack 2>/dev/null
}

missing=()
for p in "$@"; do
  case "$p" in
    msgpack-c) has_msgpack_c || missing+=("$p") ;;
    nodejs) command -v node >/dev/null || missing+=("$p") ;;
    npm) command -v npm >/dev/null || missing+=("$p") ;;
    *) dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${missing[*]} (run 'make install' as root)"
  exit 1
fi

apt-get update -qq
packages=()
for p in "${missing[@]}"; do
  if [ "$p" = msgpack-c ]; then
    # Only known after apt-get update: which name this release gives the C library.
    if apt-cache show libmsgpack-c-dev >/dev/null 2>&1; then p=libmsgpack-c-dev
    else p=libmsgpack-dev; fi
  fi
  packages+=("$p")
done
echo "installing system packages: ${packages[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
