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
  cargo test --workspace --all-targets -- --include-ignored --skip mount::root_tests::ext4_online_grow
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
