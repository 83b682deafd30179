//! Secrets never reach the logs. The driver runs in-process against the
//! simulator with every crate logging at TRACE (the driver, kube, tonic, hyper,
//! h2, rustls, the simulator) into a buffer; CSI calls carry `secrets` maps
//! whose values are canary strings, on paths that succeed and on paths where
//! the request or the host fails. Afterwards no log line may hold a canary or
//! the bearer token of the driver's cloud-config.
//!
//! This test binary owns the process-wide subscriber; both tests write into
//! it, and each checks everything logged so far.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use csi_proto::csi::v1 as csi;
use serde_json::json;
use tonic::Code;

/// Every secret value of this test starts with this.
const CANARY: &str = "canary-7c1e9d";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the TRACE-everything subscriber once (also bridging crates that log
/// through `log`), and returns its buffer.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(captured.clone())
            .with_ansi(false)
            .init();
        captured
    })
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// A `secrets` map as the CO fills it from a StorageClass's secret references.
fn secrets(rpc: &str) -> HashMap<String, String> {
    HashMap::from([
        ("username".to_string(), format!("{CANARY}-{rpc}-user")),
        ("password".to_string(), format!("{CANARY}-{rpc}-password")),
    ])
}

/// The bearer token in the driver's cloud-config (the simulator writes it as JSON, which is YAML).
fn cloud_config_token(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("reading the cloud-config");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the simulator's cloud-config is JSON");
    let token = doc
        .pointer("/users/0/user/token")
        .and_then(serde_json::Value::as_str)
        .expect("a bearer token in the cloud-config")
        .to_string();
    assert!(token.len() >= 16, "the cloud-config token {token:?} is too short to search for");
    token
}

/// No log line holds a canary or the token; and the logs are the verbose ones
/// (TRACE lines of the HTTP and gRPC stacks), so the check is not vacuous.
fn assert_no_secret_logged(token: &str, volume: &str) {
    let text = logged();
    for (n, line) in text.lines().enumerate() {
        assert!(!line.contains(CANARY), "log line {} holds a CSI secret: {line}", n + 1);
        assert!(!line.contains(token), "log line {} holds the cloud-config token: {line}", n + 1);
    }
    assert!(text.lines().any(|l| l.contains("TRACE") && l.contains("hyper")), "no TRACE lines from hyper were logged");
    assert!(text.lines().any(|l| l.contains("DEBUG") && l.contains("kube")), "no DEBUG lines from kube were logged");
    assert!(text.contains(volume), "the volume {volume} never appears in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_secrets_and_the_host_token_stay_out_of_trace_logs() {
    logs();
    bounded(120, async {
        let env = Env::start(Options::profile("v1.8")).await;
        let token = cloud_config_token(&env.sim.as_ref().expect("simulator").cloud_config_path());
        let mut c = env.controller.clone();
        let id = "pvc-secret-ctl";

        let create = csi::CreateVolumeRequest {
            secrets: secrets("create"),
            ..create_req(id, 16 * MIB, rwo_block(), &[("hostStorageClass", "harvester-longhorn")])
        };
        let vol = c.create_volume(create.clone()).await.expect("CreateVolume").into_inner().volume.expect("volume");
        // Refused by validation, by the host's state, and by a failing host.
        let bad = csi::CreateVolumeRequest { secrets: secrets("create-bad"), ..create_req(id, -1, rwo_block(), &[]) };
        assert_eq!(c.create_volume(bad).await.expect_err("negative size").code(), Code::InvalidArgument);
        let missing_class = csi::CreateVolumeRequest {
            secrets: secrets("create-no-class"),
            ..create_req("pvc-secret-nope", 16 * MIB, rwo_block(), &[("hostStorageClass", "nope")])
        };
        assert_eq!(c.create_volume(missing_class).await.expect_err("no such class").code(), Code::NotFound);
        env.set_faults(
            json!({"errors": [{"verb": "create", "resource": "persistentvolumeclaims", "rate": 1.0, "code": 500}]}),
        )
        .await;
        let failing = csi::CreateVolumeRequest {
            secrets: secrets("create-host-down"),
            ..create_req("pvc-secret-fail", 16 * MIB, rwo_block(), &[])
        };
        assert_eq!(c.create_volume(failing).await.expect_err("the host fails").code(), Code::Unavailable);
        env.clear_faults().await;

        let publish = csi::ControllerPublishVolumeRequest {
            volume_id: id.into(),
            node_id: "guest-1".into(),
            volume_capability: Some(rwo_block()),
            volume_context: vol.volume_context.clone(),
            secrets: secrets("publish"),
            ..Default::default()
        };
        c.controller_publish_volume(publish.clone()).await.expect("ControllerPublishVolume");
        let elsewhere = csi::ControllerPublishVolumeRequest {
            node_id: "no-such-vm".into(),
            secrets: secrets("publish-nowhere"),
            ..publish.clone()
        };
        // RWO and already published to guest-1: refused before the node is looked up.
        assert_eq!(
            c.controller_publish_volume(elsewhere).await.expect_err("published elsewhere").code(),
            Code::FailedPrecondition
        );

        let expand = csi::ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: Some(csi::CapacityRange { required_bytes: 32 * MIB, limit_bytes: 0 }),
            volume_capability: Some(rwo_block()),
            secrets: secrets("expand"),
        };
        c.controller_expand_volume(expand).await.expect("ControllerExpandVolume");

        let snapshot = csi::CreateSnapshotRequest {
            source_volume_id: id.into(),
            name: "snapshot-secret".into(),
            secrets: secrets("snapshot"),
            ..Default::default()
        };
        let snap = c.create_snapshot(snapshot).await.expect("CreateSnapshot").into_inner().snapshot.expect("snapshot");
        let list = csi::ListSnapshotsRequest { secrets: secrets("list-snapshots"), ..Default::default() };
        c.list_snapshots(list).await.expect("ListSnapshots");
        let bad_snapshot =
            csi::DeleteSnapshotRequest { snapshot_id: "backup:../x".into(), secrets: secrets("bad-snap") };
        assert_eq!(c.delete_snapshot(bad_snapshot).await.expect_err("bad id").code(), Code::InvalidArgument);
        let delete_snapshot =
            csi::DeleteSnapshotRequest { snapshot_id: snap.snapshot_id, secrets: secrets("del-snap") };
        c.delete_snapshot(delete_snapshot).await.expect("DeleteSnapshot");

        let unpublish = csi::ControllerUnpublishVolumeRequest {
            volume_id: id.into(),
            node_id: "guest-1".into(),
            secrets: secrets("unpublish"),
        };
        c.controller_unpublish_volume(unpublish).await.expect("ControllerUnpublishVolume");
        let delete = csi::DeleteVolumeRequest { volume_id: id.into(), secrets: secrets("delete") };
        c.delete_volume(delete).await.expect("DeleteVolume");
        env.stop().await;

        assert_no_secret_logged(&token, id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: loop devices, mkfs and mounts for NodeStage/NodePublish"]
async fn node_secrets_stay_out_of_trace_logs() {
    require_root_and_loop();
    logs();
    bounded(120, async {
        let env = Env::start(Options::profile("v1.8").loop_devices()).await;
        let token = cloud_config_token(&env.sim.as_ref().expect("simulator").cloud_config_path());
        let id = "pvc-secret-node";
        // xfs grows online without CAP_SYS_RESOURCE (ext4 needs it, and some
        // sandboxes drop it even for root); mkfs.xfs needs at least 300 MiB.
        let cap = rwo_mount("xfs");
        let vol = env.create(create_req(id, 320 * MIB, cap.clone(), &[])).await.expect("CreateVolume");
        let publish_context =
            env.publish(id, "guest-1", cap.clone(), vol.volume_context.clone()).await.expect("ControllerPublish");
        let staging = env.work.join("plugins/kubernetes.io/csi/driver.harvesterhci.io/pvc-secret-node/globalmount");
        let target = env.work.join("pods/pod-a/volumes/kubernetes.io~csi/pvc-secret-node/mount");
        std::fs::create_dir_all(staging.parent().expect("parent")).expect("staging parent");
        std::fs::create_dir_all(target.parent().expect("parent")).expect("target parent");
        let mut n = env.node.clone();

        let stage = csi::NodeStageVolumeRequest {
            volume_id: id.into(),
            publish_context: publish_context.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap.clone()),
            secrets: secrets("stage"),
            volume_context: vol.volume_context.clone(),
        };
        // Refused first (a path outside the kubelet root), then done.
        let outside = csi::NodeStageVolumeRequest {
            staging_target_path: "/etc/stage".into(),
            secrets: secrets("stage-outside"),
            ..stage.clone()
        };
        assert_eq!(n.node_stage_volume(outside).await.expect_err("outside").code(), Code::InvalidArgument);
        n.node_stage_volume(stage).await.expect("NodeStageVolume");

        let publish = csi::NodePublishVolumeRequest {
            volume_id: id.into(),
            publish_context,
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap.clone()),
            readonly: false,
            secrets: secrets("publish"),
            volume_context: vol.volume_context.clone(),
        };
        n.node_publish_volume(publish).await.expect("NodePublishVolume");

        env.expand(id, 352 * MIB, Some(cap.clone())).await.expect("ControllerExpandVolume");
        let expand = csi::NodeExpandVolumeRequest {
            volume_id: id.into(),
            volume_path: target.display().to_string(),
            capacity_range: Some(csi::CapacityRange { required_bytes: 352 * MIB, limit_bytes: 0 }),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap),
            secrets: secrets("node-expand"),
        };
        n.node_expand_volume(expand).await.expect("NodeExpandVolume");

        n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.display().to_string(),
        })
        .await
        .expect("NodeUnpublishVolume");
        n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("NodeUnstageVolume");
        env.unpublish(id, "guest-1").await.expect("ControllerUnpublish");
        env.delete(id).await.expect("DeleteVolume");
        // The driver's last words (shutdown) count too.
        env.stop().await;

        assert_no_secret_logged(&token, id);
    })
    .await;
}
