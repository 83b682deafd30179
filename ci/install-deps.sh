#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent).
set -euo pipefail

need_apt=()
for tool in mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs losetup:util-linux blkid:util-linux findmnt:util-linux jq:jq python3:python3; do
  bin=${tool%%:*}; pkg=${tool##*:}
  if ! command -v "$bin" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$bin" ] && ! [ -x "/sbin/$bin" ]; then
    need_apt+=("$pkg")
  fi
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need_apt[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is not installed; the kubectl tests of the simulator will fail" >&2
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
