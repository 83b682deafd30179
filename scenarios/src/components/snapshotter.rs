//! external-snapshotter: a guest VolumeSnapshot becomes CreateSnapshot
//! (`snapshot-<uid>`), re-asked until ready; the content records the handle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_proto::csi::v1 as csi;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::env::{Backoff, Env, DRIVER};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind), plural)
}

pub fn snapshots(env: &Env, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(env.guest.clone(), ns, &resource("VolumeSnapshot", "volumesnapshots"))
}

fn contents(env: &Env) -> Api<DynamicObject> {
    Api::all_with(env.guest.clone(), &resource("VolumeSnapshotContent", "volumesnapshotcontents"))
}

fn classes(env: &Env) -> Api<DynamicObject> {
    Api::all_with(env.guest.clone(), &resource("VolumeSnapshotClass", "volumesnapshotclasses"))
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The CSI snapshot id behind a ready guest VolumeSnapshot.
pub async fn handle_of(env: &Env, ns: &str, name: &str) -> Result<String, String> {
    let vs = snapshots(env, ns).get(name).await.map_err(|e| format!("snapshot {name}: {e}"))?;
    if vs.data.pointer("/status/readyToUse") != Some(&json!(true)) {
        return Err(format!("snapshot {name} is not ready"));
    }
    let content =
        contents(env).get(s(&vs.data, "/status/boundVolumeSnapshotContentName")).await.map_err(|e| e.to_string())?;
    Ok(s(&content.data, "/status/snapshotHandle").to_string())
}

async fn take(env: &Env, vs: &DynamicObject) -> Result<(), String> {
    let ns = vs.metadata.namespace.clone().unwrap_or_default();
    let name = vs.metadata.name.clone().unwrap_or_default();
    let uid = vs.metadata.uid.clone().unwrap_or_default();
    let claim = s(&vs.data, "/spec/source/persistentVolumeClaimName").to_string();
    let pvc = env.pvcs(&ns).get(&claim).await.map_err(|e| format!("claim {claim}: {e}"))?;
    let pv = env
        .pvs()
        .get(pvc.spec.and_then(|s| s.volume_name).as_deref().unwrap_or(""))
        .await
        .map_err(|e| e.to_string())?;
    let class_name = s(&vs.data, "/spec/volumeSnapshotClassName").to_string();
    let all_classes = classes(env).list(&Default::default()).await.map_err(|e| e.to_string())?.items;
    let class = all_classes
        .iter()
        .find(|c| {
            if class_name.is_empty() {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("snapshot.storage.kubernetes.io/is-default-class"))
                    .map(String::as_str)
                    == Some("true")
            } else {
                c.metadata.name.as_deref() == Some(class_name.as_str())
            }
        })
        .ok_or_else(|| format!("no VolumeSnapshotClass {class_name:?}"))?;
    if s(&class.data, "/driver") != DRIVER {
        return Err(format!("class {class_name} is not for {DRIVER}"));
    }
    let params: std::collections::HashMap<String, String> =
        class.data.get("parameters").and_then(|p| serde_json::from_value(p.clone()).ok()).unwrap_or_default();
    let started = Instant::now();
    let mut controller = env.csi.controller.clone();
    let r = controller
        .create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: super::pv_handle(&pv),
            name: format!("snapshot-{uid}"),
            parameters: params,
            ..Default::default()
        })
        .await;
    let snap = r
        .map_err(|s| format!("CreateSnapshot: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .snapshot
        .ok_or("no snapshot returned")?;
    let content_name = format!("snapcontent-{uid}");
    let content: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent", "metadata": {"name": content_name},
        "spec": {"driver": DRIVER, "deletionPolicy": s(&class.data, "/deletionPolicy"), "source": {"volumeHandle": super::pv_handle(&pv)},
                 "volumeSnapshotRef": {"namespace": ns, "name": name, "uid": uid}},
    }))
    .map_err(|e| e.to_string())?;
    match contents(env).create(&PostParams::default(), &content).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    let status =
        json!({"snapshotHandle": snap.snapshot_id, "readyToUse": snap.ready_to_use, "restoreSize": snap.size_bytes});
    contents(env)
        .patch_status(&content_name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
        .await
        .map_err(|e| e.to_string())?;
    snapshots(env, &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"boundVolumeSnapshotContentName": content_name, "readyToUse": snap.ready_to_use, "restoreSize": snap.size_bytes.to_string()}})))
        .await
        .map_err(|e| e.to_string())?;
    if snap.ready_to_use {
        env.record("snapshot", &format!("{ns}/{name}"), started, true);
        Ok(())
    } else {
        Err(format!("snapshot {name} not ready yet"))
    }
}

pub async fn run(env: Arc<Env>, stop: CancellationToken) {
    let mut wakeup = super::Wakeup::new(&env, Duration::from_millis(150));
    let mut backoff = Backoff::default();
    let all = Api::<DynamicObject>::all_with(env.guest.clone(), &resource("VolumeSnapshot", "volumesnapshots"));
    loop {
        if !wakeup.next(&stop).await {
            return;
        }
        let Ok(list) = all.list(&Default::default()).await else { continue };
        for vs in &list.items {
            let key = vs.metadata.uid.clone().unwrap_or_default();
            if vs.data.pointer("/status/readyToUse") == Some(&json!(true)) || !backoff.ready(&key) {
                continue;
            }
            match take(&env, vs).await {
                Ok(()) => backoff.succeeded(&key),
                Err(e) => {
                    tracing::debug!(snapshot = %key, error = %e, "snapshot (will retry)");
                    backoff.failed(&key);
                }
            }
        }
        // Contents whose snapshot is gone: delete the CSI snapshot (deletionPolicy Delete).
        let Ok(cs) = contents(&env).list(&Default::default()).await else { continue };
        for c in cs.items {
            let (ns, vs_name) = (
                s(&c.data, "/spec/volumeSnapshotRef/namespace").to_string(),
                s(&c.data, "/spec/volumeSnapshotRef/name").to_string(),
            );
            if list.items.iter().any(|v| {
                v.metadata.namespace.as_deref() == Some(ns.as_str())
                    && v.metadata.name.as_deref() == Some(vs_name.as_str())
            }) {
                continue;
            }
            let handle = s(&c.data, "/status/snapshotHandle").to_string();
            let mut controller = env.csi.controller.clone();
            if !handle.is_empty()
                && controller
                    .delete_snapshot(csi::DeleteSnapshotRequest { snapshot_id: handle, ..Default::default() })
                    .await
                    .is_err()
            {
                continue;
            }
            let _ = contents(&env).delete(c.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
        }
    }
}
