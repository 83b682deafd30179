//! Volume health as the host sees it (CSI v1.13 health RPCs): a hotplug that
//! failed, a faulted Longhorn volume, an export that is not ready.

use csi::volume_health::VolumeHealthEntry;
use csi::VolumeHealthErrorType as Kind;
use csi_proto::csi::v1 as csi;

use super::ControllerService;
use crate::error::{Error, Result};
use crate::host::Feature;
use crate::names;

fn entry(kind: Kind, reason: &str, message: String) -> VolumeHealthEntry {
    VolumeHealthEntry { status: kind as i32, reason: reason.into(), message }
}

impl ControllerService {
    async fn health_of(&self, id: &str) -> Result<csi::VolumeHealth> {
        let mut statuses = Vec::new();
        let pvc = self.host.get_pvc(id).await?.ok_or_else(|| Error::NotFound(format!("volume {id} not found")))?;
        for a in self.host.attachments(id).await? {
            if let Some(s) = &a.status {
                if s.reason().starts_with("Failed") {
                    statuses.push(entry(
                        Kind::Inaccessible,
                        "HotplugFailed",
                        format!("VM {}: {} ({})", a.vm, s.message(), s.reason()),
                    ));
                }
            }
        }
        let pv = crate::host::pvc::host_pv_name(&pvc).unwrap_or_default().to_string();
        if !pv.is_empty() && self.host.features.enabled(Feature::LonghornVolumeStatus) {
            if let Some(robustness) = self.host.longhorn_robustness(&pv).await? {
                match robustness.as_str() {
                    "faulted" => statuses.push(entry(
                        Kind::Inaccessible,
                        "HostVolumeFaulted",
                        format!("Longhorn volume {pv} is faulted"),
                    )),
                    "degraded" => statuses.push(entry(
                        Kind::Degraded,
                        "HostVolumeDegraded",
                        format!("Longhorn volume {pv} is degraded"),
                    )),
                    _ => {}
                }
            }
        }
        if !pv.is_empty() && self.host.features.enabled(Feature::Rwx) {
            if let Some(nfs) = self.host.get_nfs(&pv).await? {
                let export = nfs.export();
                if export.desired_enabled && !export.ready {
                    statuses.push(entry(
                        Kind::Inaccessible,
                        "ExportNotReady",
                        format!("NFS export of {pv} is not ready ({})", nfs.state()),
                    ));
                }
            }
        }
        Ok(csi::VolumeHealth { volume_id: id.to_string(), health_statuses: statuses })
    }

    pub(super) async fn get_health(
        &self,
        req: csi::ControllerGetVolumeHealthRequest,
    ) -> Result<csi::ControllerGetVolumeHealthResponse> {
        names::validate_volume_id(&req.volume_id)?;
        Ok(csi::ControllerGetVolumeHealthResponse { volume_health: Some(self.health_of(&req.volume_id).await?) })
    }

    pub(super) async fn list_health(
        &self,
        req: csi::ControllerListVolumeHealthRequest,
    ) -> Result<csi::ControllerListVolumeHealthResponse> {
        let volumes = self
            .list_volumes_impl(csi::ListVolumesRequest {
                max_entries: req.max_entries,
                starting_token: req.starting_token.clone(),
            })
            .await?;
        let mut entries = Vec::new();
        for e in volumes.entries {
            if let Some(v) = e.volume {
                entries.push(self.health_of(&v.volume_id).await?);
            }
        }
        Ok(csi::ControllerListVolumeHealthResponse { entries, next_token: volumes.next_token })
    }
}
