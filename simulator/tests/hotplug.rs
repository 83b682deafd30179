//! Disk hotplug end to end with real loop devices: the phase walk,
//! the guest's by-id link, the attachment pod and host VolumeAttachment, unplug,
//! the v1.8 declarative mode, and state surviving a simulator restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{api_error, bounded, volume_status, Options};
use futures::StreamExt;
use harvester_simulator::api::quantity::parse_bytes;
use http::StatusCode;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};

const PHASES: &[&str] = &["Pending", "Bound", "AttachedToNode", "MountedToPod", "Ready"];

fn by_id_link(state: &Path, vm: &str, volume: &str) -> PathBuf {
    state.join("vms").join(vm).join("root/dev/disk/by-id").join(format!("scsi-0QEMU_QEMU_HARDDISK_drive-ua-{volume}"))
}

fn is_subsequence(seen: &[String], of: &[&str]) -> bool {
    let mut it = of.iter();
    seen.iter().all(|p| it.any(|q| q == p))
}

/// Watches the VMI until `volume` is Ready; returns the phases seen (consecutive repeats folded).
async fn phases_until_ready(client: &kube::Client, ns: &str, vmi: &str, from_rv: &str, volume: &str) -> Vec<String> {
    let vmis = common::vmis(client, ns);
    let mut stream =
        vmis.watch(&WatchParams::default().fields(&format!("metadata.name={vmi}")), from_rv).await.unwrap().boxed();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .expect("VMI did not change for 15 s")
            .expect("watch ended")
            .expect("watch error");
        let obj = match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
            WatchEvent::Bookmark(_) => continue,
            other => panic!("unexpected {other:?}"),
        };
        if let Some(phase) = volume_status(&obj, volume).and_then(|e| e["phase"].as_str().map(String::from)) {
            if seen.last() != Some(&phase) {
                seen.push(phase.clone());
            }
            if phase == "Ready" {
                return seen;
            }
        }
    }
}

/// Size in bytes of the block device a link resolves to.
fn device_size(link: &Path) -> (PathBuf, u64) {
    let dev = std::fs::read_link(link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    assert!(dev.to_string_lossy().starts_with("/dev/loop"), "{} -> {}", link.display(), dev.display());
    let size = common::command_output("blockdev", &["--getsize64", &dev.to_string_lossy()]).parse::<u64>().unwrap();
    (dev, size)
}

async fn pv_size(client: &kube::Client, pv: &str) -> u64 {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(pv).await.unwrap();
    parse_bytes(&pv.spec.unwrap().capacity.unwrap()["storage"].0).unwrap()
}

fn losetup_of(file: &Path) -> String {
    common::command_output("losetup", &["-j", &file.to_string_lossy()])
}

async fn host_attachments(client: &kube::Client, pv: &str) -> Vec<VolumeAttachment> {
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    vas.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|va| va.spec.source.persistent_volume_name.as_deref() == Some(pv))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: real loop devices and mounts"]
async fn legacy_hotplug_attaches_a_loop_device_and_unplugs_it() {
    common::require_root();
    bounded(90, async {
        let s = common::start(Options::default().loop_devices()).await;
        let state = common::state_dir(s.path());
        let pvc = common::bound_pvc(&s.guest, "default", "hp1", "Block", "64Mi").await;
        let pv = pvc.spec.unwrap().volume_name.unwrap();
        let vmis = common::vmis(&s.admin, "default");
        let rv = vmis.get("guest-1").await.unwrap().resource_version().unwrap();

        // The guest credentials are what a CSI driver uses.
        let (code, body) = common::volume_subresource(
            &s.guest,
            "default",
            "virtualmachines",
            "guest-1",
            "addvolume",
            common::add_volume_body("hp1", "hp1"),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body, json!(""), "202 must have an empty body");
        // A second add of the same name while it is still queued or present is a 409.
        let (code, body) = common::volume_subresource(
            &s.guest,
            "default",
            "virtualmachines",
            "guest-1",
            "addvolume",
            common::add_volume_body("hp1", "hp1"),
        )
        .await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");

        let seen = phases_until_ready(&s.admin, "default", "guest-1", &rv, "hp1").await;
        assert!(is_subsequence(&seen, PHASES), "phases {seen:?} are not in order {PHASES:?}");
        assert_eq!(seen.last().map(String::as_str), Some("Ready"));

        // The VM template now carries the volume, hotpluggable.
        let vm = common::vms(&s.admin, "default").get("guest-1").await.unwrap();
        let vols = vm.data.pointer("/spec/template/spec/volumes").unwrap().as_array().unwrap().clone();
        assert!(
            vols.iter().any(|v| v["name"] == "hp1" && v["persistentVolumeClaim"]["hotpluggable"] == true),
            "{vols:?}"
        );

        // The guest sees a loop device of the volume's size.
        let link = by_id_link(&state, "guest-1", "hp1");
        let (dev, size) = device_size(&link);
        assert_eq!(size, pv_size(&s.admin, &pv).await);
        assert_eq!(size, 64 << 20);
        let backing = state.join("volumes").join(format!("{pv}.img"));
        assert!(losetup_of(&backing).contains(&*dev.to_string_lossy()));

        // Host side: an hp-volume pod mounting the claim, the Ready entry names it,
        // and a CSI VolumeAttachment on the VMI's node.
        let vmi = vmis.get("guest-1").await.unwrap();
        let entry = volume_status(&vmi, "hp1").unwrap();
        assert_eq!(entry["reason"], "VolumeReady");
        assert!(!entry["target"].as_str().unwrap_or("").is_empty());
        let pod_name = entry["hotplugVolume"]["attachPodName"].as_str().unwrap().to_string();
        assert!(pod_name.starts_with("hp-volume-"), "{pod_name}");
        let pods: Api<Pod> = Api::namespaced(s.admin.clone(), "default");
        let pod = pods.get(&pod_name).await.unwrap();
        assert_eq!(entry["hotplugVolume"]["attachPodUID"], json!(pod.uid().unwrap()));
        let claims: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
            .collect();
        assert_eq!(claims, ["hp1"]);
        let node = vmi.data.pointer("/status/nodeName").and_then(Value::as_str).unwrap().to_string();
        let vas = common::eventually("one host VolumeAttachment", || {
            let admin = s.admin.clone();
            let pv = pv.clone();
            async move { Some(host_attachments(&admin, &pv).await).filter(|v| v.len() == 1) }
        })
        .await;
        assert_eq!(vas[0].spec.node_name, node);
        assert_eq!(vas[0].spec.attacher, "driver.longhorn.io");
        assert_eq!(vas[0].status.as_ref().map(|st| st.attached), Some(true));
        let lh = common::longhorn_volumes(&s.admin).get(&pv).await.unwrap();
        assert_eq!(lh.data.pointer("/status/state"), Some(&json!("attached")));
        assert_eq!(lh.data.pointer("/status/currentNodeID"), Some(&json!(node)));

        // Unplug: link and loop device go at once, then the entry, pod and attachment.
        let (code, body) = common::volume_subresource(
            &s.guest,
            "default",
            "virtualmachines",
            "guest-1",
            "removevolume",
            json!({"name": "hp1"}),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        common::eventually("the by-id link to go", || {
            let gone = std::fs::symlink_metadata(&link).is_err();
            async move { gone.then_some(()) }
        })
        .await;
        common::eventually("the volumeStatus entry to go", || {
            let vmis = vmis.clone();
            async move { volume_status(&vmis.get("guest-1").await.ok()?, "hp1").is_none().then_some(()) }
        })
        .await;
        // The kernel frees a detached loop device when its last opener closes it.
        common::eventually("the loop device to be released", || {
            let free = losetup_of(&backing).is_empty();
            async move { free.then_some(()) }
        })
        .await;
        common::eventually("the attachment pod to go", || {
            let pods = pods.clone();
            let pod_name = pod_name.clone();
            async move { pods.get_opt(&pod_name).await.ok()?.is_none().then_some(()) }
        })
        .await;
        common::eventually("the host VolumeAttachment to go", || {
            let admin = s.admin.clone();
            let pv = pv.clone();
            async move { host_attachments(&admin, &pv).await.is_empty().then_some(()) }
        })
        .await;
        let lh = common::longhorn_volumes(&s.admin).get(&pv).await.unwrap();
        assert_eq!(lh.data.pointer("/status/state"), Some(&json!("detached")));
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: real loop devices and mounts"]
async fn declarative_hotplug_on_v1_8() {
    common::require_root();
    bounded(90, async {
        let s = common::start(Options::profile("v1.8").loop_devices()).await;
        let state = common::state_dir(s.path());
        let pvc = common::bound_pvc(&s.guest, "default", "dv1", "Block", "32Mi").await;
        let pv = pvc.spec.unwrap().volume_name.unwrap();

        // The VMI subresource is refused for a VM-owned VMI.
        let (code, body) = common::volume_subresource(
            &s.guest,
            "default",
            "virtualmachineinstances",
            "guest-1",
            "addvolume",
            common::add_volume_body("dv1", "dv1"),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["reason"], "BadRequest");
        assert_eq!(body["message"], "VMI default/guest-1 is owned by a VM");

        // A declarative JSON patch of the VM spec, guarded by the resourceVersion.
        let vms = common::vms(&s.guest, "default");
        let vm = vms.get("guest-1").await.unwrap();
        let rv = vm.resource_version().unwrap();
        let vmi_rv = common::vmis(&s.guest, "default").get("guest-1").await.unwrap().resource_version().unwrap();
        let patch = |rv: &str| -> json_patch::Patch {
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/spec/template/spec/volumes/-",
                 "value": {"name": "dv1", "persistentVolumeClaim": {"claimName": "dv1", "hotpluggable": true}}},
                {"op": "add", "path": "/spec/template/spec/domain/devices/disks/-",
                 "value": {"name": "dv1", "disk": {"bus": "scsi"}}},
            ]))
            .unwrap()
        };
        vms.patch("guest-1", &PatchParams::default(), &Patch::Json::<()>(patch(&rv))).await.unwrap();
        // The same patch again lost the race: 422, nothing applied twice.
        let err =
            api_error(vms.patch("guest-1", &PatchParams::default(), &Patch::Json::<()>(patch(&rv))).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));

        let seen = phases_until_ready(&s.guest, "default", "guest-1", &vmi_rv, "dv1").await;
        assert!(is_subsequence(&seen, PHASES), "phases {seen:?}");
        let link = by_id_link(&state, "guest-1", "dv1");
        let (_, size) = device_size(&link);
        assert_eq!(size, pv_size(&s.admin, &pv).await);
        common::eventually("one host VolumeAttachment", || {
            let admin = s.admin.clone();
            let pv = pv.clone();
            async move { (host_attachments(&admin, &pv).await.len() == 1).then_some(()) }
        })
        .await;

        // Removing it from the VM spec unplugs it.
        let vm = vms.get("guest-1").await.unwrap();
        let vols = vm.data.pointer("/spec/template/spec/volumes").unwrap().as_array().unwrap();
        let idx = vols.iter().position(|v| v["name"] == "dv1").unwrap();
        let disks = vm.data.pointer("/spec/template/spec/domain/devices/disks").unwrap().as_array().unwrap();
        let didx = disks.iter().position(|d| d["name"] == "dv1").unwrap();
        let remove: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": vm.resource_version().unwrap()},
            {"op": "remove", "path": format!("/spec/template/spec/volumes/{idx}")},
            {"op": "remove", "path": format!("/spec/template/spec/domain/devices/disks/{didx}")},
        ]))
        .unwrap();
        vms.patch("guest-1", &PatchParams::default(), &Patch::Json::<()>(remove)).await.unwrap();
        common::eventually("the by-id link to go", || {
            let gone = std::fs::symlink_metadata(&link).is_err();
            async move { gone.then_some(()) }
        })
        .await;
        let vmis = common::vmis(&s.admin, "default");
        common::eventually("the volumeStatus entry to go", || {
            let vmis = vmis.clone();
            async move { volume_status(&vmis.get("guest-1").await.ok()?, "dv1").is_none().then_some(()) }
        })
        .await;
        let backing = state.join("volumes").join(format!("{pv}.img"));
        common::eventually("the loop device to be released", || {
            let free = losetup_of(&backing).is_empty();
            async move { free.then_some(()) }
        })
        .await;
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: real loop devices and mounts"]
async fn state_and_devices_survive_a_restart() {
    common::require_root();
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let _cleanup = common::HostCleanup(dir.path().to_path_buf());
        let opts = Options::default().loop_devices();
        let state = common::state_dir(dir.path());

        let (sim, admin, guest) = common::start_in(dir.path(), &opts).await;
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
        let cm = ConfigMap {
            metadata: ObjectMeta { name: Some("keep".into()), ..Default::default() },
            data: Some([("k".to_string(), "v".to_string())].into()),
            ..Default::default()
        };
        cms.create(&PostParams::default(), &cm).await.unwrap();
        let pvc = common::bound_pvc(&guest, "default", "keep-vol", "Block", "48Mi").await;
        let pv = pvc.spec.as_ref().unwrap().volume_name.clone().unwrap();
        let (code, body) = common::volume_subresource(
            &guest,
            "default",
            "virtualmachines",
            "guest-2",
            "addvolume",
            common::add_volume_body("keep-vol", "keep-vol"),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let vmis = common::vmis(&admin, "default");
        common::eventually("keep-vol Ready", || {
            let vmis = vmis.clone();
            async move {
                let e = volume_status(&vmis.get("guest-2").await.ok()?, "keep-vol")?;
                (e["phase"] == "Ready").then_some(())
            }
        })
        .await;
        // Let the persister write the final state of everything.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before_cm = cms.get("keep").await.unwrap();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
        let before_pvc = pvcs.get("keep-vol").await.unwrap();
        let before_vmi = vmis.get("guest-2").await.unwrap();
        let before_vm = common::vms(&admin, "default").get("guest-2").await.unwrap();
        sim.shutdown().await;

        let (sim, admin, _guest) = common::start_in(dir.path(), &opts).await;
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
        let after_cm = cms.get("keep").await.unwrap();
        assert_eq!(after_cm.metadata.uid, before_cm.metadata.uid);
        assert_eq!(after_cm.metadata.resource_version, before_cm.metadata.resource_version);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
        let after_pvc = pvcs.get("keep-vol").await.unwrap();
        assert_eq!(after_pvc.metadata.uid, before_pvc.metadata.uid);
        assert_eq!(after_pvc.metadata.resource_version, before_pvc.metadata.resource_version);
        let after_vm = common::vms(&admin, "default").get("guest-2").await.unwrap();
        assert_eq!(after_vm.metadata.uid, before_vm.metadata.uid);
        let after_vmi: DynamicObject = common::vmis(&admin, "default").get("guest-2").await.unwrap();
        assert_eq!(after_vmi.metadata.uid, before_vmi.metadata.uid);
        assert_eq!(volume_status(&after_vmi, "keep-vol").unwrap()["phase"], "Ready");

        let link = by_id_link(&state, "guest-2", "keep-vol");
        let (_, size) = device_size(&link);
        assert_eq!(size, pv_size(&admin, &pv).await);
        assert_eq!(size, 48 << 20);
        // Exactly one loop device for the volume: the restart did not leak another.
        let backing = state.join("volumes").join(format!("{pv}.img"));
        assert_eq!(losetup_of(&backing).lines().count(), 1, "{}", losetup_of(&backing));
        sim.shutdown().await;

        // As after a host reboot: the loop devices are gone, the link is stale.
        common::release_host_resources(dir.path());
        // The kernel frees a released device on its last close, and anything may hold
        // it open for a moment (`losetup -j` itself opens the devices it reports).
        common::eventually("the released loop device to go", || {
            let free = losetup_of(&backing).is_empty();
            async move { free.then_some(()) }
        })
        .await;
        let (sim, admin, _guest) = common::start_in(dir.path(), &opts).await;
        let (dev, size) = device_size(&link);
        assert_eq!(size, 48 << 20);
        let attached = losetup_of(&backing);
        assert_eq!(attached.lines().count(), 1, "{attached}");
        assert!(attached.starts_with(&format!("{}:", dev.display())), "{attached} vs {}", dev.display());
        let after: DynamicObject = common::vmis(&admin, "default").get("guest-2").await.unwrap();
        assert_eq!(volume_status(&after, "keep-vol").unwrap()["phase"], "Ready");
        sim.shutdown().await;
    })
    .await
}
