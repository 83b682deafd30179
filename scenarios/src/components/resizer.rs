//! external-resizer (and the kubelet's part of it): a PVC whose request grew
//! gets ControllerExpandVolume, then NodeExpandVolume where it is published.

use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::env::{guest_event, Backoff, Env};
use crate::quantity::{capacity_of, quantity};

async fn expand(env: &Env, pvc: &PersistentVolumeClaim, want: u64) -> Result<(), String> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    let pv = env.pvs().get(&pv_name).await.map_err(|e| e.to_string())?;
    let handle = super::pv_handle(&pv);
    let started = Instant::now();
    let mut controller = env.csi.controller.clone();
    let r = controller
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: handle.clone(),
            capacity_range: Some(csi::CapacityRange { required_bytes: want as i64, limit_bytes: 0 }),
            volume_capability: Some(super::pv_capability(&pv)),
            ..Default::default()
        })
        .await;
    env.record("controller expand", &format!("{ns}/{name}"), started, r.is_ok());
    let resp = r.map_err(|s| format!("ControllerExpandVolume: {:?}: {}", s.code(), s.message()))?.into_inner();
    let size = resp.capacity_bytes.max(want as i64);
    env.pvs()
        .patch(
            &pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"capacity": {"storage": size.to_string()}}})),
        )
        .await
        .map_err(|e| e.to_string())?;
    if resp.node_expansion_required {
        let published: Vec<(String, std::path::PathBuf, std::path::PathBuf)> = {
            let k = env.kubelet.lock().unwrap_or_else(|p| p.into_inner());
            k.pods
                .values()
                .flat_map(|vs| vs.iter().filter(|v| v.pv == pv_name).map(|v| (v.host_path.clone(), v.staging.clone())))
                .filter_map(|(t, s)| {
                    k.staged.iter().find(|(_, p)| **p == s).map(|((node, _), _)| (node.clone(), t, s.clone()))
                })
                .collect()
        };
        if let Some((node, target, staging)) = published.into_iter().next() {
            let mut node_client = env.node(&node).ok_or_else(|| format!("no node plugin on {node}"))?;
            let started = Instant::now();
            let r = node_client
                .node_expand_volume(csi::NodeExpandVolumeRequest {
                    volume_id: handle,
                    volume_path: target.display().to_string(),
                    staging_target_path: staging.display().to_string(),
                    capacity_range: Some(csi::CapacityRange { required_bytes: want as i64, limit_bytes: 0 }),
                    volume_capability: Some(super::pv_capability(&pv)),
                    ..Default::default()
                })
                .await;
            env.record("node expand", &format!("{ns}/{name}@{node}"), started, r.is_ok());
            r.map_err(|s| format!("NodeExpandVolume: {:?}: {}", s.code(), s.message()))?;
        }
    }
    env.pvcs(&ns)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"capacity": {"storage": size.to_string()}}})),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

pub async fn run(env: Arc<Env>, stop: CancellationToken) {
    let mut wakeup = super::Wakeup::new(&env, Duration::from_millis(150));
    let mut backoff = Backoff::default();
    loop {
        if !wakeup.next(&stop).await {
            return;
        }
        let Ok(pvcs) = Api::<PersistentVolumeClaim>::all(env.guest.clone()).list(&Default::default()).await else {
            continue;
        };
        for pvc in &pvcs.items {
            let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            let want = pvc
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| quantity(&q.0))
                .unwrap_or(0);
            let have = capacity_of(pvc);
            let key = pvc.metadata.uid.clone().unwrap_or_default();
            if !bound || want <= have || !backoff.ready(&key) {
                continue;
            }
            match expand(&env, pvc, want).await {
                Ok(()) => backoff.succeeded(&key),
                Err(e) => {
                    backoff.failed(&key);
                    let (ns, name) = (
                        pvc.metadata.namespace.clone().unwrap_or_default(),
                        pvc.metadata.name.clone().unwrap_or_default(),
                    );
                    guest_event(&env, "PersistentVolumeClaim", &ns, &name, "Warning", "VolumeResizeFailed", &e).await;
                }
            }
        }
    }
}
