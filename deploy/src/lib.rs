//! Helpers for the checks of the deployment artifacts in `deploy/` and
//! `kind-config/`: finding and running helm, and reading rendered manifests.
//! The checks themselves are the integration tests in `deploy/tests/`.

pub mod helm;
pub mod manifests;

use std::path::PathBuf;

/// The repository root (this crate lives in `deploy/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".."))
}

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("deploy/chart/harvester-csi-driver")
}
