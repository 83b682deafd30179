#!/usr/bin/env bash
# The test command: formatting, lints, every test. Root-only tests (loop
# devices, mounts) are #[ignore]d with the reason and run here when this runs
# as root, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

./ci/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
if [ "$(id -u)" -ne 0 ]; then
  # Tests that need root (loop devices, mounts) show as ignored, with the reason.
  cargo test --workspace --all-targets
else
  # As root, the ignored tests run too: every one of them is ignored only for
  # needing root or a tool this script provides. The chart tests need helm 3
  # and 4, built once into the tools cache (a few minutes cold, then reused).
  export HELM HELM4
  HELM="$(ci/cluster/tool-dir.sh helm)/helm"
  HELM4="$(ci/cluster/tool-dir.sh helm4)/helm"
  # The local-cluster test runs with the cluster suite below, once its image
  # archives exist.
  cargo test --workspace --all-targets -- --include-ignored \
    --skip mount::root_tests::ext4_online_grow \
    --skip a_local_cluster_runs_pods_on_every_node_and_stops_clean
  # Growing a mounted ext4 needs CAP_SYS_RESOURCE, which some sandboxes drop even
  # for root: run the test whose premise this machine meets, and say which.
  cap_eff=$(sed -n 's/^CapEff:\s*//p' /proc/self/status)
  if (( (0x$cap_eff >> 24) & 1 )); then
    echo "CAP_SYS_RESOURCE present: online ext4 growth is tested"
    cargo test -p harvester-csi-driver --lib -- --ignored --exact mount::root_tests::ext4_online_grow
  else
    echo "CAP_SYS_RESOURCE missing: online ext4 growth cannot run here; testing that its refusal names the cause"
    cargo test -p harvester-csi-driver --lib -- --ignored --exact mount::root_tests::ext4_online_grow_refusal_names_the_capability
  fi
fi

echo "== csi-sanity (driver + simulator)"
./ci/csi-sanity.sh target/csi-sanity

echo "== scenario suite (embedded backend)"
./ci/scenarios.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "== NOT RUN (need root): chaos seeds, image build, cluster suite, fuzzing"
  exit 0
fi

# A few fixed seeds of randomized chaos (scenarios/README.md), and the seeds whose
# findings were fixed (41: the simulator's export stuck Disabling; 152: the snapshot
# handle check under API errors) as their regression runs; the binaries are the ones
# ci/scenarios.sh just built.
echo "== randomized chaos (embedded backend, seeds 0-3, 41, 152)"
"${CARGO_TARGET_DIR:-target}/debug/scenarios" chaos --seed 0 --seed 1 --seed 2 --seed 3 --seed 41 --seed 152 \
  --bin-dir "${CARGO_TARGET_DIR:-target}/debug" \
  --work-dir "${CARGO_TARGET_DIR:-target}/scenarios-chaos" --write "${CARGO_TARGET_DIR:-target}/chaos-failed"

# The image recipe and its containerd import; the debug binary keeps CI short
# (the release image is the same recipe with `cargo build --release`).
echo "== driver image (daemonless build, containerd import)"
./ci/image.sh --binary target/debug/harvester-csi-driver

# Real Kubernetes components, the chart and the sidecars. On a machine whose
# tools cache is cold the Go builds take most of the time budget, so the suite
# then runs the cases ci/cluster/cold-cases.txt names (the script says which).
echo "== scenario suite (cluster backend)"
./ci/cluster-scenarios.sh --cold-cases ci/cluster/cold-cases.txt --except ci/cluster/known-failures.txt
echo "== local cluster up/down"
# --workspace: the features the test build above resolved, so nothing is rebuilt.
cargo test --workspace --test local_cluster -- --ignored

echo "== fuzzing (each target briefly; ci/fuzz.sh SECONDS for longer runs)"
FUZZ_BUILD=dev FUZZ_SEED=1 ./ci/fuzz.sh 15
