//! The object store: what etcd plus the generic registry are to a real apiserver.
//! It owns the resourceVersion counter, the watch history and the event fan-out;
//! semantics (validation, status subresources, finalizers) live in `ops`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use super::resources::ResourceKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as the watch machinery and in-process controllers see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: ResourceKey,
    pub namespace: String,
    pub name: String,
    pub object: Arc<Value>,
    /// The object before the change (selector watches need it to emit
    /// synthetic ADDED/DELETED when an object starts or stops matching).
    pub previous: Option<Arc<Value>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("resourceVersion mismatch")]
    Conflict,
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

/// Every object, grouped by type.
pub type Dump = Vec<(ResourceKey, Vec<Arc<Value>>)>;

struct Inner {
    rv: u64,
    objects: HashMap<ResourceKey, Objects>,
    history: VecDeque<Arc<Event>>,
    /// Watches from a resourceVersion below this get 410: their events are gone.
    oldest_watchable: u64,
}

impl Inner {
    /// The retained events newer than `rv`. The history is in version order, so a
    /// binary search finds the first one: a watch resuming near the head costs
    /// O(log n + its backlog), not a pass over the whole history.
    fn history_after(&self, rv: u64) -> Vec<Arc<Event>> {
        let first = self.history.partition_point(|e| e.rv <= rv);
        self.history.range(first..).cloned().collect()
    }
}

/// Outcome of subscribing to changes: the backlog after the requested version
/// and a live receiver that continues exactly where the backlog ends.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    history_limit: usize,
    /// Signalled on every change so the persister can write a snapshot.
    pub changed: Notify,
    /// The resourceVersion the last saved snapshot holds; `None` while nothing
    /// persists this store (the in-process guest API), so nobody waits for it.
    durable: tokio::sync::watch::Sender<Option<u64>>,
}

/// Live fan-out capacity: a watcher further behind than this is told 410 and relists.
const FANOUT_CAPACITY: usize = 16_384;

fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn stamp(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(FANOUT_CAPACITY);
        Self {
            inner: Mutex::new(Inner { rv: 1, objects: HashMap::new(), history: VecDeque::new(), oldest_watchable: 1 }),
            tx,
            history_limit,
            changed: Notify::new(),
            durable: tokio::sync::watch::channel(None).0,
        }
    }

    /// A persister saved everything up to `rv`.
    pub fn mark_durable(&self, rv: u64) {
        self.durable.send_replace(Some(rv));
    }

    /// Waits until everything up to `rv` is saved, as the apiserver answers a
    /// write only once etcd has committed it: a simulator killed right after
    /// answering must not come back without the change. True at once when no
    /// persister runs; false if the save did not come within `within`.
    pub async fn wait_durable(&self, rv: u64, within: std::time::Duration) -> bool {
        let mut saved = self.durable.subscribe();
        if saved.borrow().is_none() {
            return true;
        }
        let reached = tokio::time::timeout(within, saved.wait_for(|d| d.is_some_and(|d| d >= rv))).await;
        matches!(reached, Ok(Ok(_)))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written object
        // (all mutations are single inserts), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn oldest_watchable(&self) -> u64 {
        self.lock().oldest_watchable
    }

    pub fn get(&self, key: &ResourceKey, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().objects.get(key).and_then(|m| m.get(&(namespace.to_string(), name.to_string()))).cloned()
    }

    /// All objects of a type (in one namespace, or all), in key order, plus the
    /// resourceVersion the list is consistent with.
    pub fn list(&self, key: &ResourceKey, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = match inner.objects.get(key) {
            None => Vec::new(),
            Some(m) => match namespace {
                None => m.values().cloned().collect(),
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        (items, inner.rv)
    }

    fn emit(&self, inner: &mut Inner, event: Event) {
        let event = Arc::new(event);
        inner.history.push_back(event.clone());
        while inner.history.len() > self.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.oldest_watchable = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
        self.changed.notify_one();
    }

    pub fn create(
        &self,
        key: &ResourceKey,
        namespace: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        if inner.objects.get(key).is_some_and(|m| m.contains_key(&id)) {
            return Err(StoreError::AlreadyExists);
        }
        inner.rv += 1;
        let rv = inner.rv;
        stamp(&mut obj, rv);
        let obj = Arc::new(obj);
        inner.objects.entry(key.clone()).or_default().insert(id, obj.clone());
        self.emit(
            &mut inner,
            Event {
                rv,
                kind: EventType::Added,
                key: key.clone(),
                namespace: namespace.into(),
                name: name.into(),
                object: obj.clone(),
                previous: None,
            },
        );
        Ok(obj)
    }

    /// Replaces an object. `expected_rv` (if any) must equal the stored version.
    pub fn update(
        &self,
        key: &ResourceKey,
        namespace: &str,
        name: &str,
        mut obj: Value,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        let previous = inner.objects.get(key).and_then(|m| m.get(&id)).cloned().ok_or(StoreError::NotFound)?;
        if let Some(want) = expected_rv {
            if want != rv_of(&previous) {
                return Err(StoreError::Conflict);
            }
        }
        inner.rv += 1;
        let rv = inner.rv;
        stamp(&mut obj, rv);
        let obj = Arc::new(obj);
        inner.objects.entry(key.clone()).or_default().insert(id, obj.clone());
        self.emit(
            &mut inner,
            Event {
                rv,
                kind: EventType::Modified,
                key: key.clone(),
                namespace: namespace.into(),
                name: name.into(),
                object: obj.clone(),
                previous: Some(previous),
            },
        );
        Ok(obj)
    }

    /// Removes an object; the DELETED event carries its last state with a fresh version.
    pub fn remove(
        &self,
        key: &ResourceKey,
        namespace: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        let previous = inner.objects.get(key).and_then(|m| m.get(&id)).cloned().ok_or(StoreError::NotFound)?;
        if let Some(want) = expected_rv {
            if want != rv_of(&previous) {
                return Err(StoreError::Conflict);
            }
        }
        if let Some(m) = inner.objects.get_mut(key) {
            m.remove(&id);
        }
        inner.rv += 1;
        let rv = inner.rv;
        let mut last = (*previous).clone();
        stamp(&mut last, rv);
        let last = Arc::new(last);
        self.emit(
            &mut inner,
            Event {
                rv,
                kind: EventType::Deleted,
                key: key.clone(),
                namespace: namespace.into(),
                name: name.into(),
                object: last.clone(),
                previous: Some(previous),
            },
        );
        Ok(last)
    }

    /// Events strictly after `rv` plus a live receiver, without gaps or
    /// duplicates (both are taken under the same lock the writers hold).
    /// `None` when `rv` is older than the retained history (the caller answers 410).
    pub fn subscribe_after(&self, rv: u64) -> Option<Subscription> {
        let inner = self.lock();
        if rv < inner.oldest_watchable {
            return None;
        }
        Some(Subscription { backlog: inner.history_after(rv), live: self.tx.subscribe() })
    }

    /// The changes after `rv` and the version they bring the store to, read under
    /// one lock so that no change falls between the two: what the persister appends
    /// to its log. `None` when the history no longer reaches back to `rv` (evicted
    /// or compacted); the persister then saves everything instead.
    pub fn changes_after(&self, rv: u64) -> Option<(Vec<Arc<Event>>, u64)> {
        let inner = self.lock();
        if rv < inner.oldest_watchable {
            return None;
        }
        Some((inner.history_after(rv), inner.rv))
    }

    /// A live receiver only (in-process controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        let _inner = self.lock();
        self.tx.subscribe()
    }

    /// Forget the watch history, as an apiserver restart with a compacted etcd
    /// would: every version handed out so far is now too old, so every watch
    /// resuming from one gets 410 and relists. The version moves on first, or a
    /// client holding the newest version (an idle watcher) would resume unharmed.
    pub fn compact_history(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.rv += 1;
        inner.oldest_watchable = inner.rv;
    }

    /// Everything, for persistence.
    pub fn snapshot(&self) -> (u64, Dump) {
        let inner = self.lock();
        let mut out: Vec<(ResourceKey, Vec<Arc<Value>>)> =
            inner.objects.iter().map(|(k, m)| (k.clone(), m.values().cloned().collect())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (inner.rv, out)
    }

    /// Loads a snapshot into an empty store. Watches from before the load get 410.
    pub fn restore(&self, rv: u64, objects: Vec<(ResourceKey, Vec<Value>)>) {
        let mut inner = self.lock();
        inner.objects.clear();
        for (key, items) in objects {
            let m = inner.objects.entry(key).or_default();
            for obj in items {
                let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
                let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                m.insert((ns, name), Arc::new(obj));
            }
        }
        inner.rv = rv.max(inner.rv);
        inner.history.clear();
        inner.oldest_watchable = inner.rv;
    }
}

/// The resourceVersion of a stored object.
pub fn resource_version(obj: &Value) -> u64 {
    rv_of(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ResourceKey {
        ResourceKey::new("", "configmaps")
    }

    #[test]
    fn versions_increase_and_conflicts_are_detected() {
        let s = Store::new(100);
        let a = s.create(&key(), "ns", "a", json!({"metadata": {"name": "a"}})).unwrap();
        let rv = resource_version(&a);
        assert_eq!(s.create(&key(), "ns", "a", json!({"metadata": {}})), Err(StoreError::AlreadyExists));
        let b = s.update(&key(), "ns", "a", json!({"metadata": {"name": "a"}, "x": 1}), Some(rv)).unwrap();
        assert!(resource_version(&b) > rv);
        assert_eq!(
            s.update(&key(), "ns", "a", json!({"metadata": {}}), Some(rv)).map(|_| ()),
            Err(StoreError::Conflict)
        );
    }

    #[test]
    fn subscription_replays_history_after_version() {
        let s = Store::new(100);
        let a = s.create(&key(), "ns", "a", json!({"metadata": {"name": "a"}})).unwrap();
        s.create(&key(), "ns", "b", json!({"metadata": {"name": "b"}})).unwrap();
        let sub = s.subscribe_after(resource_version(&a)).unwrap();
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].name, "b");
    }

    #[test]
    fn the_backlog_is_every_retained_change_after_the_version_in_order() {
        let s = Store::new(100);
        let start = s.current_rv();
        let rvs: Vec<u64> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|n| resource_version(&s.create(&key(), "ns", n, json!({"metadata": {"name": n}})).unwrap()))
            .collect();
        let names =
            |rv| -> Vec<String> { s.subscribe_after(rv).unwrap().backlog.iter().map(|e| e.name.clone()).collect() };
        assert_eq!(names(start), ["a", "b", "c", "d"]);
        assert_eq!(names(rvs[1]), ["c", "d"]);
        assert!(names(rvs[3]).is_empty());
        let (events, head) = s.changes_after(rvs[2]).unwrap();
        assert_eq!(events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["d"]);
        assert_eq!(head, s.current_rv());
    }

    #[test]
    fn too_old_versions_are_refused_after_compaction() {
        let s = Store::new(2);
        for n in ["a", "b", "c", "d"] {
            s.create(&key(), "ns", n, json!({"metadata": {"name": n}})).unwrap();
        }
        assert!(s.subscribe_after(1).is_none());
        assert!(s.subscribe_after(s.current_rv()).is_some());
    }

    #[test]
    fn compaction_expires_even_the_newest_version() {
        let s = Store::new(100);
        s.create(&key(), "ns", "a", json!({"metadata": {"name": "a"}})).unwrap();
        let newest = s.current_rv();
        s.compact_history();
        assert!(s.subscribe_after(newest).is_none());
        let (_, relisted) = s.list(&key(), None);
        assert!(s.subscribe_after(relisted).is_some());
    }

    #[test]
    fn list_in_namespace_is_scoped_and_sorted() {
        let s = Store::new(100);
        for (ns, n) in [("b", "z"), ("a", "y"), ("a", "x"), ("c", "w")] {
            s.create(&key(), ns, n, json!({"metadata": {"name": n, "namespace": ns}})).unwrap();
        }
        let (items, _) = s.list(&key(), Some("a"));
        let names: Vec<_> = items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ["x", "y"]);
        assert_eq!(s.list(&key(), None).0.len(), 4);
    }
}
