#!/usr/bin/env bash
# Runs the CSI conformance suite (csi-sanity) against the driver and the
# simulator, once per hotplug form: v1.5 (legacy) and v1.8 (declarative).
# Needs root (loop devices, mounts). Usage: ci/csi-sanity.sh [REPORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

CSI_TEST_VERSION=v5.6.0   # built on CSI spec v1.13.0, the spec csi-proto vendors
REPORT_DIR=${1:-target/csi-sanity}
mkdir -p "$REPORT_DIR"
REPORT_DIR=$(cd "$REPORT_DIR" && pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "csi-sanity: skipped, needs root for loop devices and mounts" >&2
  exit 0
fi

GOBIN_DIR=$(go env GOPATH)/bin
SANITY="$GOBIN_DIR/csi-sanity"
if ! "$SANITY" --help 2>&1 | grep -q "csi.testnodevolumeattachlimit" || [ ! -f "$GOBIN_DIR/.csi-sanity-$CSI_TEST_VERSION" ]; then
  echo "== installing csi-sanity $CSI_TEST_VERSION"
  GOFLAGS=-mod=mod go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"
  touch "$GOBIN_DIR/.csi-sanity-$CSI_TEST_VERSION"
fi

cargo build --quiet -p harvester-simulator -p harvester-csi-driver --bins
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SIM=$TARGET_DIR/debug/harvester-sim
DRIVER=$TARGET_DIR/debug/harvester-csi-driver

run_profile() {
  local profile=$1 work
  work=$(mktemp -d /tmp/csi-sanity-XXXXXX)
  local sim_pid="" drv_pid=""
  cleanup() {
    [ -n "$drv_pid" ] && kill "$drv_pid" 2>/dev/null && wait "$drv_pid" 2>/dev/null
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    findmnt -rn -o TARGET | grep "^$work" | sort -r | xargs -r -n1 umount -l || true
    losetup -a | grep "$work" | cut -d: -f1 | xargs -r -n1 losetup -d || true
    rm -rf "$work"
  }
  trap cleanup RETURN
  cat > "$work/world.yaml" <<'WORLD'
timing: {provisionMs: 50, hotplugMs: 200, unplugMs: 100, snapshotMs: 100, expandMs: 50, exportMs: 100}
vms:
  - {name: guest-1}
  - {name: guest-2}
WORLD
  "$SIM" serve --state-dir "$work/sim" --profile "$profile" --world "$work/world.yaml" > "$work/sim.out" 2> "$work/sim.log" &
  sim_pid=$!
  for _ in $(seq 100); do grep -q '^address:' "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^address:' "$work/sim.out" || { cat "$work/sim.log"; echo "simulator did not start"; return 1; }
  "$DRIVER" --endpoint "unix://$work/csi.sock" --kubeconfig "$work/sim/cloud-config" \
    --root "$work/sim/vms/guest-1/root" --kubelet-root "$work" --cluster-id csi-sanity --max-volumes-per-node 8 --no-guest-access \
    > /dev/null 2> "$work/driver.log" &
  drv_pid=$!
  for _ in $(seq 100); do [ -S "$work/csi.sock" ] && break; sleep 0.1; done
  [ -S "$work/csi.sock" ] || { cat "$work/driver.log"; echo "driver did not start"; return 1; }
  echo "== csi-sanity $CSI_TEST_VERSION against Harvester profile $profile"
  local rc=0
  (cd "$work" && "$SANITY" --csi.endpoint "unix://$work/csi.sock" \
    --csi.stagingdir "$work/staging" --csi.mountdir "$work/mount" \
    --csi.testvolumesize 67108864 --csi.testnodevolumeattachlimit \
    --ginkgo.junit-report "$REPORT_DIR/csi-sanity-$profile.xml" --ginkgo.no-color --ginkgo.timeout 20m) \
    > "$REPORT_DIR/csi-sanity-$profile.log" 2>&1 || rc=$?
  grep -E "^(Ran|SUCCESS|FAIL)|Passed|\[FAIL\]" "$REPORT_DIR/csi-sanity-$profile.log" | tail -25
  if [ $rc -ne 0 ]; then
    echo "--- driver log (tail)"; tail -40 "$work/driver.log"
  fi
  return $rc
}

status=0
for profile in v1.5 v1.8; do
  run_profile "$profile" || status=1
done
exit $status
