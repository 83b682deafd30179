//! Where a VM runs on the host: the zone and region of its host node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::{Feature, Host};
use crate::error::Result;

/// Topology keys reported by NodeGetInfo from the host node's labels.
pub const TOPOLOGY_KEYS: &[&str] = &["topology.kubernetes.io/zone", "topology.kubernetes.io/region"];

impl Host {
    /// The zone/region of the host node running `vm`. Topology is an addition: when the
    /// credentials cannot read it there are no segments. A transient failure is an error,
    /// since no segments would be a wrong answer that the node keeps for its lifetime.
    pub async fn node_topology(&self, vm: &str) -> Result<BTreeMap<String, String>> {
        // Asked even when the probe itself met host failures: only a settled "off" skips it.
        if !self.features.report().may_be_enabled(Feature::Topology) {
            return Ok(BTreeMap::new());
        }
        let vmi = match self.get_vmi(vm).await {
            Ok(Some(vmi)) => vmi,
            Ok(None) => return Ok(BTreeMap::new()),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "topology unavailable: cannot read this node's VMI");
                return Ok(BTreeMap::new());
            }
        };
        let node = vmi.node_name().to_string();
        if node.is_empty() {
            return Ok(BTreeMap::new());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        match self.call_opt("get node", nodes.get(&node)).await {
            Ok(Some(n)) => {
                let labels = n.metadata.labels.unwrap_or_default();
                Ok(TOPOLOGY_KEYS.iter().filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone()))).collect())
            }
            Ok(None) => Ok(BTreeMap::new()),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                tracing::info!(error = %e, "topology unavailable: cannot read the host node");
                Ok(BTreeMap::new())
            }
        }
    }
}
