//! An in-memory [`Mounter`] for the Node service's unit tests: no root, no
//! loop devices, no tools. It keeps a mount table and per-device filesystem
//! signatures with the same rules the Linux implementation follows (never
//! format a device holding something, bind mounts of mounts share their
//! device number, unmount removes the whole stack), and counts what was done
//! so a test can prove, e.g., that a retry did not format twice.
//!
//! Devices are real files in a test's temporary directory (so by-id symlinks
//! resolve as on a node); only their "contents" live here.

use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{FsStats, FsType, MountError, MountInfo, Mounter};

#[derive(Debug, Clone)]
struct Device {
    size: u64,
    /// The signature `probe` reports (`None`: blank).
    signature: Option<String>,
    /// Bytes the filesystem on it spans (grows with `resize`).
    fs_size: u64,
    major_minor: String,
    corrupt: bool,
}

#[derive(Debug, Default)]
struct State {
    devices: HashMap<PathBuf, Device>,
    mounts: Vec<MountInfo>,
    stale: HashSet<PathBuf>,
    busy: HashSet<PathBuf>,
    formats: Vec<(PathBuf, FsType)>,
    checks: usize,
    resizes: Vec<PathBuf>,
    next_minor: u32,
}

/// What a test asserts on after driving the Node service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    pub formats: usize,
    pub checks: usize,
    pub resizes: usize,
    pub mounts: usize,
}

#[derive(Debug, Default)]
pub struct FakeMounter {
    state: Mutex<State>,
}

fn not_found(op: &'static str, path: &Path) -> MountError {
    MountError::io(op, path, io::Error::new(ErrorKind::NotFound, "no such file or directory"))
}

/// The fake's view of a path: the file's canonical form when it exists, so a
/// by-id symlink and the device it points to are the same device.
fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

impl FakeMounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a device file (which must exist) of `size` bytes, blank or
    /// already holding `signature` (a filesystem filling the device).
    pub fn add_device(&self, path: &Path, size: u64, signature: Option<&str>) {
        self.add_device_with_fs(path, size, signature, size);
    }

    /// Like [`FakeMounter::add_device`], with a filesystem smaller than the device
    /// (a restored or cloned volume in a larger claim).
    pub fn add_device_with_fs(&self, path: &Path, size: u64, signature: Option<&str>, fs_size: u64) {
        let mut s = self.state();
        s.next_minor += 1;
        let major_minor = format!("7:{}", s.next_minor);
        s.devices.insert(
            key(path),
            Device { size, signature: signature.map(str::to_owned), fs_size, major_minor, corrupt: false },
        );
    }

    /// The host grew the volume: the device is larger, its filesystem not yet.
    pub fn grow_device(&self, path: &Path, size: u64) {
        if let Some(d) = self.state().devices.get_mut(&key(path)) {
            d.size = size;
        }
    }

    pub fn mark_corrupt(&self, path: &Path) {
        if let Some(d) = self.state().devices.get_mut(&key(path)) {
            d.corrupt = true;
        }
    }

    pub fn mark_stale(&self, target: &Path) {
        self.state().stale.insert(target.to_owned());
    }

    pub fn mark_busy(&self, target: &Path) {
        self.state().busy.insert(target.to_owned());
    }

    pub fn signature(&self, path: &Path) -> Option<String> {
        self.state().devices.get(&key(path)).and_then(|d| d.signature.clone())
    }

    pub fn filesystem_size(&self, path: &Path) -> Option<u64> {
        self.state().devices.get(&key(path)).map(|d| d.fs_size)
    }

    pub fn counts(&self) -> Counts {
        let s = self.state();
        Counts { formats: s.formats.len(), checks: s.checks, resizes: s.resizes.len(), mounts: s.mounts.len() }
    }

    /// Every mount stacked at `target`, bottom first.
    pub fn mounts_at(&self, target: &Path) -> Vec<MountInfo> {
        self.state().mounts.iter().filter(|m| m.target == target).cloned().collect()
    }

    /// Mounts something that is not this driver's (another volume, a tmpfs) at `target`.
    pub fn mount_foreign(&self, target: &Path, source: &str) {
        let mut s = self.state();
        s.next_minor += 1;
        let major_minor = format!("0:{}", 100 + s.next_minor);
        s.mounts.push(MountInfo {
            source: source.to_owned(),
            target: target.to_owned(),
            fs_type: "tmpfs".into(),
            options: vec!["rw".into()],
            root: "/".into(),
            major_minor,
        });
    }
}

fn options_with(readonly: bool, extra: &[String]) -> Vec<String> {
    let mut options = vec![if readonly { "ro".to_owned() } else { "rw".to_owned() }];
    options.extend(extra.iter().filter(|o| *o != "ro" && *o != "rw").cloned());
    options
}

fn require_dir(target: &Path) -> Result<(), MountError> {
    if target.is_dir() {
        Ok(())
    } else {
        Err(not_found("mount on", target))
    }
}

impl Mounter for FakeMounter {
    async fn probe(&self, device: &Path) -> Result<Option<String>, MountError> {
        let s = self.state();
        let d = s.devices.get(&key(device)).ok_or_else(|| not_found("probe", device))?;
        Ok(d.signature.clone())
    }

    async fn format_if_blank(&self, device: &Path, fs: FsType, _mkfs_options: &[String]) -> Result<bool, MountError> {
        let mut s = self.state();
        let d = s.devices.get_mut(&key(device)).ok_or_else(|| not_found("format", device))?;
        match d.signature.as_deref() {
            None => {
                d.signature = Some(fs.as_str().to_owned());
                d.fs_size = d.size;
                s.formats.push((device.to_owned(), fs));
                Ok(true)
            }
            Some(found) if found == fs.as_str() => Ok(false),
            Some(found) => {
                Err(MountError::DeviceHoldsOtherFs { device: device.to_owned(), found: found.to_owned(), wanted: fs })
            }
        }
    }

    async fn check(&self, device: &Path, fs: FsType) -> Result<(), MountError> {
        let mut s = self.state();
        s.checks += 1;
        let d = s.devices.get(&key(device)).ok_or_else(|| not_found("check", device))?;
        if d.corrupt {
            return Err(MountError::Corrupt { device: device.to_owned(), fs, detail: "fake corruption".into() });
        }
        Ok(())
    }

    async fn mount(
        &self,
        source: &Path,
        target: &Path,
        fs_type: Option<&str>,
        options: &[String],
    ) -> Result<(), MountError> {
        require_dir(target)?;
        let mut s = self.state();
        let d = s.devices.get(&key(source)).ok_or_else(|| not_found("mount", source))?.clone();
        let on_device = d.signature.clone().unwrap_or_default();
        if let Some(wanted) = fs_type.filter(|t| *t != on_device) {
            return Err(MountError::CommandFailed {
                cmd: format!("mount -t {wanted} {} {}", source.display(), target.display()),
                code: Some(32),
                stderr: format!("wrong fs type: the device holds {on_device:?}"),
            });
        }
        let readonly = options.iter().any(|o| o == "ro");
        s.mounts.push(MountInfo {
            source: source.display().to_string(),
            target: target.to_owned(),
            fs_type: on_device,
            options: options_with(readonly, options),
            root: "/".into(),
            major_minor: d.major_minor,
        });
        Ok(())
    }

    async fn bind_mount(
        &self,
        source: &Path,
        target: &Path,
        readonly: bool,
        options: &[String],
    ) -> Result<(), MountError> {
        if !target.exists() {
            return Err(not_found("bind onto", target));
        }
        let mut s = self.state();
        let below = s.mounts.iter().rev().find(|m| m.target == source).cloned();
        let info = match below {
            // A bind of a mount point shows the same filesystem at another place.
            Some(m) => MountInfo { target: target.to_owned(), options: options_with(readonly, options), ..m },
            None => match s.devices.get(&key(source)) {
                // A bind of a device node: the device file's filesystem (devtmpfs), rooted at the node.
                Some(_) => MountInfo {
                    source: "devtmpfs".into(),
                    target: target.to_owned(),
                    fs_type: "devtmpfs".into(),
                    options: options_with(readonly, options),
                    root: key(source).display().to_string(),
                    major_minor: "0:5".into(),
                },
                None if source.exists() => MountInfo {
                    source: "/dev/root".into(),
                    target: target.to_owned(),
                    fs_type: "ext4".into(),
                    options: options_with(readonly, options),
                    root: source.display().to_string(),
                    major_minor: "0:1".into(),
                },
                None => return Err(not_found("bind", source)),
            },
        };
        s.mounts.push(info);
        Ok(())
    }

    async fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let mut s = self.state();
        if !s.mounts.iter().any(|m| m.target == target) {
            return Err(MountError::NotMounted { path: target.to_owned() });
        }
        if s.busy.contains(target) {
            return Err(MountError::Busy { path: target.to_owned(), detail: "target is busy.".into() });
        }
        s.mounts.retain(|m| m.target != target);
        s.stale.remove(target);
        Ok(())
    }

    fn mounts(&self) -> Result<Vec<MountInfo>, MountError> {
        Ok(self.state().mounts.clone())
    }

    fn mount_at(&self, target: &Path) -> Result<Option<MountInfo>, MountError> {
        Ok(self.state().mounts.iter().rev().find(|m| m.target == target).cloned())
    }

    async fn resize(&self, device: &Path, _mount_point: &Path, _fs: FsType) -> Result<(), MountError> {
        let mut s = self.state();
        let d = s.devices.get_mut(&key(device)).ok_or_else(|| not_found("resize", device))?;
        d.fs_size = d.size;
        s.resizes.push(device.to_owned());
        Ok(())
    }

    async fn filesystem_size(&self, device: &Path, _fs: FsType) -> Result<u64, MountError> {
        let s = self.state();
        let d = s.devices.get(&key(device)).ok_or_else(|| not_found("read superblock of", device))?;
        Ok(d.fs_size)
    }

    fn stats(&self, path: &Path) -> Result<FsStats, MountError> {
        let s = self.state();
        let m = s.mounts.iter().rev().find(|m| m.target == path).ok_or_else(|| not_found("statvfs", path))?;
        let total = s.devices.get(&key(Path::new(&m.source))).map_or(1 << 30, |d| d.fs_size);
        Ok(FsStats {
            total_bytes: total,
            available_bytes: total / 2,
            used_bytes: total / 2,
            total_inodes: 1024,
            free_inodes: 1000,
            used_inodes: 24,
            block_size: 4096,
        })
    }

    async fn device_size(&self, device: &Path) -> Result<u64, MountError> {
        let s = self.state();
        if let Some(d) = s.devices.get(&key(device)) {
            return Ok(d.size);
        }
        // A block publish target: the device bound onto it.
        let bound = s.mounts.iter().rev().find(|m| m.target == device && m.fs_type == "devtmpfs");
        bound.and_then(|m| s.devices.get(Path::new(&m.root))).map(|d| d.size).ok_or_else(|| {
            MountError::io("size", device, io::Error::new(ErrorKind::InvalidInput, "not a block device"))
        })
    }

    fn is_stale(&self, target: &Path) -> bool {
        self.state().stale.contains(target)
    }

    fn is_same_device_node(&self, a: &Path, b: &Path) -> bool {
        let s = self.state();
        let device = key(b);
        if !s.devices.contains_key(&device) {
            return false;
        }
        key(a) == device || s.mounts.iter().rev().find(|m| m.target == a).is_some_and(|m| Path::new(&m.root) == device)
    }

    async fn mount_nfs(&self, server: &str, export: &str, target: &Path, options: &str) -> Result<(), MountError> {
        require_dir(target)?;
        let mut s = self.state();
        s.next_minor += 1;
        let major_minor = format!("0:{}", 200 + s.next_minor);
        let readonly = options.split(',').any(|o| o == "ro");
        let extra: Vec<String> = options.split(',').filter(|o| !o.is_empty()).map(str::to_owned).collect();
        s.mounts.push(MountInfo {
            source: format!("{server}:{export}"),
            target: target.to_owned(),
            fs_type: "nfs4".into(),
            options: options_with(readonly, &extra),
            root: "/".into(),
            major_minor,
        });
        Ok(())
    }
}
