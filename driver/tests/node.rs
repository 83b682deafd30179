//! Node RPCs of the driver: identity and validation everywhere; the full
//! stage/publish path with real loop devices, filesystems and mounts as root
//! (`#[ignore]`d with that reason; ci/test.sh runs them as root).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use csi_proto::csi::v1 as csi;
use serde_json::json;
use tonic::Code;

/// (source, fstype, options) of the mount at `target`, from /proc/self/mounts.
fn mount_at(target: &Path) -> Option<(String, String, String)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    mounts.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && Path::new(f[1]) == target).then(|| (f[0].to_string(), f[2].to_string(), f[3].to_string()))
    })
}

/// Runs a command that must succeed (test setup as root).
fn run_ok(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd).args(args).output().expect("running a setup command");
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Published {
    id: String,
    cap: csi::VolumeCapability,
    volume_context: HashMap<String, String>,
    publish_context: HashMap<String, String>,
    capacity: i64,
}

/// CreateVolume + ControllerPublish to guest-1.
async fn create_and_attach(env: &Env, id: &str, bytes: i64, cap: csi::VolumeCapability) -> Published {
    let vol = env.create(create_req(id, bytes, cap.clone(), &[])).await.expect("CreateVolume");
    let publish_context =
        env.publish(id, "guest-1", cap.clone(), vol.volume_context.clone()).await.expect("ControllerPublish");
    Published { id: id.into(), cap, volume_context: vol.volume_context, publish_context, capacity: vol.capacity_bytes }
}

fn stage_req(p: &Published, staging: &Path, cap: csi::VolumeCapability) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: p.id.clone(),
        publish_context: p.publish_context.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        volume_context: p.volume_context.clone(),
        ..Default::default()
    }
}

fn publish_req(p: &Published, staging: &Path, target: &Path, readonly: bool) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: p.id.clone(),
        publish_context: p.publish_context.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(p.cap.clone()),
        readonly,
        volume_context: p.volume_context.clone(),
        ..Default::default()
    }
}

async fn stage(env: &Env, p: &Published, staging: &Path) {
    env.node.clone().node_stage_volume(stage_req(p, staging, p.cap.clone())).await.expect("NodeStageVolume");
}

async fn unstage(env: &Env, id: &str, staging: &Path) -> Result<(), tonic::Status> {
    env.node
        .clone()
        .node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .map(|_| ())
}

async fn node_publish(env: &Env, p: &Published, staging: &Path, target: &Path, readonly: bool) {
    env.node.clone().node_publish_volume(publish_req(p, staging, target, readonly)).await.expect("NodePublishVolume");
}

async fn node_unpublish(env: &Env, id: &str, target: &Path) -> Result<(), tonic::Status> {
    env.node
        .clone()
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.display().to_string(),
        })
        .await
        .map(|_| ())
}

/// The end of a lifecycle test on guest-1: unstage, detach, delete, stop.
async fn tear_down(env: Env, id: &str, staging: &Path) {
    unstage(&env, id, staging).await.expect("NodeUnstage");
    env.unpublish(id, "guest-1").await.expect("ControllerUnpublish");
    env.delete(id).await.expect("DeleteVolume");
    env.stop().await;
}

/// (bytes total, bytes used, inodes total, inodes used) — inodes 0 when not reported.
async fn stats(env: &Env, id: &str, path: &Path) -> (i64, i64, i64, i64) {
    let r = env
        .node
        .clone()
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: path.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .expect("NodeGetVolumeStats")
        .into_inner();
    let of = |unit: csi::volume_usage::Unit| r.usage.iter().find(|u| u.unit == unit as i32).cloned();
    let bytes = of(csi::volume_usage::Unit::Bytes).expect("bytes usage");
    let inodes = of(csi::volume_usage::Unit::Inodes).unwrap_or_default();
    (bytes.total, bytes.used, inodes.total, inodes.used)
}

async fn node_expand(env: &Env, id: &str, path: &Path, staging: &Path) -> Result<i64, tonic::Status> {
    env.node
        .clone()
        .node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: id.into(),
            volume_path: path.display().to_string(),
            staging_target_path: staging.display().to_string(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().capacity_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_info_identifies_the_vm_by_firmware_uuid() {
    bounded(60, async {
        // guest-2's root: the node must not take the first VM it sees.
        let mut opts = Options::profile("v1.5").arg("--max-volumes-per-node").arg("16");
        opts.node_vm = "guest-2";
        let env = Env::start(opts).await;
        let info = env.node.clone().node_get_info(csi::NodeGetInfoRequest {}).await.expect("NodeGetInfo").into_inner();
        assert_eq!(info.node_id, "guest-2");
        assert_eq!(info.max_volumes_per_node, 16);
        let topology = info.accessible_topology.expect("topology").segments;
        let cluster = topology.get("topology.harvesterhci.io/host-cluster").expect("host-cluster segment");
        // The host cluster is named by what it is, not by the address that reaches it.
        let settings = dynamic_api(&env.admin, "harvesterhci.io", "Setting", "settings", None);
        let uid = settings.get("server-version").await.expect("server-version setting").metadata.uid;
        assert_eq!(Some(cluster.clone()), uid, "the segment is the server-version setting's UID");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_firmware_uuid_the_vm_is_found_by_its_full_mac_set() {
    bounded(60, async {
        let mut opts = Options::profile("v1.5").without_firmware_uuid();
        opts.node_vm = "guest-2";
        let env = Env::start(opts).await;
        let info = env.node.clone().node_get_info(csi::NodeGetInfoRequest {}).await.expect("NodeGetInfo").into_inner();
        assert_eq!(info.node_id, "guest-2", "matched by MACs, not the first VM listed");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_host_at_startup_delays_the_node_but_does_not_change_its_answer() {
    bounded(60, async {
        // Every VMI and node read fails for 2.5 s, longer than the capability probe retries:
        // the node used to exit on the first 500 (identity) or register without its zone
        // (topology) for good.
        let faults = json!({"errors": [
            {"verb": "*", "resource": "virtualmachineinstances", "rate": 1.0, "code": 500},
            {"verb": "*", "resource": "nodes", "rate": 1.0, "code": 503},
        ]});
        let env =
            Env::start(Options::profile("v1.5").host_node_reads().startup_faults(faults, Duration::from_millis(2500)))
                .await;
        let info = env.node.clone().node_get_info(csi::NodeGetInfoRequest {}).await.expect("NodeGetInfo").into_inner();
        assert_eq!(info.node_id, "guest-1");
        let topology = info.accessible_topology.expect("topology").segments;
        assert!(
            topology.contains_key("topology.kubernetes.io/zone"),
            "zone segment lost to a transient error: {topology:?}"
        );
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_before_the_host_is_touched() {
    bounded(60, async {
        let env = Env::start(Options::profile("v1.5")).await;
        // From here every host call fails: a request that reached the host would get UNAVAILABLE.
        env.set_faults(json!({"errors": [{"verb": "*", "resource": "*", "rate": 1.0, "code": 500}]})).await;
        let (code, _) = code_of(env.publish("pvc-ok", "guest-1", rwo_block(), Default::default()).await);
        assert_eq!(code, Code::Unavailable, "the fault reaches the host");

        let staging = env.work.join("stage").display().to_string();
        let target = env.work.join("target").display().to_string();
        let stage = |id: &str, staging: &str, cap: Option<csi::VolumeCapability>| csi::NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.into(),
            volume_capability: cap,
            publish_context: HashMap::from([(
                "harvesterhci.io/byIdName".to_string(),
                "scsi-0QEMU_QEMU_HARDDISK_x".to_string(),
            )]),
            ..Default::default()
        };
        let mut node = env.node.clone();
        for (what, req) in [
            ("traversing volume id", stage("../x", &staging, Some(rwo_mount("ext4")))),
            ("empty volume id", stage("", &staging, Some(rwo_mount("ext4")))),
            ("relative staging path", stage("pvc-ok", "rel/stage", Some(rwo_mount("ext4")))),
            ("staging path with ..", stage("pvc-ok", "/tmp/../etc", Some(rwo_mount("ext4")))),
            ("missing capability", stage("pvc-ok", &staging, None)),
            ("unsupported filesystem", stage("pvc-ok", &staging, Some(rwo_mount("ntfs")))),
        ] {
            let (code, msg) = code_of(node.node_stage_volume(req).await);
            assert_eq!(code, Code::InvalidArgument, "NodeStage with {what}: {msg}");
        }

        let publish = |id: &str, target: &str, cap: Option<csi::VolumeCapability>| csi::NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.clone(),
            target_path: target.into(),
            volume_capability: cap,
            ..Default::default()
        };
        for (what, req) in [
            ("traversing volume id", publish("../x", &target, Some(rwo_mount("ext4")))),
            ("relative target", publish("pvc-ok", "target", Some(rwo_mount("ext4")))),
            ("target with ..", publish("pvc-ok", "/var/lib/../../etc", Some(rwo_mount("ext4")))),
            ("missing capability", publish("pvc-ok", &target, None)),
        ] {
            let (code, msg) = code_of(node.node_publish_volume(req).await);
            assert_eq!(code, Code::InvalidArgument, "NodePublish with {what}: {msg}");
        }

        for (what, id, path) in [("traversing volume id", "../x", target.as_str()), ("relative target", "pvc-ok", "t")]
        {
            let (code, msg) = code_of(node_unpublish(&env, id, Path::new(path)).await);
            assert_eq!(code, Code::InvalidArgument, "NodeUnpublish with {what}: {msg}");
            let (code, msg) = code_of(unstage(&env, id, Path::new(path)).await);
            assert_eq!(code, Code::InvalidArgument, "NodeUnstage with {what}: {msg}");
        }
        let (code, msg) = code_of(
            node.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: "../x".into(),
                volume_path: target.clone(),
                staging_target_path: String::new(),
            })
            .await,
        );
        assert_eq!(code, Code::InvalidArgument, "NodeGetVolumeStats: {msg}");
        let (code, msg) = code_of(node_expand(&env, "../x", Path::new(&target), Path::new(&staging)).await);
        assert_eq!(code, Code::InvalidArgument, "NodeExpandVolume: {msg}");

        // The controller validates ids before the host too.
        let (code, msg) = code_of(env.publish("../x", "guest-1", rwo_block(), Default::default()).await);
        assert_eq!(code, Code::InvalidArgument, "ControllerPublish: {msg}");
        let (code, msg) = code_of(env.publish("pvc-ok", "../guest-1", rwo_block(), Default::default()).await);
        assert_eq!(code, Code::InvalidArgument, "ControllerPublish with a bad node: {msg}");
        let (code, msg) = code_of(env.delete("../x").await);
        assert_eq!(code, Code::InvalidArgument, "DeleteVolume: {msg}");
        let (code, msg) = code_of(env.expand("UPPER", 20 * MIB, None).await);
        assert_eq!(code, Code::InvalidArgument, "ControllerExpandVolume: {msg}");

        // Stats of a path that is not there: NOT_FOUND.
        let (code, msg) = code_of(
            node.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: "pvc-ok".into(),
                volume_path: env.work.join("never-there").display().to_string(),
                staging_target_path: String::new(),
            })
            .await,
        );
        assert_eq!(code, Code::NotFound, "NodeGetVolumeStats of a missing path: {msg}");

        // Unpublish and unstage of paths that never existed succeed (idempotent, no host needed).
        let missing = env.work.join("never-there");
        node_unpublish(&env, "pvc-ok", &missing).await.expect("NodeUnpublish of a missing path");
        unstage(&env, "pvc-ok", &missing).await.expect("NodeUnstage of a missing path");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: real loop devices, filesystems and mounts"]
async fn ext4_stage_publish_stats_and_restage_keeps_data() {
    require_root_and_loop();
    bounded(120, async {
        let env = Env::start(Options::profile("v1.6").loop_devices()).await;
        let p = create_and_attach(&env, "pvc-ext4", 64 * MIB, rwo_mount("ext4")).await;
        let staging = env.work.join("staging/pvc-ext4");
        let target = env.work.join("pods/a/pvc-ext4");

        // Publishing before staging is refused.
        let (code, msg) =
            code_of(env.node.clone().node_publish_volume(publish_req(&p, &staging, &target, false)).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");

        stage(&env, &p, &staging).await;
        let (source, fs, _) = mount_at(&staging).expect("staging is mounted");
        assert_eq!(fs, "ext4");
        assert!(source.starts_with("/dev/loop"), "{source}");
        stage(&env, &p, &staging).await; // idempotent

        node_publish(&env, &p, &staging, &target, false).await;
        assert!(mount_at(&target).is_some(), "target is mounted");
        std::fs::write(target.join("hello.txt"), b"still here").expect("writing to the published volume");
        std::fs::create_dir(target.join("dir")).expect("mkdir");
        let (total, used, inodes, inodes_used) = stats(&env, &p.id, &target).await;
        assert!(total > 50 * MIB && total <= 64 * MIB, "bytes total {total}");
        assert!(used > 0, "bytes used {used}");
        assert!(inodes > 0 && inodes_used > 0, "inodes {inodes_used}/{inodes}");

        node_publish(&env, &p, &staging, &target, false).await; // idempotent
                                                                // A retry answers OK only for this volume's mount: something else at the target is refused.
        let foreign = env.work.join("pods/d/pvc-ext4");
        std::fs::create_dir_all(&foreign).expect("mkdir");
        run_ok("mount", &["-t", "tmpfs", "tmpfs", &foreign.display().to_string()]);
        let (code, msg) =
            code_of(env.node.clone().node_publish_volume(publish_req(&p, &staging, &foreign, false)).await);
        run_ok("umount", &[&foreign.display().to_string()]);
        assert_eq!(code, Code::AlreadyExists, "{msg}");
        assert!(msg.contains("not of volume pvc-ext4"), "{msg}");
        // SINGLE_NODE_SINGLE_WRITER: a second target is refused while the first is published.
        let mut single = publish_req(&p, &staging, &env.work.join("pods/c/pvc-ext4"), false);
        single.volume_capability = Some(mount_cap(Mode::SingleNodeSingleWriter, "ext4"));
        let (code, msg) = code_of(env.node.clone().node_publish_volume(single).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");

        // Read-only publish: writes fail.
        let ro = env.work.join("pods/b/pvc-ext4");
        node_publish(&env, &p, &staging, &ro, true).await;
        assert_eq!(std::fs::read(ro.join("hello.txt")).expect("reading"), b"still here");
        let err = std::fs::write(ro.join("nope.txt"), b"x").expect_err("write to a read-only publish");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");
        let (_, _, opts) = mount_at(&ro).expect("ro target mounted");
        assert!(opts.split(',').any(|o| o == "ro"), "{opts}");

        // Unpublish / unstage, twice each (the second time the path is gone).
        for t in [&target, &ro] {
            node_unpublish(&env, &p.id, t).await.expect("NodeUnpublish");
            assert!(mount_at(t).is_none() && !t.exists(), "target unmounted and removed");
            node_unpublish(&env, &p.id, t).await.expect("NodeUnpublish again");
        }
        unstage(&env, &p.id, &staging).await.expect("NodeUnstage");
        assert!(mount_at(&staging).is_none());
        unstage(&env, &p.id, &staging).await.expect("NodeUnstage again");

        // A device holding another filesystem than asked for is refused, never reformatted.
        let (code, msg) = code_of(env.node.clone().node_stage_volume(stage_req(&p, &staging, rwo_mount("xfs"))).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains("ext4"), "{msg}");
        assert!(mount_at(&staging).is_none());

        // Staged again: the data is still there.
        stage(&env, &p, &staging).await;
        assert_eq!(std::fs::read(staging.join("hello.txt")).expect("file after re-stage"), b"still here");
        assert!(staging.join("dir").is_dir());

        // ext4 online growth: resize2fs may lack CAP_SYS_RESOURCE in a sandbox; the error must say so clearly.
        node_publish(&env, &p, &staging, &target, false).await;
        let r = env.expand(&p.id, 96 * MIB, Some(p.cap.clone())).await.expect("ControllerExpandVolume");
        assert!(r.node_expansion_required);
        match node_expand(&env, &p.id, &target, &staging).await {
            Ok(capacity) => {
                assert!(capacity >= 96 * MIB, "{capacity}");
                let (grown, _, _, _) = stats(&env, &p.id, &target).await;
                assert!(grown > total, "{grown} > {total}");
            }
            Err(s) => {
                eprintln!("ext4 online growth failed here (expected without CAP_SYS_RESOURCE): {s:?}");
                assert_eq!(s.code(), Code::Internal, "{s:?}");
                assert!(s.message().contains("resize2fs"), "the error names the tool: {}", s.message());
            }
        }
        assert_eq!(std::fs::read(target.join("hello.txt")).expect("file after growth"), b"still here");

        node_unpublish(&env, &p.id, &target).await.expect("NodeUnpublish");
        tear_down(env, &p.id, &staging).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: real loop devices, filesystems and mounts"]
async fn xfs_grows_online_after_controller_expansion() {
    require_root_and_loop();
    bounded(120, async {
        let env = Env::start(Options::profile("v1.6").loop_devices()).await;
        // mkfs.xfs needs at least 300 MiB.
        let p = create_and_attach(&env, "pvc-xfs", 320 * MIB, rwo_mount("xfs")).await;
        let staging = env.work.join("staging/pvc-xfs");
        let target = env.work.join("pods/a/pvc-xfs");
        stage(&env, &p, &staging).await;
        assert_eq!(mount_at(&staging).map(|m| m.1).as_deref(), Some("xfs"));
        node_publish(&env, &p, &staging, &target, false).await;
        std::fs::write(target.join("data"), b"xfs data").expect("write");
        let (before, _, _, _) = stats(&env, &p.id, &target).await;

        let r = env.expand(&p.id, 400 * MIB, Some(p.cap.clone())).await.expect("ControllerExpandVolume");
        assert!(r.capacity_bytes >= 400 * MIB && r.node_expansion_required, "{r:?}");
        let capacity = node_expand(&env, &p.id, &target, &staging).await.expect("NodeExpandVolume");
        assert!(capacity >= 400 * MIB, "device capacity {capacity}");
        let (after, _, _, _) = stats(&env, &p.id, &target).await;
        assert!(after > before + 60 * MIB, "filesystem grew: {before} -> {after}");
        assert_eq!(std::fs::read(target.join("data")).expect("read"), b"xfs data");

        node_unpublish(&env, &p.id, &target).await.expect("NodeUnpublish");
        tear_down(env, &p.id, &staging).await;
    })
    .await;
}

/// A restore or clone of an xfs volume carries its source's filesystem UUID; the
/// kernel refuses a second mount of a UUID already mounted unless asked `nouuid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: real loop devices, filesystems and mounts"]
async fn an_xfs_copy_stages_on_the_vm_that_has_its_source_staged() {
    require_root_and_loop();
    bounded(180, async {
        let env = Env::start(Options::profile("v1.6").loop_devices()).await;
        let source = create_and_attach(&env, "pvc-xfs-source", 320 * MIB, rwo_mount("xfs")).await;
        let copy = create_and_attach(&env, "pvc-xfs-copy", 320 * MIB, rwo_mount("xfs")).await;
        let (source_staging, copy_staging) = (env.work.join("staging/source"), env.work.join("staging/copy"));
        stage(&env, &source, &source_staging).await;
        std::fs::write(source_staging.join("data"), b"from the source").expect("write");
        let source_device = mount_at(&source_staging).expect("source staged").0;
        stage(&env, &copy, &copy_staging).await;
        let copy_device = mount_at(&copy_staging).expect("copy staged").0;
        unstage(&env, &copy.id, &copy_staging).await.expect("unstage the copy");
        unstage(&env, &source.id, &source_staging).await.expect("unstage the source");
        // What a snapshot restore hands the node: the source's blocks, UUID and all.
        run_ok(
            "dd",
            &[&format!("if={source_device}"), &format!("of={copy_device}"), "bs=1M", "conv=fsync", "status=none"],
        );

        stage(&env, &source, &source_staging).await;
        stage(&env, &copy, &copy_staging).await;
        assert_eq!(std::fs::read(copy_staging.join("data")).expect("read the copy"), b"from the source");

        unstage(&env, &copy.id, &copy_staging).await.expect("NodeUnstage copy");
        unstage(&env, &source.id, &source_staging).await.expect("NodeUnstage source");
        for p in [&source, &copy] {
            env.unpublish(&p.id, "guest-1").await.expect("ControllerUnpublish");
            env.delete(&p.id).await.expect("DeleteVolume");
        }
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: real loop devices, filesystems and mounts"]
async fn block_volume_is_bind_mounted_onto_a_file() {
    require_root_and_loop();
    bounded(120, async {
        let env = Env::start(Options::profile("v1.5").loop_devices()).await;
        let p = create_and_attach(&env, "pvc-blk", 32 * MIB, rwo_block()).await;
        assert_eq!(p.capacity, 32 * MIB);
        let staging: PathBuf = env.work.join("staging/pvc-blk");
        let target = env.work.join("pods/a/volumeDevices/pvc-blk");
        stage(&env, &p, &staging).await;
        assert!(mount_at(&staging).is_none(), "a block volume is not mounted at staging");

        node_publish(&env, &p, &staging, &target, false).await;
        let meta = std::fs::metadata(&target).expect("target");
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_block_device(), "the device is bind-mounted onto the target file");
        let (source, _, _) = mount_at(&target).expect("target mounted");
        assert!(source.starts_with("/dev/loop") || source == "devtmpfs" || source == "udev", "{source}");
        let (total, _, _, _) = stats(&env, &p.id, &target).await;
        assert_eq!(total, 32 * MIB, "block stats report the device size");
        // The guest can write to the raw device.
        std::fs::OpenOptions::new().write(true).open(&target).expect("open device for writing");
        node_publish(&env, &p, &staging, &target, false).await; // idempotent

        // Another device bound at a target is not this volume, whatever the retry says.
        let foreign = env.work.join("pods/b/volumeDevices/pvc-blk");
        std::fs::create_dir_all(foreign.parent().expect("parent")).expect("mkdir");
        std::fs::write(&foreign, b"").expect("target file");
        run_ok("mount", &["--bind", "/dev/null", &foreign.display().to_string()]);
        let (code, msg) =
            code_of(env.node.clone().node_publish_volume(publish_req(&p, &staging, &foreign, false)).await);
        run_ok("umount", &[&foreign.display().to_string()]);
        assert_eq!(code, Code::AlreadyExists, "{msg}");

        node_unpublish(&env, &p.id, &target).await.expect("NodeUnpublish");
        assert!(!target.exists(), "target file removed");
        node_unpublish(&env, &p.id, &target).await.expect("NodeUnpublish again");
        tear_down(env, &p.id, &staging).await;
    })
    .await;
}
