#!/usr/bin/env bash
# The daemonless build of the driver image (the same image as ./Dockerfile, no
# container engine needed): a Debian root filesystem made by debootstrap from
# packages.txt, plus the release-built driver, packed by oci-archive.sh into an
# OCI image archive that `ctr -n k8s.io images import` and `kind load
# image-archive` accept.
#
# usage: deploy/image/build.sh [--out FILE] [--tag TAG] [--binary FILE]
#   --out     default: target/image/harvester-csi-driver.oci.tar (the image
#             reference is written next to it, in harvester-csi-driver.ref)
#   --tag     default: the driver's version (what `harvester-csi-driver --version` prints)
#   --binary  a driver binary built already (default: cargo build --release)
#
# The root filesystem is cached outside the clone, keyed by a hash of the
# package list, the Debian suite and the architecture:
# $HCSI_TOOLS_CACHE (default /var/cache/harvester-csi-tools)/rootfs-<suite>-<arch>-<hash>,
# its packed layer beside it (.layer.tar.gz).
# Needs root (debootstrap, file owners), debootstrap, jq; Debian packages come
# from $DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=image.env
source "$here/image.env"

die() { echo "build.sh: $*" >&2; exit 2; }
log() { printf '== %s\n' "$*" >&2; }

out=$repo/target/image/harvester-csi-driver.oci.tar tag="" binary=""
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=${2:?}; shift 2 ;;
    --tag) tag=${2:?}; shift 2 ;;
    --binary) binary=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "needs root: debootstrap and the root filesystem's file owners"
for tool in debootstrap jq dpkg; do
  command -v "$tool" >/dev/null || die "$tool is required (apt-get install $tool)"
done

CACHE=${HCSI_TOOLS_CACHE:-/var/cache/harvester-csi-tools}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$' | LC_ALL=C sort -u)
[ ${#packages[@]} -gt 0 ] || die "packages.txt lists no package"
arch=$(dpkg --print-architecture)
key=$(printf '%s\n' "$DEBIAN_SUITE" minbase "$arch" "${packages[@]}" | sha256sum | cut -c1-16)
rootfs=$CACHE/rootfs-$DEBIAN_SUITE-$arch-$key

# The marker sits beside the tree (not in it, where it would enter the image):
# an interrupted debootstrap is redone, never half-used.
if [ ! -f "$rootfs.complete" ]; then
  log "debootstrap $DEBIAN_SUITE ($arch, minbase) with: ${packages[*]}"
  mkdir -p "$CACHE"
  work=$(mktemp -d "$CACHE/.rootfs-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  include=$(IFS=,; echo "${packages[*]}")
  debootstrap --variant=minbase --components=main --include="$include" \
    "$DEBIAN_SUITE" "$work/root" "$MIRROR" > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (full log: $work/debootstrap.log)"; }
  # What bookworm-slim leaves out too: package caches and lists, logs, manuals
  # and translations (copyright files stay). /dev, resolv.conf and hostname are
  # the runtime's to provide.
  (
    cd "$work/root"
    rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/* \
      usr/share/man/* usr/share/info/* usr/share/locale/* var/cache/debconf/*-old
    find usr/share/doc -type f ! -name copyright -delete
    find usr/share/doc -type d -empty -delete
    find dev -mindepth 1 -delete
    rm -f etc/hostname etc/resolv.conf
  )
  rm -rf "$rootfs"
  mv "$work/root" "$rootfs"
  printf '%s\n' "${packages[@]}" > "$rootfs.complete"
  rm -rf "$work"
  trap - EXIT
fi
log "root filesystem: $rootfs"
# Its layer is cached too: gzip of the root filesystem is most of a build's time.
if [ ! -f "$rootfs.layer.tar.gz" ]; then
  "$here/oci-archive.sh" --pack-layer "$rootfs" --out "$rootfs.layer.tar.gz" >&2
fi

if [ -z "$binary" ]; then
  log "cargo build --release -p harvester-csi-driver"
  (cd "$repo" && cargo build --release --locked -p harvester-csi-driver --bin harvester-csi-driver)
  binary=${CARGO_TARGET_DIR:-$repo/target}/release/harvester-csi-driver
fi
[ -x "$binary" ] || die "$binary: not an executable"
version=$("$binary" --version | awk '{print $2}')
[ -n "$version" ] || die "$binary --version printed no version"
tag=${tag:-$version}
ref=$IMAGE_REPOSITORY:$tag

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$binary" "$stage/usr/local/bin/harvester-csi-driver"
chmod 0755 "$stage" "$stage/usr" "$stage/usr/local" "$stage/usr/local/bin"

revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
# The last commit's date as the image date: the same commit builds the same archive.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

log "packing $ref"
"$here/oci-archive.sh" --ref "$ref" --out "$out" \
  --layer "$rootfs.layer.tar.gz" --rootfs "$stage" \
  --entrypoint /usr/local/bin/harvester-csi-driver \
  --created "$created" \
  --label "org.opencontainers.image.title=$IMAGE_TITLE" \
  --label "org.opencontainers.image.description=$IMAGE_DESCRIPTION" \
  --label "org.opencontainers.image.source=$IMAGE_SOURCE" \
  --label "org.opencontainers.image.licenses=$IMAGE_LICENSES" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.created=$created" \
  --label "org.opencontainers.image.base.name=debian:$DEBIAN_SUITE"
echo "$ref" > "${out%.oci.tar}.ref"
