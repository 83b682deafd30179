//! Volumes the upstream Go driver made keep working after the switch: host PVCs
//! named after the volume with upstream's shape and no ownership, hot-plugged by
//! upstream without a serial, RWX with the NetworkFilesystem upstream made. This
//! driver attaches, moves, expands and deletes them, adopts them on first use, and
//! never adopts a host PVC of another shape.

mod common;

use common::*;
use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::PostParams;
use serde_json::{json, Value};
use tonic::Code;

const RWO: &str = "pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11";
const RWX: &str = "pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d12";

/// A host PVC as upstream's CreateVolume made it: `[ReadWriteMany]`, no labels, 2 MiB-rounded size.
async fn upstream_pvc(env: &Env, name: &str, mode: &str, class: Option<&str>, size: &str) -> PersistentVolumeClaim {
    let mut spec =
        json!({"accessModes": ["ReadWriteMany"], "volumeMode": mode, "resources": {"requests": {"storage": size}}});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})).expect("PVC");
    env.pvcs().create(&PostParams::default(), &pvc).await.expect("creating the upstream host PVC");
    eventually("the upstream host PVC to be bound", || async {
        env.host_pvc(name).await.filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await
}

/// Hot-plugs a volume the way upstream v0.2.x did on a legacy-hotplug release: the VM
/// `addvolume` subresource, SCSI, no serial.
async fn upstream_hotplug(env: &Env, vm: &str, volume: &str) {
    env.sim_request(
        "PUT",
        &format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{vm}/addvolume"),
        Some(json!({
            "name": volume,
            "disk": {"disk": {"bus": "scsi"}},
            "volumeSource": {"persistentVolumeClaim": {"claimName": volume}},
        })),
    )
    .await;
    eventually("upstream's hotplug to be Ready", || async {
        (env.vmi_phase(vm, volume).await == "Ready").then_some(())
    })
    .await;
}

fn labels(pvc: &PersistentVolumeClaim) -> std::collections::BTreeMap<String, String> {
    pvc.metadata.labels.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rwo_volume_upstream_attached_is_adopted_moved_expanded_and_deleted() {
    bounded(120, async {
        let env = Env::start(Options::profile("v1.5")).await;
        upstream_pvc(&env, RWO, "Block", None, "64Mi").await;
        upstream_hotplug(&env, "guest-1", RWO).await;
        assert!(labels(&env.host_pvc(RWO).await.expect("PVC")).is_empty(), "upstream left no labels");

        // The attacher publishes it where upstream attached it: the disk is found by its
        // KubeVirt name (no serial), and the volume becomes this driver's.
        let ctx = env.publish(RWO, "guest-1", rwo_mount("ext4"), Default::default()).await.expect("publish in place");
        assert_eq!(
            ctx.get("harvesterhci.io/byIdName").map(String::as_str),
            Some(format!("scsi-0QEMU_QEMU_HARDDISK_drive-ua-{RWO}").as_str()),
            "{ctx:?}"
        );
        let pvc = env.host_pvc(RWO).await.expect("PVC");
        assert_eq!(label(&pvc, "app.kubernetes.io/managed-by"), Some("harvester-csi-driver"));
        assert_eq!(label(&pvc, "csi.harvesterhci.io/guest-cluster"), Some(CLUSTER_ID));
        assert_eq!(annotation(&pvc, "csi.harvesterhci.io/adopted"), Some("true"));
        assert_eq!(annotation(&pvc, "csi.harvesterhci.io/shared"), Some("false"));
        assert_eq!(annotation(&pvc, "csi.harvesterhci.io/guest-pv-name"), Some(RWO));
        assert_eq!(pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()), Some("Block"), "the shape is kept");

        // ListVolumes now reports it, published where it is.
        let mut c = env.controller.clone();
        let listed = c.list_volumes(csi::ListVolumesRequest::default()).await.expect("ListVolumes").into_inner();
        let entry =
            listed.entries.iter().find(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == RWO)).expect("listed");
        assert_eq!(entry.status.as_ref().map(|s| s.published_node_ids.clone()), Some(vec!["guest-1".to_string()]));

        // Another VM waits for the detach, as for any volume.
        let (code, msg) = code_of(env.publish(RWO, "guest-2", rwo_mount("ext4"), Default::default()).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");

        // Move: upstream's hotplug is removed, this driver's (with its serial) added.
        env.unpublish(RWO, "guest-1").await.expect("unpublish");
        assert!(!env.vm_lists("guest-1", RWO).await && !env.vmi_lists("guest-1", RWO).await);
        let ctx = env.publish(RWO, "guest-2", rwo_mount("ext4"), Default::default()).await.expect("publish on guest-2");
        let serial = harvester_csi_driver::names::disk_serial(RWO);
        assert_eq!(ctx.get("harvesterhci.io/byIdName"), Some(&format!("scsi-0QEMU_QEMU_HARDDISK_{serial}")));

        // Expansion (offline: v1.5 refuses online expansion, for upstream's volumes as for any).
        env.unpublish(RWO, "guest-2").await.expect("unpublish");
        let r = env.expand(RWO, 96 * MIB, Some(rwo_mount("ext4"))).await.expect("expand");
        assert!(r.capacity_bytes >= 96 * MIB && r.node_expansion_required, "{r:?}");

        env.delete(RWO).await.expect("delete");
        assert!(env.host_pvc(RWO).await.is_none(), "the host PVC is gone");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rwx_volume_with_upstreams_export_object_is_shared_and_deleted() {
    bounded(120, async {
        let env = Env::start(Options::profile("v1.5")).await;
        let pvc = upstream_pvc(&env, RWX, "Filesystem", Some("longhorn-rwx"), "64Mi").await;
        let pv = pvc.spec.and_then(|s| s.volume_name).expect("host PV");
        // Upstream's CreateVolume then made the export object, Disabled.
        let nfs = dynamic_api(
            &env.admin,
            "harvesterhci.io",
            "NetworkFilesystem",
            "networkfilesystems",
            Some("harvester-system"),
        );
        let obj: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "NetworkFilesystem",
            "metadata": {"name": pv, "namespace": "harvester-system"},
            "spec": {"networkFSName": pv, "desiredState": "Disabled", "provisioner": "Longhorn"},
        }))
        .expect("NetworkFilesystem");
        nfs.create(&PostParams::default(), &obj).await.expect("creating upstream's export object");

        let rwx = mount_cap(Mode::MultiNodeMultiWriter, "");
        let ctx = env.publish(RWX, "guest-1", rwx.clone(), Default::default()).await.expect("publish RWX");
        assert_eq!(ctx.get("harvesterhci.io/shared").map(String::as_str), Some("true"));
        assert_eq!(ctx.get("harvesterhci.io/export"), Some(&pv));
        env.publish(RWX, "guest-2", rwx, Default::default()).await.expect("publish RWX on a second VM");
        let export = env.nfs(&pv).await.expect("export object");
        assert_eq!(export.pointer("/spec/desiredState").and_then(Value::as_str), Some("Enabled"));
        let adopted = env.host_pvc(RWX).await.expect("PVC");
        assert_eq!(annotation(&adopted, "csi.harvesterhci.io/shared"), Some("true"));
        assert_eq!(label(&adopted, "app.kubernetes.io/managed-by"), Some("harvester-csi-driver"));
        assert!(!env.vm_lists("guest-1", RWX).await, "an export is never hot-plugged");

        // Expansion of an export is refused with the reason, as for this driver's own.
        let (code, msg) = code_of(env.expand(RWX, 128 * MIB, None).await);
        assert_eq!(code, Code::InvalidArgument, "{msg}");

        env.unpublish(RWX, "guest-1").await.expect("unpublish");
        env.unpublish(RWX, "guest-2").await.expect("unpublish");
        env.delete(RWX).await.expect("delete");
        assert!(env.host_pvc(RWX).await.is_none(), "the host PVC is gone");
        assert!(env.nfs(&pv).await.is_none(), "upstream's export object is gone with it");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_pvcs_of_another_shape_are_never_adopted() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        // A VM's disk, not named like a CSI volume (a static PV may still point at it).
        let name = "guest-1-data-disk";
        upstream_pvc(&env, name, "Block", None, "16Mi").await;
        env.publish(name, "guest-2", rwo_block(), Default::default()).await.expect("publish");
        let pvc = env.host_pvc(name).await.expect("PVC");
        assert!(labels(&pvc).is_empty(), "not adopted: {:?}", pvc.metadata.labels);
        assert!(annotation(&pvc, "csi.harvesterhci.io/adopted").is_none());
        env.unpublish(name, "guest-2").await.expect("unpublish");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_report_can_include_volumes_upstream_left_unowned() {
    bounded(90, async {
        let env = Env::start(Options::profile("v1.5")).await;
        upstream_pvc(&env, RWO, "Block", None, "16Mi").await;
        let ours = env.create(create_req("pvc-ours", 16 * MIB, rwo_block(), &[])).await.expect("CreateVolume");
        let cloud_config = env.sim.as_ref().expect("simulator").cloud_config_path();
        let config = <harvester_csi_driver::config::Config as clap::Parser>::try_parse_from([
            "harvester-csi-driver",
            "--kubeconfig",
            &cloud_config.display().to_string(),
            "--no-guest-access",
        ])
        .expect("flags");
        let conn = harvester_csi_driver::app::host_client(&config).await.expect("host client");
        let host = harvester_csi_driver::host::Host::new(conn.client, conn.namespace, Default::default());
        let names = |rows: &[harvester_csi_driver::orphans::HostVolume]| -> Vec<(String, bool)> {
            rows.iter().map(|r| (r.host_pvc.clone(), r.unowned)).collect()
        };
        let owned = harvester_csi_driver::orphans::report(&host, Some(CLUSTER_ID), None, false).await.expect("report");
        assert_eq!(names(&owned), vec![(ours.volume_id.clone(), false)]);
        let all = harvester_csi_driver::orphans::report(&host, Some(CLUSTER_ID), None, true).await.expect("report");
        assert_eq!(names(&all), vec![(ours.volume_id.clone(), false), (RWO.to_string(), true)]);
        let upstream = &all[1];
        assert!(upstream.orphan && upstream.attached_to.is_empty(), "{upstream:?}");
        assert_eq!(upstream.guest_pv, RWO, "upstream named PVs after their volume");
        env.stop().await;
    })
    .await;
}
