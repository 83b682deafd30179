//! Work on independent objects that outlives the pass that started it, as the
//! sidecars' worker pools and the kubelet's operation executor work: a pass
//! starts what is due and goes on; it never waits for a slow call. When a pass
//! waited for all it had started, an object that appeared meanwhile waited for
//! the slowest call of the pass before (an attach that waits for a 500 ms
//! hotplug), and a burst went through in waves.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// Calls under way, one at most per key.
pub struct Workers<R> {
    tasks: JoinSet<R>,
    keys: HashMap<Id, String>,
    busy: HashSet<String>,
}

impl<R: Send + 'static> Default for Workers<R> {
    fn default() -> Self {
        Self { tasks: JoinSet::new(), keys: HashMap::new(), busy: HashSet::new() }
    }
}

impl<R: Send + 'static> Workers<R> {
    /// Whether work on `key` was started and its outcome not taken yet.
    pub fn busy(&self, key: &str) -> bool {
        self.busy.contains(key)
    }

    /// Starts `work` on `key`; the caller checks [`busy`](Self::busy) first.
    pub fn start(&mut self, key: String, work: impl Future<Output = R> + Send + 'static) {
        let id = self.tasks.spawn(work).id();
        self.busy.insert(key.clone());
        self.keys.insert(id, key);
    }

    /// The outcomes of the work that ended since the last call, by key. Work
    /// that panicked ends with `Err` and its message, so its key is free again.
    pub fn ended(&mut self) -> Vec<(String, Result<R, String>)> {
        let mut out = Vec::new();
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            let (id, outcome) = match joined {
                Ok((id, r)) => (id, Ok(r)),
                Err(e) => (e.id(), Err(format!("the worker failed: {e}"))),
            };
            if let Some(key) = self.keys.remove(&id) {
                self.busy.remove(&key);
                out.push((key, outcome));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits for the next outcomes, however long the machine takes to run the work.
    async fn next_ended<R: Send + 'static>(workers: &mut Workers<R>) -> Vec<(String, Result<R, String>)> {
        loop {
            let ended = workers.ended();
            if !ended.is_empty() {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_key_stays_busy_until_its_outcome_is_taken() {
        let mut workers = Workers::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        workers.start("slow".into(), async move {
            let _ = rx.await;
            1
        });
        workers.start("fast".into(), async { 2 });
        assert!(workers.busy("slow") && workers.busy("fast"));
        // The fast one ends while the slow one still waits; nobody waits for the slow one.
        let ended = next_ended(&mut workers).await;
        assert_eq!(ended, vec![("fast".to_string(), Ok(2))]);
        assert!(!workers.busy("fast"));
        assert!(workers.busy("slow"), "finished or not, a key is busy until its outcome is taken");
        tx.send(()).expect("the slow worker waits");
        let ended = next_ended(&mut workers).await;
        assert_eq!(ended, vec![("slow".to_string(), Ok(1))]);
        assert!(!workers.busy("slow"));
    }

    #[tokio::test]
    async fn a_panicking_worker_frees_its_key_with_an_error() {
        let mut workers: Workers<u8> = Workers::default();
        workers.start("boom".into(), async { panic!("on purpose") });
        let ended = next_ended(&mut workers).await;
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0, "boom");
        assert!(ended[0].1.as_ref().is_err_and(|e| e.contains("panicked")), "{:?}", ended[0].1);
        assert!(!workers.busy("boom"));
    }
}
