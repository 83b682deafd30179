//! The one narrow seam for NFS mounts: the kernel's `mount -t nfs`, or a helper
//! program (used where the kernel has no NFS client, e.g. the embedded
//! scenario runner, which maps the export to the simulator's directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct NfsMounter {
    pub helper: Option<PathBuf>,
}

impl NfsMounter {
    pub async fn mount(&self, server: &str, export: &str, target: &Path, options: &str) -> Result<()> {
        let source = format!("{server}:{export}");
        let mut cmd = match &self.helper {
            Some(h) => {
                let mut c = tokio::process::Command::new(h);
                c.arg(&source).arg(target).arg(options);
                c
            }
            None => {
                let mut c = tokio::process::Command::new("mount");
                c.args(["-t", "nfs", "-o", options]).arg(&source).arg(target);
                c
            }
        };
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .map_err(|_| Error::DeadlineExceeded(format!("mounting {source} timed out")))?
            .map_err(|e| Error::Internal(format!("running the NFS mount: {e}")))?;
        if !out.status.success() {
            return Err(Error::Internal(format!(
                "mounting {source} at {}: {}",
                target.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}
