//! What the Node service needs from the Harvester host, as a trait: the node
//! only waits for its own disk to be attached and for an RWX export to be
//! ready. Production uses [`Host`]; unit tests use a fake so every Node RPC
//! path runs without a host, root or devices.

use std::future::Future;

use tokio::time::Instant;

use crate::error::Result;
use crate::host::nfs::Export;
use crate::host::pvc::host_pv_name;
use crate::host::Host;

pub trait NodeHost: Send + Sync {
    /// Waits until `volume` is hot-plugged and Ready in VM `vm` (bounded by `deadline`).
    fn wait_attached(&self, vm: &str, volume: &str, deadline: Instant) -> impl Future<Output = Result<()>> + Send;

    /// The host PV behind volume `volume` (the name of its export), if the host has it.
    fn host_pv_of(&self, volume: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Waits until the export of host PV `pv` is enabled and ready (bounded by `deadline`).
    fn wait_export_ready(&self, pv: &str, deadline: Instant) -> impl Future<Output = Result<Export>> + Send;
}

impl NodeHost for Host {
    async fn wait_attached(&self, vm: &str, volume: &str, deadline: Instant) -> Result<()> {
        Host::wait_attached(self, vm, volume, deadline).await.map(|_| ())
    }

    async fn host_pv_of(&self, volume: &str) -> Result<Option<String>> {
        Ok(self.get_pvc(volume).await?.as_ref().and_then(host_pv_name).map(String::from))
    }

    async fn wait_export_ready(&self, pv: &str, deadline: Instant) -> Result<Export> {
        self.wait_nfs_ready(pv, deadline).await
    }
}
