//! The node side of Kubernetes for a VM that stops: its kubelet stops posting
//! status, so the node lifecycle controller marks the Node NotReady; once the
//! node is tainted out-of-service (by the driver's node-health controller or an
//! operator), the taint manager evicts its pods and the pod garbage collector
//! force-deletes them (the kubelet is gone and cannot tear down), after which the
//! attach/detach controller deletes their VolumeAttachments at once
//! (non-graceful node shutdown). A VM that runs again brings its Node back
//! Ready, with nothing mounted (it rebooted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::env::Env;

/// Kubernetes' PodGC runs every 20 s. Not compressed: the driver's node-health
/// controller frees the disk on its own 5 s period, and what happens between the
/// two (the attacher's reconciler publishing again) is what failover must survive.
const POD_GC_PERIOD: Duration = Duration::from_secs(20);
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

fn ready(node: &Node) -> Option<bool> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status == "True")
}

fn out_of_service(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute"))
}

async fn vm_running(env: &Env, vm: &str) -> Option<bool> {
    let ar = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    );
    let vms: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), &env.host_namespace, &ar);
    let obj = vms.get_opt(vm).await.ok()??;
    Some(
        obj.data.pointer("/status/printableStatus") == Some(&json!("Running"))
            && obj.data.pointer("/status/ready") == Some(&Value::Bool(true)),
    )
}

async fn set_ready(nodes: &Api<Node>, name: &str, is_ready: bool) {
    let status = if is_ready { "True" } else { "False" };
    let reason = if is_ready { "KubeletReady" } else { "NodeStatusUnknown" };
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": reason}]}});
    if let Err(e) = nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        tracing::debug!(node = name, error = %e, "node status");
    }
}

/// The node's VM went down: what it had mounted is gone with it.
async fn forget_mounts(env: &Env, node: &str) {
    let root = env.kubelet_root.join(node);
    if let Ok(out) = tokio::process::Command::new("findmnt").args(["-rn", "-o", "TARGET"]).output().await {
        let mut targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&root.display().to_string()))
            .map(String::from)
            .collect();
        targets.sort();
        for t in targets.iter().rev() {
            let _ = tokio::process::Command::new("umount").args(["-l", t]).output().await;
        }
    }
    let mut k = env.kubelet.lock().unwrap_or_else(|p| p.into_inner());
    k.staged.retain(|(n, _), _| n != node);
}

/// Force-deletes the pods of an out-of-service node and their VolumeAttachments.
async fn collect_pods(env: &Env, node: &str) {
    let pods = Api::<Pod>::all(env.guest.clone()).list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
    for pod in pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)) {
        let (ns, name) =
            (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
        let key = format!("{ns}/{name}");
        let volumes = {
            let mut k = env.kubelet.lock().unwrap_or_else(|p| p.into_inner());
            k.security.remove(&key);
            k.pods.remove(&key).unwrap_or_default()
        };
        let api: Api<Pod> = Api::namespaced(env.guest.clone(), &ns);
        let _ = super::remove_finalizer(&api, pod, super::kubelet::FINALIZER).await;
        let _ = api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
        let vas: Api<VolumeAttachment> = Api::all(env.guest.clone());
        for v in volumes {
            let _ = vas.delete(&super::kubelet::va_name(&v.pv, node), &DeleteParams::default()).await;
        }
        tracing::info!(pod = %key, node, "force-deleted the pod of an out-of-service node");
    }
}

pub async fn run(env: Arc<Env>, stop: CancellationToken) {
    let nodes: Api<Node> = Api::all(env.guest.clone());
    // When each out-of-service node was first seen so (PodGC acts on its next pass).
    let mut tainted_since: std::collections::BTreeMap<String, Instant> = Default::default();
    loop {
        if !super::tick(&stop, Duration::from_millis(500)).await {
            return;
        }
        let Ok(list) = nodes.list(&Default::default()).await else { continue };
        for node in &list.items {
            let name = node.metadata.name.clone().unwrap_or_default();
            let Some(running) = vm_running(&env, &name).await else { continue };
            if ready(node) != Some(running) {
                if !running {
                    forget_mounts(&env, &name).await;
                }
                set_ready(&nodes, &name, running).await;
            }
            if out_of_service(node) && !running {
                let since = *tainted_since.entry(name.clone()).or_insert_with(Instant::now);
                if since.elapsed() >= POD_GC_PERIOD {
                    collect_pods(&env, &name).await;
                }
            } else {
                tainted_since.remove(&name);
            }
        }
    }
}
