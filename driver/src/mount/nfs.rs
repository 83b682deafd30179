//! The one narrow seam for NFS mounts: the kernel's `mount -t nfs`, or a helper
//! program (used where the kernel has no NFS client, e.g. the embedded
//! scenario runner, which maps the export to the simulator's directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use syskit::Cmd;

use super::MountError;

/// A share-manager that has just started can take a while to answer; past
/// this the caller retries rather than holding the stage call open.
const NFS_MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct NfsMounter {
    /// Called as `HELPER <server>:<export> <target> <options>` instead of `mount -t nfs`.
    pub helper: Option<PathBuf>,
}

impl NfsMounter {
    pub async fn mount(&self, server: &str, export: &str, target: &Path, options: &str) -> Result<(), MountError> {
        let source = format!("{server}:{export}");
        let cmd = match &self.helper {
            Some(helper) => Cmd::new(helper).arg(&source).arg(target).arg(options),
            None => Cmd::new("mount").args(["-t", "nfs", "-o", options]).arg(&source).arg(target),
        };
        match cmd.run(NFS_MOUNT_TIMEOUT).await.map_err(MountError::from) {
            Ok(_) => Ok(()),
            // A missing or unrunnable mount program is a broken node, not a
            // missing volume: keep it out of the NotFound mapping of Io errors.
            Err(MountError::Io { op, path, source }) => Err(MountError::CommandFailed {
                cmd: cmd.display(),
                code: None,
                stderr: format!("cannot {op} {}: {source}", path.display()),
            }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("helper");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
        path
    }

    #[tokio::test]
    async fn helper_gets_source_target_and_options_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("args");
        let helper = script(dir.path(), &format!("printf '%s\\n' \"$@\" > {}", log.display()));
        let target = dir.path().join("staging");
        NfsMounter { helper: Some(helper) }
            .mount("10.0.0.7", "/pvc-1", &target, "vers=4.1,ro")
            .await
            .expect("helper succeeds");
        let args = std::fs::read_to_string(&log).expect("helper ran");
        assert_eq!(args, format!("10.0.0.7:/pvc-1\n{}\nvers=4.1,ro\n", target.display()));
    }

    #[tokio::test]
    async fn helper_failure_keeps_its_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helper = script(dir.path(), "echo 'access denied by server' >&2; exit 32");
        let err = NfsMounter { helper: Some(helper) }
            .mount("10.0.0.7", "/pvc-1", &dir.path().join("t"), "vers=4.1")
            .await
            .expect_err("helper fails");
        match err {
            MountError::CommandFailed { code, stderr, .. } => {
                assert_eq!(code, Some(32));
                assert!(stderr.contains("access denied by server"), "{stderr}");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_helper_is_a_command_failure_not_an_io_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = NfsMounter { helper: Some(dir.path().join("no-such-helper")) }
            .mount("10.0.0.7", "/pvc-1", &dir.path().join("t"), "vers=4.1")
            .await
            .expect_err("nothing to run");
        assert!(matches!(err, MountError::CommandFailed { code: None, .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-helper"), "{err}");
    }
}
