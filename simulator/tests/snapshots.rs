//! Wire shapes pinned with insta: discovery documents and one object of each
//! kind a guest CSI driver reads. Values that differ per run (uids, versions,
//! timestamps, the port, the state directory, derived IPs) are redacted.

mod common;

use common::{bounded, dynamic, raw, Options};
use http::{Method, StatusCode};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{json, Value};

/// Replaces every occurrence of each needle, in keys and string values.
fn scrub(v: &mut Value, replacements: &[(String, String)]) {
    let fix = |s: &str| {
        let mut s = s.to_string();
        for (needle, with) in replacements {
            if !needle.is_empty() {
                s = s.replace(needle.as_str(), with);
            }
        }
        s
    };
    match v {
        Value::String(s) => *s = fix(s),
        Value::Array(items) => items.iter_mut().for_each(|i| scrub(i, replacements)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                scrub(&mut val, replacements);
                map.insert(fix(&k), val);
            }
        }
        _ => {}
    }
}

async fn get(client: &kube::Client, path: &str) -> Value {
    let (code, body) = raw(client, Method::GET, path, None).await;
    assert_eq!(code, StatusCode::OK, "{path}: {body}");
    body
}

macro_rules! snapshot_object {
    ($name:expr, $value:expr) => {
        insta::assert_yaml_snapshot!($name, $value, {
            ".metadata.uid" => "[uid]",
            ".metadata.resourceVersion" => "[resourceVersion]",
            ".metadata.creationTimestamp" => "[timestamp]",
            ".metadata.ownerReferences[].uid" => "[owner-uid]",
            ".status.conditions[].lastTransitionTime" => "[timestamp]",
            ".status.creationTime" => "[timestamp]",
        })
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        for (name, path) in [
            ("discovery_api", "/api"),
            ("discovery_apis", "/apis"),
            ("discovery_api_v1", "/api/v1"),
            ("discovery_kubevirt_v1", "/apis/kubevirt.io/v1"),
            ("discovery_subresources_kubevirt_v1", "/apis/subresources.kubevirt.io/v1"),
            ("discovery_longhorn_v1beta2", "/apis/longhorn.io/v1beta2"),
            ("discovery_harvesterhci_v1beta1", "/apis/harvesterhci.io/v1beta1"),
        ] {
            let doc = get(&s.admin, path).await;
            insta::assert_yaml_snapshot!(name, doc, {
                ".serverAddressByClientCIDRs[].serverAddress" => "[address]",
            });
        }
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_shapes() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        let rwo = common::bound_pvc(&s.admin, "default", "shape-rwo", "Block", "64Mi").await;

        // An RWX volume exported through a NetworkFilesystem.
        let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(s.admin.clone(), "default");
        let rwx = serde_json::from_value(json!({
            "metadata": {"name": "shape-rwx"},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem", "storageClassName": "longhorn-rwx",
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        pvcs.create(&PostParams::default(), &rwx).await.unwrap();
        let rwx = common::eventually("shape-rwx Bound", || {
            let pvcs = pvcs.clone();
            async move {
                let p = pvcs.get("shape-rwx").await.ok()?;
                (p.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(p)
            }
        })
        .await;
        let rwx_pv = rwx.spec.as_ref().unwrap().volume_name.clone().unwrap();
        let nfs = dynamic(&s.admin, "harvesterhci.io", "v1beta1", "NetworkFilesystem", "networkfilesystems", Some("harvester-system"));
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "NetworkFilesystem",
            "metadata": {"name": rwx_pv},
            "spec": {"networkFSName": rwx_pv, "desiredState": "Enabled", "provisioner": "Longhorn"},
        }))
        .unwrap();
        nfs.create(&PostParams::default(), &obj).await.unwrap();
        common::eventually("the NetworkFilesystem Enabled", || {
            let nfs = nfs.clone();
            let name = rwx_pv.clone();
            async move { (nfs.get(&name).await.ok()?.data.pointer("/status/state")? == "Enabled").then_some(()) }
        })
        .await;
        let lh = common::longhorn_volumes(&s.admin);
        common::eventually("the share running", || {
            let lh = lh.clone();
            let name = rwx_pv.clone();
            async move { (lh.get(&name).await.ok()?.data.pointer("/status/shareState")? == "running").then_some(()) }
        })
        .await;

        let vs = dynamic(&s.admin, "snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots", Some("default"));
        let snap: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "shape-snap"},
            "spec": {"volumeSnapshotClassName": "longhorn-snapshot", "source": {"persistentVolumeClaimName": "shape-rwo"}},
        }))
        .unwrap();
        let snap = vs.create(&PostParams::default(), &snap).await.unwrap();
        common::eventually("the snapshot ready", || {
            let vs = vs.clone();
            async move { (vs.get("shape-snap").await.ok()?.data.pointer("/status/readyToUse")? == true).then_some(()) }
        })
        .await;
        let vms = common::vms(&s.admin, "default");
        common::eventually("guest-1 Running", || {
            let vms = vms.clone();
            async move { (vms.get("guest-1").await.ok()?.data.pointer("/status/printableStatus")? == "Running").then_some(()) }
        })
        .await;

        let ip = get(&s.admin, &format!("/api/v1/namespaces/longhorn-system/services/{rwx_pv}")).await["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string();
        let state_dir = common::state_dir(s.path()).display().to_string();
        let replacements = vec![
            (state_dir, "[state-dir]".to_string()),
            (rwo.metadata.uid.clone().unwrap(), "[uid-of-shape-rwo]".to_string()),
            (rwx.metadata.uid.clone().unwrap(), "[uid-of-shape-rwx]".to_string()),
            (snap.metadata.uid.clone().unwrap(), "[uid-of-shape-snap]".to_string()),
            (ip, "[share-manager-cluster-ip]".to_string()),
        ];
        for (name, path) in [
            ("object_vm", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/guest-1".to_string()),
            ("object_vmi", "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/guest-1".to_string()),
            ("object_pvc", "/api/v1/namespaces/default/persistentvolumeclaims/shape-rwo".to_string()),
            ("object_pv", format!("/api/v1/persistentvolumes/{rwx_pv}")),
            ("object_longhorn_volume", format!("/apis/longhorn.io/v1beta2/namespaces/longhorn-system/volumes/{rwx_pv}")),
            (
                "object_networkfilesystem",
                format!("/apis/harvesterhci.io/v1beta1/namespaces/harvester-system/networkfilesystems/{rwx_pv}"),
            ),
            ("object_setting", "/apis/harvesterhci.io/v1beta1/settings/server-version".to_string()),
            ("object_storageclass", "/apis/storage.k8s.io/v1/storageclasses/harvester-longhorn".to_string()),
            ("object_volumesnapshot", "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/shape-snap".to_string()),
        ] {
            let mut obj = get(&s.admin, &path).await;
            scrub(&mut obj, &replacements);
            snapshot_object!(name, obj);
        }
        s.shutdown().await;
    })
    .await
}
