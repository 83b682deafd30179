//! Hot-plug and unplug: a loop device (or, in file mode, the backing file
//! itself) plus the by-id link a guest finds it by.

use std::path::PathBuf;

use tracing::{debug, info, warn};

use super::error::{io_err, Result};
use super::files::{read_link_if_exists, remove_if_exists};
use super::mounts::mounted_sources;
use super::names::check_name;
use super::{loops, DeviceManager, DeviceMode};

impl DeviceManager {
    /// Hot-plugs `volume` into `vm`: gives the guest a block device and a by-id link
    /// to it, and returns the device path (the backing file itself in file mode).
    ///
    /// Idempotent: a link that already resolves to a live loop device of this volume
    /// is kept. A stale link (device gone, or now backing something else, e.g. after
    /// a host reboot) is replaced. A loop device of this volume that nothing links to
    /// (left by a crash between creating it and linking it) is reused instead of
    /// leaking a new one.
    pub async fn attach(&self, vm: &str, volume: &str, link_name: &str) -> Result<PathBuf> {
        check_name("vm", vm)?;
        check_name("volume", volume)?;
        check_name("link", link_name)?;
        let _guard = self.lock_volume(volume).await;
        self.attach_locked(vm, volume, link_name).await
    }

    async fn attach_locked(&self, vm: &str, volume: &str, link_name: &str) -> Result<PathBuf> {
        let file = self.backing_file(volume);
        let file_abs = tokio::fs::canonicalize(&file).await.map_err(io_err("attaching backing file", &file))?;
        let by_id = self.by_id_dir(vm);
        let link = by_id.join(link_name);
        let current = read_link_if_exists(&link).await?;

        let (device, created) = match self.mode {
            DeviceMode::File => {
                if current.as_deref() == Some(file_abs.as_path()) {
                    return Ok(file_abs);
                }
                (file_abs.clone(), false)
            }
            DeviceMode::Loop => {
                let live = self.live_loops_at(&file_abs).await?;
                if let Some(target) = &current {
                    if live.contains(target) {
                        debug!(vm, volume, link = link_name, "already attached");
                        return Ok(target.clone());
                    }
                }
                match self.orphan_loops(&live).await?.into_iter().next() {
                    Some(dev) => {
                        info!(vm, volume, device = %dev.display(), "reusing unlinked loop device");
                        (dev, false)
                    }
                    None => (loops::create(&file_abs).await?, true),
                }
            }
        };
        if let Some(old) = &current {
            warn!(vm, volume, link = link_name, old = %old.display(), "replacing stale link");
        }
        if let Err(e) = self.place_link(&by_id, &link, &device).await {
            if created {
                if let Err(cleanup) = self.release_loop(&file_abs, &device).await {
                    warn!(device = %device.display(), error = %cleanup, "could not release loop device");
                }
            }
            return Err(e);
        }
        info!(vm, volume, link = link_name, device = %device.display(), "attached");
        Ok(device)
    }

    /// Unplugs: removes the link and releases its loop device with `losetup -d`,
    /// even if the guest still has it mounted. The kernel then only marks the device
    /// auto-clear and frees it when the last user closes it, which is what a real
    /// surprise unplug looks like to a guest (I/O keeps working until unmount).
    /// Unlinked, unmounted loop devices of the volume are released as well.
    /// Idempotent.
    pub async fn detach(&self, vm: &str, volume: &str, link_name: &str) -> Result<()> {
        check_name("vm", vm)?;
        check_name("volume", volume)?;
        check_name("link", link_name)?;
        let _guard = self.lock_volume(volume).await;
        let link = self.by_id_dir(vm).join(link_name);
        let current = read_link_if_exists(&link).await?;
        if remove_if_exists(&link).await? {
            info!(vm, volume, link = link_name, "detached");
        }
        if self.mode == DeviceMode::File {
            return Ok(());
        }
        let file = self.backing_file(volume);
        let loops = self.loops_at(&file).await?;
        if let Some(target) = current {
            // A link that now points at another volume's device (stale after a
            // reboot) must not take that device down with it.
            let referenced = self.link_targets().await?;
            if loops.contains(&target) && !referenced.contains(&target) {
                self.release_loop(&file, &target).await?;
            }
        }
        self.release_orphans_locked(volume).await
    }

    /// Live devices that no by-id link points at and nothing has mounted.
    async fn orphan_loops(&self, live: &[PathBuf]) -> Result<Vec<PathBuf>> {
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let referenced = self.link_targets().await?;
        let mounted = mounted_sources().await?;
        Ok(live.iter().filter(|dev| !referenced.contains(*dev) && !mounted.contains(*dev)).cloned().collect())
    }

    /// Releases the volume's live loop devices that nothing uses. The caller
    /// holds the volume's lock.
    pub(super) async fn release_orphans_locked(&self, volume: &str) -> Result<()> {
        let file = self.backing_file(volume);
        let live = self.live_loops_at(&file).await?;
        for dev in self.orphan_loops(&live).await? {
            info!(volume, device = %dev.display(), "releasing unlinked loop device");
            self.release_loop(&file, &dev).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Fixture, MIB};
    use super::*;

    #[tokio::test]
    async fn file_mode_attach_detach_and_export() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        assert!(dm.attach("vm1", "vol", "disk-1").await.is_err(), "no backing file yet");
        dm.create_backing_file("vol", 8 * MIB).await.unwrap();
        let file = dm.backing_file("vol").canonicalize().unwrap();

        let dev = dm.attach("vm1", "vol", "disk-1").await.unwrap();
        assert_eq!(dev, file);
        assert_eq!(dm.attach("vm1", "vol", "disk-1").await.unwrap(), file);
        let link = dm.vm_root("vm1").join("dev/disk/by-id/disk-1");
        assert_eq!(std::fs::read_link(&link).unwrap(), file);
        assert_eq!(dm.attached_links("vm1").await.unwrap(), vec![("disk-1".to_owned(), file.clone())]);
        assert!(dm.loop_devices_of("vol").await.unwrap().is_empty());

        // A stale link (e.g. left from another volume) is replaced.
        std::os::unix::fs::symlink("/dev/null", dm.vm_root("vm1").join("dev/disk/by-id/disk-2")).unwrap();
        assert_eq!(dm.attach("vm1", "vol", "disk-2").await.unwrap(), file);
        dm.detach("vm1", "vol", "disk-2").await.unwrap();

        dm.detach("vm1", "vol", "disk-1").await.unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert!(dm.attached_links("vm1").await.unwrap().is_empty());
        dm.detach("vm1", "vol", "disk-1").await.unwrap();
        assert!(dm.attached_links("never-prepared").await.unwrap().is_empty());

        let export = dm.start_export("vol").await.unwrap();
        assert_eq!(export, dm.export_dir("vol"));
        assert!(export.is_dir());
        std::fs::write(export.join("f"), b"x").unwrap();
        assert_eq!(dm.start_export("vol").await.unwrap(), export);
        dm.stop_export("vol").await.unwrap();
        dm.stop_export("vol").await.unwrap();
        assert!(export.join("f").exists(), "file mode keeps export data on stop");

        // Deleting an attached volume unplugs it and removes its export data.
        dm.attach("vm1", "vol", "disk-1").await.unwrap();
        dm.delete_backing_file("vol").await.unwrap();
        assert!(dm.attached_links("vm1").await.unwrap().is_empty());
        assert!(!export.exists());
        assert!(!dm.backing_file("vol").exists());
    }
}
