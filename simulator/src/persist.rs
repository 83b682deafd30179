//! State persistence: the whole store as one JSON document in the state
//! directory, rewritten (atomically) shortly after each burst of changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::resources::ResourceKey;
use crate::api::store::Store;

pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub profile: String,
    pub resource_version: u64,
    /// `group/plural` (core: `/plural`) → objects.
    pub objects: std::collections::BTreeMap<String, Vec<Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("state file {path} is not valid: {message}")]
    Corrupt { path: String, message: String },
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

pub fn load(dir: &Path) -> Result<Option<Snapshot>, PersistError> {
    let path = state_path(dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { op: "read", path: path.display().to_string(), source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| PersistError::Corrupt { path: path.display().to_string(), message: e.to_string() })
}

pub fn restore(store: &Store, snapshot: Snapshot) {
    let objects = snapshot
        .objects
        .into_iter()
        .map(|(k, items)| {
            let (group, plural) = k.split_once('/').unwrap_or(("", k.as_str()));
            (ResourceKey::new(group, plural), items)
        })
        .collect();
    store.restore(snapshot.resource_version, objects);
}

pub fn save(store: &Store, profile: &str, dir: &Path) -> Result<(), PersistError> {
    let (rv, all) = store.snapshot();
    let objects = all
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(k, items)| (format!("{}/{}", k.group, k.plural), items.iter().map(|o| (**o).clone()).collect()))
        .collect();
    let snap = Snapshot { profile: profile.to_string(), resource_version: rv, objects };
    let path = state_path(dir);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let io = |op: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |source| PersistError::Io { op, path, source }
    };
    let bytes = serde_json::to_vec(&snap)
        .map_err(|e| PersistError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))
}

/// Writes a snapshot after changes settle, and a last one on shutdown.
pub async fn run(store: Arc<Store>, profile: String, dir: PathBuf, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = store.changed.notified() => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(e) = save(&store, &profile, &dir) {
            tracing::error!(error = %e, "saving simulator state");
        }
    }
    if let Err(e) = save(&store, &profile, &dir) {
        tracing::error!(error = %e, "saving simulator state at shutdown");
    }
}
