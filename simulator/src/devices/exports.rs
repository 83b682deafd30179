//! RWX exports, standing in for a share-manager: an ext4 loop mount of the
//! volume's file in loop mode, a plain directory in file mode.

use std::path::{Path, PathBuf};

use syskit::Cmd;
use tracing::{info, warn};

use super::error::{io_err, DeviceError, Result};
use super::files::{canonical_if_exists, create_dir_all};
use super::mounts::mount_source;
use super::names::check_name;
use super::{DeviceManager, DeviceMode, COMMAND_TIMEOUT, SLOW_COMMAND_TIMEOUT};

/// Stacked mounts on one export directory are unusual; this only bounds the loop.
const MAX_UNMOUNTS: usize = 8;

impl DeviceManager {
    /// Starts an RWX export: in loop mode, formats the backing file as ext4 unless
    /// blkid finds anything on it (data is never reformatted) and loop-mounts it at
    /// the export directory; in file mode just creates the directory. Idempotent.
    pub async fn start_export(&self, volume: &str) -> Result<PathBuf> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let dir = self.export_dir(volume);
        create_dir_all(&dir).await?;
        if self.mode == DeviceMode::File {
            return Ok(dir);
        }
        let file = self.backing_file(volume);
        let file_abs = tokio::fs::canonicalize(&file).await.map_err(io_err("exporting backing file", &file))?;
        let dir_abs = tokio::fs::canonicalize(&dir).await.map_err(io_err("resolving", &dir))?;

        if let Some(source) = mount_source(&dir_abs).await? {
            if self.loops_at(&file_abs).await?.contains(&source) {
                return Ok(dir);
            }
            return Err(DeviceError::Conflict(format!(
                "{} is already mounted from {}, not from volume {volume}",
                dir.display(),
                source.display()
            )));
        }

        if !has_signature(&file_abs).await? {
            Cmd::admin_tool("mkfs.ext4").args(["-q", "-F"]).arg(&file_abs).run(SLOW_COMMAND_TIMEOUT).await?;
            info!(volume, "formatted export as ext4");
        }
        if !self.live_loops_at(&file_abs).await?.is_empty() {
            warn!(volume, "volume is also hot-plugged as a block device; mounting it twice can corrupt it");
        }
        Cmd::admin_tool("mount").args(["-o", "loop"]).arg(&file_abs).arg(&dir_abs).run(COMMAND_TIMEOUT).await?;
        info!(volume, dir = %dir.display(), "export started");
        Ok(dir)
    }

    /// Stops an RWX export. A busy mount is detached lazily, so clients holding
    /// files open keep them until they close, like a share-manager going away.
    /// The directory is kept (in file mode it holds the data). Idempotent.
    pub async fn stop_export(&self, volume: &str) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        self.stop_export_locked(volume).await
    }

    pub(super) async fn stop_export_locked(&self, volume: &str) -> Result<()> {
        if self.mode == DeviceMode::File {
            return Ok(());
        }
        let dir = self.export_dir(volume);
        let Some(dir_abs) = canonical_if_exists(&dir).await? else {
            return Ok(());
        };
        for _ in 0..MAX_UNMOUNTS {
            if mount_source(&dir_abs).await?.is_none() {
                return Ok(());
            }
            if let Err(e) = Cmd::admin_tool("umount").arg(&dir_abs).run(COMMAND_TIMEOUT).await {
                warn!(volume, error = %e, "unmount failed, detaching lazily");
                Cmd::admin_tool("umount").arg("--lazy").arg(&dir_abs).run(COMMAND_TIMEOUT).await?;
            }
            info!(volume, "export stopped");
        }
        if mount_source(&dir_abs).await?.is_none() {
            return Ok(());
        }
        Err(DeviceError::Conflict(format!("{} is still mounted after {MAX_UNMOUNTS} unmounts", dir.display())))
    }
}

/// blkid exits 2 when it finds no signature at all. Anything it does find (a
/// filesystem, a partition table, LVM...) counts, so existing data is never
/// formatted over.
async fn has_signature(file_abs: &Path) -> Result<bool> {
    let cmd = Cmd::admin_tool("blkid").args(["--probe", "--output", "value"]).arg(file_abs);
    let out = cmd.output(COMMAND_TIMEOUT).await?;
    match out.code {
        Some(0) => Ok(true),
        Some(2) => Ok(false),
        _ => Err(cmd.failed(&out).into()),
    }
}
