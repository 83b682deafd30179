//! Why the driver's pods are not ready. A wait for them that runs out on the
//! cluster backend reports this instead of a bare "not ready": on CI the
//! printed failure is often all there is to go on, and "ContainerCreating:
//! FailedMount …" or "CrashLoopBackOff, last exit 1" points at the cause where
//! "not ready" does not. The one-line descriptions are pure functions; what
//! gathers them from the cluster is at the top.

use std::path::Path;

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod};
use kube::api::{Api, ListParams};

use super::driver_pods::{all_ready, driver_pods, pod_on, ready_except, NAMESPACE};

/// One line per driver pod that is not ready (the controller's, and the node
/// plugin's on each of `plugin_nodes`), each starting on a new line; on the
/// local cluster (`local_state`) also each node's dead kubelet or containerd
/// and the free disk.
pub async fn driver_not_ready(
    guest: &kube::Client,
    plugin_nodes: &[String],
    not_waited: &[&str],
    local_state: Option<&Path>,
) -> String {
    let mut out = String::new();
    for p in driver_pods(guest, "controller").await {
        if !ready_except(&p, not_waited) {
            out.push_str(&format!("\ncontroller: {}", pod_state(&p)));
        }
    }
    let node_pods = driver_pods(guest, "node").await;
    for n in plugin_nodes {
        let on_node = pod_on(&node_pods, n);
        if !on_node.is_some_and(all_ready) {
            let why = node_plugin_diagnosis(guest, n, on_node, &node_pods).await;
            out.push_str(&format!("\nnode plugin on {n}: {why}"));
        }
        if let Some(state) = local_state {
            out.push_str(&local_node_processes(state, n));
        }
    }
    if let Some(state) = local_state {
        // A full disk stops containerd from unpacking any container.
        out.push_str(&format!("\ndisk: {} free under {}", free_space(state), state.display()));
    }
    out
}

/// What stands between the node plugin on `node` and ready: its pod's state
/// (or the driver pods there are, when none is on that node), the pod's last
/// warning event, and the node's Ready condition when it is not True.
async fn node_plugin_diagnosis(guest: &kube::Client, node: &str, pod: Option<&Pod>, all: &[Pod]) -> String {
    let mut parts = Vec::new();
    match pod {
        Some(p) => {
            parts.push(pod_state(p));
            let events: Api<Event> = Api::namespaced(guest.clone(), NAMESPACE);
            let name = p.metadata.name.clone().unwrap_or_default();
            let selector = format!("involvedObject.name={name}");
            if let Ok(l) = events.list(&ListParams::default().fields(&selector)).await {
                parts.extend(last_warning(&l.items));
            }
        }
        None => {
            let placed: Vec<String> = all
                .iter()
                .map(|p| {
                    format!(
                        "{} on {}",
                        p.metadata.name.as_deref().unwrap_or("?"),
                        p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("no node")
                    )
                })
                .collect();
            parts.push(format!("no node plugin pod there (node plugin pods: [{}])", placed.join(", ")));
        }
    }
    if let Ok(Some(n)) = Api::<Node>::all(guest.clone()).get_opt(node).await {
        parts.extend(node_not_ready(&n));
    }
    parts.join("; ")
}

/// On the local cluster: the node's kubelet or containerd that is no longer
/// running, with the end of its log (nothing restarts them, as systemd would).
fn local_node_processes(state: &Path, node: &str) -> String {
    let mut out = String::new();
    for component in ["kubelet", "containerd"] {
        let name = format!("{node}-{component}");
        if crate::cluster::process::running(state, &name).is_none() {
            let tail = crate::cluster::process::tail(state, &name, 5);
            out.push_str(&format!("\n{component} of {node} is not running; its log ends:\n{tail}"));
        }
    }
    out
}

/// `df`'s view of the free space at `path` ("unknown" if it cannot say).
fn free_space(path: &Path) -> String {
    std::process::Command::new("df")
        .args(["-h", "--output=avail"])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.lines().nth(1).map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The pod's phase, whether it is going away, and each container that is not
/// ready with its state, restarts and last exit.
pub fn pod_state(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref();
    let mut out = format!("pod {name} {}", status.and_then(|s| s.phase.as_deref()).unwrap_or("(no phase)"));
    if pod.metadata.deletion_timestamp.is_some() {
        out.push_str(", terminating");
    }
    if let Some(c) = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled" && c.status != "True"))
    {
        out.push_str(&format!(
            ", unscheduled ({}: {})",
            c.reason.as_deref().unwrap_or("?"),
            c.message.as_deref().unwrap_or("")
        ));
    }
    let containers = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    if containers.is_empty() {
        out.push_str(", no container started yet");
    }
    for c in containers.iter().filter(|c| !c.ready) {
        out.push_str(&format!("; {}", container_state(c)));
    }
    out
}

fn container_state(c: &ContainerStatus) -> String {
    let state = c.state.as_ref();
    let mut out = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let mut s = format!("{} waiting ({})", c.name, w.reason.as_deref().unwrap_or("?"));
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {}", shorten(m)));
        }
        s
    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        format!("{} exited {} ({})", c.name, t.exit_code, t.reason.as_deref().unwrap_or("?"))
    } else if state.and_then(|s| s.running.as_ref()).is_some() {
        format!("{} running, not ready", c.name)
    } else {
        format!("{} in no state", c.name)
    };
    if c.restart_count > 0 {
        out.push_str(&format!(", {} restart(s)", c.restart_count));
    }
    if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
        out.push_str(&format!(", last exit {} ({})", t.exit_code, t.reason.as_deref().unwrap_or("?")));
        // With FallbackToLogsOnError this is the log's end, where the reason is.
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            out.push_str(&format!(": …{}", last_chars(m, 300)));
        }
    }
    out
}

/// The last `n` characters of the message on one line.
fn last_chars(message: &str, n: usize) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let count = one_line.chars().count();
    one_line.chars().skip(count.saturating_sub(n)).collect()
}

/// The node's Ready condition when it is not True (a dead kubelet shows here).
pub fn node_not_ready(node: &Node) -> Option<String> {
    let ready = node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready");
    match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!(
            "node {} Ready={} ({}: {})",
            node.metadata.name.as_deref().unwrap_or("?"),
            c.status,
            c.reason.as_deref().unwrap_or("?"),
            c.message.as_deref().unwrap_or("")
        )),
        None => Some(format!("node {} reports no Ready condition", node.metadata.name.as_deref().unwrap_or("?"))),
    }
}

/// The newest warning among `events` (those of one object): FailedMount,
/// FailedCreatePodSandBox, BackOff and the like.
pub fn last_warning(events: &[Event]) -> Option<String> {
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    let e = events.iter().filter(|e| e.type_.as_deref() == Some("Warning")).max_by_key(|e| when(e))?;
    Some(format!(
        "last warning {} (×{}): {}",
        e.reason.as_deref().unwrap_or("?"),
        e.count.unwrap_or(1),
        shorten(e.message.as_deref().unwrap_or(""))
    ))
}

/// Messages (mount errors, sandbox errors) can run to kilobytes: the first 300
/// characters carry the cause.
fn shorten(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn free_space_is_what_df_says() {
        let free = free_space(Path::new("/"));
        assert!(free.chars().next().is_some_and(|c| c.is_ascii_digit()), "{free}");
        assert_eq!(free_space(Path::new("/no/such/dir")), "unknown");
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "node-abc"}, "status": status})).expect("a pod")
    }

    #[rstest::rstest]
    #[case::crash_looping(
        json!({"phase": "Running", "containerStatuses": [
            {"name": "registrar", "ready": true, "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {}}},
            {"name": "driver", "ready": false, "restartCount": 4, "image": "i", "imageID": "",
             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        "pod node-abc Running; driver waiting (CrashLoopBackOff): back-off 40s restarting failed container, 4 restart(s), last exit 1 (Error)"
    )]
    #[case::creating(
        json!({"phase": "Pending", "containerStatuses": [
            {"name": "driver", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        "pod node-abc Pending; driver waiting (ContainerCreating)"
    )]
    #[case::unscheduled(
        json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        "pod node-abc Pending, unscheduled (Unschedulable: 0/3 nodes are available), no container started yet"
    )]
    #[case::running_not_ready(
        json!({"phase": "Running", "containerStatuses": [
            {"name": "driver", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {}}}]}),
        "pod node-abc Running; driver running, not ready"
    )]
    fn a_pod_says_why_it_is_not_ready(#[case] status: serde_json::Value, #[case] want: &str) {
        assert_eq!(pod_state(&pod(status)), want);
    }

    #[test]
    fn a_crashed_containers_log_tail_is_kept_from_its_end() {
        let log =
            format!("{}\nError: serving: binding the metrics address 0.0.0.0:9809: Address in use", "x ".repeat(500));
        let p = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "driver", "ready": false, "restartCount": 1, "image": "i", "imageID": "",
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": log}}}]}));
        let got = pod_state(&p);
        assert!(got.ends_with("x x Error: serving: binding the metrics address 0.0.0.0:9809: Address in use"), "{got}");
        assert!(got.contains("last exit 1 (Error): …x x"), "{got}");
        assert!(got.chars().count() < 420, "{got}");
    }

    #[test]
    fn a_terminating_pod_says_so() {
        let mut p = pod(json!({"phase": "Running"}));
        p.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(pod_state(&p), "pod node-abc Running, terminating, no container started yet");
    }

    #[test]
    fn only_a_node_that_is_not_ready_is_reported() {
        let node = |status: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "guest-1"}, "status": {"conditions": [
                {"type": "Ready", "status": status, "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}
            ]}}))
            .expect("a node")
        };
        assert_eq!(node_not_ready(&node("True")), None);
        assert_eq!(
            node_not_ready(&node("Unknown")).as_deref(),
            Some("node guest-1 Ready=Unknown (NodeStatusUnknown: Kubelet stopped posting node status.)")
        );
    }

    #[test]
    fn the_newest_warning_is_reported_shortened() {
        let event = |reason: &str, ty: &str, at: &str, message: String| -> Event {
            serde_json::from_value(json!({"metadata": {"name": reason}, "involvedObject": {}, "reason": reason,
                "type": ty, "lastTimestamp": at, "count": 3, "message": message}))
            .expect("an event")
        };
        let events = vec![
            event("FailedMount", "Warning", "2026-12-01T05:00:00Z", "old".into()),
            event("Pulled", "Normal", "2026-12-01T05:02:00Z", "fine".into()),
            event(
                "FailedCreatePodSandBox",
                "Warning",
                "2026-12-01T05:01:00Z",
                format!("rpc error:\n{}", "x".repeat(400)),
            ),
        ];
        let got = last_warning(&events).expect("a warning");
        assert!(got.starts_with("last warning FailedCreatePodSandBox (×3): rpc error: xxx"), "{got}");
        assert!(got.ends_with("x…"), "{got}");
        assert_eq!(last_warning(&events[1..2]), None);
    }
}
