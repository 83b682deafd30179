//! Where a VM runs on the host: the zone and region of its host node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::{str_at, Feature, Host};

/// Topology keys reported by NodeGetInfo from the host node's labels.
pub const TOPOLOGY_KEYS: &[&str] = &["topology.kubernetes.io/zone", "topology.kubernetes.io/region"];

impl Host {
    /// The zone/region of the host node running `vm`, if the credentials allow.
    /// Topology is an addition, so any failure here yields no segments rather than an error.
    pub async fn node_topology(&self, vm: &str) -> BTreeMap<String, String> {
        if !self.features.enabled(Feature::Topology) {
            return BTreeMap::new();
        }
        let Ok(Some(vmi)) = self.get_vmi(vm).await else { return BTreeMap::new() };
        let node = str_at(&vmi, "/status/nodeName").to_string();
        if node.is_empty() {
            return BTreeMap::new();
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        match self.call_opt("get node", nodes.get(&node)).await {
            Ok(Some(n)) => {
                let labels = n.metadata.labels.unwrap_or_default();
                TOPOLOGY_KEYS.iter().filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone()))).collect()
            }
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                tracing::info!(error = %e, "topology unavailable: cannot read the host node");
                BTreeMap::new()
            }
        }
    }
}
