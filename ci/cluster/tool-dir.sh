#!/usr/bin/env bash
# Prints the bin directory of a tool built by build-tools.sh (building it first
# if the cache lacks it), e.g. PATH="$(ci/cluster/tool-dir.sh helm):$PATH".
# The four CSI sidecars and the snapshot-controller are one build (csi-sidecars).
set -euo pipefail
here=$(dirname "$0")
source "$here/versions.sh"
CACHE=${HCSI_TOOLS_CACHE:-/var/cache/harvester-csi-tools}
case ${1:?usage: tool-dir.sh TOOL} in
  kubernetes) dir="$CACHE/kubernetes-$KUBERNETES_VERSION" ;;
  csi-sidecars|csi-provisioner|csi-attacher|csi-resizer|csi-snapshotter)
    dir="$CACHE/csi-sidecars-$CSI_PROVISIONER_VERSION-$CSI_ATTACHER_VERSION-$CSI_RESIZER_VERSION-$CSI_SNAPSHOTTER_VERSION" ;;
  helm) dir="$CACHE/helm-$HELM_VERSION" ;;
  helm4) dir="$CACHE/helm-$HELM4_VERSION" ;;
  *) echo "unknown tool: $1" >&2; exit 2 ;;
esac
[ -f "$dir/.complete" ] || "$here/build-tools.sh" "$1" >&2
echo "$dir/bin"
