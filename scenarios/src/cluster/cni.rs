//! The pod network: none to speak of. A sandbox still needs an interface with an
//! address (local-cluster.md), so a tiny CNI plugin of our own gives each pod's
//! own namespace an `eth0` (a portless bridge: the kernel may lack the dummy
//! module) with a 127.x address reachable from
//! nowhere, and brings `lo` up when containerd asks for its loopback network.
//! Pods that talk to the host (the driver) use host networking.

use std::path::{Path, PathBuf};

use super::{write_file, Result};

/// Plain sh: it runs on the node with the host's `ip` and `nsenter`.
const PLUGIN: &str = r#"#!/bin/sh
# hcsi CNI plugin (scenarios cluster): eth0 = a portless bridge with a 127.x/32 address
# in the pod's own network namespace; `lo` up for containerd's loopback network.
set -eu
ver='"cniVersion":"0.4.0"'
case "${CNI_COMMAND:-}" in
  VERSION) echo "{$ver,\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\"]}"; exit 0 ;;
  DEL|CHECK) nsenter --net="$CNI_NETNS" ip link del "$CNI_IFNAME" 2>/dev/null || true; exit 0 ;;
  ADD) ;;
  *) echo "{\"code\":4,\"msg\":\"unknown CNI_COMMAND ${CNI_COMMAND:-}\"}"; exit 1 ;;
esac
cat >/dev/null
if [ "$CNI_IFNAME" = lo ]; then
  nsenter --net="$CNI_NETNS" ip link set lo up
  echo "{$ver,\"interfaces\":[{\"name\":\"lo\",\"sandbox\":\"$CNI_NETNS\"}],\"ips\":[{\"version\":\"4\",\"address\":\"127.0.0.1/8\",\"interface\":0}]}"
  exit 0
fi
# A stable address from the container id: 127.<a>.<b>.<c>, never 127.0.x.
h=$(printf %s "$CNI_CONTAINERID" | cksum | cut -d' ' -f1)
addr="127.$(( (h >> 16) % 254 + 1 )).$(( (h >> 8) % 256 )).$(( h % 254 + 1 ))"
nsenter --net="$CNI_NETNS" ip link add "$CNI_IFNAME" type bridge
nsenter --net="$CNI_NETNS" ip addr add "$addr/32" dev "$CNI_IFNAME"
nsenter --net="$CNI_NETNS" ip link set "$CNI_IFNAME" up
echo "{$ver,\"interfaces\":[{\"name\":\"$CNI_IFNAME\",\"sandbox\":\"$CNI_NETNS\"}],\"ips\":[{\"version\":\"4\",\"address\":\"$addr/32\",\"interface\":0}]}"
"#;

const CONF: &str = r#"{"cniVersion": "0.4.0", "name": "hcsi", "type": "hcsi-pod"}
"#;

pub fn bin_dir(state: &Path) -> PathBuf {
    state.join("cni/bin")
}

pub fn conf_dir(state: &Path) -> PathBuf {
    state.join("cni/conf")
}

/// Writes the plugin (as `hcsi-pod` and as `loopback`, which containerd's
/// CRI calls for every sandbox) and the network config.
pub fn install(state: &Path) -> Result<()> {
    write_file(&bin_dir(state).join("hcsi-pod"), PLUGIN, 0o755)?;
    write_file(&bin_dir(state).join("loopback"), PLUGIN, 0o755)?;
    write_file(&conf_dir(state).join("10-hcsi.conf"), CONF, 0o644)
}
