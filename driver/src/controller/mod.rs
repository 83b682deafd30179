//! The CSI Controller service: thin handlers that validate, take the per-volume
//! guard, and call the domain code in the submodules.

mod adopt;
mod create;
mod expand;
mod health;
mod list;
mod publish;
mod snapshots;

use std::sync::Arc;
use std::time::Duration;

use csi_proto::csi::v1 as csi;
use tonic::{Request, Response, Status};

use crate::capabilities;
use crate::deadline::deadline;
use crate::guard::VolumeLocks;
use crate::guest::Guest;
use crate::host::Host;
use crate::metrics::Metrics;
use crate::rpc::observe;

#[derive(Debug, Clone, Default)]
pub struct ControllerSettings {
    /// `--host-storage-class`: the host class when the guest class names none.
    pub host_storage_class: Option<String>,
    /// Written on host objects as ownership.
    pub cluster_id: Option<String>,
    pub timeout: Duration,
    /// Hot-plugged volumes one VM may carry (also reported by NodeGetInfo).
    pub max_volumes_per_node: i64,
    /// Topology every volume of this Harvester cluster is accessible from.
    pub accessible_topology: std::collections::BTreeMap<String, String>,
}

/// One async mutex per VM name.
#[derive(Debug, Default, Clone)]
pub struct VmQueues(Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl VmQueues {
    pub async fn enter(&self, vm: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let queue = self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(vm.to_string()).or_default().clone();
        queue.lock_owned().await
    }
}

pub struct ControllerService {
    pub host: Host,
    pub guest: Option<Arc<Guest>>,
    pub locks: VolumeLocks,
    /// Hotplug changes to one VM are made one at a time: concurrent VM patches
    /// would only fail each other's resourceVersion test and back off.
    pub vm_queues: VmQueues,
    pub settings: ControllerSettings,
    pub metrics: Arc<Metrics>,
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl csi_proto::Controller for ControllerService {
    async fn create_volume(&self, request: Request<csi::CreateVolumeRequest>) -> RpcResult<csi::CreateVolumeResponse> {
        let deadline = deadline(&request, self.settings.timeout);
        observe(&self.metrics, "CreateVolume", self.create(request.into_inner(), deadline)).await
    }

    async fn delete_volume(&self, request: Request<csi::DeleteVolumeRequest>) -> RpcResult<csi::DeleteVolumeResponse> {
        let deadline = deadline(&request, self.settings.timeout);
        observe(&self.metrics, "DeleteVolume", self.delete(request.into_inner(), deadline)).await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> RpcResult<csi::ControllerPublishVolumeResponse> {
        let deadline = deadline(&request, self.settings.timeout);
        observe(&self.metrics, "ControllerPublishVolume", self.publish(request.into_inner(), deadline)).await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> RpcResult<csi::ControllerUnpublishVolumeResponse> {
        let deadline = deadline(&request, self.settings.timeout);
        observe(&self.metrics, "ControllerUnpublishVolume", self.unpublish(request.into_inner(), deadline)).await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> RpcResult<csi::ValidateVolumeCapabilitiesResponse> {
        observe(&self.metrics, "ValidateVolumeCapabilities", self.validate_capabilities(request.into_inner())).await
    }

    async fn list_volumes(&self, request: Request<csi::ListVolumesRequest>) -> RpcResult<csi::ListVolumesResponse> {
        observe(&self.metrics, "ListVolumes", self.list_volumes_impl(request.into_inner())).await
    }

    async fn controller_list_volume_health(
        &self,
        request: Request<csi::ControllerListVolumeHealthRequest>,
    ) -> RpcResult<csi::ControllerListVolumeHealthResponse> {
        observe(&self.metrics, "ControllerListVolumeHealth", self.list_health(request.into_inner())).await
    }

    async fn controller_get_volume_health(
        &self,
        request: Request<csi::ControllerGetVolumeHealthRequest>,
    ) -> RpcResult<csi::ControllerGetVolumeHealthResponse> {
        observe(&self.metrics, "ControllerGetVolumeHealth", self.get_health(request.into_inner())).await
    }

    async fn get_capacity(&self, _request: Request<csi::GetCapacityRequest>) -> RpcResult<csi::GetCapacityResponse> {
        Err(Status::unimplemented("GetCapacity: the guest's host credentials cannot read Longhorn disk capacity"))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> RpcResult<csi::ControllerGetCapabilitiesResponse> {
        use csi::controller_service_capability::Rpc;
        // Snapshot RPCs only where the host can take snapshots or backups (Harvester ≥ v1.7).
        let report = self.host.features.report();
        let snapshots =
            report.enabled(crate::host::Feature::Snapshots) || report.enabled(crate::host::Feature::RemoteBackups);
        let capabilities = capabilities::controller_capabilities()
            .into_iter()
            .filter(|t| snapshots || !capabilities::is_snapshot_capability(*t))
            .map(|t| csi::ControllerServiceCapability {
                r#type: Some(csi::controller_service_capability::Type::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse { capabilities }))
    }

    async fn create_snapshot(
        &self,
        request: Request<csi::CreateSnapshotRequest>,
    ) -> RpcResult<csi::CreateSnapshotResponse> {
        observe(&self.metrics, "CreateSnapshot", self.create_snapshot_impl(request.into_inner())).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> RpcResult<csi::DeleteSnapshotResponse> {
        observe(&self.metrics, "DeleteSnapshot", self.delete_snapshot_impl(request.into_inner())).await
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> RpcResult<csi::ListSnapshotsResponse> {
        observe(&self.metrics, "ListSnapshots", self.list_snapshots_impl(request.into_inner())).await
    }

    async fn get_snapshot(&self, request: Request<csi::GetSnapshotRequest>) -> RpcResult<csi::GetSnapshotResponse> {
        observe(&self.metrics, "GetSnapshot", self.get_snapshot_impl(request.into_inner())).await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> RpcResult<csi::ControllerExpandVolumeResponse> {
        let deadline = deadline(&request, self.settings.timeout);
        observe(&self.metrics, "ControllerExpandVolume", self.expand(request.into_inner(), deadline)).await
    }

    async fn controller_get_volume(
        &self,
        request: Request<csi::ControllerGetVolumeRequest>,
    ) -> RpcResult<csi::ControllerGetVolumeResponse> {
        observe(&self.metrics, "ControllerGetVolume", self.get_volume(request.into_inner())).await
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> RpcResult<csi::ControllerModifyVolumeResponse> {
        Err(Status::unimplemented("ControllerModifyVolume is not supported: host volumes have no mutable parameters"))
    }
}
