//! external-attacher: VolumeAttachments of this driver become
//! ControllerPublish/Unpublish calls, retried with backoff as the sidecar does;
//! and its VolumeAttachment reconciler: every period it asks ListVolumes where
//! each volume is published, and an attachment the driver no longer reports is
//! marked detached, so the next sync publishes it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::env::{Backoff, Env, DRIVER};

pub const FINALIZER: &str = "external-attacher/driver-harvesterhci-io";

/// The CSI node id a guest Node registered for this driver.
pub async fn node_id(env: &Env, node: &str) -> Option<String> {
    let n = Api::<Node>::all(env.guest.clone()).get(node).await.ok()?;
    let json = n.metadata.annotations?.get("csi.volume.kubernetes.io/nodeid")?.clone();
    serde_json::from_str::<std::collections::BTreeMap<String, String>>(&json).ok()?.get(DRIVER).cloned()
}

async fn attach(env: &Env, va: &VolumeAttachment) -> Result<(), String> {
    let name = va.metadata.name.clone().unwrap_or_default();
    let pv_name = va.spec.source.persistent_volume_name.clone().unwrap_or_default();
    let pv = env.pvs().get(&pv_name).await.map_err(|e| format!("PV {pv_name}: {e}"))?;
    let node = node_id(env, &va.spec.node_name)
        .await
        .ok_or_else(|| format!("CSINode {} does not contain driver {DRIVER}", va.spec.node_name))?;
    let spec = pv.spec.clone().unwrap_or_default();
    let started = Instant::now();
    let mut controller = env.csi.controller.clone();
    let r = controller
        .controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: super::pv_handle(&pv),
            node_id: node,
            volume_capability: Some(super::pv_capability(&pv)),
            readonly: false,
            volume_context: spec.csi.and_then(|c| c.volume_attributes).unwrap_or_default().into_iter().collect(),
            ..Default::default()
        })
        .await;
    env.record("attach", &format!("{pv_name}@{}", va.spec.node_name), started, r.is_ok());
    let api: Api<VolumeAttachment> = Api::all(env.guest.clone());
    match r {
        Ok(resp) => {
            let meta = resp.into_inner().publish_context;
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"attached": true, "attachmentMetadata": meta, "attachError": null}})),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(())
        }
        Err(s) => {
            let msg = format!("ControllerPublishVolume: {:?}: {}", s.code(), s.message());
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"attached": false, "attachError": {"message": msg, "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}})))
                .await;
            Err(msg)
        }
    }
}

async fn detach(env: &Env, va: &VolumeAttachment) -> Result<(), String> {
    let pv_name = va.spec.source.persistent_volume_name.clone().unwrap_or_default();
    let handle = match env.pvs().get(&pv_name).await {
        Ok(pv) => super::pv_handle(&pv),
        Err(_) => pv_name.clone(),
    };
    let node = node_id(env, &va.spec.node_name).await.unwrap_or_else(|| va.spec.node_name.clone());
    let started = Instant::now();
    let mut controller = env.csi.controller.clone();
    let r = controller
        .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            volume_id: handle,
            node_id: node,
            ..Default::default()
        })
        .await;
    env.record("detach", &format!("{pv_name}@{}", va.spec.node_name), started, r.is_ok());
    r.map_err(|s| format!("ControllerUnpublishVolume: {:?}: {}", s.code(), s.message()))?;
    super::remove_finalizer(&Api::<VolumeAttachment>::all(env.guest.clone()), va, FINALIZER).await
}

/// The sidecar's `--reconcile-sync` is 1 min; compressed like the retries.
const RECONCILE_PERIOD: Duration = Duration::from_secs(2);

/// Attached VolumeAttachments whose volume ListVolumes no longer reports on their node.
async fn reconcile(env: &Env, vas: &[VolumeAttachment]) {
    let mut published: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut controller = env.csi.controller.clone();
    let mut token = String::new();
    loop {
        let req = csi::ListVolumesRequest { max_entries: 0, starting_token: token.clone() };
        let Ok(resp) = controller.list_volumes(req).await.map(|r| r.into_inner()) else { return };
        for entry in resp.entries {
            let (Some(volume), Some(status)) = (entry.volume, entry.status) else { continue };
            published.insert(volume.volume_id, status.published_node_ids);
        }
        if resp.next_token.is_empty() {
            break;
        }
        token = resp.next_token;
    }
    let api: Api<VolumeAttachment> = Api::all(env.guest.clone());
    for va in vas.iter().filter(|v| v.metadata.deletion_timestamp.is_none()) {
        if !va.status.as_ref().is_some_and(|s| s.attached) {
            continue;
        }
        let pv_name = va.spec.source.persistent_volume_name.clone().unwrap_or_default();
        let Ok(pv) = env.pvs().get(&pv_name).await else { continue };
        let Some(node) = node_id(env, &va.spec.node_name).await else { continue };
        let on = published.get(&super::pv_handle(&pv)).is_some_and(|nodes| nodes.contains(&node));
        if !on {
            let name = va.metadata.name.clone().unwrap_or_default();
            tracing::info!(attachment = %name, "the driver no longer reports the volume published there: marking it detached");
            let patch = json!({"status": {"attached": false}});
            let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await;
        }
    }
}

pub async fn run(env: Arc<Env>, stop: CancellationToken) {
    let mut wakeup = super::Wakeup::new(&env, Duration::from_millis(100));
    let mut backoff = Backoff::default();
    let mut workers = super::workers::Workers::default();
    let mut reconciled = Instant::now();
    loop {
        if !wakeup.next(&stop).await {
            return;
        }
        for (key, r) in workers.ended() {
            match r.and_then(|r| r) {
                Ok(()) => backoff.succeeded(&key),
                Err(e) => {
                    tracing::debug!(attachment = %key, error = %e, "attach/detach (will retry)");
                    backoff.failed(&key);
                }
            }
        }
        if reconciled.elapsed() >= RECONCILE_PERIOD {
            reconciled = Instant::now();
            if let Ok(vas) = Api::<VolumeAttachment>::all(env.guest.clone()).list(&Default::default()).await {
                let ours: Vec<VolumeAttachment> = vas.items.into_iter().filter(|v| v.spec.attacher == DRIVER).collect();
                reconcile(&env, &ours).await;
            }
        }
        let Ok(vas) = Api::<VolumeAttachment>::all(env.guest.clone()).list(&Default::default()).await else { continue };
        for va in vas.items.into_iter().filter(|v| v.spec.attacher == DRIVER) {
            let key = va.metadata.name.clone().unwrap_or_default();
            let deleting = va.metadata.deletion_timestamp.is_some();
            let attached = va.status.as_ref().is_some_and(|s| s.attached);
            // Independent volumes are attached concurrently, as the sidecar's workers do.
            if (deleting || !attached) && backoff.ready(&key) && !workers.busy(&key) {
                let env = env.clone();
                workers.start(key, async move {
                    if deleting {
                        detach(&env, &va).await
                    } else {
                        attach(&env, &va).await
                    }
                });
            }
        }
    }
}
