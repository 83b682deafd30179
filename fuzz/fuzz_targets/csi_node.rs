//! Every request the Node service decodes, as a short sequence (stage, then
//! publish, …) on one node: the first byte sets how the host behaves, then
//! each request is `[rpc][length: u16 LE][protobuf body]`. Paths beginning
//! with `/var/lib/kubelet` are moved under this process's own kubelet root, so
//! seeds read like the kubelet's paths. Mounts and formats go to the fake
//! mounter; directories and files are real, under a scratch directory.
//!
//! Checked: no panic; every refusal a proper code (never INTERNAL or UNKNOWN
//! for what the CO sent); nothing mounted outside the kubelet root.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use csi_proto::csi::v1 as csi;
use csi_proto::Node as _;
use harvester_csi_driver::error::{Error, Result};
use harvester_csi_driver::guard::VolumeLocks;
use harvester_csi_driver::host::nfs::Export;
use harvester_csi_driver::metrics::Metrics;
use harvester_csi_driver::mount::fake::FakeMounter;
use harvester_csi_driver::mount::Mounter as _;
use harvester_csi_driver::node::{KubeletRoot, NodeHost, NodeService};
use harvester_csi_fuzz::seeds::{node_host, KUBELET, NODE_BY_ID};
use harvester_csi_fuzz::{assert_proper_status, block_on};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio::time::Instant;

/// The host as this node sees it, set by the input's first byte.
struct FuzzHost {
    attached: bool,
    host_pv: bool,
    export_ready: bool,
}

impl NodeHost for FuzzHost {
    async fn wait_attached(&self, vm: &str, volume: &str, _deadline: Instant) -> Result<()> {
        if self.attached {
            Ok(())
        } else {
            Err(Error::DeadlineExceeded(format!("volume {volume} did not become Ready in VM {vm}")))
        }
    }

    async fn host_pv_of(&self, volume: &str) -> Result<Option<String>> {
        Ok(self.host_pv.then(|| format!("pv-{volume}")))
    }

    async fn wait_export_ready(&self, pv: &str, _deadline: Instant) -> Result<Export> {
        if !self.export_ready {
            return Err(Error::DeadlineExceeded(format!("export {pv} did not become ready")));
        }
        Ok(Export {
            endpoint: "share-manager-fuzz.longhorn-system".into(),
            path: format!("/{pv}"),
            options: "vers=4.1".into(),
            ready: true,
            desired_enabled: true,
        })
    }
}

/// This process's scratch directory: `root/` (the VM's /dev and /sys) and `kubelet/`.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hcsi-fuzz-node-{}", std::process::id()));
        let by_id = dir.join("root/dev/disk/by-id");
        std::fs::create_dir_all(&by_id).expect("scratch by-id dir");
        std::fs::write(dir.join("root/dev/sdb"), b"").expect("scratch device file");
        let link = by_id.join(NODE_BY_ID);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(dir.join("root/dev/sdb"), link).expect("scratch by-id link");
        }
        dir
    })
}

/// A fresh kubelet root with the parents the kubelet itself would create.
fn fresh_kubelet(dir: &Path) -> PathBuf {
    let kubelet = dir.join("kubelet");
    let _ = std::fs::remove_dir_all(&kubelet);
    for parent in [
        "plugins/kubernetes.io/csi/driver.harvesterhci.io/pvc-1",
        "pods/pod-a/volumes/kubernetes.io~csi/pvc-1",
        "pods/pod-b/volumes/kubernetes.io~csi/pvc-1",
        "plugins/kubernetes.io/csi/volumeDevices/staging/pvc-1",
        "plugins/kubernetes.io/csi/volumeDevices/publish/pvc-1",
    ] {
        std::fs::create_dir_all(kubelet.join(parent)).expect("kubelet parent dir");
    }
    kubelet
}

fn rebase(path: &mut String, kubelet: &Path) {
    if let Some(rest) = path.strip_prefix(KUBELET) {
        *path = format!("{}{rest}", kubelet.display());
    }
}

macro_rules! rpc {
    ($node:expr, $method:ident, $request:ty, $body:expr, |$r:ident| $fix:expr) => {{
        let Ok(mut $r) = <$request>::decode($body) else { return };
        $fix;
        if let Err(status) = $node.$method(tonic::Request::new($r)).await {
            assert_proper_status(stringify!($method), &status);
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let [host_bits, rest @ ..] = data else { return };
    let mut rest: &[u8] = rest;
    let dir = scratch();
    let kubelet = fresh_kubelet(dir);
    let host = node_host(*host_bits);
    let mounter = Arc::new(FakeMounter::new());
    mounter.add_device(&dir.join("root/dev/sdb"), 1 << 30, host.device_signature);
    let node = NodeService {
        node_id: "guest-1".into(),
        root: dir.join("root"),
        kubelet_root: KubeletRoot::new(&kubelet),
        host: FuzzHost { attached: host.attached, host_pv: host.host_pv, export_ready: host.export_ready },
        mounter: mounter.clone(),
        locks: VolumeLocks::default(),
        metrics: Arc::new(Metrics::default()),
        max_volumes_per_node: 8,
        topology: Default::default(),
        timeout: Duration::from_secs(10),
    };
    block_on(async {
        // At most four requests: a stage, a publish and their undoing.
        for _ in 0..4 {
            let [which, lo, hi, tail @ ..] = rest else { return };
            let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
            let (body, next) = tail.split_at(len);
            rest = next;
            let k = kubelet.as_path();
            match which % 10 {
                0 => rpc!(node, node_stage_volume, csi::NodeStageVolumeRequest, body, |r| rebase(
                    &mut r.staging_target_path,
                    k
                )),
                1 => rpc!(node, node_unstage_volume, csi::NodeUnstageVolumeRequest, body, |r| rebase(
                    &mut r.staging_target_path,
                    k
                )),
                2 => rpc!(node, node_publish_volume, csi::NodePublishVolumeRequest, body, |r| {
                    rebase(&mut r.staging_target_path, k);
                    rebase(&mut r.target_path, k)
                }),
                3 => rpc!(node, node_unpublish_volume, csi::NodeUnpublishVolumeRequest, body, |r| rebase(
                    &mut r.target_path,
                    k
                )),
                4 => rpc!(node, node_get_volume_stats, csi::NodeGetVolumeStatsRequest, body, |r| {
                    rebase(&mut r.volume_path, k);
                    rebase(&mut r.staging_target_path, k)
                }),
                5 => rpc!(node, node_get_volume_health, csi::NodeGetVolumeHealthRequest, body, |r| {
                    rebase(&mut r.volume_publish_path, k);
                    rebase(&mut r.staging_target_path, k)
                }),
                6 => rpc!(node, node_expand_volume, csi::NodeExpandVolumeRequest, body, |r| {
                    rebase(&mut r.volume_path, k);
                    rebase(&mut r.staging_target_path, k)
                }),
                7 => rpc!(node, node_get_capabilities, csi::NodeGetCapabilitiesRequest, body, |_r| ()),
                8 => rpc!(node, node_get_info, csi::NodeGetInfoRequest, body, |_r| ()),
                _ => rpc!(node, node_get_storage_health, csi::NodeGetStorageHealthRequest, body, |_r| ()),
            }
            for m in mounter.mounts().expect("the fake's mount table") {
                assert!(
                    m.target.starts_with(&kubelet),
                    "mounted {} on {}, outside the kubelet root",
                    m.source,
                    m.target.display()
                );
            }
        }
    });
});
