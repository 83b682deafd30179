#!/usr/bin/env bash
# Checks an OCI image archive the way a node uses it: a private containerd (its
# own root, state and socket under a scratch directory, CRI plugin off, so
# nothing else on the machine is touched) imports it into the k8s.io namespace,
# lists it, and runs it once with the given arguments.
#
# usage: deploy/image/verify-import.sh ARCHIVE.tar [--expect TEXT] [-- ARG...]
#   ARG...  arguments for the image's entrypoint (default: none)
#   --expect  the run's output must contain TEXT
# Needs root, containerd, ctr and runc (apt-get install containerd runc).
set -euo pipefail

die() { echo "verify-import.sh: $*" >&2; exit 2; }
archive=${1:?usage: verify-import.sh ARCHIVE.tar [--expect TEXT] [-- ARG...]}
shift
expect="" args=()
while [ $# -gt 0 ]; do
  case $1 in
    --expect) expect=${2:?}; shift 2 ;;
    --) shift; args=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ -f "$archive" ] || die "$archive: no such file"
[ "$(id -u)" -eq 0 ] || die "needs root: containerd unpacks layers with their owners"
for tool in containerd ctr runc tar jq; do
  command -v "$tool" >/dev/null || die "$tool is required (apt-get install containerd runc jq)"
done

ref=$(tar -xOf "$archive" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]')
[ -n "$ref" ] && [ "$ref" != null ] || die "$archive: index.json names no image"

dir=$(mktemp -d /tmp/verify-import-XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  # Snapshot mounts left by a failed run would keep the directory busy.
  { grep -o " $dir/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
cat > "$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
EOF
containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
pid=$!
ctr_() { ctr --address "$dir/containerd.sock" --namespace k8s.io "$@"; }
for _ in $(seq 1 100); do
  ctr_ version >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { tail -5 "$dir/containerd.log" >&2; die "containerd exited"; }
  sleep 0.1
done
ctr_ version >/dev/null || die "containerd did not answer on $dir/containerd.sock"

ctr_ images import "$archive"
ctr_ images ls | tee "$dir/images"
grep -q "^$ref " "$dir/images" || die "$ref is not listed after the import"
# `ctr run IMAGE ID ARG...` replaces the whole command line, entrypoint included,
# so the image's own entrypoint is put in front of the arguments.
blob() { tar -xOf "$archive" "blobs/sha256/${1#sha256:}"; }
manifest=$(tar -xOf "$archive" index.json | jq -r '.manifests[0].digest')
config=$(blob "$manifest" | jq -r '.config.digest')
mapfile -t entrypoint < <(blob "$config" | jq -r '.config.Entrypoint // [] | .[]')
command=(${entrypoint[@]+"${entrypoint[@]}"} ${args[@]+"${args[@]}"})
echo "== ctr run $ref ${command[*]}"
ctr_ run --rm "$ref" verify-import ${command[@]+"${command[@]}"} | tee "$dir/run.out"
if [ -n "$expect" ] && ! grep -qF -- "$expect" "$dir/run.out"; then
  die "the run printed no \"$expect\""
fi
echo "verify-import: $ref imported and ran"
