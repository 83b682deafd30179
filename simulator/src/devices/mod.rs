//! Fake KubeVirt disk hot-plug for the simulator.
//!
//! A Longhorn volume is a sparse file under `DIR/volumes/<volume>.img`. Hot-plugging
//! it into a VM gives the VM's fake root (`DIR/vms/<vm>/root`, the directory a CSI
//! node plugin is pointed at with `--root`) a `dev/disk/by-id/<link>` symlink to a
//! real block device, so the plugin can format, mount and resize it exactly as on a
//! real guest. RWX volumes are instead served from `DIR/exports/<volume>`, standing
//! in for a share-manager export.
//!
//! Two modes exist because loop devices need root:
//! * [`DeviceMode::Loop`]: every attachment is its own `/dev/loopN` backed by the
//!   volume file, and exports are ext4 loop mounts.
//! * [`DeviceMode::File`]: by-id links point straight at the backing file and exports
//!   are plain directories. It is never chosen as a silent fallback, because a plugin
//!   that expects a block device would then misbehave in confusing ways.
//!
//! Loop devices are identified by what they are backed by (`losetup --associated`)
//! and whether the kernel will auto-clear them, never by remembered state, so the
//! manager keeps working across simulator restarts (see [`DeviceManager::reconcile`]).
//!
//! One job per file, lower layers first: `error`, `names`, `files` (helpers);
//! `loops` (loop devices), `mounts` (the mount table), `links` (by-id links);
//! `vm_root` (a VM's identity files), `exports` (RWX exports), `hotplug`
//! (attach/detach); `backing` (a volume's file, whose deletion unplugs and
//! unexports it) and `reconcile` (restoring attachments after a restart);
//! `teardown` releases what a finished simulator left under its directory. This
//! file holds the manager itself: its state, path layout and per-volume lock.

mod backing;
mod error;
mod exports;
mod files;
mod hotplug;
mod links;
mod loops;
mod mounts;
mod names;
mod reconcile;
mod teardown;
mod vm_root;

#[cfg(test)]
mod loop_tests;
#[cfg(test)]
mod test_support;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use error::DeviceError;
use error::Result;
pub use names::check_name;
pub use teardown::release_host_resources;

/// Generous for losetup/mount, which normally finish in milliseconds; exists so a
/// wedged kernel or NFS-like hang cannot stall the simulator forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// mkfs and sparse copies take time proportional to the volume size.
const SLOW_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const LOOP_CONTROL: &str = "/dev/loop-control";

/// How volumes are presented to guests; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMode {
    Loop,
    File,
}

/// Creates and tracks fake hot-plug devices under one state directory.
///
/// Share it behind an `Arc`: operations on the same volume are serialised
/// internally (so, e.g., two attaches cannot both decide a loop device is unused),
/// while different volumes proceed concurrently.
#[derive(Debug)]
pub struct DeviceManager {
    state_dir: PathBuf,
    mode: DeviceMode,
    busy_volumes: Mutex<HashSet<String>>,
    tmp_seq: AtomicU64,
}

/// Releases a per-volume lock taken by [`DeviceManager::lock_volume`].
struct VolumeGuard<'a> {
    busy: &'a Mutex<HashSet<String>>,
    volume: String,
}

impl Drop for VolumeGuard<'_> {
    fn drop(&mut self) {
        lock_set(self.busy).remove(&self.volume);
    }
}

/// A panic elsewhere must not wedge every later device operation, and the set
/// stays consistent because each critical section is a single insert/remove.
fn lock_set(m: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeviceManager {
    pub fn new(state_dir: impl Into<PathBuf>, mode: DeviceMode) -> Self {
        Self { state_dir: state_dir.into(), mode, busy_volumes: Mutex::new(HashSet::new()), tmp_seq: AtomicU64::new(0) }
    }

    pub fn mode(&self) -> DeviceMode {
        self.mode
    }

    /// Checks that the mode can work here (Loop: euid 0 and an openable
    /// /dev/loop-control). Meant to be called once at start so a misconfiguration
    /// is reported up front rather than on the first hot-plug.
    pub fn check(&self) -> Result<()> {
        if self.mode == DeviceMode::File {
            return Ok(());
        }
        match effective_uid() {
            Ok(0) => {}
            Ok(uid) => {
                return Err(DeviceError::LoopUnavailable {
                    reason: format!("running with effective uid {uid}, not root"),
                })
            }
            Err(e) => {
                return Err(DeviceError::LoopUnavailable { reason: format!("cannot determine the effective uid: {e}") })
            }
        }
        // Opening it (not just stat-ing) also catches containers whose device
        // cgroup hides loop devices from an otherwise-root process.
        if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(LOOP_CONTROL) {
            return Err(DeviceError::LoopUnavailable { reason: format!("cannot open {LOOP_CONTROL}: {e}") });
        }
        Ok(())
    }

    /// Path of a volume's backing file. Does not validate `volume`; every async
    /// method does, so only callers building their own paths need [`check_name`].
    pub fn backing_file(&self, volume: &str) -> PathBuf {
        self.state_dir.join("volumes").join(format!("{volume}.img"))
    }

    /// The VM's fake root directory. Does not validate `vm` (see [`Self::backing_file`]).
    pub fn vm_root(&self, vm: &str) -> PathBuf {
        self.state_dir.join("vms").join(vm).join("root")
    }

    /// Where an RWX volume is exported. Does not validate `volume`.
    pub fn export_dir(&self, volume: &str) -> PathBuf {
        self.state_dir.join("exports").join(volume)
    }

    fn by_id_dir(&self, vm: &str) -> PathBuf {
        self.vm_root(vm).join("dev").join("disk").join("by-id")
    }

    /// Serialises work on one volume. A polling lock over a set of names needs no
    /// per-volume lock objects to create and clean up; contention is rare and
    /// short, so the 10 ms poll costs nothing noticeable.
    async fn lock_volume(&self, volume: &str) -> VolumeGuard<'_> {
        loop {
            let acquired = lock_set(&self.busy_volumes).insert(volume.to_owned());
            if acquired {
                return VolumeGuard { busy: &self.busy_volumes, volume: volume.to_owned() };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn effective_uid() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no parsable Uid line in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::test_support::{Fixture, MIB};
    use super::*;

    /// The simulator shares one manager across spawned tasks, so its futures must be
    /// Send; this fails to compile otherwise.
    #[test]
    fn manager_and_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        fn sync<T: Send + Sync>() {}
        sync::<DeviceManager>();
        let dm = DeviceManager::new("/nonexistent", DeviceMode::File);
        send(&dm.attach("vm", "v", "l"));
        send(&dm.detach("vm", "v", "l"));
        send(&dm.start_export("v"));
        send(&dm.delete_backing_file("v"));
        send(&dm.reconcile(&[]));
    }

    #[test]
    fn file_mode_needs_nothing() {
        assert!(DeviceManager::new("/x", DeviceMode::File).check().is_ok());
    }

    #[test]
    fn path_layout() {
        let dm = DeviceManager::new("/state", DeviceMode::File);
        assert_eq!(dm.backing_file("v"), PathBuf::from("/state/volumes/v.img"));
        assert_eq!(dm.vm_root("vm1"), PathBuf::from("/state/vms/vm1/root"));
        assert_eq!(dm.by_id_dir("vm1"), PathBuf::from("/state/vms/vm1/root/dev/disk/by-id"));
        assert_eq!(dm.export_dir("v"), PathBuf::from("/state/exports/v"));
    }

    #[tokio::test]
    async fn methods_validate_names_before_touching_paths() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        let invalid = |r: Result<_>| matches!(r, Err(DeviceError::InvalidName { .. }));
        assert!(invalid(dm.create_backing_file("../x", MIB).await));
        assert!(invalid(dm.grow_backing_file("a/b", MIB).await));
        assert!(invalid(dm.delete_backing_file("").await));
        assert!(invalid(dm.attach("vm", "../x", "l").await.map(|_| ())));
        assert!(invalid(dm.attach("../vm", "v", "l").await.map(|_| ())));
        assert!(invalid(dm.attach("vm", "v", "a/b").await.map(|_| ())));
        assert!(invalid(dm.detach("vm", "v", "..").await));
        assert!(invalid(dm.loop_devices_of("a/b").await.map(|_| ())));
        assert!(invalid(dm.attached_links("").await.map(|_| ())));
        assert!(invalid(dm.start_export("../x").await.map(|_| ())));
        assert!(invalid(dm.stop_export("a/b").await));
        assert!(invalid(dm.prepare_vm_root("a/b", "u", &[]).await));
        let nic = [("../eth0".to_owned(), "aa:bb".to_owned())];
        assert!(invalid(dm.prepare_vm_root("vm", "u", &nic).await));
        let bad = [("x".to_owned(), "../../v".to_owned(), "l".to_owned())];
        assert!(invalid(dm.reconcile(&bad).await));
        assert!(!fx.path().join("x").exists());
    }
}
