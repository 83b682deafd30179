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
            match reconcile(ctx.clone(), key.clone()).await {
                Ok(Some(after)) => delayed.entry(Instant::now() + after).or_default().push(key),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(controller = name, key = ?key, error = %e, "reconcile failed; retrying");
                    delayed.entry(Instant::now() + ERROR_BACKOFF).or_default().push(key);
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
