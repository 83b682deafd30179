#!/usr/bin/env bash
# Builds the image archives the local cluster imports into every node, into
# OUTDIR (default target/cluster-images): pause and busybox always; the CSI
# sidecars and the driver with --all. Each is an OCI archive packed by
# deploy/image/oci-archive.sh under a fully qualified name (imagePullPolicy
# Never/IfNotPresent finds it; nothing can be pulled here):
#   docker.io/local/pause:1        static pause from a few lines of C (gcc -static)
#   docker.io/local/busybox:1      Debian's busybox-static with its applet links
#   docker.io/local/<sidecar>:<v>  the sidecars from ci/cluster/build-tools.sh (static Go)
#   the driver image               deploy/image/build.sh (name in its .ref file)
# Archives are rebuilt only when their inputs are newer.
#
# usage: ci/cluster/images.sh [--all] [OUTDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/versions.sh"
pack=$repo/deploy/image/oci-archive.sh
all=false
[ "${1:-}" = --all ] && { all=true; shift; }
out=${1:-$repo/target/cluster-images}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { printf '== %s\n' "$*" >&2; }

# fresh ARCHIVE INPUT...: the archive exists and is newer than every input.
fresh() {
  local a=$1; shift
  [ -f "$a" ] || return 1
  for i in "$@"; do [ "$a" -nt "$i" ] || return 1; done
}

if ! fresh "$out/pause.tar" "$0"; then
  log "pause"
  mkdir -p "$work/pause"
  cat > "$work/pause.c" <<'C'
/* The pod sandbox's process: sleeps until told to stop, reaps orphans. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
C
  gcc -static -Os -o "$work/pause/pause" "$work/pause.c"
  strip "$work/pause/pause"
  "$pack" --ref docker.io/local/pause:1 --out "$out/pause.tar" --rootfs "$work/pause" --entrypoint /pause >&2
fi

if ! fresh "$out/busybox.tar" "$0" /bin/busybox; then
  log "busybox"
  root=$work/busybox
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  chmod 1777 "$root/tmp"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
  "$pack" --ref docker.io/local/busybox:1 --out "$out/busybox.tar" --rootfs "$root" --env PATH=/bin --cmd sh >&2
fi

$all || exit 0

# sidecar TOOL VERSION BINARY...: one image per binary, named after it.
sidecar() {
  local tool=$1 version=$2; shift 2
  local bin; bin=$("$here/tool-dir.sh" "$tool")
  for b in "$@"; do
    if ! fresh "$out/$b.tar" "$0" "$bin/$b"; then
      log "$b $version"
      rm -rf "$work/$b"; mkdir -p "$work/$b/tmp"; chmod 1777 "$work/$b/tmp"
      cp "$bin/$b" "$work/$b/$b"
      "$pack" --ref "docker.io/local/$b:$version" --out "$out/$b.tar" --rootfs "$work/$b" --entrypoint "/$b" >&2
    fi
  done
}
sidecar csi-provisioner "$CSI_PROVISIONER_VERSION" csi-provisioner
sidecar csi-attacher "$CSI_ATTACHER_VERSION" csi-attacher
sidecar csi-resizer "$CSI_RESIZER_VERSION" csi-resizer
sidecar csi-snapshotter "$CSI_SNAPSHOTTER_VERSION" csi-snapshotter

log "driver image"
"$repo/deploy/image/build.sh" --out "$out/harvester-csi-driver.oci.tar" ${DRIVER_BINARY:+--binary "$DRIVER_BINARY"} >&2
driver_ref=$(cat "$out/harvester-csi-driver.ref")

# The chart values that name these images (scenarios run --values FILE).
cat > "$out/images-values.yaml" <<YAML
image:
  pullPolicy: Never
  harvester:
    csiDriver: {repository: ${driver_ref%:*}, tag: ${driver_ref##*:}}
  csi:
    provisioner: {repository: docker.io/local/csi-provisioner, tag: $CSI_PROVISIONER_VERSION}
    attacher: {repository: docker.io/local/csi-attacher, tag: $CSI_ATTACHER_VERSION}
    resizer: {repository: docker.io/local/csi-resizer, tag: $CSI_RESIZER_VERSION}
    snapshotter: {repository: docker.io/local/csi-snapshotter, tag: $CSI_SNAPSHOTTER_VERSION}
YAML
echo "$out/images-values.yaml" >&2
