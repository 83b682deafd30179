//! NodePublishVolume / NodeUnpublishVolume: bind mounts from the staging path
//! (filesystems, NFS) or of the device file (block), read-only when asked.

use std::path::Path;

use csi_proto::csi::v1 as csi;
use tokio::time::Instant;

use super::{checked_path, NodeHost, NodeService};
use crate::capabilities::shape_of;
use crate::contexts::publish as ctx;
use crate::error::{Error, Result};
use crate::mount::{ensure_dir, ensure_file, remove_target, unmount_if_mounted, MountInfo, Mounter};
use crate::names;

impl<M: Mounter, H: NodeHost> NodeService<M, H> {
    pub(super) async fn publish(&self, req: csi::NodePublishVolumeRequest) -> Result<csi::NodePublishVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let target = checked_path("target path", &req.target_path)?.to_path_buf();
        let staging = checked_path("staging target path", &req.staging_target_path)?.to_path_buf();
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("volume capability is required".into()))?;
        let shape = shape_of(cap)?;
        let readonly = req.readonly || shape.reader_only;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        tracing::info!(volume = %id, target = %target.display(), readonly, "NodePublishVolume");
        if let Some(m) = self.mounter.mount_at(&target)? {
            if m.is_read_only() != readonly {
                return Err(Error::AlreadyExists(format!(
                    "{} is already published with a different read-only setting",
                    target.display()
                )));
            }
            self.verify_published_here(&id, &req.publish_context, &staging, &target, &m, shape.block).await?;
            return Ok(csi::NodePublishVolumeResponse {});
        }
        if shape.single_writer {
            self.refuse_second_writer(&id, &staging, &target, shape.block)?;
        }
        if shape.block {
            let by_id = req
                .publish_context
                .get(ctx::BY_ID)
                .cloned()
                .ok_or_else(|| Error::InvalidArgument("publish context lacks the device name".into()))?;
            let device = self.find_device(&by_id, Instant::now()).await?;
            if let Some(parent) = target.parent() {
                ensure_dir(parent)?;
            }
            ensure_file(&target)?;
            if let Err(e) = self.mounter.bind_mount(&device, &target, readonly, &[]).await {
                let _ = remove_target(&target);
                return Err(e.into());
            }
            return Ok(csi::NodePublishVolumeResponse {});
        }
        if self.mounter.mount_at(&staging)?.is_none() {
            return Err(Error::FailedPrecondition(format!("volume {id} is not staged at {}", staging.display())));
        }
        ensure_dir(&target)?;
        self.mounter.bind_mount(&staging, &target, readonly, &shape.mount_flags).await?;
        Ok(csi::NodePublishVolumeResponse {})
    }

    /// A mount already at the target answers a retry only if it is this volume: the
    /// staging mount for filesystems, the volume's device node for block.
    async fn verify_published_here(
        &self,
        id: &str,
        publish_context: &std::collections::HashMap<String, String>,
        staging: &Path,
        target: &Path,
        existing: &MountInfo,
        block: bool,
    ) -> Result<()> {
        let same = if block {
            let by_id = publish_context
                .get(ctx::BY_ID)
                .ok_or_else(|| Error::InvalidArgument("publish context lacks the device name".into()))?;
            let device = self.find_device(by_id, Instant::now()).await?;
            self.mounter.is_same_device_node(target, &device)
        } else {
            self.mounter
                .mount_at(staging)?
                .is_some_and(|s| s.major_minor == existing.major_minor && s.root == existing.root)
        };
        if same {
            return Ok(());
        }
        Err(Error::AlreadyExists(format!(
            "{} is already a mount of {} ({}), not of volume {id}",
            target.display(),
            existing.source,
            existing.root
        )))
    }

    /// SINGLE_NODE_SINGLE_WRITER: the volume may be published at one target only.
    fn refuse_second_writer(&self, id: &str, staging: &Path, target: &Path, block: bool) -> Result<()> {
        let mounts = self.mounter.mounts()?;
        let others: Vec<String> = if block {
            // A published block volume is a bind of the device node onto a file.
            let Some(stage) = mounts.iter().find(|m| m.target == staging) else { return Ok(()) };
            mounts
                .iter()
                .filter(|m| {
                    m.major_minor == stage.major_minor && m.target != staging && m.target != target && m.root != "/"
                })
                .map(|m| m.target.display().to_string())
                .collect()
        } else {
            let Some(stage) = mounts.iter().rev().find(|m| m.target == staging) else { return Ok(()) };
            mounts
                .iter()
                .filter(|m| {
                    m.major_minor == stage.major_minor
                        && m.root == stage.root
                        && m.target != staging
                        && m.target != target
                })
                .map(|m| m.target.display().to_string())
                .collect()
        };
        if others.is_empty() {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "volume {id} is single-writer and already published at {}",
            others.join(", ")
        )))
    }

    pub(super) async fn unpublish(
        &self,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> Result<csi::NodeUnpublishVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let target = checked_path("target path", &req.target_path)?.to_path_buf();
        let _guard = self.locks.try_lock(&req.volume_id)?;
        tracing::info!(volume = %req.volume_id, target = %target.display(), "NodeUnpublishVolume");
        unmount_if_mounted(self.mounter.as_ref(), &target).await?;
        remove_target(&target)?;
        Ok(csi::NodeUnpublishVolumeResponse {})
    }
}
