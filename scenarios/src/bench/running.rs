//! When pods turn Running, seen through one watch on their namespace. The
//! scenario steps poll every 100 ms, which would add up to 100 ms to each
//! pod the bench times and blur the very overhead it measures.

use std::collections::HashSet;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

use crate::Failure;

/// Waits until every pod in `pods` (namespace `default`) is Running; returns
/// how long that took.
pub async fn until_running(guest: &kube::Client, pods: &[String], within: Duration) -> Result<Duration, Failure> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let api: Api<Pod> = Api::namespaced(guest.clone(), "default");
    let mut waiting: HashSet<&str> = pods.iter().map(String::as_str).collect();
    let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
    let mut last_error = None;
    while !waiting.is_empty() {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => {
                let mut left: Vec<&str> = waiting.into_iter().collect();
                left.sort_unstable();
                let watch = last_error.map(|e| format!(" (last watch error: {e})")).unwrap_or_default();
                return Err(Failure(format!(
                    "{} of {} pods not Running within {within:?}, e.g. {}{watch}",
                    left.len(),
                    pods.len(),
                    left[0]
                )));
            }
            Ok(None) => return Err(Failure("the pod watch ended".into())),
            // The watcher backs off and lists again by itself.
            Ok(Some(Err(e))) => last_error = Some(e.to_string()),
            Ok(Some(Ok(pod))) => {
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    if let Some(name) = pod.metadata.name.as_deref() {
                        waiting.remove(name);
                    }
                }
            }
        }
    }
    Ok(started.elapsed())
}
