//! What the mount table says about export directories and devices.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use syskit::mountinfo;

use super::error::{io_err, Result};

/// Source of the topmost mount at `dir` (which must be canonical), if any.
pub(super) async fn mount_source(dir: &Path) -> Result<Option<PathBuf>> {
    let text = read().await?;
    Ok(mountinfo::find_at(&text, dir)?.map(|m| PathBuf::from(m.source)))
}

/// Every mount source (for loop mounts, the device) in this mount namespace.
pub(super) async fn mounted_sources() -> Result<HashSet<PathBuf>> {
    let text = read().await?;
    Ok(mountinfo::parse(&text)?.into_iter().map(|e| PathBuf::from(e.info.source)).collect())
}

async fn read() -> Result<Vec<u8>> {
    let path = Path::new(mountinfo::MOUNTINFO_PATH);
    tokio::fs::read(path).await.map_err(io_err("reading", path))
}
