//! Watch streams: newline-delimited JSON events over a chunked response.
//! Replays retained history after the requested resourceVersion, then streams
//! live events; a watcher too far behind gets an in-stream 410 and must relist.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use super::error::ApiError;
use super::meta;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, EventType, Store};
use super::table;

pub struct WatchRequest {
    pub rt: ResourceType,
    pub version: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None`/`"0"`: start with synthetic ADDED events for what exists now.
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    pub as_table: bool,
    pub include_object: String,
}

impl WatchRequest {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if meta::namespace(obj) != ns {
                return false;
            }
        }
        self.labels.matches(meta::labels(obj)) && self.fields.matches(obj)
    }

    fn render(&self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.as_table {
            table::table(&self.rt, &[obj], meta::str_at(obj, "/metadata/resourceVersion"), &self.include_object)
        } else {
            return line(&json!({"type": kind, "object": &*self.rt.as_served(obj, &self.version)}));
        };
        line(&json!({"type": kind, "object": object}))
    }

    /// Translates a store event into what this watcher should see, if anything.
    fn translate(&self, event: &Event) -> Option<Bytes> {
        if event.key != self.rt.key() {
            return None;
        }
        let now = self.matches(&event.object);
        let before = event.previous.as_deref().is_some_and(|p| self.matches(p));
        let kind = match (event.kind, before, now) {
            (EventType::Deleted, true, _) => "DELETED",
            (EventType::Deleted, false, _) => return None,
            (EventType::Added, _, true) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some(self.render(kind, &event.object))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            &json!({"type": "BOOKMARK", "object": {"kind": self.rt.kind, "apiVersion": self.rt.api_version_for(&self.version), "metadata": metadata}}),
        )
    }
}

fn line(v: &Value) -> Bytes {
    let mut buf = serde_json::to_vec(v).unwrap_or_default();
    buf.push(b'\n');
    Bytes::from(buf)
}

fn expired_line(message: String) -> Bytes {
    line(&json!({"type": "ERROR", "object": ApiError::expired(message).to_status()}))
}

const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the stream; the receiver is the response body. The task ends when the
/// client goes away, the timeout passes, or `drop_signal` changes.
pub fn start(store: Arc<Store>, req: WatchRequest, mut drop_signal: watch::Receiver<u64>) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let initial =
            req.resource_version.as_deref().is_none_or(|rv| rv.is_empty() || rv == "0") || req.send_initial_events;
        let mut last_rv: u64;
        let mut subscription;
        if initial {
            let (items, rv) = store.list(&req.rt.key(), req.namespace.as_deref());
            // Subscribing right after the list is gap-free: anything newer is in history.
            subscription = match store.subscribe_after(rv) {
                Some(s) => s,
                None => {
                    let _ = tx.send(expired_line(format!("too old resource version: {rv}"))).await;
                    return;
                }
            };
            for obj in items.iter().filter(|o| req.matches(o)) {
                if tx.send(req.render("ADDED", obj)).await.is_err() {
                    return;
                }
            }
            last_rv = rv;
            if req.send_initial_events && tx.send(req.bookmark(rv, true)).await.is_err() {
                return;
            }
        } else {
            let rv_text = req.resource_version.clone().unwrap_or_default();
            let Ok(rv) = rv_text.parse::<u64>() else {
                let _ = tx
                    .send(line(&json!({"type": "ERROR", "object": ApiError::bad_request(format!("invalid resourceVersion {rv_text:?}")).to_status()})))
                    .await;
                return;
            };
            subscription = match store.subscribe_after(rv) {
                Some(s) => s,
                None => {
                    let oldest = store.oldest_watchable();
                    let _ = tx.send(expired_line(format!("too old resource version: {rv} ({oldest})"))).await;
                    return;
                }
            };
            last_rv = rv;
        }
        for event in std::mem::take(&mut subscription.backlog) {
            last_rv = event.rv;
            if let Some(bytes) = req.translate(&event) {
                if tx.send(bytes).await.is_err() {
                    return;
                }
            }
        }
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut bookmark_tick = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmark_tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = drop_signal.changed() => return,
                _ = tx.closed() => return,
                _ = bookmark_tick.tick(), if req.bookmarks => {
                    if tx.send(req.bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                }
                received = subscription.live.recv() => match received {
                    Ok(event) => {
                        if event.rv <= last_rv {
                            continue;
                        }
                        last_rv = event.rv;
                        if let Some(bytes) = req.translate(&event) {
                            if tx.send(bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(expired_line(format!("too old resource version: {last_rv}"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    rx
}
