//! A minimal controller work queue: store events are mapped to keys, each key is
//! reconciled one at a time, reconcilers may ask to be called again later, and a
//! lagging event receiver triggers a full resync.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::api::store::Event;

/// What a reconciler addresses: a kind tag chosen by the controller, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.into(), name: name.into() }
    }
}

/// Reconcile again after this long (None: only on the next relevant event).
pub type Requeue = Option<Duration>;

const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// An object that makes a reconciler panic will most likely do so again: retry slowly.
const PANIC_BACKOFF: Duration = Duration::from_secs(5);

/// Why one reconcile did not finish.
#[derive(Debug, PartialEq)]
enum Failure {
    Error(String),
    Panic(String),
}

/// Runs one reconcile so that a panic on one odd object (clients can write
/// almost any JSON) fails that key instead of ending the whole controller.
async fn reconcile_guarded<F>(fut: F) -> Result<Requeue, Failure>
where
    F: Future<Output = Result<Requeue, String>>,
{
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result.map_err(Failure::Error),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Failure::Panic(message))
        }
    }
}

/// Runs a controller until shutdown. `map` turns an event into keys; `all` lists
/// every key (initial sync and resync); `reconcile` does the work.
pub async fn run<M, A, R, F>(
    ctx: Arc<Ctx>,
    name: &'static str,
    shutdown: CancellationToken,
    map: M,
    all: A,
    reconcile: R,
) where
    M: Fn(&Ctx, &Event) -> Vec<Key>,
    A: Fn(&Ctx) -> Vec<Key>,
    R: Fn(Arc<Ctx>, Key) -> F,
    F: Future<Output = Result<Requeue, String>>,
{
    let mut events = ctx.api.store.subscribe();
    let mut ready: VecDeque<Key> = VecDeque::new();
    let mut queued: HashSet<Key> = HashSet::new();
    let mut delayed: BTreeMap<Instant, Vec<Key>> = BTreeMap::new();
    let push = |k: Key, ready: &mut VecDeque<Key>, queued: &mut HashSet<Key>| {
        if queued.insert(k.clone()) {
            ready.push_back(k);
        }
    };
    for k in all(&ctx) {
        push(k, &mut ready, &mut queued);
    }
    loop {
        // Drain everything that is already waiting before doing work, so bursts coalesce.
        loop {
            match events.try_recv() {
                Ok(e) => {
                    for k in map(&ctx, &e) {
                        push(k, &mut ready, &mut queued);
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    for k in all(&ctx) {
                        push(k, &mut ready, &mut queued);
                    }
                }
                Err(broadcast::error::TryRecvError::Closed) => return,
            }
        }
        let now = Instant::now();
        let due: Vec<Instant> = delayed.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for k in delayed.remove(&t).unwrap_or_default() {
                push(k, &mut ready, &mut queued);
            }
        }
        if let Some(key) = ready.pop_front() {
            queued.remove(&key);
            match reconcile_guarded(reconcile(ctx.clone(), key.clone())).await {
                Ok(Some(after)) => delayed.entry(Instant::now() + after).or_default().push(key),
                Ok(None) => {}
                Err(Failure::Error(e)) => {
                    tracing::warn!(controller = name, key = ?key, error = %e, "reconcile failed; retrying");
                    delayed.entry(Instant::now() + ERROR_BACKOFF).or_default().push(key);
                }
                Err(Failure::Panic(e)) => {
                    tracing::error!(controller = name, key = ?key, panic = %e, "reconcile panicked; retrying slowly");
                    delayed.entry(Instant::now() + PANIC_BACKOFF).or_default().push(key);
                }
            }
            continue;
        }
        let next_due = delayed.keys().next().copied();
        let sleep = async {
            match next_due {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep => {}
            received = events.recv() => match received {
                Ok(e) => for k in map(&ctx, &e) { push(k, &mut ready, &mut queued); },
                Err(broadcast::error::RecvError::Lagged(_)) => for k in all(&ctx) { push(k, &mut ready, &mut queued); },
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reconcile_is_a_failure_of_that_key_only() {
        let panicking = async {
            let odd: serde_json::Value = serde_json::json!({"labels": "not-a-map"});
            let mut copy = odd.clone();
            copy["labels"]["kubevirt.io/nodeName"] = "n1".into();
            Ok::<Requeue, String>(None)
        };
        match reconcile_guarded(panicking).await {
            Err(Failure::Panic(message)) => assert!(message.contains("cannot access key"), "{message}"),
            other => panic!("expected a caught panic, got {other:?}"),
        }
        assert_eq!(
            reconcile_guarded(async { Err::<Requeue, _>("boom".to_string()) }).await,
            Err(Failure::Error("boom".into()))
        );
        assert_eq!(
            reconcile_guarded(async { Ok(Some(Duration::from_secs(1))) }).await,
            Ok(Some(Duration::from_secs(1)))
        );
    }
}
