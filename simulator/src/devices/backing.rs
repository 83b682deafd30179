//! A volume's backing file: created sparse, copied sparse, grown (never shrunk)
//! and deleted together with everything that still refers to it.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use syskit::Cmd;
use tracing::{info, warn};

use super::error::{io_err, DeviceError, Result};
use super::files::{canonical_if_exists, remove_if_exists};
use super::names::check_name;
use super::{DeviceManager, DeviceMode, SLOW_COMMAND_TIMEOUT};

impl DeviceManager {
    /// Creates the sparse backing file. Idempotent; an existing file that is already
    /// large enough is left untouched (it holds the volume's data).
    pub async fn create_backing_file(&self, volume: &str, size: u64) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let path = self.backing_file(volume);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io_err("creating directory", dir))?;
        }
        // truncate(false): re-creating an existing volume must never lose data.
        tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .await
            .map_err(io_err("creating backing file", &path))?;
        self.grow_locked(volume, &path, size, false).await
    }

    /// Copies a file sparsely (a clone's or a snapshot's data), creating the target's
    /// directory; through the same runner as every other device command.
    pub async fn copy_sparse(&self, src: &Path, dst: &Path) -> Result<()> {
        if let Some(dir) = dst.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io_err("creating directory", dir))?;
        }
        Cmd::admin_tool("cp").arg("--sparse=always").arg(src).arg(dst).run(SLOW_COMMAND_TIMEOUT).await?;
        Ok(())
    }

    /// Grows the backing file; shrinking is an error because it would cut off data
    /// under a filesystem. Attached loop devices get their capacity refreshed so the
    /// guest sees the new size, as after a real online expansion.
    pub async fn grow_backing_file(&self, volume: &str, size: u64) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let path = self.backing_file(volume);
        self.grow_locked(volume, &path, size, true).await
    }

    async fn grow_locked(&self, volume: &str, path: &Path, size: u64, strict: bool) -> Result<()> {
        let current = tokio::fs::metadata(path).await.map_err(io_err("reading backing file", path))?.len();
        if size < current {
            if strict {
                return Err(DeviceError::Shrink { volume: volume.to_owned(), current, requested: size });
            }
            return Ok(());
        }
        if size > current {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .map_err(io_err("opening backing file", path))?;
            file.set_len(size).await.map_err(io_err("resizing backing file", path))?;
            info!(volume, from = current, to = size, "grew backing file");
        } else if !strict {
            return Ok(());
        }
        // An explicit grow refreshes even when the size is unchanged, so a grow
        // retried after a crash between set_len and the refresh still completes.
        self.refresh_capacity(path).await
    }

    /// Deletes the volume: stops its export, removes every by-id link that leads to
    /// it (so no guest keeps a link that could later resolve to a reused loop
    /// device), releases its loop devices, then removes the file. Idempotent.
    pub async fn delete_backing_file(&self, volume: &str) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let path = self.backing_file(volume);
        self.stop_export_locked(volume).await?;

        let loops = self.loops_at(&path).await?;
        let mut doomed: HashSet<PathBuf> = loops.iter().cloned().collect();
        if let Some(abs) = canonical_if_exists(&path).await? {
            doomed.insert(abs);
        }
        for (link, target) in self.all_links().await? {
            if doomed.contains(&target) {
                warn!(volume, link = %link.display(), "removing link of deleted volume");
                remove_if_exists(&link).await?;
            }
        }
        for dev in &loops {
            self.release_loop(&path, dev).await?;
        }
        remove_if_exists(&path).await?;

        let export = self.export_dir(volume);
        match self.mode {
            // In file mode the export directory *is* the RWX volume's data.
            DeviceMode::File => match tokio::fs::remove_dir_all(&export).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("removing export directory", &export)(e))
                }
                _ => {}
            },
            // Only an empty mount point is left; if it is somehow not empty, keep it
            // rather than delete data that may still belong to a live mount.
            DeviceMode::Loop => {
                if let Err(e) = tokio::fs::remove_dir(&export).await {
                    if e.kind() != io::ErrorKind::NotFound {
                        warn!(volume, error = %e, "left export directory in place");
                    }
                }
            }
        }
        info!(volume, "deleted volume");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::super::test_support::{Fixture, MIB};
    use super::*;

    #[tokio::test]
    async fn backing_file_is_sparse_grows_and_never_truncates() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        dm.create_backing_file("vol", 64 * MIB).await.unwrap();
        let path = dm.backing_file("vol");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 * MIB);
        assert!(meta.blocks() <= 8, "not sparse: {} blocks", meta.blocks());

        std::fs::write(&path, b"data").unwrap();
        dm.grow_backing_file("vol", 64 * MIB).await.unwrap();
        dm.create_backing_file("vol", 128 * MIB).await.unwrap();
        dm.create_backing_file("vol", MIB).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 * MIB);
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"data");

        dm.grow_backing_file("vol", 256 * MIB).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 256 * MIB);
        assert!(matches!(
            dm.grow_backing_file("vol", MIB).await,
            Err(DeviceError::Shrink { current, requested, .. })
                if current == 256 * MIB && requested == MIB
        ));
        assert!(dm.grow_backing_file("missing", MIB).await.is_err());

        dm.delete_backing_file("vol").await.unwrap();
        dm.delete_backing_file("vol").await.unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn copies_are_sparse_and_complete() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        dm.create_backing_file("src", 32 * MIB).await.unwrap();
        let src = dm.backing_file("src");
        std::fs::write(&src, b"head").unwrap();
        std::fs::OpenOptions::new().write(true).open(&src).unwrap().set_len(32 * MIB).unwrap();
        let dst = fx.path().join("snapshots/copy.img");
        dm.copy_sparse(&src, &dst).await.unwrap();
        let meta = std::fs::metadata(&dst).unwrap();
        assert_eq!(meta.len(), 32 * MIB);
        assert!(meta.blocks() <= 64, "not sparse: {} blocks", meta.blocks());
        assert_eq!(&std::fs::read(&dst).unwrap()[..4], b"head");
        let err = dm.copy_sparse(&fx.path().join("missing"), &dst).await.unwrap_err();
        assert!(matches!(err, DeviceError::Command(_)), "{err:?}");
    }
}
