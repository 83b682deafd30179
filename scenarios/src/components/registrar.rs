//! The kubelet's plugin registration of the node plugin (node-driver-registrar
//! plus the kubelet's CSI plugin handler): NodeGetInfo, then the topology
//! segments become Node labels and the node id a `csi.volume.kubernetes.io/nodeid`
//! annotation (the CSINode entry). As the kubelet does, a restarted plugin is
//! first deregistered, and a registration whose topology value differs from the
//! label the Node already carries is refused ("detected topology value
//! collision"), leaving the node without the driver.

use std::collections::BTreeMap;
use std::time::Duration;

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::env::{guest_event, Env, DRIVER};

const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";

/// A label the Node has with another value than the driver reports, as the kubelet words it.
fn collision(labels: &BTreeMap<String, String>, segments: &BTreeMap<String, String>) -> Option<String> {
    segments.iter().find_map(|(k, v)| {
        labels.get(k).filter(|have| *have != v).map(|have| {
            format!(
                "detected topology value collision: driver reported {k:?}:{v:?} but existing label is {k:?}:{have:?}"
            )
        })
    })
}

/// Registers the node plugin on `vm` (whose guest Node has that name).
pub async fn register(env: &Env, vm: &str) -> Result<(), String> {
    let mut client = env.node(vm).ok_or_else(|| format!("no node plugin on {vm}"))?;
    let mut info = None;
    for _ in 0..50 {
        match client.node_get_info(csi::NodeGetInfoRequest {}).await {
            Ok(r) => {
                info = Some(r.into_inner());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let info = info.ok_or_else(|| format!("NodeGetInfo on {vm} kept failing"))?;
    let segments: BTreeMap<String, String> =
        info.accessible_topology.map(|t| t.segments.into_iter().collect()).unwrap_or_default();
    let node_id = serde_json::to_string(&json!({DRIVER: info.node_id})).map_err(|e| e.to_string())?;
    let nodes: Api<Node> = Api::all(env.guest.clone());
    let Some(existing) = nodes.get_opt(vm).await.map_err(|e| e.to_string())? else {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": vm, "labels": segments, "annotations": {NODE_ID_ANNOTATION: node_id}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .map_err(|e| e.to_string())?;
        return match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Box::pin(register(env, vm)).await,
            Err(e) => Err(format!("registering node {vm}: {e}")),
        };
    };
    let labels = existing.metadata.labels.clone().unwrap_or_default();
    if let Some(why) = collision(&labels, &segments) {
        guest_event(env, "Node", "", vm, "Warning", "PluginRegistrationFailed", &why).await;
        tracing::warn!(node = %vm, "{why}");
        return Err(format!("registering {DRIVER} on {vm}: {why}"));
    }
    let patch = json!({"metadata": {"labels": segments, "annotations": {NODE_ID_ANNOTATION: node_id}}});
    nodes.patch(vm, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The plugin went away (its socket was removed): the kubelet takes the driver
/// out of the node's CSINode entry; its topology labels stay.
pub async fn deregister(env: &Env, vm: &str) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(env.guest.clone());
    let patch = json!({"metadata": {"annotations": {NODE_ID_ANNOTATION: null}}});
    match nodes.patch(vm, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_a_changed_value_of_a_reported_key_collides() {
        let labels = map(&[("topology.harvesterhci.io/host-cluster", "a"), ("kubernetes.io/os", "linux")]);
        assert_eq!(collision(&labels, &map(&[("topology.harvesterhci.io/host-cluster", "a")])), None);
        assert_eq!(collision(&labels, &map(&[("topology.kubernetes.io/zone", "z")])), None, "a new key is added");
        let why = collision(&labels, &map(&[("topology.harvesterhci.io/host-cluster", "b")])).expect("collision");
        assert!(why.starts_with("detected topology value collision"), "{why}");
    }
}
