//! ControllerExpandVolume: grow the host PVC and wait for the host to report it,
//! comparing what the host allocated with what is asked (no false "shrink"
//! inside Longhorn's 2 MiB rounding, harvester#11716).

use csi_proto::csi::v1 as csi;
use tokio::time::Instant;

use super::ControllerService;
use crate::error::{Error, Result};
use crate::host::pvc::{pvc_capacity, pvc_phase};
use crate::names;

impl ControllerService {
    pub(super) async fn expand(
        &self,
        req: csi::ControllerExpandVolumeRequest,
        deadline: Instant,
    ) -> Result<csi::ControllerExpandVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let range =
            req.capacity_range.as_ref().ok_or_else(|| Error::InvalidArgument("capacity range is required".into()))?;
        if range.required_bytes < 0 || range.limit_bytes < 0 {
            return Err(Error::InvalidArgument("capacity range must not be negative".into()));
        }
        let (required, limit) = (range.required_bytes as u64, range.limit_bytes as u64);
        if limit > 0 && required > limit {
            return Err(Error::InvalidArgument(format!("required bytes {required} exceed the limit {limit}")));
        }
        let block = match req.volume_capability.as_ref() {
            Some(cap) => crate::capabilities::shape_of(cap)?.block,
            None => false,
        };
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        tracing::info!(volume = %id, required, "ControllerExpandVolume");
        let pvc = self.host.get_pvc(&id).await?.ok_or_else(|| Error::NotFound(format!("volume {id} not found")))?;
        let pvc = self.adopt_if_upstream(pvc).await;
        if crate::host::pvc::is_nfs_export(&pvc) {
            return Err(Error::InvalidArgument(format!(
                "volume {id} is an NFS export (RWX); expanding it is not supported"
            )));
        }
        if pvc_phase(&pvc) != "Bound" {
            return Err(Error::Unavailable(format!("host volume {id} is not bound yet")));
        }
        let have = pvc_capacity(&pvc);
        if limit > 0 && have > limit {
            return Err(Error::OutOfRange(format!("volume {id} already has {have} bytes, above the limit {limit}")));
        }
        // The guest's filesystem grows on the node; a block volume needs nothing there.
        let node_expansion_required = !block;
        if have >= required {
            return Ok(csi::ControllerExpandVolumeResponse { capacity_bytes: have as i64, node_expansion_required });
        }
        match self.host.resize_pvc(&id, required).await {
            Ok(_) => {}
            // Harvester's webhook refuses online expansion here: the resizer then reports offline-only expansion.
            Err(e) if e.api_response().is_some_and(|r| r.code == 422) => {
                return Err(Error::FailedPrecondition(format!(
                    "Harvester refused to expand volume {id} while in use: {}",
                    e.api_response().map(|r| r.message.clone()).unwrap_or_default()
                )))
            }
            Err(e) if e.is_forbidden() && e.api_response().is_some_and(|r| r.message.contains("resize")) => {
                return Err(Error::InvalidArgument(format!(
                    "the host StorageClass of volume {id} does not allow expansion: {}",
                    e.api_response().map(|r| r.message.clone()).unwrap_or_default()
                )))
            }
            Err(e) => return Err(e),
        }
        let grown = self
            .host
            .wait_pvc(&id, deadline, &format!("host volume {id} to grow to {required} bytes"), |p| {
                pvc_capacity(p) >= required
            })
            .await?;
        Ok(csi::ControllerExpandVolumeResponse { capacity_bytes: pvc_capacity(&grown) as i64, node_expansion_required })
    }
}
