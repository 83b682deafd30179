//! The boundary between the runner and where a scenario runs. `embedded` runs
//! the driver as processes and plays the Kubernetes components; `cluster` runs
//! the chart on a real Kubernetes (the local one from `scenarios cluster`, or an
//! existing one by kubeconfig). The steps are shared; what differs is here.

pub mod cluster;
mod driver_pods;
pub mod embedded;
mod local_data;
mod pod_diagnosis;
pub mod simulator;

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::env::Env;
use crate::Failure;

pub trait Cluster: Send {
    /// Clients and shared bookkeeping.
    fn env(&self) -> &Arc<Env>;

    /// The simulator's admin API (`/sim/<path>`), for faults.
    fn host_admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> impl Future<Output = Result<String, Failure>> + Send;

    /// The VM halts (the simulator stops it) and its node with it: embedded, the
    /// runner's node lifecycle sees the VM down; on a local cluster the node's
    /// kubelet, containerd and containers die too, so Kubernetes finds out as it
    /// would (the kubelet stops reporting).
    fn stop_vm(&mut self, vm: &str) -> impl Future<Output = Result<(), Failure>> + Send;

    /// The VM runs again, and its node boots (kubelet and containerd start).
    fn start_vm(&mut self, vm: &str) -> impl Future<Output = Result<(), Failure>> + Send;

    /// kill -9 then start again: `controller`, `node:<vm>` or `simulator`.
    fn kill_and_restart(&mut self, what: &str) -> impl Future<Output = Result<(), Failure>> + Send;

    /// From now on the driver's cloud-config names the host by `address` (same port,
    /// same cluster); processes read it when they (re)start.
    fn change_host_address(&mut self, address: &str) -> impl Future<Output = Result<(), Failure>> + Send;

    /// The file backing host volume `host_pv` (the simulator's Longhorn volume), for
    /// data another driver left on it (`upstreamVolumes`). Only while nothing uses it.
    fn host_volume_file(&self, host_pv: &str) -> Result<std::path::PathBuf, Failure> {
        Err(Failure(format!("this backend cannot reach the backing file of host volume {host_pv}")))
    }

    /// How many loop devices back a host volume (0 once detached everywhere).
    fn loop_devices_of(&self, host_pv: &str) -> impl Future<Output = Result<usize, Failure>> + Send;

    /// The driver's orphan report (JSON rows) for this guest cluster, run without guest access.
    fn orphan_report(&self) -> impl Future<Output = Result<Vec<Value>, Failure>> + Send;

    /// Start recording volumes that appear in two VMs at once.
    fn watch_double_attach(&mut self);

    /// Makes the pod `runPod` built (name, namespace, `spec.nodeName`, one
    /// container `app` with the claims) runnable here: image, command, finalizers.
    fn adapt_pod(&self, pod: &mut Value);

    /// Writes `len` random bytes to `path` in the pod (at `offset` of a block
    /// device) and returns their SHA-256 (hex).
    fn write_data(&self, target: &DataTarget, len: u64) -> impl Future<Output = Result<String, Failure>> + Send;

    /// SHA-256 (hex) of a file in the pod, or of `len` bytes at `offset` of a block device.
    fn read_data(&self, target: &DataTarget, len: u64) -> impl Future<Output = Result<String, Failure>> + Send;

    /// Total bytes of the filesystem the pod sees at the target path (`df`'s size).
    fn filesystem_size(&self, target: &DataTarget) -> impl Future<Output = Result<u64, Failure>> + Send;

    /// The calls of a phase (`attach`, `stage`, …) that failed so far, one line each.
    /// Embedded: the runner's own timeline of the calls it made.
    fn failed_calls(&self, phase: &str) -> impl Future<Output = Result<Vec<String>, Failure>> + Send {
        let failed: Vec<String> = self
            .env()
            .timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|p| p.name == phase && !p.ok)
            .map(|p| format!("{} at {} ms", p.subject, p.start_ms))
            .collect();
        async move { Ok(failed) }
    }

    /// Whether a `phase` (CSI node call, e.g. `stage`) is under way on `node`.
    fn in_flight(&self, phase: &str, node: &str) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Stops everything and removes what the run made (mounts, loop devices).
    fn shutdown(self) -> impl Future<Output = ()> + Send;
}

/// Where data steps read and write.
/// The hex SHA-256 of data, as scenarios remember and compare it.
pub fn checksum(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone)]
pub struct DataTarget {
    pub namespace: String,
    pub pod: String,
    pub path: String,
    pub offset: u64,
}

/// How to start a backend for one scenario.
pub trait Backend {
    type Cluster: Cluster;
    fn start(
        &self,
        scenario: &crate::model::Scenario,
        work: &std::path::Path,
    ) -> impl Future<Output = Result<Self::Cluster, Failure>> + Send;
}
