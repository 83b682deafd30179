#!/usr/bin/env bash
# Builds the real Kubernetes components, the CSI sidecars and helm from the Go
# module proxy into a cache outside the clone, keyed by version, so a second run
# (or a second clone) reuses them. Prints nothing but progress on stderr.
#
# Usage: ci/cluster/build-tools.sh [TOOL...]     (default: all)
# Tools: kubernetes csi-provisioner csi-attacher csi-resizer csi-snapshotter helm helm4
# Cache: $HCSI_TOOLS_CACHE (default /var/cache/harvester-csi-tools)
#
# Why each recipe is the way it is: ../shared/reference/local-cluster.md. In
# short, `go install` refuses modules with replace directives, so Kubernetes is
# built from a scratch module that replaces its staging modules by their
# published versions, and most sidecars are built inside their module directory.
set -euo pipefail
source "$(dirname "$0")/versions.sh"

CACHE=${HCSI_TOOLS_CACHE:-/var/cache/harvester-csi-tools}
mkdir -p "$CACHE"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

log() { printf '== %s\n' "$*" >&2; }

# done_marker DIR: a build is complete only when its marker exists, so an
# interrupted build is redone rather than half-used.
is_built() { [ -f "$1/.complete" ]; }
mark_built() { touch "$1/.complete"; }

build_kubernetes() {
  local out="$CACHE/kubernetes-$KUBERNETES_VERSION"
  is_built "$out" && return 0
  log "building Kubernetes $KUBERNETES_VERSION (apiserver, controller-manager, scheduler, kubelet); ~20 min on 2 cores"
  local work; work=$(mktemp -d "$CACHE/.k8s-build-XXXXXX")
  local staging_version="v0${KUBERNETES_VERSION#v1}"
  (
    cd "$work"
    go mod init hcsi.local/kubernetes-build >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
    # Every staging module kubernetes replaces with ./staging/... is published
    # as k8s.io/<name> v0.<minor>.<patch>; the list is kubernetes' own go.mod.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | while read -r module; do
      go mod edit -replace="$module=$module@$staging_version"
    done
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    go mod tidy >/dev/null 2>&1 || go mod tidy
    local pkg=k8s.io/component-base/version
    local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
    local ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    mkdir -p bin
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
      log "  go build $cmd"
      go build -trimpath -ldflags "$ldflags" -o "bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    done
  )
  rm -rf "$out"; mkdir -p "$out"
  mv "$work/bin" "$out/bin"
  rm -rf "$work"
  mark_built "$out"
}

# build_in_module MODULE VERSION CMD...: builds ./cmd/<CMD> inside a copy of the
# module's source, where its own go.mod (with its replaces) applies.
build_in_module() {
  local module=$1 version=$2 name=$3; shift 3
  local out="$CACHE/$name-$version"
  is_built "$out" && return 0
  log "building $name $version"
  local dir; dir=$(go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  local work; work=$(mktemp -d "$CACHE/.$name-build-XXXXXX")
  cp -r "$dir/." "$work/src"
  chmod -R u+w "$work/src"
  (
    cd "$work/src"
    if [ -n "${DROP_REPLACE:-}" ]; then
      go mod edit -dropreplace="$DROP_REPLACE" -require="$DROP_REPLACE@$version"
    fi
    mkdir -p "$work/bin"
    for cmd in "$@"; do
      log "  go build $cmd"
      go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$work/bin/$cmd" "./cmd/$cmd"
    done
  )
  rm -rf "$out"; mkdir -p "$out"
  mv "$work/bin" "$out/bin"
  if [ -d "$work/src/client/config/crd" ]; then cp -r "$work/src/client/config/crd" "$out/crd"; fi
  if [ -n "${KEEP_DEPLOY:-}" ] && [ -d "$work/src/deploy" ]; then cp -r "$work/src/deploy" "$out/deploy"; fi
  rm -rf "$work"
  mark_built "$out"
}

# build_helm VERSION: helm 3 and helm 4 both install with plain `go install`.
build_helm() {
  local version=$1 out="$CACHE/helm-$1"
  is_built "$out" && return 0
  log "building helm $version"
  mkdir -p "$out/bin"
  GOBIN="$out/bin" go install "helm.sh/helm/v${version:1:1}/cmd/helm@$version"
  mark_built "$out"
}

# snapshot_crds OUT: the VolumeSnapshot CRDs ship in the client module
# (client/v8/config/crd), which the main module's zip leaves out (nested module).
snapshot_crds() {
  local out=$1
  [ -d "$out/crd" ] && return 0
  local dir
  dir=$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$CSI_SNAPSHOTTER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp -r "$dir/config/crd" "$out/crd.tmp"
  chmod -R u+w "$out/crd.tmp"
  mv "$out/crd.tmp" "$out/crd"
}

build_one() {
  case $1 in
    kubernetes) build_kubernetes ;;
    csi-provisioner) build_in_module github.com/kubernetes-csi/external-provisioner/v6 "$CSI_PROVISIONER_VERSION" csi-provisioner csi-provisioner ;;
    csi-attacher) build_in_module github.com/kubernetes-csi/external-attacher/v4 "$CSI_ATTACHER_VERSION" csi-attacher csi-attacher ;;
    csi-resizer) build_in_module github.com/kubernetes-csi/external-resizer/v2 "$CSI_RESIZER_VERSION" csi-resizer csi-resizer ;;
    csi-snapshotter)
      DROP_REPLACE=github.com/kubernetes-csi/external-snapshotter/client/v8 \
        build_in_module github.com/kubernetes-csi/external-snapshotter/v8 "$CSI_SNAPSHOTTER_VERSION" csi-snapshotter csi-snapshotter snapshot-controller
      snapshot_crds "$CACHE/csi-snapshotter-$CSI_SNAPSHOTTER_VERSION" ;;
    helm) build_helm "$HELM_VERSION" ;;
    helm4) build_helm "$HELM4_VERSION" ;;
    *) echo "unknown tool: $1" >&2; exit 2 ;;
  esac
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(helm helm4 csi-resizer csi-attacher csi-provisioner csi-snapshotter kubernetes)
for tool in "${tools[@]}"; do build_one "$tool"; done
