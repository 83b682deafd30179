#!/usr/bin/env bash
# Packs directories into an OCI image archive without a container engine: an
# OCI image layout (oci-layout, index.json, blobs/sha256/...) in one tar file
# that `ctr -n k8s.io images import FILE` (containerd, also what `kind load
# image-archive` runs) and `docker load` (Docker 25+) accept.
#
# Generic: the driver image, and the pause, busybox and CSI sidecar images of the
# local test cluster, are all packed with it. Needs bash, GNU tar, gzip,
# sha256sum and jq.
#
# Each --rootfs DIR becomes one gzip layer, in the order given (later layers
# override earlier ones); --layer FILE adds a prepared layer (a tar, or a
# gzipped tar used byte for byte, so a cached layer keeps its digest). The
# archive names the image with the containerd annotation
# io.containerd.image.name (the full reference) and the OCI annotation
# org.opencontainers.image.ref.name (the tag), which is how an import names it.
# Without --env PATH=..., PATH is the usual Debian one.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: oci-archive.sh --ref REGISTRY/REPO:TAG --out FILE.tar
                      (--rootfs DIR | --layer FILE.tar[.gz])...
                      [--entrypoint ARG]... [--cmd ARG]... [--env K=V]... [--label K=V]...
                      [--workdir DIR] [--user USER] [--arch amd64|arm64|...] [--created RFC3339]
       oci-archive.sh --pack-layer DIR --out FILE.tar.gz
                      (only packs DIR as a gzip layer, to cache and pass later with --layer)

  --ref         fully qualified name, e.g. docker.io/library/busybox:1.36 (a bare
                "busybox:1" is refused: CRI image lookups need the full name)
  --rootfs      a directory packed as one layer (numeric owners, xattrs kept)
  --layer       an existing layer tarball, plain or gzip
  --entrypoint  one argv element of the entrypoint; repeat for each element
  --cmd         one argv element of the default command; repeat for each element
  --env/--label repeatable; --env PATH=... replaces the default PATH
  --arch        default: this machine's (uname -m mapped to the OCI name)
  --created     default: $SOURCE_DATE_EPOCH if set, else 1970-01-01T00:00:00Z (reproducible)

With SOURCE_DATE_EPOCH set, file times newer than it are clamped to it, so the
same sources pack to the same archive.
EOF
}

die() { echo "oci-archive.sh: $*" >&2; exit 2; }

ref="" out="" workdir="" user="" arch="" created="" pack_layer=""
layers=() entrypoint=() cmd=() envs=() labels=()
while [ $# -gt 0 ]; do
  case $1 in
    --ref) ref=${2:?--ref needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --rootfs) [ -d "${2:-}" ] || die "--rootfs ${2:-}: not a directory"; layers+=("dir:$2"); shift 2 ;;
    --layer) [ -f "${2:-}" ] || die "--layer ${2:-}: not a file"; layers+=("file:$2"); shift 2 ;;
    --entrypoint) entrypoint+=("${2?--entrypoint needs a value}"); shift 2 ;;
    --cmd) cmd+=("${2?--cmd needs a value}"); shift 2 ;;
    --env) [[ ${2:-} == ?*=* ]] || die "--env ${2:-}: expected K=V"; envs+=("$2"); shift 2 ;;
    --label) [[ ${2:-} == ?*=* ]] || die "--label ${2:-}: expected K=V"; labels+=("$2"); shift 2 ;;
    --workdir) workdir=${2?}; shift 2 ;;
    --user) user=${2?}; shift 2 ;;
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --created) created=${2:?--created needs a value}; shift 2 ;;
    --pack-layer) [ -d "${2:-}" ] || die "--pack-layer ${2:-}: not a directory"; pack_layer=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$out" ] || { usage >&2; die "--out is required"; }
for tool in tar gzip sha256sum jq; do
  command -v "$tool" >/dev/null || die "$tool is required (apt-get install $tool)"
done

# pack_dir DIR FILE.tar: one layer's tar. Numeric owners and sorted names: the same
# tree packs to the same bytes. The directory's own entry ("./") is left out, so a
# scratch directory's 0700 mode never becomes the container's root directory mode.
pack_dir() {
  local clamp=()
  [ -n "${SOURCE_DATE_EPOCH:-}" ] && clamp=(--mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime)
  (cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%P\0') | LC_ALL=C sort -z |
    tar --create --file "$2" --directory "$1" --numeric-owner --sort=name ${clamp[@]+"${clamp[@]}"} \
      --format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      --xattrs --xattrs-include='security.capability' --null --files-from=- ||
    die "$1: tar failed"
}

if [ -n "$pack_layer" ]; then
  [ -z "$ref" ] && [ ${#layers[@]} -eq 0 ] || die "--pack-layer takes only --out"
  mkdir -p "$(dirname "$out")"
  tmp=$(mktemp "$out.XXXXXX")
  trap 'rm -f "$tmp" "$tmp.gz"' EXIT
  pack_dir "$pack_layer" "$tmp"
  gzip -n -6 -c "$tmp" > "$tmp.gz" && mv "$tmp.gz" "$out"
  echo "$out: layer of $pack_layer"
  exit 0
fi
[ -n "$ref" ] || { usage >&2; die "--ref is required"; }
[ ${#layers[@]} -gt 0 ] || { usage >&2; die "at least one --rootfs or --layer is required"; }

# REGISTRY/REPO[/...]:TAG where REGISTRY has a dot or a port or is localhost.
name=${ref%:*} tag=${ref##*:}
registry=${ref%%/*}
if [[ $ref != */* || $tag == */* || $tag == "$ref" || ! $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ||
      ! ( $registry == *.* || $registry == *:* || $registry == localhost ) ]]; then
  die "--ref $ref: expected a fully qualified REGISTRY/REPOSITORY:TAG, e.g. docker.io/library/busybox:1.36"
fi
[[ $name =~ ^[a-z0-9.:-]+(/[a-z0-9._-]+)+$ ]] || die "--ref $ref: invalid repository name $name"

if [ -z "$arch" ]; then
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    armv7l) arch=arm ;;
    ppc64le) arch=ppc64le ;;
    s390x) arch=s390x ;;
    riscv64) arch=riscv64 ;;
    *) die "cannot map $(uname -m) to an OCI architecture: pass --arch" ;;
  esac
fi
if [ -z "$created" ]; then
  created=$(date -u -d "@${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ)
fi
has_path=false
for e in ${envs[@]+"${envs[@]}"}; do [[ $e == PATH=* ]] && has_path=true; done
$has_path || envs=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ${envs[@]+"${envs[@]}"})

out_dir=$(dirname "$out")
mkdir -p "$out_dir"
work=$(mktemp -d "$out_dir/.oci-archive-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/layout/blobs/sha256"
blobs=$work/layout/blobs/sha256

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# add_blob FILE: moves FILE into the blob store under its digest, prints the digest.
add_blob() {
  local d; d=$(sha "$1")
  mv "$1" "$blobs/$d"
  echo "$d"
}

diff_ids=() layer_descs=()
i=0
for layer in "${layers[@]}"; do
  i=$((i + 1))
  kind=${layer%%:*} src=${layer#*:}
  if [ "$kind" = dir ]; then
    pack_dir "$src" "$work/layer.tar"
    diff_id=$(sha "$work/layer.tar")
    gzip -n -6 "$work/layer.tar"
    gz="$work/layer.tar.gz"
  elif gzip -t "$src" 2>/dev/null; then
    diff_id=$(gzip -dc "$src" | sha256sum | cut -d' ' -f1)
    cp "$src" "$work/layer.tar.gz"
    gz="$work/layer.tar.gz"
  else
    tar -tf "$src" >/dev/null 2>&1 || die "--layer $src: neither a tar nor a gzipped tar"
    diff_id=$(sha "$src")
    gzip -n -6 -c "$src" > "$work/layer.tar.gz"
    gz="$work/layer.tar.gz"
  fi
  layer_size=$(size "$gz")
  digest=$(add_blob "$gz")
  diff_ids+=("sha256:$diff_id")
  layer_descs+=("$(jq -cn --arg d "sha256:$digest" --argjson s "$layer_size" \
    '{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}')")
done

# json_array ARG...: a JSON array of strings. Each one goes through stdin, since
# jq parses an argument like "-c" as its own option even after --args.
json_array() {
  local arg items=()
  for arg in "$@"; do items+=("$(printf '%s' "$arg" | jq -Rs .)"); done
  local IFS=,
  echo "[${items[*]}]"
}
# kv_object K=V...: a JSON object from K=V pairs (the value may hold '=' or newlines).
kv_object() {
  json_array "$@" | jq -c '[.[] | index("=") as $i | {(.[:$i]): .[$i + 1:]}] | add // {}'
}

config_body=$(jq -cn \
  --argjson entrypoint "$(json_array ${entrypoint[@]+"${entrypoint[@]}"})" \
  --argjson cmd "$(json_array ${cmd[@]+"${cmd[@]}"})" \
  --argjson env "$(json_array "${envs[@]}")" \
  --argjson labels "$(kv_object ${labels[@]+"${labels[@]}"})" \
  --arg workdir "$workdir" --arg user "$user" \
  '{Env: $env, Labels: $labels}
   + (if ($entrypoint | length) > 0 then {Entrypoint: $entrypoint} else {} end)
   + (if ($cmd | length) > 0 then {Cmd: $cmd} else {} end)
   + (if $workdir != "" then {WorkingDir: $workdir} else {} end)
   + (if $user != "" then {User: $user} else {} end)')
jq -cn --arg created "$created" --arg arch "$arch" --argjson config "$config_body" \
  --argjson diff_ids "$(json_array "${diff_ids[@]}")" \
  '{created: $created, architecture: $arch, os: "linux", config: $config,
    rootfs: {type: "layers", diff_ids: $diff_ids},
    history: [$diff_ids[] | {created: $created, created_by: "oci-archive.sh"}]}' > "$work/config.json"
config_size=$(size "$work/config.json")
config_digest=$(add_blob "$work/config.json")

jq -cn --arg cd "sha256:$config_digest" --argjson cs "$config_size" \
  --argjson layers "$(jq -cs . <<<"$(printf '%s\n' "${layer_descs[@]}")")" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
    layers: $layers}' > "$work/manifest.json"
manifest_size=$(size "$work/manifest.json")
manifest_digest=$(add_blob "$work/manifest.json")

jq -cn --arg md "sha256:$manifest_digest" --argjson ms "$manifest_size" \
  --arg arch "$arch" --arg ref "$ref" --arg tag "$tag" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
                 platform: {architecture: $arch, os: "linux"},
                 annotations: {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": $tag}}]}' \
  > "$work/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"

tar --create --file "$work/image.tar" --directory "$work/layout" --numeric-owner --owner=0 --group=0 \
  --sort=name --mtime=@0 --format=posix --pax-option=delete=atime,delete=ctime oci-layout index.json blobs
mv "$work/image.tar" "$out"
echo "$out: $ref sha256:$manifest_digest ($arch, ${#diff_ids[@]} layer(s))"
