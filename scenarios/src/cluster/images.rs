//! Images the nodes run: nothing can be pulled here, so OCI archives built on
//! this machine (ci/cluster/images.sh: pause, busybox and the CSI sidecars;
//! deploy/image for the driver) are imported into every node's containerd.
//! Names are fully qualified so `imagePullPolicy: Never` matches them.

use std::path::{Path, PathBuf};

use super::{run, ClusterError, Result};

/// containerd's sandbox image.
pub const PAUSE: &str = "docker.io/local/pause:1";
/// What `runPod` and the smoke test run.
pub const BUSYBOX: &str = "docker.io/local/busybox:1";

#[derive(Debug, Clone, Default)]
pub struct Images {
    pub archives: Vec<PathBuf>,
}

impl Images {
    /// Every `*.tar` in the given directories (and the given files).
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self> {
        let mut archives = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| ClusterError::io("reading", p, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "tar"))
                    .collect();
                found.sort();
                archives.extend(found);
            } else if p.is_file() {
                archives.push(p.clone());
            } else {
                return Err(ClusterError::Invalid(format!("image archive {}: not found", p.display())));
            }
        }
        Ok(Self { archives })
    }

    /// Imports every archive into the CRI's namespace of one containerd.
    pub async fn import(&self, ctr: &Path, socket: &Path) -> Result<()> {
        let ctr = ctr.display().to_string();
        let address = socket.display().to_string();
        for a in &self.archives {
            let file = a.display().to_string();
            run(
                &ctr,
                &["--address", &address, "--namespace", "k8s.io", "images", "import", "--no-unpack=false", &file],
            )
            .await?;
        }
        Ok(())
    }
}
