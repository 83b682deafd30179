//! The binary seeds of the CSI targets, written here as the requests a CO
//! really sends (protobuf has no hand-writable form), and the conventions the
//! node target and its seeds share. `seeds/csi_*/` holds them encoded;
//! `the_committed_csi_seeds_are_these` checks that they match, and
//! `WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml --lib` rewrites them.

use std::collections::HashMap;

use csi_proto::csi::v1 as csi;
use harvester_csi_driver::contexts;
use prost::Message;

/// The kubelet root the node seeds are written against; the node target moves
/// such paths under its own scratch directory.
pub const KUBELET: &str = "/var/lib/kubelet";
/// The volume of the node seeds; its disk is the one device the node target has.
pub const NODE_VOLUME: &str = "pvc-1";
/// The by-id name of that disk, as ControllerPublish puts it in the publish context.
pub const NODE_BY_ID: &str = "scsi-0QEMU_QEMU_HARDDISK_hcsif2868e1aa7cab669";

/// How the node target's host and device behave, from the input's first byte.
#[derive(Debug, Clone, Copy)]
pub struct NodeHostBehaviour {
    pub attached: bool,
    pub host_pv: bool,
    pub export_ready: bool,
    /// What the disk already holds.
    pub device_signature: Option<&'static str>,
}

pub fn node_host(bits: u8) -> NodeHostBehaviour {
    NodeHostBehaviour {
        attached: bits & 1 != 0,
        host_pv: bits & 2 != 0,
        export_ready: bits & 4 != 0,
        device_signature: [None, Some("ext4"), Some("xfs"), Some("swap")][usize::from((bits >> 3) & 3)],
    }
}

const VOLUME: &str = "pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11";
const GIB: i64 = 1 << 30;

fn mount_cap(mode: csi::volume_capability::access_mode::Mode, fs: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Mount(csi::volume_capability::MountVolume {
            fs_type: fs.into(),
            mount_flags: vec!["noatime".into()],
            volume_mount_group: String::new(),
        })),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

fn block_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Block(csi::volume_capability::BlockVolume {})),
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: csi::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn secrets() -> HashMap<String, String> {
    map(&[("token", "seed-secret")])
}

fn controller(rpc: u8, body: impl Message) -> Vec<u8> {
    let mut out = vec![rpc, 0xff];
    out.extend(body.encode_to_vec());
    out
}

/// `(file name, input)` for the `csi_controller` target.
pub fn csi_controller() -> Vec<(&'static str, Vec<u8>)> {
    use csi::volume_capability::access_mode::Mode;
    let rwo = mount_cap(Mode::SingleNodeWriter, "ext4");
    let rwx = mount_cap(Mode::MultiNodeMultiWriter, "");
    let params = map(&[
        ("hostStorageClass", "longhorn"),
        ("csi.storage.k8s.io/pvc/name", "data"),
        ("csi.storage.k8s.io/pvc/namespace", "default"),
        ("csi.storage.k8s.io/pv/name", VOLUME),
    ]);
    let create = csi::CreateVolumeRequest {
        name: VOLUME.into(),
        capacity_range: Some(csi::CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
        volume_capabilities: vec![rwo.clone()],
        parameters: params.clone(),
        secrets: secrets(),
        ..Default::default()
    };
    let snapshot_source = |id: &str| csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(csi::volume_content_source::SnapshotSource {
            snapshot_id: id.into(),
        })),
    };
    vec![
        ("create-rwo", controller(0, create.clone())),
        (
            "create-rwx-hashed-name",
            controller(
                0,
                csi::CreateVolumeRequest {
                    name: "Sanity Volume 7".into(),
                    volume_capabilities: vec![rwx.clone()],
                    parameters: map(&[("hostVolumeMode", "filesystem"), ("hostAccessMode", "ReadWriteMany")]),
                    ..create.clone()
                },
            ),
        ),
        (
            "create-block-from-snapshot",
            controller(
                0,
                csi::CreateVolumeRequest {
                    volume_capabilities: vec![block_cap()],
                    volume_content_source: Some(snapshot_source("snapshot-1")),
                    ..create.clone()
                },
            ),
        ),
        (
            "create-from-backup",
            controller(
                0,
                csi::CreateVolumeRequest {
                    volume_content_source: Some(snapshot_source("backup:default/vrb-1")),
                    ..create.clone()
                },
            ),
        ),
        (
            "create-clone",
            controller(
                0,
                csi::CreateVolumeRequest {
                    volume_content_source: Some(csi::VolumeContentSource {
                        r#type: Some(csi::volume_content_source::Type::Volume(
                            csi::volume_content_source::VolumeSource { volume_id: "pvc-source".into() },
                        )),
                    }),
                    ..create
                },
            ),
        ),
        ("delete", controller(1, csi::DeleteVolumeRequest { volume_id: VOLUME.into(), secrets: secrets() })),
        (
            "publish",
            controller(
                2,
                csi::ControllerPublishVolumeRequest {
                    volume_id: VOLUME.into(),
                    node_id: "guest-1".into(),
                    volume_capability: Some(rwo.clone()),
                    readonly: false,
                    secrets: secrets(),
                    volume_context: map(&[(contexts::volume::HOST_VOLUME_MODE, "Block")]),
                },
            ),
        ),
        (
            "publish-rwx",
            controller(
                2,
                csi::ControllerPublishVolumeRequest {
                    volume_id: VOLUME.into(),
                    node_id: "guest-2".into(),
                    volume_capability: Some(rwx.clone()),
                    readonly: true,
                    secrets: secrets(),
                    volume_context: map(&[(contexts::volume::SHARED, "true")]),
                },
            ),
        ),
        (
            "unpublish",
            controller(
                3,
                csi::ControllerUnpublishVolumeRequest {
                    volume_id: VOLUME.into(),
                    node_id: "guest-1".into(),
                    secrets: secrets(),
                },
            ),
        ),
        (
            "validate-capabilities",
            controller(
                4,
                csi::ValidateVolumeCapabilitiesRequest {
                    volume_id: VOLUME.into(),
                    volume_capabilities: vec![rwo.clone(), rwx],
                    parameters: params,
                    ..Default::default()
                },
            ),
        ),
        ("list-volumes", controller(5, csi::ListVolumesRequest { max_entries: 2, starting_token: "1".into() })),
        ("list-health", controller(6, csi::ControllerListVolumeHealthRequest::default())),
        (
            "get-health",
            controller(7, csi::ControllerGetVolumeHealthRequest { volume_id: VOLUME.into(), secrets: secrets() }),
        ),
        ("capacity", controller(8, csi::GetCapacityRequest::default())),
        ("capabilities", controller(9, csi::ControllerGetCapabilitiesRequest {})),
        (
            "create-snapshot",
            controller(
                10,
                csi::CreateSnapshotRequest {
                    source_volume_id: VOLUME.into(),
                    name: "snapshot-0b1c8a3e".into(),
                    secrets: secrets(),
                    parameters: map(&[("type", "backup")]),
                    ..Default::default()
                },
            ),
        ),
        (
            "delete-snapshot",
            controller(
                11,
                csi::DeleteSnapshotRequest { snapshot_id: "backup:default/vrb-1".into(), secrets: secrets() },
            ),
        ),
        (
            "list-snapshots",
            controller(
                12,
                csi::ListSnapshotsRequest {
                    max_entries: 1,
                    source_volume_id: VOLUME.into(),
                    secrets: secrets(),
                    ..Default::default()
                },
            ),
        ),
        (
            "get-snapshot",
            controller(13, csi::GetSnapshotRequest { snapshot_id: "snapshot-1".into(), secrets: secrets() }),
        ),
        (
            "expand",
            controller(
                14,
                csi::ControllerExpandVolumeRequest {
                    volume_id: VOLUME.into(),
                    capacity_range: Some(csi::CapacityRange { required_bytes: 2 * GIB, limit_bytes: 4 * GIB }),
                    secrets: secrets(),
                    volume_capability: Some(rwo),
                },
            ),
        ),
        ("get-volume", controller(15, csi::ControllerGetVolumeRequest { volume_id: VOLUME.into() })),
        (
            "modify",
            controller(
                16,
                csi::ControllerModifyVolumeRequest {
                    volume_id: VOLUME.into(),
                    mutable_parameters: map(&[("iops", "100")]),
                    secrets: secrets(),
                },
            ),
        ),
        ("plugin-info", controller(17, csi::GetPluginInfoRequest {})),
        ("plugin-capabilities", controller(18, csi::GetPluginCapabilitiesRequest {})),
        ("probe", controller(19, csi::ProbeRequest {})),
    ]
}

/// A node input: host behaviour, then `(rpc, request)` in order.
fn node(host_bits: u8, requests: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![host_bits];
    for (rpc, body) in requests {
        out.push(*rpc);
        let len = u16::try_from(body.len()).expect("a seed request fits in 64 KiB");
        out.extend(len.to_le_bytes());
        out.extend(body);
    }
    out
}

/// `(file name, input)` for the `csi_node` target.
pub fn csi_node() -> Vec<(&'static str, Vec<u8>)> {
    use csi::volume_capability::access_mode::Mode;
    let staging = format!("{KUBELET}/plugins/kubernetes.io/csi/driver.harvesterhci.io/{NODE_VOLUME}/globalmount");
    let target = format!("{KUBELET}/pods/pod-a/volumes/kubernetes.io~csi/{NODE_VOLUME}/mount");
    let block_staging = format!("{KUBELET}/plugins/kubernetes.io/csi/volumeDevices/staging/{NODE_VOLUME}");
    let block_target = format!("{KUBELET}/plugins/kubernetes.io/csi/volumeDevices/publish/{NODE_VOLUME}/pod-a");
    let disk_context = map(&[
        (contexts::publish::BY_ID, NODE_BY_ID),
        (contexts::publish::SIZE, "1073741824"),
        (contexts::publish::SHARED, "false"),
    ]);
    let export_context =
        map(&[(contexts::publish::SHARED, "true"), (contexts::publish::EXPORT, "pvc-5e1f0c2a-host")]);
    let rwo = mount_cap(Mode::SingleNodeWriter, "ext4");
    let rwx = mount_cap(Mode::MultiNodeMultiWriter, "");
    let stage = |cap: &csi::VolumeCapability, staging: &str, context: &HashMap<String, String>| {
        csi::NodeStageVolumeRequest {
            volume_id: NODE_VOLUME.into(),
            publish_context: context.clone(),
            staging_target_path: staging.into(),
            volume_capability: Some(cap.clone()),
            secrets: secrets(),
            volume_context: HashMap::new(),
        }
        .encode_to_vec()
    };
    let publish = |cap: &csi::VolumeCapability, staging: &str, target: &str, context: &HashMap<String, String>| {
        csi::NodePublishVolumeRequest {
            volume_id: NODE_VOLUME.into(),
            publish_context: context.clone(),
            staging_target_path: staging.into(),
            target_path: target.into(),
            volume_capability: Some(cap.clone()),
            readonly: false,
            secrets: secrets(),
            volume_context: HashMap::new(),
        }
        .encode_to_vec()
    };
    let unpublish = |target: &str| {
        csi::NodeUnpublishVolumeRequest { volume_id: NODE_VOLUME.into(), target_path: target.into() }.encode_to_vec()
    };
    let unstage = |staging: &str| {
        csi::NodeUnstageVolumeRequest { volume_id: NODE_VOLUME.into(), staging_target_path: staging.into() }
            .encode_to_vec()
    };
    let stats = csi::NodeGetVolumeStatsRequest {
        volume_id: NODE_VOLUME.into(),
        volume_path: target.clone(),
        staging_target_path: staging.clone(),
    }
    .encode_to_vec();
    let expand = csi::NodeExpandVolumeRequest {
        volume_id: NODE_VOLUME.into(),
        volume_path: target.clone(),
        capacity_range: Some(csi::CapacityRange { required_bytes: 2 * GIB, limit_bytes: 0 }),
        staging_target_path: staging.clone(),
        volume_capability: Some(rwo.clone()),
        secrets: secrets(),
    }
    .encode_to_vec();
    let health = csi::NodeGetVolumeHealthRequest {
        volume_id: NODE_VOLUME.into(),
        volume_publish_path: target.clone(),
        staging_target_path: staging.clone(),
    }
    .encode_to_vec();
    let all_up = 0b0000_0111;
    vec![
        (
            "rwo-lifecycle",
            node(
                all_up,
                &[
                    (0, stage(&rwo, &staging, &disk_context)),
                    (2, publish(&rwo, &staging, &target, &disk_context)),
                    (3, unpublish(&target)),
                    (1, unstage(&staging)),
                ],
            ),
        ),
        (
            "rwo-formatted-stats-expand",
            node(
                all_up | 0b0000_1000,
                &[
                    (0, stage(&rwo, &staging, &disk_context)),
                    (2, publish(&rwo, &staging, &target, &disk_context)),
                    (4, stats.clone()),
                    (6, expand),
                ],
            ),
        ),
        (
            "block-lifecycle",
            node(
                all_up,
                &[
                    (0, stage(&block_cap(), &block_staging, &disk_context)),
                    (2, publish(&block_cap(), &block_staging, &block_target, &disk_context)),
                    (3, unpublish(&block_target)),
                ],
            ),
        ),
        (
            "rwx-lifecycle",
            node(
                all_up,
                &[
                    (0, stage(&rwx, &staging, &export_context)),
                    (2, publish(&rwx, &staging, &target, &export_context)),
                    (5, health),
                    (1, unstage(&staging)),
                ],
            ),
        ),
        ("not-attached", node(0, &[(0, stage(&rwo, &staging, &disk_context)), (4, stats)])),
        (
            "info-capabilities",
            node(
                all_up,
                &[
                    (7, csi::NodeGetCapabilitiesRequest {}.encode_to_vec()),
                    (8, csi::NodeGetInfoRequest {}.encode_to_vec()),
                    (9, csi::NodeGetStorageHealthRequest::default().encode_to_vec()),
                ],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Whether two encodings carry the same request (map fields encode in hash order).
    fn same<M: Message + Default + PartialEq>(a: &[u8], b: &[u8]) -> bool {
        matches!((M::decode(a), M::decode(b)), (Ok(x), Ok(y)) if x == y)
    }

    fn same_controller_request(rpc: u8, a: &[u8], b: &[u8]) -> bool {
        match rpc {
            0 => same::<csi::CreateVolumeRequest>(a, b),
            1 => same::<csi::DeleteVolumeRequest>(a, b),
            2 => same::<csi::ControllerPublishVolumeRequest>(a, b),
            3 => same::<csi::ControllerUnpublishVolumeRequest>(a, b),
            4 => same::<csi::ValidateVolumeCapabilitiesRequest>(a, b),
            10 => same::<csi::CreateSnapshotRequest>(a, b),
            11 => same::<csi::DeleteSnapshotRequest>(a, b),
            12 => same::<csi::ListSnapshotsRequest>(a, b),
            13 => same::<csi::GetSnapshotRequest>(a, b),
            14 => same::<csi::ControllerExpandVolumeRequest>(a, b),
            16 => same::<csi::ControllerModifyVolumeRequest>(a, b),
            // No map fields: the encoding is canonical.
            _ => a == b,
        }
    }

    fn same_node_request(rpc: u8, a: &[u8], b: &[u8]) -> bool {
        match rpc {
            0 => same::<csi::NodeStageVolumeRequest>(a, b),
            2 => same::<csi::NodePublishVolumeRequest>(a, b),
            6 => same::<csi::NodeExpandVolumeRequest>(a, b),
            _ => a == b,
        }
    }

    /// Splits a node input into its host byte and `(rpc, body)` requests.
    fn node_requests(input: &[u8]) -> (u8, Vec<(u8, &[u8])>) {
        let (host, mut rest) = input.split_first().expect("a host byte");
        let mut out = Vec::new();
        while let [rpc, lo, hi, tail @ ..] = rest {
            let (body, next) = tail.split_at(usize::from(u16::from_le_bytes([*lo, *hi])));
            out.push((*rpc, body));
            rest = next;
        }
        (*host, out)
    }

    fn seed_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target)
    }

    /// Writes the seeds when `WRITE_SEEDS` is set; else the committed ones must say the same.
    fn check_or_write(target: &str, seeds: Vec<(&'static str, Vec<u8>)>, same: impl Fn(&[u8], &[u8]) -> bool) {
        let dir = seed_dir(target);
        let write = std::env::var_os("WRITE_SEEDS").is_some();
        if write {
            std::fs::create_dir_all(&dir).expect("seed dir");
        }
        for (name, bytes) in seeds {
            let path = dir.join(format!("{name}.bin"));
            if write {
                std::fs::write(&path, &bytes).expect("write seed");
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(same(&committed, &bytes), "{} is stale: rerun with WRITE_SEEDS=1", path.display());
            }
        }
    }

    #[test]
    fn the_committed_csi_seeds_are_these() {
        check_or_write("csi_controller", csi_controller(), |a, b| {
            a.len() >= 2 && a.get(..2) == b.get(..2) && same_controller_request(a[0], &a[2..], &b[2..])
        });
        check_or_write("csi_node", csi_node(), |a, b| {
            let ((host_a, a), (host_b, b)) = (node_requests(a), node_requests(b));
            host_a == host_b
                && a.len() == b.len()
                && a.iter().zip(&b).all(|((ra, x), (rb, y))| ra == rb && same_node_request(*ra, x, y))
        });
    }

    #[test]
    fn the_node_seed_device_name_is_the_drivers() {
        use harvester_csi_driver::names::{by_id_name, disk_serial};
        assert_eq!(by_id_name(NODE_VOLUME, Some(&disk_serial(NODE_VOLUME)), false), NODE_BY_ID);
    }
}
