//! Controller (and Identity) RPCs of the driver against the in-process
//! Harvester simulator, per release profile where the behaviour differs.

mod common;

use std::time::Duration;

use common::*;
use csi_proto::csi::v1 as csi;
use serde_json::{json, Value};
use tonic::Code;

const OWNERSHIP_PARAMS: &[(&str, &str)] = &[
    ("csi.storage.k8s.io/pvc/name", "data"),
    ("csi.storage.k8s.io/pvc/namespace", "apps"),
    ("csi.storage.k8s.io/pv/name", "pvc-life"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_5_rwo_volume_lifecycle() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        let id = "pvc-life";

        // CreateVolume: an RWO block host PVC, owned and annotated.
        let req = create_req(id, 11 * MIB + 1, rwo_block(), OWNERSHIP_PARAMS);
        let vol = env.create(req.clone()).await.expect("CreateVolume");
        assert_eq!(vol.volume_id, id);
        assert_eq!(vol.capacity_bytes, 12 * MIB, "capacity is the host's allocation (Longhorn's 2 MiB rounding)");
        let pvc = env.host_pvc(id).await.expect("host PVC exists");
        assert_eq!(label(&pvc, "app.kubernetes.io/managed-by"), Some("harvester-csi-driver"));
        assert_eq!(label(&pvc, "csi.harvesterhci.io/guest-cluster"), Some(CLUSTER_ID));
        assert_eq!(annotation(&pvc, "csi.harvesterhci.io/guest-pvc-name"), Some("data"));
        assert_eq!(annotation(&pvc, "csi.harvesterhci.io/guest-pvc-namespace"), Some("apps"));
        assert_eq!(annotation(&pvc, "csi.harvesterhci.io/guest-pv-name"), Some("pvc-life"));
        let spec = pvc.spec.clone().unwrap_or_default();
        assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
        assert_eq!(pvc.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Bound"));

        // Idempotent: the same request gives the same volume.
        let again = env.create(req.clone()).await.expect("second CreateVolume");
        assert_eq!((again.volume_id.as_str(), again.capacity_bytes), (id, 12 * MIB));
        // Same name, different size.
        let (code, msg) = code_of(env.create(create_req(id, 64 * MIB, rwo_block(), OWNERSHIP_PARAMS)).await);
        assert_eq!(code, Code::AlreadyExists, "{msg}");
        assert!(msg.contains("size"), "{msg}");
        // Same name, same size, another host class or access: each difference is named.
        let mut on_replica2 = OWNERSHIP_PARAMS.to_vec();
        on_replica2.push(("hostStorageClass", "replica-2"));
        let (code, msg) = code_of(env.create(create_req(id, 12 * MIB, rwo_block(), &on_replica2)).await);
        assert_eq!(code, Code::AlreadyExists, "{msg}");
        assert!(msg.contains("storage class"), "{msg}");
        let rwx = mount_cap(Mode::MultiNodeMultiWriter, "");
        let (code, msg) = code_of(env.create(create_req(id, 12 * MIB, rwx, OWNERSHIP_PARAMS)).await);
        // An RWX request wants a Filesystem-mode host volume behind a share-manager.
        assert_eq!(code, Code::AlreadyExists, "{msg}");
        assert!(msg.contains("volume mode"), "{msg}");
        assert!(env.host_pvc(id).await.is_some(), "refused requests leave the volume alone");

        // Parameters.
        let (code, msg) = code_of(env.create(create_req("pvc-bad", 16 * MIB, rwo_block(), &[("replicas", "3")])).await);
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        assert!(msg.contains("replicas"), "{msg}");
        assert!(env.host_pvc("pvc-bad").await.is_none(), "nothing is created for a bad request");

        env.create(create_req("pvc-r2", 16 * MIB, rwo_block(), &[("hostStorageClass", "replica-2")]))
            .await
            .expect("CreateVolume on replica-2");
        let r2 = env.host_pvc("pvc-r2").await.expect("host PVC");
        assert_eq!(r2.spec.and_then(|s| s.storage_class_name).as_deref(), Some("replica-2"));

        let (code, msg) =
            code_of(env.create(create_req("pvc-nope", 16 * MIB, rwo_block(), &[("hostStorageClass", "nope")])).await);
        assert_eq!(code, Code::NotFound, "{msg}");
        assert!(msg.contains("nope"), "{msg}");

        // A limit below Longhorn's allocation: refused, and no host volume is left behind.
        let limited = |limit: i64| {
            let mut req = create_req("pvc-limit", 11 * MIB + 1, rwo_block(), &[]);
            req.capacity_range = Some(csi::CapacityRange { required_bytes: 11 * MIB + 1, limit_bytes: limit });
            req
        };
        let (code, msg) = code_of(env.create(limited(23 * MIB / 2)).await);
        assert_eq!(code, Code::OutOfRange, "{msg}");
        assert!(env.host_pvc("pvc-limit").await.is_none(), "no host volume leaks after OUT_OF_RANGE");
        let fits = env.create(limited(12 * MIB)).await.expect("a limit Longhorn can meet");
        assert_eq!(fits.capacity_bytes, 12 * MIB);

        env.create(create_req("pvc-fs", 16 * MIB, rwo_mount("ext4"), &[("hostVolumeMode", "filesystem")]))
            .await
            .expect("CreateVolume with a filesystem host volume");
        let fs = env.host_pvc("pvc-fs").await.expect("host PVC");
        assert_eq!(fs.spec.and_then(|s| s.volume_mode).as_deref(), Some("Filesystem"));

        // ControllerPublish to guest-1.
        let ctx = env.publish(id, "guest-1", rwo_block(), vol.volume_context.clone()).await.expect("publish");
        let by_id = ctx.get("harvesterhci.io/byIdName").expect("byIdName in the publish context");
        assert!(by_id.starts_with("scsi-0QEMU_QEMU_HARDDISK_"), "{by_id}");
        assert!(
            env.root.join("dev/disk/by-id").join(by_id).symlink_metadata().is_ok(),
            "the guest sees the disk under the name the driver announced ({by_id})"
        );
        assert!(env.vm_lists("guest-1", id).await, "VM template lists the volume");
        assert_eq!(env.vmi_phase("guest-1", id).await, "Ready");
        // Idempotent publish to the same node.
        let ctx2 = env.publish(id, "guest-1", rwo_block(), vol.volume_context.clone()).await.expect("publish again");
        assert_eq!(ctx2.get("harvesterhci.io/byIdName"), Some(by_id));

        // Already published read-write: a read-only publish to the same node conflicts.
        let mut c = env.controller.clone();
        let (code, msg) = code_of(
            c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: id.into(),
                node_id: "guest-1".into(),
                volume_capability: Some(rwo_block()),
                readonly: true,
                volume_context: vol.volume_context.clone(),
                ..Default::default()
            })
            .await,
        );
        assert_eq!(code, Code::AlreadyExists, "{msg}");

        // An RWO volume cannot go to a second VM.
        let (code, msg) = code_of(env.publish(id, "guest-2", rwo_block(), vol.volume_context.clone()).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains("guest-1"), "{msg}");
        assert!(!env.vm_lists("guest-2", id).await);

        // DeleteVolume while published.
        let (code, msg) = code_of(env.delete(id).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(env.host_pvc(id).await.is_some());

        // ControllerUnpublish returns once neither the VM nor the VMI lists it.
        env.unpublish(id, "guest-1").await.expect("unpublish");
        assert!(!env.vm_lists("guest-1", id).await, "VM template still lists the volume after unpublish");
        assert!(!env.vmi_lists("guest-1", id).await, "VMI still lists the volume after unpublish");
        env.unpublish(id, "guest-1").await.expect("unpublish again");

        env.delete(id).await.expect("delete");
        let gone = env.host_pvc(id).await;
        assert!(gone.is_none() || gone.is_some_and(|p| p.metadata.deletion_timestamp.is_some()), "host PVC is deleted");
        env.delete(id).await.expect("delete again");
        eventually("the host PVC to be gone", || async { env.host_pvc(id).await.is_none().then_some(()) }).await;
        env.delete(id).await.expect("delete of a volume that is gone");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_5_expand_list_and_validate() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;

        // Inside Longhorn's rounding: 11 MiB was allocated as 12 MiB, so +1 MiB needs no host change (#11716).
        let slack = env.create(create_req("pvc-slack", 11 * MIB, rwo_block(), &[])).await.expect("create");
        assert_eq!(slack.capacity_bytes, 12 * MIB);
        let before = env.host_pvc("pvc-slack").await.expect("host PVC");
        let r = env.expand("pvc-slack", 12 * MIB, Some(rwo_block())).await.expect("expand within the slack");
        assert_eq!(r.capacity_bytes, 12 * MIB);
        assert!(!r.node_expansion_required, "a block volume needs no node expansion");
        let after = env.host_pvc("pvc-slack").await.expect("host PVC");
        assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "host PVC untouched");
        assert_eq!(pvc_request(&after), pvc_request(&before));

        // A real growth changes the host PVC.
        let r = env.expand("pvc-slack", 20 * MIB, Some(rwo_mount("ext4"))).await.expect("expand");
        assert!(r.capacity_bytes >= 20 * MIB, "{r:?}");
        assert!(r.node_expansion_required, "a filesystem volume grows on the node too");
        let grown = env.host_pvc("pvc-slack").await.expect("host PVC");
        assert_eq!(pvc_request(&grown), (20 * MIB).to_string());
        assert_eq!(pvc_status_capacity(&grown), "20Mi");

        // ListVolumes: pagination and published nodes.
        for name in ["pvc-list-b", "pvc-list-c"] {
            env.create(create_req(name, 16 * MIB, rwo_block(), &[])).await.expect("create");
        }
        env.publish("pvc-list-b", "guest-1", rwo_block(), Default::default()).await.expect("publish");
        let mut c = env.controller.clone();
        let mut token = String::new();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let page = c
                .list_volumes(csi::ListVolumesRequest { max_entries: 1, starting_token: token.clone() })
                .await
                .expect("ListVolumes")
                .into_inner();
            assert!(page.entries.len() <= 1, "max_entries=1 returned {}", page.entries.len());
            for e in page.entries {
                let v = e.volume.expect("volume");
                let nodes = e.status.expect("status").published_node_ids;
                seen.push((v.volume_id, nodes));
            }
            token = page.next_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(
            seen,
            vec![
                ("pvc-list-b".to_string(), vec!["guest-1".to_string()]),
                ("pvc-list-c".to_string(), vec![]),
                ("pvc-slack".to_string(), vec![]),
            ]
        );
        let (code, _) =
            code_of(c.list_volumes(csi::ListVolumesRequest { max_entries: 1, starting_token: "99".into() }).await);
        assert_eq!(code, Code::Aborted, "a stale token");

        // ValidateVolumeCapabilities against the real host PVC.
        let validate = |caps: Vec<csi::VolumeCapability>, id: &str| csi::ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: caps,
            ..Default::default()
        };
        let multi = c
            .validate_volume_capabilities(validate(vec![mount_cap(Mode::MultiNodeMultiWriter, "")], "pvc-list-c"))
            .await
            .expect("validate")
            .into_inner();
        assert!(multi.confirmed.is_none(), "multi-node access on an RWO volume is not confirmed");
        assert!(!multi.message.is_empty());
        let single = c
            .validate_volume_capabilities(validate(vec![rwo_block()], "pvc-list-c"))
            .await
            .expect("validate")
            .into_inner();
        assert!(single.confirmed.is_some(), "{}", single.message);
        let (code, _) = code_of(c.validate_volume_capabilities(validate(vec![rwo_block()], "pvc-missing")).await);
        assert_eq!(code, Code::NotFound);

        env.unpublish("pvc-list-b", "guest-1").await.expect("unpublish");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_5_second_operation_on_a_volume_is_aborted() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        let id = "pvc-busy";
        env.create(create_req(id, 16 * MIB, rwo_block(), &[])).await.expect("create");
        env.set_faults(json!({"stuckHotplug": [{"volume": id, "phase": "AttachedToNode"}]})).await;

        // The caller's gRPC deadline bounds the wait: DEADLINE_EXCEEDED before the caller gives up.
        let mut req = tonic::Request::new(csi::ControllerPublishVolumeRequest {
            volume_id: id.into(),
            node_id: "guest-1".into(),
            volume_capability: Some(rwo_block()),
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(1500));
        let started = std::time::Instant::now();
        let (code, msg) = code_of(env.controller.clone().controller_publish_volume(req).await);
        assert_eq!(code, Code::DeadlineExceeded, "{msg}");
        assert!(msg.contains(id), "{msg}");
        assert!(started.elapsed() < Duration::from_millis(1500), "answered within the deadline");

        let spawn_publish = || {
            let mut c = env.controller.clone();
            tokio::spawn(async move {
                c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
                    volume_id: id.into(),
                    node_id: "guest-1".into(),
                    volume_capability: Some(rwo_block()),
                    ..Default::default()
                })
                .await
            })
        };
        let mut publishing = spawn_publish();
        eventually("the hotplug to hang in AttachedToNode", || async {
            (env.vmi_phase("guest-1", id).await == "AttachedToNode").then_some(())
        })
        .await;

        // Until the spawned publish holds the volume, delete rightly answers FailedPrecondition
        // (the first publish's disk is in the VM); once it does, delete is Aborted. If a delete
        // held the guard at the moment the publish arrived, the publish was the one Aborted:
        // start it again.
        let mut met = false;
        for _ in 0..200 {
            match code_of(env.delete(id).await) {
                (Code::Aborted, _) => {
                    met = true;
                    break;
                }
                (Code::FailedPrecondition, _) => {}
                (code, msg) => panic!("delete during publish: {code:?} {msg}"),
            }
            if publishing.is_finished() {
                let (code, msg) = code_of(publishing.await.expect("publish task"));
                assert_eq!(code, Code::Aborted, "a publish that met a delete: {msg}");
                publishing = spawn_publish();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(met, "delete never met the publish in flight");
        assert!(!publishing.is_finished(), "publish waits for the disk");
        let (code, msg) = code_of(env.unpublish(id, "guest-1").await);
        assert_eq!(code, Code::Aborted, "{msg}");
        assert!(env.host_pvc(id).await.is_some());

        env.clear_faults().await;
        let ctx = publishing.await.expect("publish task").expect("publish completes once the hotplug moves on");
        assert!(ctx.into_inner().publish_context.contains_key("harvesterhci.io/byIdName"));
        env.unpublish(id, "guest-1").await.expect("unpublish");
        env.delete(id).await.expect("delete");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_8_declarative_hotplug_patches_the_vm_spec() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.8")).await;
        let id = "pvc-decl";
        let vol = env.create(create_req(id, 16 * MIB, rwo_block(), &[])).await.expect("create");

        // #10238: on a declarative-hotplug host the VM spec is the source of truth.
        let ctx = env.publish(id, "guest-1", rwo_block(), vol.volume_context.clone()).await.expect("publish");
        assert!(ctx.contains_key("harvesterhci.io/byIdName"));
        let vm = env.vm("guest-1").await;
        assert!(names_at(&vm, "/spec/template/spec/volumes").contains(&id.to_string()), "VM template gained it");
        assert!(
            names_at(&vm, "/spec/template/spec/domain/devices/disks").contains(&id.to_string()),
            "VM template has its disk"
        );
        let requests = vm.pointer("/status/volumeRequests").and_then(Value::as_array).map_or(0, Vec::len);
        assert_eq!(requests, 0, "no legacy volumeRequests: {vm}");
        assert_eq!(env.vmi_phase("guest-1", id).await, "Ready");

        let (code, msg) = code_of(env.publish(id, "guest-2", rwo_block(), vol.volume_context.clone()).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");

        env.unpublish(id, "guest-1").await.expect("unpublish");
        let vm = env.vm("guest-1").await;
        assert!(!names_at(&vm, "/spec/template/spec/volumes").contains(&id.to_string()), "VM template lost it");
        assert!(!names_at(&vm, "/spec/template/spec/domain/devices/disks").contains(&id.to_string()));
        assert!(vm.pointer("/status/volumeRequests").and_then(Value::as_array).is_none_or(Vec::is_empty));
        assert!(!env.vmi_lists("guest-1", id).await, "VMI no longer lists it");
        env.unpublish(id, "guest-1").await.expect("unpublish again");
        env.delete(id).await.expect("delete");
        env.stop().await;
    })
    .await;
}

fn rwx_req(name: &str) -> csi::CreateVolumeRequest {
    create_req(name, 64 * MIB, mount_cap(Mode::MultiNodeMultiWriter, ""), &[("hostStorageClass", "longhorn-rwx")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_3_rwx_refused_and_rwo_attach_works() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.3")).await;

        let (code, msg) = code_of(env.create(rwx_req("pvc-rwx")).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains("Harvester ≥ v1.4"), "the message names the release RWX needs: {msg}");
        assert!(env.host_pvc("pvc-rwx").await.is_none());

        // #6849: v1.3 guest credentials cannot read Longhorn volumes; attaching must not need them.
        let id = "pvc-v13";
        let vol = env.create(create_req(id, 16 * MIB, rwo_block(), &[])).await.expect("create");
        env.publish(id, "guest-1", rwo_block(), vol.volume_context).await.expect("publish on v1.3");
        assert_eq!(env.vmi_phase("guest-1", id).await, "Ready");
        env.unpublish(id, "guest-1").await.expect("unpublish");
        env.delete(id).await.expect("delete");
        env.stop().await;
    })
    .await;
}

/// harvester#7249: the host's guest RBAC is fixed while the driver runs; RWX
/// works without restarting it. The driver starts on a v1.4 host whose guest
/// RBAC is still v1.3's (the v1.4 profile serves the NetworkFilesystem CRD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rbac_enables_rwx_without_a_restart() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.4").rbac("v1.3")).await;
        let (code, msg) = code_of(env.create(rwx_req("pvc-rwx")).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains("Harvester ≥ v1.4"), "{msg}");

        env.sim_request("POST", "/sim/rbac/v1.4", None).await;
        let vol = eventually("RWX CreateVolume to succeed after the RBAC fix", || async {
            match env.create(rwx_req("pvc-rwx")).await {
                Ok(v) => Some(v),
                Err(s) => {
                    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    None
                }
            }
        })
        .await;
        assert_eq!(vol.volume_context.get("harvesterhci.io/shared").map(String::as_str), Some("true"));
        let ctx = env
            .publish("pvc-rwx", "guest-1", mount_cap(Mode::MultiNodeMultiWriter, ""), vol.volume_context.clone())
            .await
            .expect("publish the export with the fixed RBAC");
        assert_eq!(ctx.get("harvesterhci.io/shared").map(String::as_str), Some("true"));
        env.unpublish("pvc-rwx", "guest-1").await.expect("unpublish");
        env.delete("pvc-rwx").await.expect("delete");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_5_rwx_volume_is_a_network_filesystem() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        let id = "pvc-shared";
        let vol = env.create(rwx_req(id)).await.expect("RWX CreateVolume");
        assert_eq!(vol.volume_context.get("harvesterhci.io/shared").map(String::as_str), Some("true"));
        let pvc = env.host_pvc(id).await.expect("host PVC");
        let spec = pvc.spec.clone().unwrap_or_default();
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_string()]));
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("longhorn-rwx"));
        let pv = spec.volume_name.clone().expect("bound to a PV");
        let nfs = env.nfs(&pv).await.expect("a NetworkFilesystem named after the host PV");
        assert_eq!(nfs.pointer("/spec/desiredState"), Some(&json!("Disabled")));

        let cap = mount_cap(Mode::MultiNodeMultiWriter, "");
        let ctx = env.publish(id, "guest-1", cap.clone(), vol.volume_context.clone()).await.expect("publish");
        assert_eq!(ctx.get("harvesterhci.io/shared").map(String::as_str), Some("true"));
        assert_eq!(ctx.get("harvesterhci.io/export"), Some(&pv));
        let nfs = env.nfs(&pv).await.expect("NetworkFilesystem");
        assert_eq!(nfs.pointer("/spec/desiredState"), Some(&json!("Enabled")));
        assert_eq!(nfs.pointer("/status/state"), Some(&json!("Enabled")), "publish returns once enabled: {nfs}");
        assert_eq!(nfs.pointer("/status/status"), Some(&json!("Ready")), "publish returns once ready: {nfs}");
        assert!(!env.vm_lists("guest-1", id).await, "an RWX volume is not hot-plugged");
        // Other nodes share it; their publishes do not exclude each other (no ABORTED retries).
        let (a, b) = tokio::join!(
            env.publish(id, "guest-2", cap.clone(), vol.volume_context.clone()),
            env.publish(id, "guest-1", cap.clone(), vol.volume_context.clone()),
        );
        a.expect("publish to guest-2 alongside guest-1");
        b.expect("publish to guest-1 again alongside guest-2");

        // Without guest access the driver cannot tell who else uses the export: it stays enabled (documented).
        env.unpublish(id, "guest-1").await.expect("unpublish");
        env.unpublish(id, "guest-2").await.expect("unpublish");
        let nfs = env.nfs(&pv).await.expect("NetworkFilesystem");
        assert_eq!(nfs.pointer("/spec/desiredState"), Some(&json!("Enabled")));

        env.delete(id).await.expect("delete");
        eventually("the NetworkFilesystem to be removed", || async { env.nfs(&pv).await.is_none().then_some(()) })
            .await;
        eventually("the host PVC to be removed", || async { env.host_pvc(id).await.is_none().then_some(()) }).await;
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_stopped_vm_is_refused_at_once_and_plugs_nothing() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        let id = "pvc-halted";
        let vol = env.create(create_req(id, 64 * MIB, rwo_block(), &[])).await.expect("CreateVolume");
        env.sim_request("POST", "/sim/vms/default/guest-2/stop", None).await;
        eventually("guest-2 to stop", || async {
            (env.vm("guest-2").await.pointer("/status/printableStatus") == Some(&json!("Stopped"))).then_some(())
        })
        .await;
        let err = env
            .publish(id, "guest-2", rwo_block(), vol.volume_context.clone())
            .await
            .expect_err("a stopped VM gets no disk");
        // Refused, not DEADLINE_EXCEEDED after waiting for a Ready that cannot come.
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("not running"), "{}", err.message());
        assert!(!env.vm_lists("guest-2", id).await, "nothing plugged into the halted VM's spec");
        // The same volume attaches to a running VM.
        env.publish(id, "guest-1", rwo_block(), vol.volume_context.clone()).await.expect("publish to guest-1");
        env.unpublish(id, "guest-1").await.expect("unpublish");
        env.delete(id).await.expect("delete");
        env.stop().await;
    })
    .await;
}

async fn wait_snapshot_ready(env: &Env, id: &str) -> csi::Snapshot {
    let mut c = env.controller.clone();
    eventually(&format!("snapshot {id} to be ready"), || {
        let mut c = c.clone();
        async move {
            let list = c
                .list_snapshots(csi::ListSnapshotsRequest { snapshot_id: id.into(), ..Default::default() })
                .await
                .expect("ListSnapshots")
                .into_inner();
            list.entries.into_iter().filter_map(|e| e.snapshot).find(|s| s.snapshot_id == id && s.ready_to_use)
        }
    })
    .await;
    c.list_snapshots(csi::ListSnapshotsRequest { snapshot_id: id.into(), ..Default::default() })
        .await
        .expect("ListSnapshots")
        .into_inner()
        .entries
        .remove(0)
        .snapshot
        .expect("snapshot")
}

fn from_snapshot(name: &str, snapshot: &str) -> csi::CreateVolumeRequest {
    let mut req = create_req(name, 32 * MIB, rwo_block(), &[]);
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(csi::volume_content_source::SnapshotSource {
            snapshot_id: snapshot.into(),
        })),
    });
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_7_snapshots_and_restore() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.7")).await;
        env.create(create_req("pvc-src", 32 * MIB, rwo_block(), &[])).await.expect("create source");
        let mut c = env.controller.clone();
        let snap = c
            .create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "pvc-src".into(),
                name: "snap-1".into(),
                ..Default::default()
            })
            .await
            .expect("CreateSnapshot")
            .into_inner()
            .snapshot
            .expect("snapshot");
        assert_eq!((snap.snapshot_id.as_str(), snap.source_volume_id.as_str()), ("snap-1", "pvc-src"));
        assert!(snap.size_bytes >= 32 * MIB, "{snap:?}");
        // Idempotent while it becomes ready.
        let again = c
            .create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "pvc-src".into(),
                name: "snap-1".into(),
                ..Default::default()
            })
            .await
            .expect("CreateSnapshot again")
            .into_inner()
            .snapshot
            .expect("snapshot");
        assert_eq!(again.snapshot_id, "snap-1");
        let ready = wait_snapshot_ready(&env, "snap-1").await;
        assert!(ready.creation_time.is_some());

        let restored = env.create(from_snapshot("pvc-restored", "snap-1")).await.expect("CreateVolume from snapshot");
        assert!(restored.capacity_bytes >= 32 * MIB);
        assert!(restored.content_source.is_some());
        let pvc = env.host_pvc("pvc-restored").await.expect("restored host PVC");
        let ds = pvc.spec.and_then(|s| s.data_source).expect("dataSource");
        assert_eq!((ds.kind.as_str(), ds.name.as_str()), ("VolumeSnapshot", "snap-1"));

        for _ in 0..2 {
            c.delete_snapshot(csi::DeleteSnapshotRequest { snapshot_id: "snap-1".into(), ..Default::default() })
                .await
                .expect("DeleteSnapshot");
        }
        env.delete("pvc-restored").await.expect("delete");
        env.delete("pvc-src").await.expect("delete");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_5_snapshots_are_refused_clearly() {
    bounded(60, async {
        let env = Env::start(Options::profile("v1.5")).await;
        env.create(create_req("pvc-src", 16 * MIB, rwo_block(), &[])).await.expect("create");
        let mut c = env.controller.clone();
        let (code, msg) = code_of(
            c.create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "pvc-src".into(),
                name: "snap-1".into(),
                ..Default::default()
            })
            .await,
        );
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains("v1.7"), "the message names the release snapshots need: {msg}");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_8_remote_backup_and_restore() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.8")).await;
        env.create(create_req("pvc-src", 32 * MIB, rwo_block(), &[])).await.expect("create source");
        let mut c = env.controller.clone();
        let snap = c
            .create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "pvc-src".into(),
                name: "bk-1".into(),
                parameters: params(&[("type", "backup")]),
                ..Default::default()
            })
            .await
            .expect("CreateSnapshot (backup)")
            .into_inner()
            .snapshot
            .expect("snapshot");
        assert_eq!(snap.snapshot_id, "backup:default/bk-1");
        assert_eq!(snap.source_volume_id, "pvc-src");
        wait_snapshot_ready(&env, "backup:default/bk-1").await;

        let restored =
            env.create(from_snapshot("pvc-from-backup", "backup:default/bk-1")).await.expect("restore from backup");
        assert!(restored.capacity_bytes >= 32 * MIB);
        let pvc = env.host_pvc("pvc-from-backup").await.expect("restored host PVC");
        assert_eq!(pvc.status.and_then(|s| s.phase).as_deref(), Some("Bound"));

        env.delete("pvc-from-backup").await.expect("delete restored volume");
        for _ in 0..2 {
            c.delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: "backup:default/bk-1".into(),
                ..Default::default()
            })
            .await
            .expect("DeleteSnapshot (backup)");
        }
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_errors_are_unavailable_then_retried() {
    bounded(60, async {
        let env = Env::start(Options::profile("v1.5")).await;
        env.set_faults(json!({"errors": [
            {"verb": "get", "resource": "persistentvolumeclaims", "rate": 1.0, "code": 500, "count": 3}
        ]}))
        .await;
        let req = create_req("pvc-retry", 16 * MIB, rwo_block(), &[]);
        let (code, msg) = code_of(env.create(req.clone()).await);
        assert_eq!(code, Code::Unavailable, "{msg}");
        let mut attempts = 1;
        let vol = loop {
            attempts += 1;
            assert!(attempts <= 6, "CreateVolume never succeeded");
            match env.create(req.clone()).await {
                Ok(v) => break v,
                Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
            }
        };
        assert_eq!(vol.volume_id, "pvc-retry");
        assert!(attempts <= 4, "the fault allows 3 failures, took {attempts} attempts");
        env.stop().await;
    })
    .await;
}

/// A feature probe that met only host failures is not an answer: the snapshot
/// capability must come back on its own once the host recovers, without a restart
/// and without a denied request to prompt a re-probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_lost_to_host_failures_at_startup_come_back() {
    bounded(60, async {
        let faults = json!({"errors": [
            {"verb": "list", "resource": "volumesnapshots", "rate": 1.0, "code": 500},
            {"verb": "list", "resource": "volumeremotebackups", "rate": 1.0, "code": 503},
        ]});
        // Longer than one probe's retry budget, so the startup probe gives up.
        let env = Env::start(Options::profile("v1.8").startup_faults(faults, Duration::from_secs(4))).await;
        let snapshots = csi::controller_service_capability::rpc::Type::CreateDeleteSnapshot as i32;
        let controller = env.controller.clone();
        eventually("the snapshot capability after the host recovered", || {
            let mut c = controller.clone();
            async move {
                let caps = c
                    .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .capabilities;
                caps.iter()
                    .any(|cap| {
                        matches!(&cap.r#type,
                            Some(csi::controller_service_capability::Type::Rpc(r)) if r.r#type == snapshots)
                    })
                    .then_some(())
            }
        })
        .await;
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_probe_follow_the_host() {
    bounded(60, async {
        let mut env = Env::start(Options::profile("v1.5")).await;
        let mut id = env.identity.clone();
        let info = id.get_plugin_info(csi::GetPluginInfoRequest {}).await.expect("GetPluginInfo").into_inner();
        assert_eq!(info.name, "driver.harvesterhci.io");
        let caps = id
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
            .await
            .expect("GetPluginCapabilities")
            .into_inner();
        assert!(caps.capabilities.len() >= 2);
        let probe = id.probe(csi::ProbeRequest {}).await.expect("Probe").into_inner();
        assert_eq!(probe.ready, Some(true));

        // `/version` is outside the simulator's fault injection: take the host away.
        env.stop_simulator().await;
        let probe = id.probe(csi::ProbeRequest {}).await.expect("Probe").into_inner();
        assert_eq!(probe.ready, Some(false), "not ready while the host API is down");
        env.stop().await;
    })
    .await;
}

/// A publish waits on a watch; dropped watches, expired watch versions (410)
/// and a short host restart must not fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_survive_watch_drops_expiry_and_a_host_restart() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        for (i, action) in ["/sim/watches/drop", "/sim/watches/expire", "/sim/restart"].into_iter().enumerate() {
            let id = format!("pvc-watch-{i}");
            env.create(create_req(&id, 16 * MIB, rwo_block(), &[])).await.expect("create");
            env.set_faults(json!({"stuckHotplug": [{"volume": id, "phase": "AttachedToNode"}]})).await;
            let publishing = {
                let (mut c, id) = (env.controller.clone(), id.clone());
                tokio::spawn(async move {
                    c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
                        volume_id: id,
                        node_id: "guest-1".into(),
                        volume_capability: Some(rwo_block()),
                        ..Default::default()
                    })
                    .await
                })
            };
            let (env_ref, vol) = (&env, id.as_str());
            eventually("the hotplug to hang", move || async move {
                (env_ref.vmi_phase("guest-1", vol).await == "AttachedToNode").then_some(())
            })
            .await;
            // Let the driver's watch settle, then disturb it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            env.sim_request("POST", action, Some(json!({"downtimeMs": 300}))).await;
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(!publishing.is_finished(), "{action}: publish gave up: {:?}", publishing.await);
            env.clear_faults().await;
            let ctx = publishing.await.expect("publish task").unwrap_or_else(|s| panic!("{action}: {s:?}"));
            assert!(ctx.into_inner().publish_context.contains_key("harvesterhci.io/byIdName"), "{action}");
            assert_eq!(env.vmi_phase("guest-1", &id).await, "Ready", "{action}");
        }
        env.stop().await;
    })
    .await;
}

/// Transient watch failures are watched through; a denied watch fails the call at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_retry_transient_watch_errors_but_not_denials() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        env.create(create_req("pvc-flaky", 16 * MIB, rwo_block(), &[])).await.expect("create");
        env.set_faults(json!({"errors": [
            {"verb": "watch", "resource": "virtualmachineinstances", "rate": 1.0, "code": 500, "count": 3}
        ]}))
        .await;
        env.publish("pvc-flaky", "guest-1", rwo_block(), Default::default())
            .await
            .expect("publish watches through transient watch errors");
        assert_eq!(env.vmi_phase("guest-1", "pvc-flaky").await, "Ready");

        env.create(create_req("pvc-denied", 16 * MIB, rwo_block(), &[])).await.expect("create");
        env.set_faults(json!({"errors": [
            {"verb": "watch", "resource": "virtualmachineinstances", "rate": 1.0, "code": 403}
        ]}))
        .await;
        // The controller's VM view watches already: a denial only stops it once its
        // watch ends and cannot start again. Then the publish waits by its own
        // watch, which is denied.
        env.sim_request("POST", "/sim/watches/drop", None).await;
        let mut req = tonic::Request::new(csi::ControllerPublishVolumeRequest {
            volume_id: "pvc-denied".into(),
            node_id: "guest-1".into(),
            volume_capability: Some(rwo_block()),
            ..Default::default()
        });
        req.set_timeout(Duration::from_secs(30));
        let started = std::time::Instant::now();
        let (code, msg) = code_of(env.controller.clone().controller_publish_volume(req).await);
        assert_eq!(code, Code::Unavailable, "{msg}");
        assert!(msg.contains("pvc-denied"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(5), "a denied watch fails at once: {:?}", started.elapsed());

        env.clear_faults().await;
        env.publish("pvc-denied", "guest-1", rwo_block(), Default::default()).await.expect("publish after the fix");
        for id in ["pvc-flaky", "pvc-denied"] {
            env.unpublish(id, "guest-1").await.expect("unpublish");
            env.delete(id).await.expect("delete");
        }
        env.stop().await;
    })
    .await;
}

/// The driver's own count of `operation` host calls, from its metrics endpoint.
async fn host_calls(metrics: std::net::SocketAddr, operation: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(metrics).await.expect("metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.expect("request");
    let mut text = String::new();
    conn.read_to_string(&mut text).await.expect("response");
    let label = format!("operation=\"{operation}\"");
    text.lines()
        .filter(|l| l.starts_with("harvester_csi_host_api_requests_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// ControllerPublish reads the few VMs the watch-fed view names instead of
/// listing every VM and VMI; and a volume just moved away from a VM, which the
/// view may still show there, is read fresh rather than refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_read_the_vm_view_not_a_listing_of_every_vm() {
    bounded(90, async {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let env = Env::start(Options::profile("v1.8").arg("--metrics-address").arg(&port.to_string())).await;
        let ids = ["pvc-view-1", "pvc-view-2", "pvc-view-3"];
        let mut vols = Vec::new();
        for id in ids {
            vols.push(env.create(create_req(id, 16 * MIB, rwo_block(), &[])).await.expect("create"));
        }
        // The view syncs at start; once it has, publishes list nothing.
        let first = env.publish(ids[0], "guest-1", rwo_block(), vols[0].volume_context.clone()).await;
        first.expect("publish 1");
        let (vms_before, vmis_before) =
            (host_calls(port, "list virtualmachines").await, host_calls(port, "list virtualmachineinstances").await);
        for (id, vol) in ids.iter().zip(&vols).skip(1) {
            env.publish(id, "guest-1", rwo_block(), vol.volume_context.clone()).await.expect("publish");
        }
        let (code, msg) = code_of(env.publish(ids[1], "guest-2", rwo_block(), vols[1].volume_context.clone()).await);
        assert_eq!(code, Code::FailedPrecondition, "still on guest-1: {msg}");
        env.unpublish(ids[1], "guest-1").await.expect("unpublish");
        env.publish(ids[1], "guest-2", rwo_block(), vols[1].volume_context.clone()).await.expect("moved at once");
        assert_eq!(
            (host_calls(port, "list virtualmachines").await, host_calls(port, "list virtualmachineinstances").await),
            (vms_before, vmis_before),
            "publishes listed VMs or VMIs"
        );
        assert!(host_calls(port, "get virtualmachine").await > 0, "the candidates are read fresh");
        for id in ids {
            for vm in ["guest-1", "guest-2"] {
                env.unpublish(id, vm).await.expect("unpublish");
            }
            env.delete(id).await.expect("delete");
        }
        env.stop().await;
    })
    .await;
}
