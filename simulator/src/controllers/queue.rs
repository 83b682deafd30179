//! A minimal controller work queue: store events are mapped to keys, each key is
//! reconciled one at a time (several keys at once, as the real controllers' worker
//! pools do), reconcilers may ask to be called again later, and a lagging event
//! receiver triggers a full resync.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
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
/// Reconciles of different keys under way at once. The work waits mostly on
/// losetup, mkfs and file copies: one at a time, a burst of a hundred volumes
/// queued behind each other's subprocesses (KubeVirt's and Longhorn's controllers
/// run worker pools too).
const WORKERS: usize = 4;
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
    let mut keys = Keys::default();
    let mut inflight = FuturesUnordered::new();
    for k in all(&ctx) {
        keys.push(k);
    }
    loop {
        // Drain everything that is already waiting before starting work, so bursts coalesce.
        loop {
            match events.try_recv() {
                Ok(e) => map(&ctx, &e).into_iter().for_each(|k| keys.push(k)),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(_)) => all(&ctx).into_iter().for_each(|k| keys.push(k)),
                Err(broadcast::error::TryRecvError::Closed) => return,
            }
        }
        keys.release_due(Instant::now());
        while inflight.len() < WORKERS {
            let Some(key) = keys.start() else { break };
            let work = reconcile(ctx.clone(), key.clone());
            inflight.push(async move { (key, reconcile_guarded(work).await) });
        }
        let next_due = keys.next_due();
        let sleep = async {
            match next_due {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Reconciles already under way finish (the caller bounds how long it
                // waits), as when the controller worked one key at a time.
                while inflight.next().await.is_some() {}
                return;
            }
            Some((key, outcome)) = inflight.next(), if !inflight.is_empty() => {
                let after = match outcome {
                    Ok(after) => after,
                    Err(Failure::Error(e)) => {
                        tracing::warn!(controller = name, key = ?key, error = %e, "reconcile failed; retrying");
                        Some(ERROR_BACKOFF)
                    }
                    Err(Failure::Panic(e)) => {
                        tracing::error!(controller = name, key = ?key, panic = %e, "reconcile panicked; retrying slowly");
                        Some(PANIC_BACKOFF)
                    }
                };
                keys.finish(key, after);
            }
            _ = sleep => {}
            received = events.recv() => match received {
                Ok(e) => map(&ctx, &e).into_iter().for_each(|k| keys.push(k)),
                Err(broadcast::error::RecvError::Lagged(_)) => all(&ctx).into_iter().for_each(|k| keys.push(k)),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The queue's bookkeeping: which keys wait (each once), which are being
/// reconciled, which must run again once their reconcile ends, and which are
/// delayed until a time.
#[derive(Default)]
struct Keys {
    ready: VecDeque<Key>,
    queued: HashSet<Key>,
    running: HashSet<Key>,
    /// Asked for while being reconciled: the running pass may have read the
    /// object before the change, so the key runs once more afterwards.
    again: HashSet<Key>,
    delayed: BTreeMap<Instant, Vec<Key>>,
}

impl Keys {
    fn push(&mut self, key: Key) {
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// The next key to reconcile, now marked running.
    fn start(&mut self) -> Option<Key> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// A reconcile ended; `after` is when it asked to run again.
    fn finish(&mut self, key: Key, after: Requeue) {
        self.running.remove(&key);
        if let Some(after) = after {
            self.delayed.entry(Instant::now() + after).or_default().push(key.clone());
        }
        if self.again.remove(&key) {
            self.push(key);
        }
    }

    fn release_due(&mut self, now: Instant) {
        let due: Vec<Instant> = self.delayed.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for k in self.delayed.remove(&t).unwrap_or_default() {
                self.push(k);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> Key {
        Key::new("t", "ns", name)
    }

    #[test]
    fn a_key_waits_once_however_often_it_is_asked_for() {
        let mut keys = Keys::default();
        keys.push(k("a"));
        keys.push(k("b"));
        keys.push(k("a"));
        assert_eq!(keys.start(), Some(k("a")));
        assert_eq!(keys.start(), Some(k("b")));
        assert_eq!(keys.start(), None);
    }

    #[test]
    fn a_key_never_runs_twice_at_once_and_a_change_meanwhile_runs_it_again() {
        let mut keys = Keys::default();
        keys.push(k("a"));
        assert_eq!(keys.start(), Some(k("a")));
        keys.push(k("a"));
        assert_eq!(keys.start(), None, "a is still being reconciled");
        keys.finish(k("a"), None);
        assert_eq!(keys.start(), Some(k("a")), "the change during the pass is not lost");
        keys.finish(k("a"), None);
        assert_eq!(keys.start(), None);
    }

    #[test]
    fn a_requeue_comes_due_at_its_time() {
        let mut keys = Keys::default();
        keys.push(k("a"));
        let a = keys.start().expect("a");
        keys.finish(a, Some(Duration::from_secs(60)));
        assert_eq!(keys.start(), None);
        let due = keys.next_due().expect("a is delayed");
        keys.release_due(due - Duration::from_secs(1));
        assert_eq!(keys.start(), None, "not yet");
        keys.release_due(due);
        assert_eq!(keys.start(), Some(k("a")));
        assert_eq!(keys.next_due(), None);
    }

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
