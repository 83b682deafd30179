//! The boundary between the runner and where a scenario runs. `embedded`
//! (here) runs everything on this machine; a cluster backend (kind or a local
//! control plane with the Helm chart and the real sidecars) implements the
//! same trait.

pub mod embedded;

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

    /// Stops everything and removes what the run made (mounts, loop devices).
    fn shutdown(self) -> impl Future<Output = ()> + Send;
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
