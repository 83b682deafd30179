//! NodeGetVolumeStats, NodeExpandVolume and NodeGetVolumeHealth — all from the
//! node's own view (mounts, devices); no host API call.

use std::path::Path;

use csi::volume_health::VolumeHealthEntry;
use csi::VolumeHealthErrorType as Kind;
use csi_proto::csi::v1 as csi;

use super::{checked_path, volume_path, NodeHost, NodeService};
use crate::error::{Error, Result};
use crate::mount::{FsType, Mounter};
use crate::names;

fn usage(unit: csi::volume_usage::Unit, total: u64, available: u64, used: u64) -> csi::VolumeUsage {
    csi::VolumeUsage { available: available as i64, total: total as i64, used: used as i64, unit: unit as i32 }
}

impl<M: Mounter, H: NodeHost> NodeService<M, H> {
    fn is_block_target(path: &Path) -> Result<bool> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!("volume path {} does not exist", path.display())),
            _ => Error::Internal(format!("stat {}: {e}", path.display())),
        })?;
        use std::os::unix::fs::FileTypeExt;
        Ok(meta.file_type().is_block_device() || meta.is_file())
    }

    pub(super) async fn volume_stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path)?;
        if Self::is_block_target(path)? {
            let size = self.mounter.device_size(path).await?;
            return Ok(csi::NodeGetVolumeStatsResponse {
                usage: vec![usage(csi::volume_usage::Unit::Bytes, size, 0, 0)],
            });
        }
        if self.mounter.mount_at(path)?.is_none() {
            return Err(Error::NotFound(format!("volume {} is not mounted at {}", req.volume_id, path.display())));
        }
        if self.mounter.is_stale(path) {
            return Err(Error::Unavailable(format!("the mount at {} is stale", path.display())));
        }
        let s = self.mounter.stats(path)?;
        Ok(csi::NodeGetVolumeStatsResponse {
            usage: vec![
                usage(csi::volume_usage::Unit::Bytes, s.total_bytes, s.available_bytes, s.used_bytes),
                usage(csi::volume_usage::Unit::Inodes, s.total_inodes, s.free_inodes, s.used_inodes),
            ],
        })
    }

    pub(super) async fn expand(&self, req: csi::NodeExpandVolumeRequest) -> Result<csi::NodeExpandVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path)?.to_path_buf();
        let block_cap = match req.volume_capability.as_ref() {
            Some(cap) => crate::capabilities::shape_of(cap)?.block,
            None => false,
        };
        let _guard = self.locks.try_lock(&req.volume_id)?;
        if block_cap || Self::is_block_target(&path)? {
            // The guest block device grows by itself when the host volume does.
            let size = self.mounter.device_size(&path).await.unwrap_or(0);
            return Ok(csi::NodeExpandVolumeResponse { capacity_bytes: size as i64 });
        }
        let mount = self
            .mounter
            .mount_at(&path)?
            .ok_or_else(|| Error::NotFound(format!("volume {} is not mounted at {}", req.volume_id, path.display())))?;
        if mount.fs_type.starts_with("nfs") {
            return Err(Error::InvalidArgument(format!(
                "volume {} is an NFS export; it cannot be expanded here",
                req.volume_id
            )));
        }
        // A publish path is a bind of the staging mount: resize via the device it came from.
        let device = std::path::PathBuf::from(&mount.source);
        let fs: FsType = mount.fs_type.parse()?;
        tracing::info!(volume = %req.volume_id, device = %device.display(), %fs, "NodeExpandVolume");
        self.mounter.resize(&device, &path, fs).await?;
        let size = self.mounter.device_size(&device).await?;
        Ok(csi::NodeExpandVolumeResponse { capacity_bytes: size as i64 })
    }

    pub(super) async fn volume_health(
        &self,
        req: csi::NodeGetVolumeHealthRequest,
    ) -> Result<csi::NodeGetVolumeHealthResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let mut statuses = Vec::new();
        for (field, p) in
            [("volume publish path", &req.volume_publish_path), ("staging target path", &req.staging_target_path)]
        {
            if p.is_empty() {
                continue;
            }
            let path = checked_path(field, p)?;
            if let Some(m) = self.mounter.mount_at(path)? {
                if self.mounter.is_stale(path) {
                    statuses.push(VolumeHealthEntry {
                        status: Kind::Inaccessible as i32,
                        reason: "StaleMount".into(),
                        message: format!("{} is stale", path.display()),
                    });
                } else if m.source.starts_with("/dev/") && !Path::new(&m.source).exists() {
                    statuses.push(VolumeHealthEntry {
                        status: Kind::Inaccessible as i32,
                        reason: "DeviceGone".into(),
                        message: format!("device {} behind {} is gone", m.source, path.display()),
                    });
                }
            }
        }
        Ok(csi::NodeGetVolumeHealthResponse {
            volume_health: Some(csi::VolumeHealth { volume_id: req.volume_id, health_statuses: statuses }),
        })
    }
}
