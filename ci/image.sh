#!/usr/bin/env bash
# CI: the daemonless build of the driver image (deploy/image/build.sh) into
# target/image/harvester-csi-driver.oci.tar, then a private containerd imports
# it and runs `harvester-csi-driver --version` from it. As root.
# usage: ci/image.sh [build.sh options, e.g. --binary target/debug/harvester-csi-driver]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in debootstrap:debootstrap jq:jq containerd:containerd runc:runc; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

deploy/image/build.sh --out target/image/harvester-csi-driver.oci.tar "$@"
ref=$(cat target/image/harvester-csi-driver.ref)
deploy/image/verify-import.sh target/image/harvester-csi-driver.oci.tar --expect "harvester-csi-driver ${ref##*:}" -- --version
