//! The kubelet (with the attach/detach controller's part): for a pod on a node,
//! a VolumeAttachment per volume, then NodeStage at
//! `…/plugins/kubernetes.io/csi/<driver>/<sha256(volume id)>/globalmount` and
//! NodePublish at `…/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount`; on pod
//! deletion the reverse, unstaging when the node's last user goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::env::{guest_event, Backoff, Env, PodVolume, DRIVER};

pub const FINALIZER: &str = "scenarios.harvesterhci.io/kubelet";

fn hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn va_name(pv: &str, node: &str) -> String {
    format!("csi-{}", hex(format!("{pv}{DRIVER}{node}").as_bytes()))
}

fn staging_path(env: &Env, node: &str, handle: &str) -> PathBuf {
    env.kubelet_root
        .join(node)
        .join("plugins/kubernetes.io/csi")
        .join(DRIVER)
        .join(hex(handle.as_bytes()))
        .join("globalmount")
}

fn target_path(env: &Env, node: &str, pod_uid: &str, pv: &str, block: bool) -> PathBuf {
    if block {
        env.kubelet_root.join(node).join("plugins/kubernetes.io/csi/volumeDevices/publish").join(pv).join(pod_uid)
    } else {
        env.kubelet_root.join(node).join("pods").join(pod_uid).join("volumes/kubernetes.io~csi").join(pv).join("mount")
    }
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default())
}

/// Waiting for the attach/detach controller is polled, not backed off (as the
/// kubelet's volume manager does); only real mount failures back off.
const WAITING: &str = "waiting: ";

/// (claim, path in the pod, read-only) for each PVC volume of the pod.
fn claims(pod: &Pod) -> Vec<(String, String, bool)> {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = spec.containers.first().cloned().unwrap_or_default();
    spec.volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            let c = v.persistent_volume_claim?;
            let mount =
                container.volume_mounts.iter().flatten().find(|m| m.name == v.name).map(|m| m.mount_path.clone());
            let device =
                container.volume_devices.iter().flatten().find(|d| d.name == v.name).map(|d| d.device_path.clone());
            Some((c.claim_name, mount.or(device).unwrap_or_default(), c.read_only.unwrap_or(false)))
        })
        .collect()
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec.as_ref()?.security_context.as_ref()?.fs_group.and_then(|g| u32::try_from(g).ok())
}

/// Who the pod's container runs as, when it says.
fn security_of(pod: &Pod) -> Option<crate::model::PodSecurity> {
    let sc = pod.spec.as_ref()?.security_context.as_ref()?;
    let id = |v: Option<i64>| v.and_then(|x| u32::try_from(x).ok());
    Some(crate::model::PodSecurity {
        run_as_user: id(sc.run_as_user),
        run_as_group: id(sc.run_as_group),
        fs_group: id(sc.fs_group),
    })
}

async fn setup(env: &Env, pod: &Pod) -> Result<(), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut node_client = env.node(&node).ok_or_else(|| format!("no node plugin on {node}"))?;
    let vas: Api<VolumeAttachment> = Api::all(env.guest.clone());
    let mut volumes = Vec::new();
    for (claim, mount_path, readonly) in claims(pod) {
        let pvc = env.pvcs(&ns).get(&claim).await.map_err(|e| format!("claim {claim}: {e}"))?;
        let pv_name = pvc
            .spec
            .and_then(|s| s.volume_name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{WAITING}claim {claim} is not bound yet"))?;
        let pv = env.pvs().get(&pv_name).await.map_err(|e| e.to_string())?;
        let handle = super::pv_handle(&pv);
        let block = pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block");
        let va_name = va_name(&pv_name, &node);
        let va = match vas.get_opt(&va_name).await.map_err(|e| e.to_string())? {
            Some(va) => va,
            None => {
                let va: VolumeAttachment = serde_json::from_value(json!({
                    "metadata": {"name": va_name, "finalizers": [super::attacher::FINALIZER]},
                    "spec": {"attacher": DRIVER, "nodeName": node, "source": {"persistentVolumeName": pv_name}},
                }))
                .map_err(|e| e.to_string())?;
                vas.create(&PostParams::default(), &va).await.map_err(|e| e.to_string())?
            }
        };
        if va.metadata.deletion_timestamp.is_some() {
            // A detach is under way (the pod before this one left): its
            // `attached` is stale. The real attach/detach controller waits for
            // it to finish and then attaches afresh.
            return Err(format!("{WAITING}volume {pv_name} is being detached from {node}"));
        }
        let status = va.status.clone().unwrap_or_default();
        if !status.attached {
            let why = status.attach_error.and_then(|e| e.message).unwrap_or_else(|| "waiting for the attacher".into());
            return Err(format!("{WAITING}volume {pv_name} not attached to {node} yet: {why}"));
        }
        let publish_context = status.attachment_metadata.unwrap_or_default();
        let capability = super::pv_capability(&pv);
        let volume_context =
            pv.spec.as_ref().and_then(|s| s.csi.as_ref()).and_then(|c| c.volume_attributes.clone()).unwrap_or_default();
        let staging = staging_path(env, &node, &handle);
        let staged =
            env.kubelet.lock().unwrap_or_else(|p| p.into_inner()).staged.contains_key(&(node.clone(), pv_name.clone()));
        if !staged {
            std::fs::create_dir_all(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
            let started = Instant::now();
            env.begin("stage", &format!("{pv_name}@{node}"));
            let r = node_client
                .node_stage_volume(csi::NodeStageVolumeRequest {
                    volume_id: handle.clone(),
                    publish_context: publish_context.clone().into_iter().collect(),
                    staging_target_path: staging.display().to_string(),
                    volume_capability: Some(capability),
                    volume_context: volume_context.clone().into_iter().collect(),
                    ..Default::default()
                })
                .await;
            env.record("stage", &format!("{pv_name}@{node}"), started, r.is_ok());
            r.map_err(|s| format!("NodeStageVolume: {:?}: {}", s.code(), s.message()))?;
            env.kubelet
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .staged
                .insert((node.clone(), pv_name.clone()), staging.clone());
        }
        let target = target_path(env, &node, &uid, &pv_name, block);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let started = Instant::now();
        let r = node_client
            .node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id: handle.clone(),
                publish_context: publish_context.into_iter().collect(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(super::pv_capability(&pv)),
                readonly,
                volume_context: volume_context.into_iter().collect(),
                ..Default::default()
            })
            .await;
        env.record("publish", &format!("{pv_name}@{node}"), started, r.is_ok());
        r.map_err(|s| format!("NodePublishVolume: {:?}: {}", s.code(), s.message()))?;
        if let Some(gid) = fs_group(pod).filter(|_| !block) {
            let spec = pv.spec.clone().unwrap_or_default();
            let fs_type = spec.csi.as_ref().and_then(|c| c.fs_type.clone()).unwrap_or_default();
            if super::fs_group::policy(env).await.applies(&fs_type, &spec.access_modes.unwrap_or_default()) {
                let (dir, ro) = (target.clone(), readonly);
                tokio::task::spawn_blocking(move || super::fs_group::set_ownership(&dir, gid, ro))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("applying fsGroup {gid} to {}: {e}", target.display()))?;
            } else {
                tracing::debug!(volume = %pv_name, %fs_type, "skipping fsGroup (fsGroupPolicy)");
            }
        }
        volumes.push(PodVolume { pvc: claim, mount_path, host_path: target, block, pv: pv_name, staging });
    }
    {
        let mut kubelet = env.kubelet.lock().unwrap_or_else(|p| p.into_inner());
        kubelet.pods.insert(key(pod), volumes);
        if let Some(security) = security_of(pod) {
            kubelet.security.insert(key(pod), security);
        }
    }
    let pods: Api<Pod> = Api::namespaced(env.guest.clone(), &ns);
    pods.patch_status(
        pod.metadata.name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

async fn teardown(env: &Env, pod: &Pod, all: &[Pod]) -> Result<(), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let recorded =
        env.kubelet.lock().unwrap_or_else(|p| p.into_inner()).pods.get(&key(pod)).cloned().unwrap_or_default();
    if let Some(mut node_client) = env.node(&node) {
        for v in &recorded {
            let handle = env.pvs().get(&v.pv).await.map(|pv| super::pv_handle(&pv)).unwrap_or_else(|_| v.pv.clone());
            let started = Instant::now();
            let r = node_client
                .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                    volume_id: handle.clone(),
                    target_path: v.host_path.display().to_string(),
                })
                .await;
            env.record("unpublish", &format!("{}@{node}", v.pv), started, r.is_ok());
            r.map_err(|s| format!("NodeUnpublishVolume: {:?}: {}", s.code(), s.message()))?;
            let still_used = all.iter().any(|p| {
                key(p) != key(pod)
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                    && env
                        .kubelet
                        .lock()
                        .unwrap_or_else(|x| x.into_inner())
                        .pods
                        .get(&key(p))
                        .is_some_and(|vs| vs.iter().any(|x| x.pv == v.pv))
            });
            if still_used {
                continue;
            }
            let started = Instant::now();
            let r = node_client
                .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                    volume_id: handle,
                    staging_target_path: v.staging.display().to_string(),
                })
                .await;
            env.record("unstage", &format!("{}@{node}", v.pv), started, r.is_ok());
            r.map_err(|s| format!("NodeUnstageVolume: {:?}: {}", s.code(), s.message()))?;
            env.kubelet.lock().unwrap_or_else(|p| p.into_inner()).staged.remove(&(node.clone(), v.pv.clone()));
            let vas: Api<VolumeAttachment> = Api::all(env.guest.clone());
            match vas.delete(&va_name(&v.pv, &node), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    {
        let mut kubelet = env.kubelet.lock().unwrap_or_else(|p| p.into_inner());
        kubelet.pods.remove(&key(pod));
        kubelet.security.remove(&key(pod));
    }
    let pods: Api<Pod> = Api::namespaced(env.guest.clone(), &ns);
    super::remove_finalizer(&pods, pod, FINALIZER).await
}

pub async fn run(env: Arc<Env>, stop: CancellationToken) {
    let mut wakeup = super::Wakeup::new(&env, Duration::from_millis(100));
    let mut backoff = Backoff::kubelet();
    loop {
        if !wakeup.next(&stop).await {
            return;
        }
        let Ok(pods) = Api::<Pod>::all(env.guest.clone()).list(&Default::default()).await else { continue };
        let all = pods.items.clone();
        let mut work = Vec::new();
        for pod in pods.items {
            let k = key(&pod);
            let deleting = pod.metadata.deletion_timestamp.is_some();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if (deleting || !running) && backoff.ready(&k) {
                work.push((k, deleting, pod));
            }
        }
        let results = super::concurrently(work, |(k, deleting, pod)| {
            let env = env.clone();
            let all = all.clone();
            async move {
                let r = if deleting { teardown(&env, &pod, &all).await } else { setup(&env, &pod).await };
                (k, deleting, pod, r)
            }
        })
        .await;
        for (k, deleting, pod, r) in results {
            match r {
                Ok(()) => backoff.succeeded(&k),
                Err(e) if e.starts_with(WAITING) => tracing::trace!(pod = %k, "{e}"),
                Err(e) => {
                    backoff.failed(&k);
                    if !deleting {
                        let (ns, name) = (
                            pod.metadata.namespace.clone().unwrap_or_default(),
                            pod.metadata.name.clone().unwrap_or_default(),
                        );
                        guest_event(&env, "Pod", &ns, &name, "Warning", "FailedMount", &e).await;
                    }
                    tracing::debug!(pod = %k, error = %e, "kubelet (will retry)");
                }
            }
        }
    }
}
