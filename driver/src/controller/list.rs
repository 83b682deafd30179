//! ListVolumes, ControllerGetVolume, ValidateVolumeCapabilities, and the
//! pagination they share with ListSnapshots.

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::ControllerService;
use crate::capabilities::shape_of;
use crate::error::{Error, Result};
use crate::host::labels::owned_volumes_selector;
use crate::host::pvc::{host_pv_name, is_nfs_export, pvc_capacity};
use crate::names;

/// Splits a sorted list into one page; the token is the index of the next entry.
pub(super) fn paginate<T>(items: Vec<T>, token: &str, max: i32) -> Result<(Vec<T>, String)> {
    let start = if token.is_empty() {
        0
    } else {
        token.parse::<usize>().map_err(|_| Error::Aborted(format!("starting token {token:?} is not valid")))?
    };
    if start > items.len() {
        return Err(Error::Aborted(format!("starting token {token:?} is past the end of the list")));
    }
    let take = if max <= 0 { usize::MAX } else { max as usize };
    let end = start.saturating_add(take).min(items.len());
    let next = if end < items.len() { end.to_string() } else { String::new() };
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

/// Where RWX volumes are published. Nothing is plugged into a VM for them, so
/// the host has no per-VM record: an export that is enabled and ready is
/// published to every node the guest has it attached on (without guest access:
/// to every VM, since each can mount it), and a disabled or broken export to
/// none, so the attacher's reconciler publishes it again, which re-enables it.
struct SharedPublications {
    ready: std::collections::BTreeSet<String>,
    all_vms: Option<Vec<String>>,
    guest: Option<std::sync::Arc<crate::guest::Guest>>,
}

impl SharedPublications {
    async fn read(c: &ControllerService, pvcs: &[PersistentVolumeClaim]) -> Result<Self> {
        let any_shared = pvcs.iter().any(is_nfs_export);
        if !any_shared {
            return Ok(Self { ready: Default::default(), all_vms: None, guest: None });
        }
        let ready = c.host.ready_exports().await?;
        let all_vms = match &c.guest {
            Some(_) => None,
            None => Some(c.host.vm_names().await?),
        };
        Ok(Self { ready, all_vms, guest: c.guest.clone() })
    }

    /// `None` for a volume that is not an NFS export.
    fn nodes_of(&self, pvc: &PersistentVolumeClaim) -> Option<Vec<String>> {
        if !is_nfs_export(pvc) {
            return None;
        }
        let pv = host_pv_name(pvc).unwrap_or_default();
        if !self.ready.contains(pv) {
            return Some(Vec::new());
        }
        let volume = pvc.metadata.name.clone().unwrap_or_default();
        Some(match (&self.guest, &self.all_vms) {
            (Some(g), _) => g.attached_nodes(&volume),
            (None, Some(vms)) => vms.clone(),
            (None, None) => Vec::new(),
        })
    }
}

impl ControllerService {
    /// This driver's volumes, paginated, each with the VMs that hold it in any phase
    /// (the same attachment view ControllerPublish decides by).
    pub(super) async fn list_volumes_impl(&self, req: csi::ListVolumesRequest) -> Result<csi::ListVolumesResponse> {
        if req.max_entries < 0 {
            return Err(Error::InvalidArgument("max_entries must not be negative".into()));
        }
        let selector = owned_volumes_selector(self.settings.cluster_id.as_deref());
        let mut pvcs = self.host.list_pvcs(&selector).await?;
        pvcs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let (page, next_token) = paginate(pvcs, &req.starting_token, req.max_entries)?;
        let published = self.host.vms_by_volume().await?;
        let shared = SharedPublications::read(self, &page).await?;
        let entries = page
            .into_iter()
            .map(|pvc| {
                let id = pvc.metadata.name.clone().unwrap_or_default();
                let nodes = match shared.nodes_of(&pvc) {
                    Some(nodes) => nodes,
                    None => published.get(&id).cloned().unwrap_or_default(),
                };
                csi::list_volumes_response::Entry {
                    status: Some(csi::list_volumes_response::VolumeStatus { published_node_ids: nodes }),
                    volume: Some(csi::Volume {
                        capacity_bytes: pvc_capacity(&pvc) as i64,
                        volume_id: id,
                        ..Default::default()
                    }),
                }
            })
            .collect();
        Ok(csi::ListVolumesResponse { entries, next_token })
    }

    pub(super) async fn get_volume(
        &self,
        req: csi::ControllerGetVolumeRequest,
    ) -> Result<csi::ControllerGetVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let pvc = self
            .host
            .get_pvc(&req.volume_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("volume {} not found", req.volume_id)))?;
        let shared = SharedPublications::read(self, std::slice::from_ref(&pvc)).await?;
        let nodes = match shared.nodes_of(&pvc) {
            Some(nodes) => nodes,
            None => self.host.attachments(&req.volume_id).await?.into_iter().map(|a| a.vm).collect(),
        };
        Ok(csi::ControllerGetVolumeResponse {
            volume: Some(csi::Volume {
                capacity_bytes: pvc_capacity(&pvc) as i64,
                volume_id: req.volume_id,
                ..Default::default()
            }),
            status: Some(csi::controller_get_volume_response::VolumeStatus { published_node_ids: nodes }),
        })
    }

    pub(super) async fn validate_capabilities(
        &self,
        req: csi::ValidateVolumeCapabilitiesRequest,
    ) -> Result<csi::ValidateVolumeCapabilitiesResponse> {
        names::validate_volume_id(&req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(Error::InvalidArgument("volume capabilities are required".into()));
        }
        let pvc = self
            .host
            .get_pvc(&req.volume_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("volume {} not found", req.volume_id)))?;
        let shared_volume = is_nfs_export(&pvc);
        for cap in &req.volume_capabilities {
            let shape = match shape_of(cap) {
                Ok(s) => s,
                Err(e) => {
                    return Ok(csi::ValidateVolumeCapabilitiesResponse { confirmed: None, message: e.to_string() })
                }
            };
            let problem = if shape.shared && !shared_volume {
                Some("multi-node access needs an RWX (NFS-exported) volume; this one is a disk")
            } else if shape.block && shared_volume {
                Some("this volume is an NFS export; it cannot be used as a block device")
            } else {
                None
            };
            if let Some(p) = problem {
                return Ok(csi::ValidateVolumeCapabilitiesResponse { confirmed: None, message: p.into() });
            }
        }
        Ok(csi::ValidateVolumeCapabilitiesResponse {
            confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: req.mutable_parameters,
            }),
            message: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("", 2, Ok((vec![0, 1], "2".to_string())))]
    #[case("2", 2, Ok((vec![2, 3], "4".to_string())))]
    #[case("4", 2, Ok((vec![4], String::new())))]
    #[case("", 0, Ok((vec![0, 1, 2, 3, 4], String::new())))]
    #[case("5", 2, Ok((vec![], String::new())))]
    #[case("6", 2, Err(tonic::Code::Aborted))]
    #[case("x", 2, Err(tonic::Code::Aborted))]
    fn pages(
        #[case] token: &str,
        #[case] max: i32,
        #[case] want: std::result::Result<(Vec<i32>, String), tonic::Code>,
    ) {
        assert_eq!(paginate((0..5).collect(), token, max).map_err(|e| e.code()), want);
    }
}
