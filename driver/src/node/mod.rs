//! The CSI Node service: stage (find the exact device, safe format, mount;
//! or mount the NFS export), publish (bind mounts), stats, expansion, health.

mod host_access;
mod publish;
#[cfg(test)]
mod service_tests;
mod stage;
mod stats;
pub mod vm_identity;

pub use host_access::NodeHost;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi_proto::csi::v1 as csi;
use tonic::{Request, Response, Status};

use crate::capabilities;
use crate::deadline::deadline;
use crate::error::{Error, Result};
use crate::guard::VolumeLocks;
use crate::host::Host;
use crate::metrics::Metrics;
use crate::mount::{LinuxMounter, Mounter};
use crate::rpc::observe;

/// Generic over the mounter and the host so that its unit tests run every path
/// with fakes; production uses [`LinuxMounter`] and [`Host`].
pub struct NodeService<M = LinuxMounter, H = Host> {
    /// The VM this node runs in (the CSI node id).
    pub node_id: String,
    /// Prefix for `/dev/disk/by-id` and `/sys`.
    pub root: PathBuf,
    pub host: H,
    pub mounter: Arc<M>,
    pub locks: VolumeLocks,
    pub metrics: Arc<Metrics>,
    pub max_volumes_per_node: i64,
    /// Topology segments of the host node running this VM (empty when unknown).
    pub topology: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// Paths from the CO must be absolute and free of `..` (they are mounted on as root).
pub(crate) fn checked_path<'a>(field: &str, p: &'a str) -> Result<&'a Path> {
    if p.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::InvalidArgument(format!("{field} {p:?} must be an absolute path without '..'")));
    }
    Ok(path)
}

/// A volume path for stats/expansion: one that cannot exist (relative, `..`) is
/// simply not a volume here (NOT_FOUND, as the spec asks), not a malformed request.
pub(crate) fn volume_path(p: &str) -> Result<&Path> {
    if p.is_empty() {
        return Err(Error::InvalidArgument("volume path is required".into()));
    }
    checked_path("volume path", p).map_err(|_| Error::NotFound(format!("no volume at {p:?}")))
}

type RpcResult<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl<M: Mounter + 'static, H: NodeHost + 'static> csi_proto::Node for NodeService<M, H> {
    async fn node_stage_volume(
        &self,
        request: Request<csi::NodeStageVolumeRequest>,
    ) -> RpcResult<csi::NodeStageVolumeResponse> {
        let deadline = deadline(&request, self.timeout);
        observe(&self.metrics, "NodeStageVolume", self.stage(request.into_inner(), deadline)).await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> RpcResult<csi::NodeUnstageVolumeResponse> {
        observe(&self.metrics, "NodeUnstageVolume", self.unstage(request.into_inner())).await
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> RpcResult<csi::NodePublishVolumeResponse> {
        observe(&self.metrics, "NodePublishVolume", self.publish(request.into_inner())).await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> RpcResult<csi::NodeUnpublishVolumeResponse> {
        observe(&self.metrics, "NodeUnpublishVolume", self.unpublish(request.into_inner())).await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> RpcResult<csi::NodeGetVolumeStatsResponse> {
        observe(&self.metrics, "NodeGetVolumeStats", self.volume_stats(request.into_inner())).await
    }

    async fn node_get_volume_health(
        &self,
        request: Request<csi::NodeGetVolumeHealthRequest>,
    ) -> RpcResult<csi::NodeGetVolumeHealthResponse> {
        observe(&self.metrics, "NodeGetVolumeHealth", self.volume_health(request.into_inner())).await
    }

    async fn node_get_storage_health(
        &self,
        _request: Request<csi::NodeGetStorageHealthRequest>,
    ) -> RpcResult<csi::NodeGetStorageHealthResponse> {
        Err(Status::unimplemented("NodeGetStorageHealth is not advertised"))
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> RpcResult<csi::NodeExpandVolumeResponse> {
        observe(&self.metrics, "NodeExpandVolume", self.expand(request.into_inner())).await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> RpcResult<csi::NodeGetCapabilitiesResponse> {
        use csi::node_service_capability::Rpc;
        let capabilities = capabilities::node_capabilities()
            .into_iter()
            .map(|t| csi::NodeServiceCapability {
                r#type: Some(csi::node_service_capability::Type::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(csi::NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(&self, _request: Request<csi::NodeGetInfoRequest>) -> RpcResult<csi::NodeGetInfoResponse> {
        let accessible_topology = (!self.topology.is_empty())
            .then(|| csi::Topology { segments: self.topology.clone().into_iter().collect() });
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: self.max_volumes_per_node,
            accessible_topology,
        }))
    }
}

/// The segment every node and volume of one Harvester cluster shares: a guest
/// cluster spanning two Harvester clusters cannot attach across them.
pub const HOST_CLUSTER_KEY: &str = "topology.harvesterhci.io/host-cluster";

/// The host-cluster segment, from the host cluster's identity (`host::cluster_identity`).
pub fn host_cluster_segment(identity: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(HOST_CLUSTER_KEY.to_string(), identity.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("/var/lib/kubelet/x", true)]
    #[case("relative/path", false)]
    #[case("/var/../etc", false)]
    #[case("", false)]
    fn paths(#[case] p: &str, #[case] ok: bool) {
        assert_eq!(checked_path("target_path", p).is_ok(), ok);
    }
}
