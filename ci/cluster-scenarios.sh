#!/usr/bin/env bash
# The whole scenario suite on the cluster backend: a local Kubernetes built from
# its own components (one containerd + kubelet per simulated VM), the driver
# installed by the Helm chart, the real sidecars, attach/detach controller and
# kubelet. Installs what it needs; builds the Kubernetes components, sidecars
# and helm once into /var/cache/harvester-csi-tools (keyed by version), the
# image archives into target/cluster-images. JUnit: target/cluster-scenarios.junit.xml.
# Usage: ci/cluster-scenarios.sh [extra `scenarios run` arguments, e.g. --filter RE]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "the cluster suite needs root (namespaces, cgroups, mounts)" >&2; exit 1; }
started=$(date +%s)
stamp() { echo "== $(( $(date +%s) - started ))s: $*" >&2; }

./ci/install-deps.sh
# Go (≥ 1.24, for Kubernetes v1.34) and Rust must be present; Debian's golang-go is too old.
command -v go >/dev/null || { echo "go is required to build the Kubernetes components" >&2; exit 1; }
need=()
for tool in containerd:containerd runc:runc etcd:etcd-server busybox:busybox-static gcc:gcc jq:jq ip:iproute2 \
            nsenter:util-linux unshare:util-linux debootstrap:debootstrap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  stamp "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages must not start their services (containerd, etcd): the cluster runs its own.
  policy=/usr/sbin/policy-rc.d
  restore=false
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; restore=true; fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  $restore && rm -f "$policy"
fi

stamp "tools (cached in /var/cache/harvester-csi-tools)"
./ci/cluster/build-tools.sh kubernetes helm csi-provisioner csi-attacher csi-resizer csi-snapshotter

TARGET_DIR=${CARGO_TARGET_DIR:-target}
stamp "cargo build"
cargo build --quiet --bins
stamp "image archives"
DRIVER_BINARY=$TARGET_DIR/debug/harvester-csi-driver ./ci/cluster/images.sh --all "$TARGET_DIR/cluster-images"

stamp "suite"
mkdir -p "$TARGET_DIR/cluster-scenario-report"
set +e
"$TARGET_DIR/debug/scenarios" run scenarios/cases --backend cluster \
  --bin-dir "$TARGET_DIR/debug" \
  --state-dir "$TARGET_DIR/cluster" \
  --images "$TARGET_DIR/cluster-images" \
  --values "$TARGET_DIR/cluster-images/images-values.yaml" \
  --work-dir "$TARGET_DIR/cluster-scenario-work" \
  --junit "$TARGET_DIR/cluster-scenarios.junit.xml" \
  --report "$TARGET_DIR/cluster-scenario-report" "$@"
rc=$?
set -e
stamp "done (exit $rc)"
exit $rc
