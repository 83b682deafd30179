#!/usr/bin/env bash
# The scenario suite on the cluster backend: a local Kubernetes built from its
# own components (one containerd + kubelet per simulated VM), the driver
# installed by the Helm chart, the real sidecars, attach/detach controller and
# kubelet. Installs what it needs; builds the Kubernetes components, the CSI
# sidecars and helm once into /var/cache/harvester-csi-tools (keyed by
# version), the image archives into target/cluster-images.
# JUnit: target/cluster-scenarios.junit.xml.
#
# Usage: ci/cluster-scenarios.sh [--cold-cases FILE] [--cases-file FILE] [--except FILE] [-- extra `scenarios run` args]
#   (default)           every file in scenarios/cases
#   --except FILE       leave out the cases FILE names (each with its reason in a
#                       comment); they are printed as not run, never as passed.
#                       CI passes ci/cluster/known-failures.txt.
#   --cases-file FILE   only the cases FILE names (one name per line, # comments)
#   --cold-cases FILE   only the cases FILE names IF this run had to build the
#                       Kubernetes components or the sidecars (a fresh machine:
#                       the builds took most of the time budget); with the tools
#                       cached, every case. CI passes ci/cluster/cold-cases.txt.
# Which cases ran, and why, is printed before the suite starts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "the cluster suite needs root (namespaces, cgroups, mounts)" >&2; exit 1; }
started=$(date +%s)
stamp() { echo "== $(( $(date +%s) - started ))s: $*" >&2; }

cases_file=""
cold_cases=""
except_file=""
while [ $# -gt 0 ]; do
  case $1 in
    --cases-file) cases_file=${2:?--cases-file FILE}; shift 2 ;;
    --cold-cases) cold_cases=${2:?--cold-cases FILE}; shift 2 ;;
    --except) except_file=${2:?--except FILE}; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
for f in "$cases_file" "$cold_cases" "$except_file"; do
  [ -z "$f" ] || [ -f "$f" ] || { echo "no such cases file: $f" >&2; exit 2; }
done

./ci/install-deps.sh
# Go (≥ 1.24, for Kubernetes v1.34) and Rust must be present; Debian's golang-go is too old.
command -v go >/dev/null || { echo "go is required to build the Kubernetes components" >&2; exit 1; }
need=()
for tool in containerd:containerd runc:runc etcd:etcd-server busybox:busybox-static gcc:gcc jq:jq ip:iproute2 \
            nsenter:util-linux unshare:util-linux debootstrap:debootstrap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  stamp "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages must not start their services (containerd, etcd): the cluster runs its own.
  policy=/usr/sbin/policy-rc.d
  restore=false
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; restore=true; fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  $restore && rm -f "$policy"
fi

# Cold: the long Go builds happen in this run.
cold=$(./ci/cluster/build-tools.sh --missing kubernetes csi-sidecars | tr '\n' ' ')
stamp "tools (cached in ${HCSI_TOOLS_CACHE:-/var/cache/harvester-csi-tools}); to build: ${cold:-none}"
./ci/cluster/build-tools.sh kubernetes helm csi-sidecars
stamp "tools ready"

# The case files to run, and why.
names_in() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$'; }
files=()
if [ -n "$cases_file" ]; then
  why="the cases $cases_file names"
  list=$(names_in "$cases_file")
elif [ -n "$cold_cases" ] && [ -n "$cold" ]; then
  why="the tools were built in this run (${cold% }): the cases $cold_cases names"
  list=$(names_in "$cold_cases")
else
  why="every case"
  list=$(for f in scenarios/cases/*.yaml; do basename "$f" .yaml; done)
fi
excluded=()
if [ -n "$except_file" ]; then
  for name in $(names_in "$except_file"); do
    [ -f "scenarios/cases/$name.yaml" ] || { echo "no scenario $name (named in $except_file)" >&2; exit 2; }
    excluded+=("$name")
  done
fi
for name in $list; do
  f=scenarios/cases/$name.yaml
  [ -f "$f" ] || { echo "no scenario $f (named in a cases file)" >&2; exit 2; }
  if printf '%s\n' "${excluded[@]}" | grep -qxF "$name"; then continue; fi
  files+=("$f")
done
all=$(ls scenarios/cases/*.yaml | wc -l)
echo "== cluster suite: ${#files[@]} of $all cases, because $why:" >&2
printf '     %s\n' "${files[@]}" >&2
if [ ${#excluded[@]} -gt 0 ]; then
  echo "== NOT RUN on the cluster backend (known failures, reasons in $except_file):" >&2
  grep -v '^\s*#' "$except_file" | grep -v '^\s*$' | sed 's/^/     /' >&2
fi

TARGET_DIR=${CARGO_TARGET_DIR:-target}
stamp "cargo build"
cargo build --quiet --bins
stamp "image archives"
DRIVER_BINARY=$TARGET_DIR/debug/harvester-csi-driver ./ci/cluster/images.sh --all "$TARGET_DIR/cluster-images"

stamp "suite"
mkdir -p "$TARGET_DIR/cluster-scenario-report"
set +e
"$TARGET_DIR/debug/scenarios" run "${files[@]}" --backend cluster \
  --bin-dir "$TARGET_DIR/debug" \
  --state-dir "$TARGET_DIR/cluster" \
  --images "$TARGET_DIR/cluster-images" \
  --values "$TARGET_DIR/cluster-images/images-values.yaml" \
  --work-dir "$TARGET_DIR/cluster-scenario-work" \
  --junit "$TARGET_DIR/cluster-scenarios.junit.xml" \
  --report "$TARGET_DIR/cluster-scenario-report" "$@"
rc=$?
set -e
stamp "done (exit $rc): ${#files[@]} of $all cases ($why)"
exit $rc
