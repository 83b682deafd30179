//! State persistence, as etcd keeps it: a snapshot of the whole store
//! (`state.json`, replaced atomically) and a log of the changes since
//! (`state.wal`, one JSON line per change, appended after each burst). API
//! writes are answered once the snapshot or the log holds them (group commit:
//! every write made while one append runs goes into the next). A burst costs
//! what it changed, not the size of the store; the log is folded into a new
//! snapshot once it outgrows the last one, so a save of everything is paid
//! for by as many bytes of changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::resources::ResourceKey;
use crate::api::store::{Event, EventType, Store};

pub const STATE_FILE: &str = "state.json";
pub const LOG_FILE: &str = "state.wal";

/// The log is folded into a snapshot once it is larger than the last snapshot,
/// and never while smaller than this.
const LOG_FOLD_MIN_BYTES: u64 = 1 << 20;

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
    let mut snapshot: Snapshot = serde_json::from_slice(&text)
        .map_err(|e| PersistError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
    let log_path = dir.join(LOG_FILE);
    match std::fs::read(&log_path) {
        Ok(log) => replay(&mut snapshot, &log, &log_path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(PersistError::Io { op: "read", path: log_path.display().to_string(), source }),
    }
    Ok(Some(snapshot))
}

/// One change in the log. `object` is left out of deletions.
#[derive(Debug, Serialize, Deserialize)]
struct LogLine<O> {
    rv: u64,
    #[serde(rename = "type")]
    kind: String,
    resource: String,
    namespace: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<O>,
}

/// Applies the log's changes newer than the snapshot. A line cut short (the
/// process killed in the middle of an append) ends the log: nothing after it was
/// answered, since a write is answered only once its whole append is done.
fn replay(snapshot: &mut Snapshot, log: &[u8], log_path: &Path) {
    let mut by_type: std::collections::BTreeMap<String, std::collections::BTreeMap<(String, String), Value>> =
        std::mem::take(&mut snapshot.objects)
            .into_iter()
            .map(|(resource, items)| (resource, items.into_iter().map(|o| (name_of(&o), o)).collect()))
            .collect();
    for (n, raw) in log.split(|b| *b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        let line: LogLine<Value> = match serde_json::from_slice(raw) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(log = %log_path.display(), line = n + 1, error = %e, "state log ends in a partial line; ignoring it and what follows");
                break;
            }
        };
        if line.rv <= snapshot.resource_version {
            continue;
        }
        snapshot.resource_version = line.rv;
        let objects = by_type.entry(line.resource).or_default();
        match (line.kind.as_str(), line.object) {
            ("DELETED", _) | (_, None) => {
                objects.remove(&(line.namespace, line.name));
            }
            (_, Some(object)) => {
                objects.insert((line.namespace, line.name), object);
            }
        }
    }
    snapshot.objects = by_type
        .into_iter()
        .filter(|(_, objects)| !objects.is_empty())
        .map(|(resource, objects)| (resource, objects.into_values().collect()))
        .collect();
}

fn name_of(obj: &Value) -> (String, String) {
    let field = |f: &str| obj.pointer(f).and_then(Value::as_str).unwrap_or("").to_string();
    (field("/metadata/namespace"), field("/metadata/name"))
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

/// Saves the whole store as a new snapshot and starts an empty log; returns the
/// resourceVersion the snapshot holds and its size in bytes.
pub fn save(store: &Store, profile: &str, dir: &Path) -> Result<(u64, u64), PersistError> {
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
    drop(out);
    let size = std::fs::metadata(&tmp).map_err(io("stat", &tmp))?.len();
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    // Killed before this truncation, the next start skips the log's lines the
    // snapshot already holds (their versions are not newer than its own).
    let log = dir.join(LOG_FILE);
    std::fs::File::create(&log).map_err(io("truncate", &log))?;
    Ok((rv, size))
}

/// Appends changes to the log in one write; returns the bytes written.
fn append(dir: &Path, events: &[Arc<Event>]) -> Result<u64, PersistError> {
    let mut buf = Vec::new();
    for e in events {
        let line = LogLine {
            rv: e.rv,
            kind: e.kind.as_str().to_string(),
            resource: format!("{}/{}", e.key.group, e.key.plural),
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            object: (e.kind != EventType::Deleted).then_some(e.object.as_ref()),
        };
        serde_json::to_writer(&mut buf, &line).map_err(|err| PersistError::Io {
            op: "encode",
            path: LOG_FILE.to_string(),
            source: std::io::Error::other(err),
        })?;
        buf.push(b'\n');
    }
    let path = dir.join(LOG_FILE);
    let io = |op: &'static str| {
        let path = path.display().to_string();
        move |source| PersistError::Io { op, path, source }
    };
    let mut file = std::fs::OpenOptions::new().append(true).create(true).open(&path).map_err(io("open"))?;
    std::io::Write::write_all(&mut file, &buf).map_err(io("append"))?;
    Ok(buf.len() as u64)
}

/// What the persister has written so far; the state of one persisting step.
struct Persister {
    store: Arc<Store>,
    profile: String,
    dir: PathBuf,
    /// The version snapshot plus log hold; `None` after a failed step, so the
    /// next one saves everything.
    saved_rv: Option<u64>,
    snapshot_bytes: u64,
    log_bytes: u64,
}

impl Persister {
    /// Appends what changed since the last step, or saves everything when the
    /// history no longer reaches back that far or the log has outgrown the
    /// snapshot. Returns the version now saved.
    fn step(&mut self) -> Result<u64, PersistError> {
        let fold_at = self.snapshot_bytes.max(LOG_FOLD_MIN_BYTES);
        let changes = self.saved_rv.filter(|_| self.log_bytes < fold_at).and_then(|rv| self.store.changes_after(rv));
        let result = match changes {
            Some((events, rv)) => append(&self.dir, &events).map(|bytes| {
                self.log_bytes += bytes;
                rv
            }),
            None => save(&self.store, &self.profile, &self.dir).map(|(rv, bytes)| {
                (self.snapshot_bytes, self.log_bytes) = (bytes, 0);
                rv
            }),
        };
        self.saved_rv = result.as_ref().ok().copied();
        result
    }
}

/// Saves everything at start, then after each burst of changes appends them to
/// the log (folding it into a snapshot now and then), and saves everything on
/// shutdown. Writing runs on a blocking thread, not on one of the runtime's
/// workers that serve requests.
pub async fn run(store: Arc<Store>, profile: String, dir: PathBuf, shutdown: CancellationToken) {
    let persister = Persister { store: store.clone(), profile, dir, saved_rv: None, snapshot_bytes: 0, log_bytes: 0 };
    // Saved once at start, so writers wait for saves from the first request on.
    let mut persister = step(persister, " at start").await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = store.changed.notified() => {}
        }
        // A moment for the rest of a burst (a controller's several writes) to join this append.
        tokio::time::sleep(Duration::from_millis(2)).await;
        persister = step(persister, "").await;
    }
    persister.saved_rv = None;
    step(persister, " at shutdown").await;
}

/// One [`Persister::step`] off the runtime; marks what it saved as durable.
async fn step(mut p: Persister, what: &'static str) -> Persister {
    let (store, profile, dir) = (p.store.clone(), p.profile.clone(), p.dir.clone());
    let done = tokio::task::spawn_blocking(move || {
        let result = p.step();
        (p, result)
    })
    .await;
    match done {
        Ok((p, Ok(rv))) => {
            store.mark_durable(rv);
            p
        }
        Ok((p, Err(e))) => {
            tracing::error!(error = %e, "saving simulator state{what}");
            p
        }
        Err(e) => {
            // What it wrote is unknown: the next step saves everything.
            tracing::error!(error = %e, "saving simulator state{what}: task failed");
            Persister { store, profile, dir, saved_rv: None, snapshot_bytes: 0, log_bytes: 0 }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> ResourceKey {
        ResourceKey::new("", "configmaps")
    }

    fn map(name: &str, value: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "data": {"v": value}})
    }

    fn persister(store: &Arc<Store>, dir: &Path) -> Persister {
        Persister {
            store: store.clone(),
            profile: "v1.8".into(),
            dir: dir.to_path_buf(),
            saved_rv: None,
            snapshot_bytes: 0,
            log_bytes: 0,
        }
    }

    /// name -> data.v of what a start would restore, and its version.
    fn loaded(dir: &Path) -> (Vec<(String, String)>, u64) {
        let snap = load(dir).expect("load").expect("a snapshot");
        let mut out: Vec<(String, String)> = snap
            .objects
            .get("/configmaps")
            .into_iter()
            .flatten()
            .map(|o| (name_of(o).1, o.pointer("/data/v").and_then(Value::as_str).unwrap_or("").to_string()))
            .collect();
        out.sort();
        (out, snap.resource_version)
    }

    fn log_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(LOG_FILE)).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn changes_after_the_snapshot_come_back_from_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::new(100));
        let mut p = persister(&store, dir.path());
        store.create(&key(), "ns", "a", map("a", "1")).expect("a");
        store.create(&key(), "ns", "b", map("b", "1")).expect("b");
        p.step().expect("first step saves everything");
        assert_eq!(log_len(dir.path()), 0);

        store.update(&key(), "ns", "a", map("a", "2"), None).expect("update a");
        store.remove(&key(), "ns", "b", None).expect("remove b");
        store.create(&key(), "ns", "c", map("c", "1")).expect("c");
        let rv = p.step().expect("append");
        assert_eq!(rv, store.current_rv());
        assert!(log_len(dir.path()) > 0, "the changes went to the log, not a new snapshot");

        let (objects, restored_rv) = loaded(dir.path());
        assert_eq!(objects, [("a".to_string(), "2".to_string()), ("c".to_string(), "1".to_string())]);
        assert_eq!(restored_rv, store.current_rv());
    }

    #[test]
    fn a_line_cut_short_ends_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::new(100));
        let mut p = persister(&store, dir.path());
        p.step().expect("snapshot");
        store.create(&key(), "ns", "a", map("a", "1")).expect("a");
        p.step().expect("append");
        let mut log = std::fs::OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).expect("log");
        std::io::Write::write_all(&mut log, br#"{"rv":99,"type":"ADDED","resou"#).expect("partial line");

        assert_eq!(loaded(dir.path()), (vec![("a".to_string(), "1".to_string())], store.current_rv()));
    }

    #[test]
    fn log_lines_the_snapshot_already_holds_are_skipped() {
        // Killed between writing a snapshot and emptying the log: the old log's
        // lines must not undo what the snapshot holds (here: bring back a deleted object).
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::new(100));
        let mut p = persister(&store, dir.path());
        store.create(&key(), "ns", "a", map("a", "1")).expect("a");
        p.step().expect("snapshot");
        store.update(&key(), "ns", "a", map("a", "2"), None).expect("update a");
        p.step().expect("append");
        let stale_log = std::fs::read(dir.path().join(LOG_FILE)).expect("log");
        store.remove(&key(), "ns", "a", None).expect("remove a");
        store.create(&key(), "ns", "b", map("b", "1")).expect("b");
        p.saved_rv = None;
        p.step().expect("snapshot again");
        std::fs::write(dir.path().join(LOG_FILE), stale_log).expect("the log as the kill left it");

        assert_eq!(loaded(dir.path()), (vec![("b".to_string(), "1".to_string())], store.current_rv()));
    }

    #[rstest::rstest]
    #[case::history_no_longer_reaches_back(2, 0)]
    #[case::log_outgrew_the_snapshot(100, LOG_FOLD_MIN_BYTES)]
    fn everything_is_saved_again(#[case] history: usize, #[case] log_bytes: u64) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::new(history));
        let mut p = persister(&store, dir.path());
        p.step().expect("snapshot");
        for n in ["a", "b", "c", "d"] {
            store.create(&key(), "ns", n, map(n, "1")).expect("create");
        }
        p.log_bytes = log_bytes;
        p.step().expect("step");
        assert_eq!(log_len(dir.path()), 0, "a new snapshot, and the log starts over");
        assert_eq!(p.log_bytes, 0);
        assert_eq!(loaded(dir.path()).0.len(), 4);
    }
}
