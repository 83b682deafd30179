//! NodeStageVolume / NodeUnstageVolume.

use std::path::{Path, PathBuf};
use std::time::Duration;

use csi_proto::csi::v1 as csi;
use tokio::time::Instant;

use super::{NodeHost, NodeService};
use crate::capabilities::shape_of;
use crate::contexts::publish as ctx;
use crate::error::{Error, Result};
use crate::mount::{FsType, Mounter};
use crate::names;

/// A filesystem this much smaller than its device is grown at stage; less is
/// rounding (block size, allocation groups), not a restore into a larger claim.
const GROW_SLACK: u64 = 1 << 20;

/// Whether a publish/volume context describes an NFS export.
pub(super) fn is_shared(
    publish: &std::collections::HashMap<String, String>,
    volume: &std::collections::HashMap<String, String>,
) -> bool {
    publish.get(ctx::SHARED).map(String::as_str) == Some("true")
        || volume.get(crate::contexts::volume::SHARED).map(String::as_str) == Some("true")
}

impl<M: Mounter, H: NodeHost> NodeService<M, H> {
    /// The hot-plugged disk of a volume: the exact by-id link under `--root`.
    pub(super) async fn find_device(&self, by_id: &str, until: Instant) -> Result<PathBuf> {
        if by_id.is_empty() || by_id.contains('/') || by_id.starts_with('.') {
            return Err(Error::InvalidArgument(format!("publish context has an invalid device name {by_id:?}")));
        }
        let link = self.root.join("dev/disk/by-id").join(by_id);
        // The domain has the disk once the VMI says Ready; udev may lag a moment behind.
        loop {
            match tokio::fs::canonicalize(&link).await {
                Ok(dev) if self.mounter.is_block_device(&dev) => return Ok(dev),
                Ok(other) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} leads to {}, which is not a block device: refusing to use it as volume storage",
                        link.display(),
                        other.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::Unavailable(format!("device {} not present: {e}", link.display()))),
            }
        }
    }

    pub(super) async fn stage(
        &self,
        req: csi::NodeStageVolumeRequest,
        deadline: Instant,
    ) -> Result<csi::NodeStageVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let staging = self.checked_path("staging target path", &req.staging_target_path)?.to_path_buf();
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("volume capability is required".into()))?;
        let shape = shape_of(cap)?;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        tracing::info!(volume = %id, staging = %staging.display(), "NodeStageVolume");
        if is_shared(&req.publish_context, &req.volume_context) {
            return self
                .stage_shared(&req, &staging, &shape.mount_flags, deadline)
                .await
                .map(|_| csi::NodeStageVolumeResponse {});
        }
        if shape.shared {
            return Err(Error::InvalidArgument(format!("volume {id} is not an RWX volume")));
        }
        let by_id = req.publish_context.get(ctx::BY_ID).cloned().ok_or_else(|| {
            Error::InvalidArgument(
                "publish context lacks the device name; was the volume published by this driver?".into(),
            )
        })?;
        // Wait for KubeVirt to report the disk in the domain (a watch, bounded by the deadline).
        self.host.wait_attached(&self.node_id, &id, deadline).await?;
        let device = self.find_device(&by_id, deadline).await?;
        let want: u64 = req.publish_context.get(ctx::SIZE).and_then(|s| s.parse().ok()).unwrap_or(0);
        let have = self.mounter.device_size(&device).await?;
        if have < want {
            return Err(Error::FailedPrecondition(format!(
                "device {} ({have} bytes) is smaller than volume {id} ({want} bytes): refusing a disk that may not be this volume",
                device.display()
            )));
        }
        if shape.block {
            return Ok(csi::NodeStageVolumeResponse {});
        }
        let fs: FsType = shape.fs_type.as_deref().unwrap_or("ext4").parse()?;
        if let Some(m) = self.mounter.mount_at(&staging)? {
            let same = tokio::fs::canonicalize(&m.source).await.map(|s| s == device).unwrap_or(false);
            if !same {
                return Err(Error::FailedPrecondition(format!(
                    "{} is already mounted from {}, not {}",
                    staging.display(),
                    m.source,
                    device.display()
                )));
            }
            // A retry after a stage that mounted but did not get to grow the filesystem.
            self.grow_if_smaller(&id, &device, &staging, fs, have).await?;
            return Ok(csi::NodeStageVolumeResponse {});
        }
        if tokio::fs::metadata(&staging).await.is_err() {
            crate::mount::ensure_dir(&staging)?;
        }
        let formatted = self.mounter.format_if_blank(&device, fs, &[]).await?;
        if !formatted {
            self.mounter.check(&device, fs).await?;
            // ext4 grows best before it is mounted (no CAP_SYS_RESOURCE needed); the
            // others can only grow mounted, below.
            if fs == FsType::Ext4 {
                self.grow_if_smaller(&id, &device, &staging, fs, have).await?;
            }
        }
        self.mounter.mount(&device, &staging, Some(fs.as_str()), &stage_mount_options(fs, &shape.mount_flags)).await?;
        if !formatted && fs != FsType::Ext4 {
            self.grow_if_smaller(&id, &device, &staging, fs, have).await?;
        }
        tracing::info!(volume = %id, device = %device.display(), %fs, formatted, "staged");
        Ok(csi::NodeStageVolumeResponse {})
    }

    /// A volume restored from a snapshot or cloned into a larger claim carries the
    /// source's smaller filesystem, and the kubelet never calls NodeExpandVolume for it
    /// (the PV already has the size asked for): grow it to the device at stage.
    async fn grow_if_smaller(
        &self,
        id: &str,
        device: &Path,
        staging: &Path,
        fs: FsType,
        device_size: u64,
    ) -> Result<()> {
        let fs_size = self.mounter.filesystem_size(device, fs).await?;
        if fs_size.saturating_add(GROW_SLACK) >= device_size {
            return Ok(());
        }
        tracing::info!(volume = %id, device = %device.display(), %fs, fs_size, device_size, "growing a filesystem smaller than its device");
        Ok(self.mounter.resize(device, staging, fs).await?)
    }

    async fn stage_shared(
        &self,
        req: &csi::NodeStageVolumeRequest,
        staging: &Path,
        flags: &[String],
        deadline: Instant,
    ) -> Result<()> {
        let export_name = match req.publish_context.get(ctx::EXPORT) {
            Some(e) => e.clone(),
            None => self
                .host
                .host_pv_of(&req.volume_id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("volume {} has no host volume", req.volume_id)))?,
        };
        names::validate_volume_id(&export_name)?;
        let export = self.host.wait_export_ready(&export_name, deadline).await?;
        let wanted_source = format!("{}:{}", export.endpoint, export.path);
        if let Some(m) = self.mounter.mount_at(staging)? {
            if m.source == wanted_source && !self.mounter.is_stale(staging) {
                return Ok(());
            }
            // The share-manager moved (endpoint changed) or the mount went stale: mount afresh.
            tracing::warn!(volume = %req.volume_id, old = %m.source, new = %wanted_source, "replacing a stale or moved NFS mount");
            self.mounter.unmount(staging).await?;
        }
        crate::mount::ensure_dir(staging)?;
        let mut options = export.options.clone();
        for f in flags {
            options.push(',');
            options.push_str(f);
        }
        Ok(self.mounter.mount_nfs(&export.endpoint, &export.path, staging, &options).await?)
    }

    pub(super) async fn unstage(&self, req: csi::NodeUnstageVolumeRequest) -> Result<csi::NodeUnstageVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let staging = self.checked_path("staging target path", &req.staging_target_path)?.to_path_buf();
        let _guard = self.locks.try_lock(&req.volume_id)?;
        tracing::info!(volume = %req.volume_id, staging = %staging.display(), "NodeUnstageVolume");
        crate::mount::unmount_if_mounted(self.mounter.as_ref(), &staging).await?;
        Ok(csi::NodeUnstageVolumeResponse {})
    }
}

/// The options a filesystem volume is staged with: the StorageClass's mount
/// flags, and for xfs `nouuid`. A volume restored or cloned from a snapshot
/// carries its source's xfs UUID, and the kernel refuses to mount a second
/// filesystem with a UUID already mounted: without it, a restore could never
/// be staged on the VM that has its source.
fn stage_mount_options(fs: FsType, flags: &[String]) -> Vec<String> {
    let mut options = flags.to_vec();
    if fs == FsType::Xfs && !options.iter().any(|o| o == "nouuid") {
        options.push("nouuid".into());
    }
    options
}
