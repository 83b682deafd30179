//! What the Kubernetes-side components and the steps share while a scenario
//! runs: clients, the kubelet's bookkeeping, the timeline, remembered checksums.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use csi_proto::NodeClient;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use serde::Serialize;
use tonic::transport::Channel;

use crate::csi::Csi;

pub const DRIVER: &str = "driver.harvesterhci.io";

/// One published volume of a pod, as the kubelet set it up.
#[derive(Debug, Clone)]
pub struct PodVolume {
    pub pvc: String,
    /// Where the pod sees it (`/data`).
    pub mount_path: String,
    /// Where it really is on this machine (the publish target).
    pub host_path: PathBuf,
    pub block: bool,
    pub pv: String,
    pub staging: PathBuf,
}

#[derive(Debug, Default)]
pub struct Kubelet {
    /// (node, pv) → staging path of volumes staged there.
    pub staged: BTreeMap<(String, String), PathBuf>,
    /// namespace/pod → its volumes.
    pub pods: BTreeMap<String, Vec<PodVolume>>,
    /// namespace/pod → who its container runs as (pods that set it).
    pub security: BTreeMap<String, crate::model::PodSecurity>,
}

/// A measured phase of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub subject: String,
    pub start_ms: u128,
    pub duration_ms: u128,
    pub ok: bool,
}

pub struct Env {
    pub guest: kube::Client,
    pub host: kube::Client,
    /// The VMs' namespace on the host.
    pub host_namespace: String,
    pub csi: Csi,
    pub nodes: BTreeMap<String, NodeClient<Channel>>,
    pub kubelet_root: PathBuf,
    pub kubelet: Mutex<Kubelet>,
    pub checksums: Mutex<HashMap<String, String>>,
    pub started: Instant,
    pub timeline: Mutex<Vec<Phase>>,
    /// Calls under way as (phase, `volume@node`) pairs, for steps that act mid-call.
    pub in_flight: Mutex<Vec<(String, String)>>,
    /// Volumes seen in two VMs at once (recorded by the double-attach watcher).
    pub double_attached: Mutex<Vec<String>>,
    /// Disks seen in the spec of a VM that must get none (`neverPluggedInto`).
    pub plugged_while_down: Mutex<Vec<String>>,
    /// Counts the guest API's changes, where the runner can see them (the embedded
    /// backend's in-process guest API): the emulated components wake on them
    /// instead of only polling.
    pub guest_changes: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Env {
    /// Marks a call as under way until [`Env::record`] closes it.
    pub fn begin(&self, name: &str, subject: &str) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).push((name.into(), subject.into()));
    }

    /// Whether a `name` call whose subject ends with `@<node>` is under way.
    pub fn is_in_flight(&self, name: &str, node: &str) -> bool {
        let suffix = format!("@{node}");
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(n, s)| n == name && s.ends_with(&suffix))
    }

    pub fn record(&self, name: &str, subject: &str, started: Instant, ok: bool) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = in_flight.iter().position(|(n, s)| n == name && s == subject) {
                in_flight.remove(i);
            }
        }
        let phase = Phase {
            name: name.into(),
            subject: subject.into(),
            start_ms: started.duration_since(self.started).as_millis(),
            duration_ms: started.elapsed().as_millis(),
            ok,
        };
        self.timeline.lock().unwrap_or_else(|p| p.into_inner()).push(phase);
    }

    pub fn pvcs(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.guest.clone(), ns)
    }

    pub fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.guest.clone())
    }

    pub fn node(&self, vm: &str) -> Option<NodeClient<Channel>> {
        self.nodes.get(vm).cloned()
    }
}

/// Per-object retry state with exponential backoff, as the sidecars and the kubelet keep.
#[derive(Debug)]
pub struct Backoff {
    next: HashMap<String, (u32, Instant)>,
    first: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// The sidecars' retry, compressed (200 ms doubling to 5 s; theirs is 1 s to 5 min) so
    /// that fault scenarios converge in seconds.
    fn default() -> Self {
        Self { next: HashMap::new(), first: Duration::from_millis(200), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The kubelet's volume operations as they really retry: 500 ms doubling to 2 min 2 s,
    /// so a failed mount costs what it costs on a real node (harvester#10217).
    pub fn kubelet() -> Self {
        Self { next: HashMap::new(), first: Duration::from_millis(500), max: Duration::from_secs(122) }
    }

    pub fn ready(&self, key: &str) -> bool {
        self.next.get(key).is_none_or(|(_, at)| Instant::now() >= *at)
    }
    pub fn failed(&mut self, key: &str) {
        let attempts = self.next.get(key).map_or(0, |(n, _)| *n) + 1;
        let delay = self.first.saturating_mul(1 << (attempts - 1).min(16)).min(self.max);
        self.next.insert(key.to_string(), (attempts, Instant::now() + delay));
    }
    pub fn succeeded(&mut self, key: &str) {
        self.next.remove(key);
    }
}

/// An event on a guest object (what `kubectl describe` would show).
pub async fn guest_event(env: &Env, kind: &str, ns: &str, name: &str, kind_type: &str, reason: &str, message: &str) {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(env.guest.clone(), ns);
    let now = jiff::Timestamp::now();
    let ev: k8s_openapi::api::core::v1::Event = match serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"kind": kind, "name": name, "namespace": ns},
        "reason": reason, "message": message, "type": kind_type,
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "count": 1, "source": {"component": "scenarios"},
    })) {
        Ok(e) => e,
        Err(_) => return,
    };
    let _ = api.create(&Default::default(), &ev).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_its_first_delay_up_to_its_cap() {
        let mut b = Backoff::kubelet();
        let waits: Vec<u128> = (0..10)
            .map(|_| {
                b.failed("k");
                b.next["k"].1.duration_since(Instant::now()).as_millis()
            })
            .collect();
        assert!((450..=500).contains(&waits[0]), "{waits:?}");
        assert!((950..=1000).contains(&waits[1]), "{waits:?}");
        assert!((121_000..=122_000).contains(&waits[9]), "{waits:?}");
        assert!(!b.ready("k"));
        b.succeeded("k");
        assert!(b.ready("k"));
    }
}
