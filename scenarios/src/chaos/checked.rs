//! A backend that looks for leftovers when a scenario ends: the cleanup steps have
//! run (pods, claims and snapshots deleted, no host volume left), the processes
//! still run, and nothing of the run may remain on this machine. The look must
//! come before the backend's own shutdown, which unmounts and releases whatever a
//! failed scenario left (so a check after it could never fail); the runner calls
//! `shutdown` right after the last step, so the wrapper does it there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::leftovers;
use crate::backend::{Backend, Cluster, DataTarget};
use crate::env::Env;
use crate::model::Scenario;
use crate::Failure;

/// A released loop device lingers until its last opener closes it: leftovers
/// must be gone within this, after the scenario's own waits have converged.
pub const LEFTOVER_BOUND: Duration = Duration::from_secs(15);

/// What the last scenario left behind (empty: nothing).
pub type Found = Arc<Mutex<Vec<String>>>;

pub struct Checked<B> {
    pub inner: B,
    pub found: Found,
}

pub struct CheckedCluster<C> {
    inner: C,
    work: PathBuf,
    found: Found,
}

impl<B: Backend + Sync> Backend for Checked<B>
where
    B::Cluster: Sync,
{
    type Cluster = CheckedCluster<B::Cluster>;

    async fn start(&self, scenario: &Scenario, work: &Path) -> Result<Self::Cluster, Failure> {
        self.found.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let inner = self.inner.start(scenario, work).await?;
        Ok(CheckedCluster { inner, work: work.to_path_buf(), found: self.found.clone() })
    }
}

impl<C: Cluster + Sync> Cluster for CheckedCluster<C> {
    fn env(&self) -> &Arc<Env> {
        self.inner.env()
    }

    async fn host_admin(&self, method: &str, path: &str, body: Option<Value>) -> Result<String, Failure> {
        self.inner.host_admin(method, path, body).await
    }

    async fn stop_vm(&mut self, vm: &str) -> Result<(), Failure> {
        self.inner.stop_vm(vm).await
    }

    async fn start_vm(&mut self, vm: &str) -> Result<(), Failure> {
        self.inner.start_vm(vm).await
    }

    async fn kill_and_restart(&mut self, what: &str) -> Result<(), Failure> {
        self.inner.kill_and_restart(what).await
    }

    async fn change_host_address(&mut self, address: &str) -> Result<(), Failure> {
        self.inner.change_host_address(address).await
    }

    fn host_volume_file(&self, host_pv: &str) -> Result<PathBuf, Failure> {
        self.inner.host_volume_file(host_pv)
    }

    async fn loop_devices_of(&self, host_pv: &str) -> Result<usize, Failure> {
        self.inner.loop_devices_of(host_pv).await
    }

    async fn orphan_report(&self) -> Result<Vec<Value>, Failure> {
        self.inner.orphan_report().await
    }

    fn watch_double_attach(&mut self) {
        self.inner.watch_double_attach()
    }

    fn adapt_pod(&self, pod: &mut Value) {
        self.inner.adapt_pod(pod)
    }

    async fn write_data(&self, target: &DataTarget, len: u64) -> Result<String, Failure> {
        self.inner.write_data(target, len).await
    }

    async fn read_data(&self, target: &DataTarget, len: u64) -> Result<String, Failure> {
        self.inner.read_data(target, len).await
    }

    async fn filesystem_size(&self, target: &DataTarget) -> Result<u64, Failure> {
        self.inner.filesystem_size(target).await
    }

    async fn failed_calls(&self, phase: &str) -> Result<Vec<String>, Failure> {
        self.inner.failed_calls(phase).await
    }

    async fn in_flight(&self, phase: &str, node: &str) -> Result<bool, Failure> {
        self.inner.in_flight(phase, node).await
    }

    async fn shutdown(self) {
        let deadline = Instant::now() + LEFTOVER_BOUND;
        let mut left = leftovers::scan(&self.work);
        while !left.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            left = leftovers::scan(&self.work);
        }
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = left;
        self.inner.shutdown().await
    }
}
