//! State persistence: the whole store as one JSON document in the state
//! directory, rewritten (atomically) after each burst of changes. API writes
//! are answered once a save holds them (group commit: every write made while
//! one save runs goes into the next).

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

/// Objects of one type, serialised straight from the store's shared values.
struct Items<'a>(&'a [Arc<Value>]);

impl Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|o| o.as_ref()))
    }
}

/// The on-disk shape of [`Snapshot`], borrowing instead of copying every object.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotRef<'a> {
    profile: &'a str,
    resource_version: u64,
    objects: std::collections::BTreeMap<String, Items<'a>>,
}

/// Saves the store; returns the resourceVersion the saved snapshot holds.
pub fn save(store: &Store, profile: &str, dir: &Path) -> Result<u64, PersistError> {
    let (rv, all) = store.snapshot();
    let objects = all
        .iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(k, items)| (format!("{}/{}", k.group, k.plural), Items(items)))
        .collect();
    let snap = SnapshotRef { profile, resource_version: rv, objects };
    let path = state_path(dir);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let io = |op: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |source| PersistError::Io { op, path, source }
    };
    // Streamed to the file: the document is as large as the whole store.
    let file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut out, &snap).map_err(|e| PersistError::Io {
        op: "write",
        path: tmp.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    std::io::Write::flush(&mut out).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    Ok(rv)
}

/// Writes a snapshot after changes settle, and a last one on shutdown. Saving
/// serialises the whole store, so it runs on a blocking thread, not on one of
/// the runtime's workers that serve requests.
pub async fn run(store: Arc<Store>, profile: String, dir: PathBuf, shutdown: CancellationToken) {
    let save_off_runtime = |what: &'static str| {
        let (store, profile, dir) = (store.clone(), profile.clone(), dir.clone());
        let store_for_mark = store.clone();
        async move {
            match tokio::task::spawn_blocking(move || save(&store, &profile, &dir)).await {
                Ok(Ok(rv)) => store_for_mark.mark_durable(rv),
                Ok(Err(e)) => tracing::error!(error = %e, "saving simulator state{what}"),
                Err(e) => tracing::error!(error = %e, "saving simulator state{what}: task failed"),
            }
        }
    };
    // Saved once at start, so writers wait for saves from the first request on.
    save_off_runtime(" at start").await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = store.changed.notified() => {}
        }
        // A moment for the rest of a burst (a controller's several writes) to join this save.
        tokio::time::sleep(Duration::from_millis(2)).await;
        save_off_runtime("").await;
    }
    save_off_runtime(" at shutdown").await;
}
