//! The chart's pods in the guest cluster (cluster backend): which run where,
//! and whether they are ready.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// The namespace the chart is installed in, per scenario.
pub const NAMESPACE: &str = "hcsi-system";

/// Every container of the pod is ready.
pub fn all_ready(pod: &Pod) -> bool {
    ready_except(pod, &[])
}

/// Every container of the pod is ready, but for those named in `except`.
pub fn ready_except(pod: &Pod, except: &[&str]) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready || except.contains(&c.name.as_str())))
}

/// The pod among `pods` that runs on `node`.
pub fn pod_on<'a>(pods: &'a [Pod], node: &str) -> Option<&'a Pod> {
    pods.iter().find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
}

/// The chart's pods of `component` (`controller` or `node`).
pub async fn driver_pods(guest: &kube::Client, component: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(guest.clone(), NAMESPACE);
    api.list(&ListParams::default().labels(&format!("app.kubernetes.io/component={component}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}
