#!/usr/bin/env bash
# The deployment checks: the chart tests with the real helm 3 and helm 4 (built
# into the tools cache by ci/cluster/build-tools.sh if missing), the kind config
# and image recipe tests, the oci-archive.sh test; then, unless --no-image, the
# daemonless image build with its containerd import and run (ci/image.sh). As root.
#
# usage: ci/deploy-checks.sh [--no-image]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v jq >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends jq >/dev/null
fi
HELM="$(ci/cluster/tool-dir.sh helm)/helm"
HELM4="$(ci/cluster/tool-dir.sh helm4)/helm"
export HELM HELM4

echo "== cargo test -p deploy-checks (helm $("$HELM" version --short), helm $("$HELM4" version --short))"
cargo test -p deploy-checks -- --include-ignored

if [ "${1:-}" != "--no-image" ]; then
  echo "== daemonless image build (ci/image.sh)"
  ./ci/image.sh
fi
