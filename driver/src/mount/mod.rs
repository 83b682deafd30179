//! Node-side filesystem plumbing: probing, formatting, checking, mounting,
//! growing and measuring the volumes the Node service stages and publishes,
//! and mounting RWX exports over NFS.
//!
//! The [`Mounter`] trait is what the Node service is written against so its
//! tests can swap in a fake; [`LinuxMounter`] is the real thing and shells out
//! to the same tools an administrator would use, so its behaviour matches what
//! operators can reproduce by hand.

/// An in-memory mounter for tests and the fuzz harness (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod linux;
mod nfs;
mod targets;

#[cfg(test)]
mod root_tests;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use syskit::mountinfo::MOUNTINFO_PATH;
use syskit::{CommandError, MountinfoError};

pub use linux::LinuxMounter;
pub use nfs::NfsMounter;
pub use syskit::MountInfo;
pub use targets::{ensure_dir, ensure_file, remove_target, unmount_if_mounted};

/// Filesystems the driver creates and manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    Ext4,
    Xfs,
    Btrfs,
}

impl FsType {
    pub const ALL: [FsType; 3] = [FsType::Ext4, FsType::Xfs, FsType::Btrfs];

    /// The name used by `blkid`, `mount -t` and the CSI `fs_type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsType {
    type Err = MountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Storage classes are hand-written; "XFS" is an obvious intent, so
        // accept any case rather than fail a volume on capitalisation.
        FsType::ALL
            .into_iter()
            .find(|fs| fs.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| MountError::UnsupportedFs { requested: s.to_owned() })
    }
}

fn supported_list() -> String {
    FsType::ALL.map(FsType::as_str).join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("unsupported filesystem type {requested:?} (supported: {})", supported_list())]
    UnsupportedFs { requested: String },

    /// `code` is `None` when the command was killed by a signal.
    #[error("`{cmd}` failed (exit status {}): {stderr}", code.map_or_else(|| "none: killed by signal".to_owned(), |c| c.to_string()))]
    CommandFailed { cmd: String, code: Option<i32>, stderr: String },

    /// The kernel refused an operation for want of a capability the node plugin lacks.
    #[error("`{cmd}` was refused by the kernel: {what} needs {capability}, which this node plugin does not have (run it privileged); it said: {detail}")]
    MissingCapability { cmd: String, what: &'static str, capability: &'static str, detail: String },

    #[error("`{cmd}` did not finish within {after:?} and was killed")]
    Timeout { cmd: String, after: Duration },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("refusing to use {}: it already holds {found:?}, not {wanted}; it will not be reformatted", device.display())]
    DeviceHoldsOtherFs { device: PathBuf, found: String, wanted: FsType },

    #[error("nothing is mounted at {}", path.display())]
    NotMounted { path: PathBuf },

    #[error("{} is busy: {detail}", path.display())]
    Busy { path: PathBuf, detail: String },

    #[error("{fs} filesystem on {} is damaged and cannot be repaired automatically: {detail}", device.display())]
    Corrupt { device: PathBuf, fs: FsType, detail: String },

    /// Output from the kernel or a tool that does not have the expected shape.
    #[error("unexpected output from {what}: {detail}")]
    Malformed { what: String, detail: String },
}

impl MountError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        MountError::Io { op, path: path.to_owned(), source }
    }
}

/// The one place where the shared runner's errors become the driver's.
impl From<CommandError> for MountError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Start { program, source } => MountError::Io { op: "start", path: program, source },
            CommandError::Wait { program, source } => MountError::Io { op: "wait for", path: program, source },
            CommandError::Timeout { cmd, after } => MountError::Timeout { cmd, after },
            CommandError::Failed { cmd, code, diagnostic } => {
                MountError::CommandFailed { cmd, code, stderr: diagnostic }
            }
        }
    }
}

/// Likewise for the shared mount table parser.
impl From<MountinfoError> for MountError {
    fn from(err: MountinfoError) -> Self {
        match err {
            MountinfoError::Read { source } => MountError::io("read", Path::new(MOUNTINFO_PATH), source),
            MountinfoError::Malformed { detail } => MountError::Malformed { what: MOUNTINFO_PATH.to_owned(), detail },
        }
    }
}

/// Usage figures from `statvfs`, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    /// Space an unprivileged writer can still use.
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
    /// The unit the byte figures were counted in (`f_frsize`).
    pub block_size: u64,
}

/// Filesystem operations the Node service needs.
///
/// Methods return `Send` futures so a generic `M: Mounter` can be driven from
/// a multi-threaded gRPC server.
pub trait Mounter: Send + Sync {
    /// The signature on `device`: `None` if blank, the filesystem type
    /// (`"ext4"`, `"swap"`, `"crypto_LUKS"`, ...) if one is found,
    /// `"partition-table"` for a partitioned device and `"unknown"` when
    /// something is there but cannot be named.
    fn probe(&self, device: &Path) -> impl Future<Output = Result<Option<String>, MountError>> + Send;

    /// Creates `fs` on `device` only if it is blank. Returns whether it
    /// formatted. A device already holding `fs` is left alone; one holding
    /// anything else yields [`MountError::DeviceHoldsOtherFs`].
    fn format_if_blank(
        &self,
        device: &Path,
        fs: FsType,
        mkfs_options: &[String],
    ) -> impl Future<Output = Result<bool, MountError>> + Send;

    /// Pre-mount consistency check; [`MountError::Corrupt`] if the
    /// filesystem needs a human. A device that is already mounted is not
    /// checked.
    fn check(&self, device: &Path, fs: FsType) -> impl Future<Output = Result<(), MountError>> + Send;

    /// `mount [-t fs_type] [-o options] source target`. Does not create `target`.
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fs_type: Option<&str>,
        options: &[String],
    ) -> impl Future<Output = Result<(), MountError>> + Send;

    /// Bind-mounts `source` (a directory or a device node) onto `target`,
    /// applying `readonly` and per-mount `options` (e.g. "nosuid").
    fn bind_mount(
        &self,
        source: &Path,
        target: &Path,
        readonly: bool,
        options: &[String],
    ) -> impl Future<Output = Result<(), MountError>> + Send;

    /// Removes every mount stacked on `target`. [`MountError::NotMounted`]
    /// if there was none to begin with.
    fn unmount(&self, target: &Path) -> impl Future<Output = Result<(), MountError>> + Send;

    /// All mounts visible to this process, in kernel order.
    fn mounts(&self) -> Result<Vec<MountInfo>, MountError>;

    /// The topmost mount whose mount point is exactly `target`.
    fn mount_at(&self, target: &Path) -> Result<Option<MountInfo>, MountError>;

    /// Grows the filesystem to fill its (already enlarged) device: mounted at
    /// `mount_point` (every type), or, for ext4 only, not mounted at all.
    fn resize(
        &self,
        device: &Path,
        mount_point: &Path,
        fs: FsType,
    ) -> impl Future<Output = Result<(), MountError>> + Send;

    /// Bytes the filesystem on `device` spans, from its superblock (mounted or
    /// not): less than the device's size when the device grew under it (a
    /// volume restored or cloned into a larger claim).
    fn filesystem_size(&self, device: &Path, fs: FsType) -> impl Future<Output = Result<u64, MountError>> + Send;

    /// Usage of the filesystem containing `path`.
    fn stats(&self, path: &Path) -> Result<FsStats, MountError>;

    /// Size of a block device in bytes.
    fn device_size(&self, device: &Path) -> impl Future<Output = Result<u64, MountError>> + Send;

    /// Whether `target` looks like a mount whose backing store has gone away
    /// (stat fails with ENOTCONN, EIO or ESTALE).
    fn is_stale(&self, target: &Path) -> bool;

    /// Whether `path` is a block device node (not a file or anything else a link could name).
    fn is_block_device(&self, path: &Path) -> bool;

    /// Whether `a` is the block device node `b` (or a bind of it): same device
    /// number, and both really device nodes.
    fn is_same_device_node(&self, a: &Path, b: &Path) -> bool;

    /// Mounts the NFS export `server:export` at `target` (which must exist)
    /// with `options` (comma-separated, as `mount -o` takes them).
    fn mount_nfs(
        &self,
        server: &str,
        export: &str,
        target: &Path,
        options: &str,
    ) -> impl Future<Output = Result<(), MountError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_type_round_trips_and_ignores_case() {
        for fs in FsType::ALL {
            assert_eq!(fs.to_string().parse::<FsType>().ok(), Some(fs));
        }
        assert_eq!("XFS".parse::<FsType>().ok(), Some(FsType::Xfs));
    }

    #[test]
    fn unsupported_fs_names_the_supported_ones() {
        let err = "ntfs".parse::<FsType>().expect_err("ntfs is not supported");
        assert!(matches!(&err, MountError::UnsupportedFs { requested } if requested == "ntfs"));
        assert_eq!(err.to_string(), r#"unsupported filesystem type "ntfs" (supported: ext4, xfs, btrfs)"#);
        assert!("".parse::<FsType>().is_err());
        assert!("ext3".parse::<FsType>().is_err());
    }

    #[test]
    fn command_failed_message_carries_status_and_stderr() {
        let err = MountError::CommandFailed { cmd: "mount /a /b".into(), code: Some(32), stderr: "no medium".into() };
        assert_eq!(err.to_string(), "`mount /a /b` failed (exit status 32): no medium");
        let err = MountError::CommandFailed { cmd: "x".into(), code: None, stderr: String::new() };
        assert!(err.to_string().contains("killed by signal"));
    }

    #[test]
    fn shared_errors_keep_their_driver_shape() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let start = MountError::from(CommandError::Start { program: "mkfs.xfs".into(), source: io() });
        assert!(
            matches!(&start, MountError::Io { op: "start", path, .. } if path == Path::new("mkfs.xfs")),
            "{start:?}"
        );
        let wait = MountError::from(CommandError::Wait { program: "mount".into(), source: io() });
        assert!(matches!(wait, MountError::Io { op: "wait for", .. }), "{wait:?}");
        let after = Duration::from_secs(3);
        let timeout = MountError::from(CommandError::Timeout { cmd: "sleep 9".into(), after });
        assert!(matches!(&timeout, MountError::Timeout { cmd, after: a } if cmd == "sleep 9" && *a == after));
        let failed = CommandError::Failed { cmd: "mount /a /b".into(), code: Some(32), diagnostic: "no medium".into() };
        assert_eq!(failed.to_string(), MountError::from(failed).to_string(), "same message either way");

        let read = MountError::from(MountinfoError::Read { source: io() });
        assert!(matches!(&read, MountError::Io { op: "read", path, .. } if path == Path::new(MOUNTINFO_PATH)));
        let bad = MountError::from(MountinfoError::Malformed { detail: "no separator".into() });
        assert_eq!(bad.to_string(), "unexpected output from /proc/self/mountinfo: no separator");
    }
}
