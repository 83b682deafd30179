//! The guest cluster as the driver sees it: a synced view (reflectors) of
//! VolumeAttachments, Pods, PersistentVolumes and Nodes, used to refuse a
//! second attachment and to keep an RWX export up while anything uses it.

pub mod node_health;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio_util::sync::CancellationToken;

use crate::names::DRIVER_NAME;

/// Kubernetes' taint for a node known to be shut down: its pods are deleted
/// and its volumes force-detached (non-graceful node shutdown).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

pub struct Guest {
    pub client: kube::Client,
    vas: Store<VolumeAttachment>,
    pods: Store<Pod>,
    pvs: Store<PersistentVolume>,
    nodes: Store<Node>,
}

fn reflect<K>(api: Api<K>, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "guest watch error (retrying)"),
                    None => return,
                }
            }
        }
    });
    reader
}

impl Guest {
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> Self {
        Self {
            vas: reflect(Api::all(client.clone()), shutdown.clone()),
            pods: reflect(Api::all(client.clone()), shutdown.clone()),
            pvs: reflect(Api::all(client.clone()), shutdown.clone()),
            nodes: reflect(Api::all(client.clone()), shutdown),
            client,
        }
    }

    /// Waits for the initial lists (bounded); false when the view is not synced.
    pub async fn wait_synced(&self, within: Duration) -> bool {
        let all = async {
            let _ = self.vas.wait_until_ready().await;
            let _ = self.pods.wait_until_ready().await;
            let _ = self.pvs.wait_until_ready().await;
            let _ = self.nodes.wait_until_ready().await;
        };
        tokio::time::timeout(within, all).await.is_ok()
    }

    /// The guest's cluster identity: the kube-system namespace UID.
    pub async fn cluster_id(&self) -> Option<String> {
        Api::<Namespace>::all(self.client.clone()).get("kube-system").await.ok().and_then(|ns| ns.metadata.uid)
    }

    /// The CSI node id (VM name) a guest Node registered for this driver.
    fn node_id_of(&self, node_name: &str) -> String {
        self.nodes
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name))
            .and_then(|n| n.metadata.annotations.as_ref()?.get("csi.volume.kubernetes.io/nodeid").cloned())
            .and_then(|json| serde_json::from_str::<std::collections::BTreeMap<String, String>>(&json).ok())
            .and_then(|m| m.get(DRIVER_NAME).cloned())
            .unwrap_or_else(|| node_name.to_string())
    }

    /// Whether the guest node registered as `node_id` (a VM) carries the
    /// out-of-service taint: it has been fenced, and nothing may attach there.
    pub fn node_out_of_service(&self, node_id: &str) -> bool {
        self.nodes.state().iter().any(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            self.node_id_of(&name) == node_id
                && n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT && t.effect == "NoExecute"))
        })
    }

    fn our_vas(&self, volume: &str) -> Vec<std::sync::Arc<VolumeAttachment>> {
        self.vas
            .state()
            .into_iter()
            .filter(|va| {
                va.spec.attacher == DRIVER_NAME && va.spec.source.persistent_volume_name.as_deref() == Some(volume)
            })
            .collect()
    }

    /// The guest PV of this driver with volume handle `handle`: its name and claim (namespace, name).
    pub fn pv_of_handle(&self, handle: &str) -> Option<(String, Option<(String, String)>)> {
        let pv = self.pvs.state().into_iter().find(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .is_some_and(|c| c.driver == DRIVER_NAME && c.volume_handle == handle)
        })?;
        let claim = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| Some((c.namespace.clone()?, c.name.clone()?)));
        Some((pv.metadata.name.clone().unwrap_or_default(), claim))
    }

    /// VM names (node ids) where the guest still considers the volume attached, other than `node_id`.
    pub fn attached_elsewhere(&self, volume: &str, node_id: &str) -> Vec<String> {
        self.our_vas(volume)
            .iter()
            .filter(|va| va.status.as_ref().is_some_and(|s| s.attached))
            .map(|va| self.node_id_of(&va.spec.node_name))
            .filter(|n| n != node_id)
            .collect()
    }

    /// Node ids (VMs) where the guest has the volume attached (and not detaching).
    pub fn attached_nodes(&self, volume: &str) -> Vec<String> {
        self.our_vas(volume)
            .iter()
            .filter(|va| va.metadata.deletion_timestamp.is_none() && va.status.as_ref().is_some_and(|s| s.attached))
            .map(|va| self.node_id_of(&va.spec.node_name))
            .collect()
    }

    /// Who else uses an RWX volume: attachments on other nodes and running pods
    /// (on any node but `leaving_node_id`) that mount its claim.
    pub fn export_users(&self, volume: &str, leaving_node_id: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .our_vas(volume)
            .iter()
            .filter(|va| va.metadata.deletion_timestamp.is_none())
            .map(|va| self.node_id_of(&va.spec.node_name))
            .filter(|n| n != leaving_node_id)
            .map(|n| format!("node {n}"))
            .collect();
        let claim = self
            .pvs
            .state()
            .into_iter()
            .find(|pv| pv.metadata.name.as_deref() == Some(volume))
            .and_then(|pv| pv.spec.as_ref()?.claim_ref.clone());
        if let Some(claim) = claim {
            let (ns, name) = (claim.namespace.unwrap_or_default(), claim.name.unwrap_or_default());
            for pod in self.pods.state() {
                let running = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_none_or(|p| p != "Succeeded" && p != "Failed");
                let on = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                let uses = pod.metadata.namespace.as_deref() == Some(ns.as_str())
                    && pod.spec.as_ref().is_some_and(|s| {
                        s.volumes
                            .iter()
                            .flatten()
                            .any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == name))
                    });
                if uses
                    && running
                    && pod.metadata.deletion_timestamp.is_none()
                    && self.node_id_of(&on) != leaving_node_id
                {
                    users.push(format!("pod {ns}/{}", pod.metadata.name.as_deref().unwrap_or("")));
                }
            }
        }
        users
    }
}
