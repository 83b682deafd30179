#!/usr/bin/env bash
# Prints the bin directory of a tool built by build-tools.sh (building it first
# if the cache lacks it), e.g. PATH="$(ci/cluster/tool-dir.sh helm):$PATH".
set -euo pipefail
here=$(dirname "$0")
source "$here/versions.sh"
CACHE=${HCSI_TOOLS_CACHE:-/var/cache/harvester-csi-tools}
case ${1:?usage: tool-dir.sh TOOL} in
  kubernetes) version=$KUBERNETES_VERSION ;;
  csi-provisioner) version=$CSI_PROVISIONER_VERSION ;;
  csi-attacher) version=$CSI_ATTACHER_VERSION ;;
  csi-resizer) version=$CSI_RESIZER_VERSION ;;
  csi-snapshotter) version=$CSI_SNAPSHOTTER_VERSION ;;
  helm) version=$HELM_VERSION ;;
  helm4) version=$HELM4_VERSION ;;
  *) echo "unknown tool: $1" >&2; exit 2 ;;
esac
name=$1; [ "$name" = helm4 ] && name=helm
dir="$CACHE/$name-$version"
[ -f "$dir/.complete" ] || "$here/build-tools.sh" "$1" >&2
echo "$dir/bin"
