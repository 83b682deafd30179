//! external-provisioner: `pvc-<uid>` volumes with the StorageClass parameters
//! plus the PVC/PV metadata (`--extra-create-metadata`), PV creation and
//! binding, and deletion of released PVs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::capability;
use crate::env::{guest_event, Backoff, Env, DRIVER};

const FSTYPE_KEY: &str = "csi.storage.k8s.io/fstype";

async fn provision(env: &Env, pvc: &PersistentVolumeClaim, sc: &StorageClass) -> Result<(), String> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let spec = pvc.spec.clone().unwrap_or_default();
    let block = spec.volume_mode.as_deref() == Some("Block");
    let modes = spec.access_modes.clone().unwrap_or_default();
    let mut params: BTreeMap<String, String> = sc.parameters.clone().unwrap_or_default();
    let fs_type = params.remove(FSTYPE_KEY).or_else(|| params.remove("fsType")).unwrap_or_else(|| {
        if block {
            String::new()
        } else {
            crate::deployment::DEFAULT_FSTYPE.into()
        }
    });
    params.insert("csi.storage.k8s.io/pvc/name".into(), name.clone());
    params.insert("csi.storage.k8s.io/pvc/namespace".into(), ns.clone());
    params.insert("csi.storage.k8s.io/pv/name".into(), pv_name.clone());
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| crate::quantity::quantity(&q.0))
        .unwrap_or(0);
    let source = match spec.data_source.as_ref() {
        Some(ds) if ds.kind == "VolumeSnapshot" => {
            let content = crate::components::snapshotter::handle_of(env, &ns, &ds.name).await?;
            Some(csi::VolumeContentSource {
                r#type: Some(csi::volume_content_source::Type::Snapshot(csi::volume_content_source::SnapshotSource {
                    snapshot_id: content,
                })),
            })
        }
        Some(ds) if ds.kind == "PersistentVolumeClaim" => {
            let src = env.pvcs(&ns).get(&ds.name).await.map_err(|e| format!("source claim {}: {e}", ds.name))?;
            let pv =
                src.spec.and_then(|s| s.volume_name).ok_or_else(|| format!("source claim {} is not bound", ds.name))?;
            let pv = env.pvs().get(&pv).await.map_err(|e| e.to_string())?;
            Some(csi::VolumeContentSource {
                r#type: Some(csi::volume_content_source::Type::Volume(csi::volume_content_source::VolumeSource {
                    volume_id: super::pv_handle(&pv),
                })),
            })
        }
        _ => None,
    };
    let started = Instant::now();
    let mut controller = env.csi.controller.clone();
    let resp = controller
        .create_volume(csi::CreateVolumeRequest {
            name: pv_name.clone(),
            capacity_range: Some(csi::CapacityRange { required_bytes: request as i64, limit_bytes: 0 }),
            volume_capabilities: vec![capability(&modes, block, &fs_type)],
            parameters: params.into_iter().collect(),
            volume_content_source: source,
            ..Default::default()
        })
        .await;
    env.record("provision", &format!("{ns}/{name}"), started, resp.is_ok());
    let volume = resp
        .map_err(|s| format!("CreateVolume: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .volume
        .ok_or("CreateVolume returned no volume")?;
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
        "spec": {
            "capacity": {"storage": volume.capacity_bytes.to_string()},
            "accessModes": modes,
            "volumeMode": if block { "Block" } else { "Filesystem" },
            "persistentVolumeReclaimPolicy": sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": sc.metadata.name,
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
            "csi": {"driver": DRIVER, "volumeHandle": volume.volume_id, "fsType": if block { serde_json::Value::Null } else { json!(fs_type) },
                    "volumeAttributes": volume.volume_context},
        },
    }))
    .map_err(|e| e.to_string())?;
    match env.pvs().create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("creating PV: {e}")),
    }
    let pvcs = env.pvcs(&ns);
    pvcs.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"volumeName": pv_name}})))
        .await
        .map_err(|e| e.to_string())?;
    pvcs.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": volume.capacity_bytes.to_string()}}})),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

async fn release(env: &Env, pv: &PersistentVolume) -> Result<(), String> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    let mut controller = env.csi.controller.clone();
    let r = controller
        .delete_volume(csi::DeleteVolumeRequest { volume_id: super::pv_handle(pv), ..Default::default() })
        .await;
    env.record("delete volume", &name, started, r.is_ok());
    r.map_err(|s| format!("DeleteVolume: {:?}: {}", s.code(), s.message()))?;
    match env.pvs().delete(&name, &DeleteParams::default()).await {
        Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

pub async fn run(env: Arc<Env>, stop: CancellationToken) {
    let mut wakeup = super::Wakeup::new(&env, Duration::from_millis(100));
    let mut backoff = Backoff::default();
    // The sidecar's worker pool provisions claims concurrently.
    let mut workers = super::workers::Workers::default();
    loop {
        if !wakeup.next(&stop).await {
            return;
        }
        for (key, outcome) in workers.ended() {
            let (pvc, r): (Option<PersistentVolumeClaim>, _) = match outcome {
                Ok((pvc, r)) => (Some(pvc), r),
                Err(e) => (None, Err(e)),
            };
            match r {
                Ok(()) => backoff.succeeded(&key),
                Err(e) => {
                    backoff.failed(&key);
                    tracing::debug!(claim = %key, error = %e, "provisioning (will retry)");
                    if let Some(pvc) = pvc {
                        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
                        let name = pvc.metadata.name.clone().unwrap_or_default();
                        guest_event(&env, "PersistentVolumeClaim", &ns, &name, "Warning", "ProvisioningFailed", &e)
                            .await;
                    }
                }
            }
        }
        let classes: Vec<StorageClass> =
            match Api::<StorageClass>::all(env.guest.clone()).list(&Default::default()).await {
                Ok(l) => l.items,
                Err(_) => continue,
            };
        let Ok(pvcs) = Api::<PersistentVolumeClaim>::all(env.guest.clone()).list(&Default::default()).await else {
            continue;
        };
        // kube-controller-manager's half of binding: claims that name their PV.
        super::binder::bind_prebound(&env, &pvcs.items).await;
        for pvc in &pvcs.items {
            let spec = pvc.spec.clone().unwrap_or_default();
            if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) || pvc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(sc) = classes.iter().find(|c| c.metadata.name.as_deref() == spec.storage_class_name.as_deref())
            else {
                continue;
            };
            let key = pvc.metadata.uid.clone().unwrap_or_default();
            if sc.provisioner == DRIVER && backoff.ready(&key) && !workers.busy(&key) {
                let (env, pvc, sc) = (env.clone(), pvc.clone(), sc.clone());
                workers.start(key, async move {
                    let r = provision(&env, &pvc, &sc).await;
                    (pvc, r)
                });
            }
        }
        let Ok(pvs) = env.pvs().list(&Default::default()).await else { continue };
        super::binder::mark_available(&env, &pvs.items).await;
        for pv in &pvs.items {
            let spec = pv.spec.clone().unwrap_or_default();
            if spec.csi.as_ref().map(|c| c.driver.as_str()) != Some(DRIVER)
                || spec.persistent_volume_reclaim_policy.as_deref() == Some("Retain")
            {
                continue;
            }
            let Some(claim) = spec.claim_ref else { continue };
            // No uid: pre-bound to a claim not made yet (a restore); kube-controller-manager
            // keeps such a PV Available for it, it is not released.
            if claim.uid.as_deref().is_none_or(str::is_empty) {
                continue;
            }
            let bound = pvcs.items.iter().any(|c| c.metadata.uid == claim.uid);
            let key = format!("pv/{}", pv.metadata.name.clone().unwrap_or_default());
            if bound || !backoff.ready(&key) {
                continue;
            }
            // The claim list predates this PV list: a claim made since (a pre-bound one, with
            // its PV right after it) is not in it. Only a claim that is gone now releases.
            let claim_now = match env
                .pvcs(claim.namespace.as_deref().unwrap_or("default"))
                .get_opt(claim.name.as_deref().unwrap_or(""))
                .await
            {
                Ok(c) => c,
                Err(_) => continue,
            };
            if claim_now.is_some_and(|c| c.metadata.uid == claim.uid) {
                continue;
            }
            match release(&env, pv).await {
                Ok(()) => backoff.succeeded(&key),
                Err(e) => {
                    tracing::info!(pv = %key, error = %e, "deleting volume (will retry)");
                    backoff.failed(&key);
                }
            }
        }
    }
}
