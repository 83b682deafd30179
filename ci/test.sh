#!/usr/bin/env bash
# The test command: formatting, lints, every test. Root-only tests (loop
# devices, mounts) run when this runs as root, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

./ci/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace --all-targets

echo "== csi-sanity (driver + simulator)"
./ci/csi-sanity.sh target/csi-sanity

echo "== scenario suite (embedded backend)"
./ci/scenarios.sh
