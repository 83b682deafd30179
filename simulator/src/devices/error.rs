//! What can go wrong with simulated disks, and the one way I/O errors carry
//! the path they were about.

use std::io;
use std::path::{Path, PathBuf};

use syskit::{CommandError, MountinfoError};

/// Errors from [`super::DeviceManager`].
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// losetup, mount, mkfs, blkid or cp could not be run, timed out or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Mountinfo(#[from] MountinfoError),
    #[error("`{command}` succeeded but printed {output:?}, not {expected}")]
    UnexpectedOutput { command: String, output: String, expected: &'static str },
    #[error(
        "loop device mode is unavailable: {reason}; loop mode needs root (euid 0) and a \
         usable /dev/loop-control. Run as root, or use `--devices file` to back disks \
         with plain files instead"
    )]
    LoopUnavailable { reason: String },
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName { kind: String, name: String, reason: &'static str },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue { what: &'static str, value: String, reason: &'static str },
    #[error("cannot shrink volume {volume} from {current} to {requested} bytes")]
    Shrink { volume: String, current: u64, requested: u64 },
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DeviceError {
    let path = path.to_path_buf();
    move |source| DeviceError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_unavailable_message_suggests_file_mode() {
        let msg =
            DeviceError::LoopUnavailable { reason: "running with effective uid 1000, not root".into() }.to_string();
        assert!(msg.contains("root") && msg.contains("/dev/loop-control"), "{msg}");
        assert!(msg.contains("--devices file"), "{msg}");
    }

    #[test]
    fn command_errors_keep_the_runner_message() {
        let failed =
            CommandError::Failed { cmd: "losetup -d /dev/loop9".into(), code: Some(1), diagnostic: "no".into() };
        let text = failed.to_string();
        assert_eq!(DeviceError::from(failed).to_string(), text);
    }
}
