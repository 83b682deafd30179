#!/usr/bin/env bash
# Builds the real Kubernetes components, the CSI sidecars and helm from the Go
# module proxy into a cache outside the clone, keyed by version, so a second run
# (or a second clone) reuses them. Prints nothing but progress on stderr.
#
# Usage: ci/cluster/build-tools.sh [TOOL...]     (default: all)
#        ci/cluster/build-tools.sh --missing TOOL...   names those not built yet, builds nothing
# Tools: kubernetes csi-sidecars helm helm4
#        (csi-provisioner, csi-attacher, csi-resizer, csi-snapshotter: csi-sidecars)
# Cache: $HCSI_TOOLS_CACHE (default /var/cache/harvester-csi-tools)
#
# Why each recipe is the way it is: ../shared/reference/local-cluster.md. In
# short, `go install` refuses modules with replace directives, so each build is
# a scratch module that requires what it builds and replaces the Kubernetes
# staging modules by their published versions. Build time is what CI pays on a
# fresh machine, so each is one `go build` of all its commands (one action
# graph: shared packages compile once, links overlap compiles), without DWARF
# (-gcflags=all=-dwarf=false; the binaries are stripped anyway).
set -euo pipefail
source "$(dirname "$0")/versions.sh"

CACHE=${HCSI_TOOLS_CACHE:-/var/cache/harvester-csi-tools}
mkdir -p "$CACHE"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
GCFLAGS="all=-dwarf=false"

log() { printf '== %s\n' "$*" >&2; }

# A build is complete only when its marker exists, so an interrupted build is
# redone rather than half-used.
is_built() { [ -f "$1/.complete" ]; }
mark_built() { touch "$1/.complete"; }

# replace_staging VERSION MODULE...: pin each Kubernetes staging module.
replace_staging() {
  local version=$1; shift
  local m
  for m in "$@"; do go mod edit -replace="$m=$m@$version"; done
}

# replaced_k8s_modules GOMOD... [TARGET]: the k8s.io modules the go.mod files
# replace (with TARGET, a sed pattern, e.g. kubernetes' own `./staging/`).
replaced_k8s_modules() {
  local target=${TARGET:-}
  cat "$@" | sed -n "s#^\\(replace \\)\\{0,1\\}\\s*\\(k8s.io/[a-z0-9-]*\\) => $target.*#\\2#p" | sort -u
}

gomod_of() { go mod download -json "$1" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p'; }

build_kubernetes() {
  local out="$CACHE/kubernetes-$KUBERNETES_VERSION"
  is_built "$out" && return 0
  log "building Kubernetes $KUBERNETES_VERSION (apiserver, controller-manager, scheduler, kubelet)"
  local work; work=$(mktemp -d "$CACHE/.k8s-build-XXXXXX")
  local staging_version="v0${KUBERNETES_VERSION#v1}"
  (
    cd "$work"
    go mod init hcsi.local/kubernetes-build >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
    # Every staging module kubernetes replaces with ./staging/... is published
    # as k8s.io/<name> v0.<minor>.<patch>; the list is kubernetes' own go.mod.
    # shellcheck disable=SC2046
    replace_staging "$staging_version" $(TARGET=./staging/ replaced_k8s_modules "$(gomod_of "k8s.io/kubernetes@$KUBERNETES_VERSION")")
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
    log "  go build kube-apiserver kube-controller-manager kube-scheduler kubelet"
    go build -trimpath -gcflags="$GCFLAGS" -ldflags "$ldflags" -o bin/ \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet
  )
  rm -rf "$out"; mkdir -p "$out"
  mv "$work/bin" "$out/bin"
  rm -rf "$work"
  mark_built "$out"
}

# The four sidecars and the snapshot-controller in ONE scratch module: their
# shared dependencies (client-go, apimachinery, api, grpc, csi-lib-utils, …)
# are compiled once instead of once per sidecar. Minimal version selection
# picks one version of each; the Kubernetes staging modules are pinned to the
# newest any of them asks for (each sidecar's own go.mod pins its own), and
# external-snapshotter's client module is its published release instead of
# the repository's ./client replace.
sidecars_dir() {
  echo "$CACHE/csi-sidecars-$CSI_PROVISIONER_VERSION-$CSI_ATTACHER_VERSION-$CSI_RESIZER_VERSION-$CSI_SNAPSHOTTER_VERSION"
}

build_sidecars() {
  local out; out=$(sidecars_dir)
  is_built "$out" && return 0
  log "building csi-provisioner $CSI_PROVISIONER_VERSION, csi-attacher $CSI_ATTACHER_VERSION, csi-resizer $CSI_RESIZER_VERSION, csi-snapshotter and snapshot-controller $CSI_SNAPSHOTTER_VERSION"
  local work; work=$(mktemp -d "$CACHE/.csi-sidecars-build-XXXXXX")
  local provisioner=github.com/kubernetes-csi/external-provisioner/v6
  local attacher=github.com/kubernetes-csi/external-attacher/v4
  local resizer=github.com/kubernetes-csi/external-resizer/v2
  local snapshotter=github.com/kubernetes-csi/external-snapshotter/v8
  local client=github.com/kubernetes-csi/external-snapshotter/client/v8
  (
    cd "$work"
    go mod init hcsi.local/csi-sidecars >/dev/null 2>&1
    go mod edit -require="$provisioner@$CSI_PROVISIONER_VERSION" -require="$attacher@$CSI_ATTACHER_VERSION" \
      -require="$resizer@$CSI_RESIZER_VERSION" -require="$snapshotter@$CSI_SNAPSHOTTER_VERSION" \
      -require="$client@$CSI_SNAPSHOTTER_VERSION"
    local mods=() m
    for m in "$provisioner@$CSI_PROVISIONER_VERSION" "$attacher@$CSI_ATTACHER_VERSION" \
             "$resizer@$CSI_RESIZER_VERSION" "$snapshotter@$CSI_SNAPSHOTTER_VERSION"; do
      mods+=("$(gomod_of "$m")")
    done
    # The newest client-go any sidecar requires: its release's staging version.
    local staging
    staging=$(sed -n 's#^\s*k8s.io/client-go \(v0\.[0-9]*\.[0-9]*\)\( //.*\)\{0,1\}$#\1#p' "${mods[@]}" | sort -V | tail -1)
    [ -n "$staging" ] || { echo "no k8s.io/client-go requirement in the sidecars' go.mod files" >&2; exit 1; }
    # shellcheck disable=SC2046
    replace_staging "$staging" $(replaced_k8s_modules "${mods[@]}")
    cat > tools.go <<GO
//go:build tools

package tools

import (
	_ "$attacher/cmd/csi-attacher"
	_ "$provisioner/cmd/csi-provisioner"
	_ "$resizer/cmd/csi-resizer"
	_ "$snapshotter/cmd/csi-snapshotter"
	_ "$snapshotter/cmd/snapshot-controller"
)
GO
    go mod tidy >/dev/null 2>&1 || go mod tidy
    mkdir -p bin
    # Each command's own version string (main.version), as its release sets it.
    local v
    for spec in "csi-provisioner $provisioner $CSI_PROVISIONER_VERSION" "csi-attacher $attacher $CSI_ATTACHER_VERSION" \
                "csi-resizer $resizer $CSI_RESIZER_VERSION"; do
      set -- $spec
      log "  go build $1"
      go build -trimpath -gcflags="$GCFLAGS" -ldflags "-s -w -X main.version=$3" -o "bin/$1" "$2/cmd/$1"
    done
    log "  go build csi-snapshotter snapshot-controller"
    go build -trimpath -gcflags="$GCFLAGS" -ldflags "-s -w -X main.version=$CSI_SNAPSHOTTER_VERSION" -o bin/ \
      "$snapshotter/cmd/csi-snapshotter" "$snapshotter/cmd/snapshot-controller"
    cp go.mod bin/.go.mod
  )
  rm -rf "$out"; mkdir -p "$out"
  mv "$work/bin" "$out/bin"
  mv "$out/bin/.go.mod" "$out/go.mod"
  rm -rf "$work"
  snapshot_crds "$out"
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
    csi-sidecars|csi-provisioner|csi-attacher|csi-resizer|csi-snapshotter) build_sidecars ;;
    helm) build_helm "$HELM_VERSION" ;;
    helm4) build_helm "$HELM4_VERSION" ;;
    *) echo "unknown tool: $1" >&2; exit 2 ;;
  esac
}

# out_dir TOOL: where a tool's build lives.
out_dir() {
  case $1 in
    kubernetes) echo "$CACHE/kubernetes-$KUBERNETES_VERSION" ;;
    csi-sidecars|csi-provisioner|csi-attacher|csi-resizer|csi-snapshotter) sidecars_dir ;;
    helm) echo "$CACHE/helm-$HELM_VERSION" ;;
    helm4) echo "$CACHE/helm-$HELM4_VERSION" ;;
    *) echo "unknown tool: $1" >&2; exit 2 ;;
  esac
}

if [ "${1:-}" = --missing ]; then
  shift
  for tool in "$@"; do is_built "$(out_dir "$tool")" || echo "$tool"; done
  exit 0
fi
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(helm helm4 csi-sidecars kubernetes)
for tool in "${tools[@]}"; do build_one "$tool"; done
