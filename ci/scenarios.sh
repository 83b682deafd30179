#!/usr/bin/env bash
# The main job: the whole scenario suite on the embedded backend (simulator +
# driver processes on this machine). Needs root for loop devices and mounts.
# Usage: ci/scenarios.sh [extra `scenarios run` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

./ci/install-deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "the scenario suite needs root (loop devices, mounts); run it with sudo" >&2
  exit 1
fi

TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --quiet --bins
mkdir -p "$TARGET_DIR/scenario-report"
exec "$TARGET_DIR/debug/scenarios" run scenarios/cases \
  --bin-dir "$TARGET_DIR/debug" \
  --work-dir "$TARGET_DIR/scenario-work" \
  --junit "$TARGET_DIR/scenarios.junit.xml" \
  --report "$TARGET_DIR/scenario-report" "$@"
