//! The only code that talks to the Harvester host: PVCs and StorageClasses,
//! KubeVirt VMs/VMIs and hotplug (legacy subresource and declarative VM patch),
//! NetworkFilesystems, snapshots and backups, settings, feature detection.
//! Waits are watches bounded by the caller's deadline, never fixed sleeps.

pub mod cluster_identity;
pub mod credentials;
pub mod features;
pub mod kubevirt;
pub mod labels;
pub mod nfs;
pub mod pvc;
pub mod retry;
pub mod settings;
mod shape;
pub mod snapshots;
pub mod topology;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant as StdInstant;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::runtime::wait::await_condition;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub use features::{CapabilityReport, Feature, Features, HotplugMode};

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn vm_resource() -> ApiResource {
    resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}
pub fn vmi_resource() -> ApiResource {
    resource("kubevirt.io", "v1", "VirtualMachineInstance", "virtualmachineinstances")
}
pub fn nfs_resource() -> ApiResource {
    resource("harvesterhci.io", "v1beta1", "NetworkFilesystem", "networkfilesystems")
}
pub fn setting_resource() -> ApiResource {
    resource("harvesterhci.io", "v1beta1", "Setting", "settings")
}
pub fn vrb_resource() -> ApiResource {
    resource("harvesterhci.io", "v1beta1", "VolumeRemoteBackup", "volumeremotebackups")
}
pub fn vrr_resource() -> ApiResource {
    resource("harvesterhci.io", "v1beta1", "VolumeRemoteRestore", "volumeremoterestores")
}
pub fn snapshot_resource() -> ApiResource {
    resource("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots")
}
pub fn longhorn_volume_resource() -> ApiResource {
    resource("longhorn.io", "v1beta2", "Volume", "volumes")
}

pub const NFS_NAMESPACE: &str = "harvester-system";
pub const LONGHORN_NAMESPACE: &str = "longhorn-system";
pub const LONGHORN_PROVISIONER: &str = "driver.longhorn.io";

/// Access to the host cluster with the guest's cloud-config identity.
#[derive(Clone)]
pub struct Host {
    client: kube::Client,
    /// The namespace of the cloud-config context: where the VMs and host PVCs live.
    pub namespace: String,
    pub metrics: Arc<Metrics>,
    pub features: Arc<Features>,
    /// Set on the copy used by capability probes: their denials are the answer, not news.
    probing: bool,
    /// The controller's watch-fed view of the VMs and VMIs (kubevirt/view.rs).
    vm_view: Option<Arc<kubevirt::VmView>>,
}

impl Host {
    pub fn new(client: kube::Client, namespace: String, metrics: Arc<Metrics>) -> Self {
        let features = Arc::new(Features::default());
        Self { client, namespace, metrics, features, probing: false, vm_view: None }
    }

    /// Publishes look volumes up in a watch-fed view of the VMs and VMIs from now
    /// on, instead of listing them (the controller; a node plugin never publishes).
    pub fn watch_vms(&mut self, shutdown: tokio_util::sync::CancellationToken) {
        self.vm_view = Some(kubevirt::VmView::start(self.vms(), self.vmis(), shutdown));
    }

    /// Runs one host call: records latency, maps the error, and asks for a
    /// capability re-probe when the host denied it (RBAC may have changed).
    async fn call<T>(&self, op: &str, fut: impl Future<Output = kube::Result<T>>) -> Result<T> {
        let started = StdInstant::now();
        let result = fut.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(kube::Error::Api(r)) if r.code == 404 => "not_found",
            Err(kube::Error::Api(r)) if r.code == 403 => "forbidden",
            Err(_) => "error",
        };
        self.metrics.observe_host(op, outcome, started.elapsed());
        result.map_err(|e| {
            let err = Error::host(op, e);
            if err.is_forbidden() && !self.probing {
                tracing::warn!(operation = op, error = %err, "host denied a call; re-probing capabilities");
                self.features.request_reprobe();
            }
            err
        })
    }

    /// The same client for capability probes (denials do not trigger re-probes).
    pub fn for_probing(&self) -> Self {
        Self { probing: true, ..self.clone() }
    }

    /// Like `call`, but NotFound becomes `None`.
    async fn call_opt<T>(&self, op: &str, fut: impl Future<Output = kube::Result<T>>) -> Result<Option<T>> {
        match self.call(op, fut).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn dynamic(&self, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// The VMs/VMIs/PVCs of this guest cluster live in the host namespace.
    fn vms(&self) -> Api<DynamicObject> {
        self.dynamic(&vm_resource(), Some(&self.namespace))
    }
    fn vmis(&self) -> Api<DynamicObject> {
        self.dynamic(&vmi_resource(), Some(&self.namespace))
    }
}

/// Whether the host API answers at all within `within` (the CSI Probe).
pub async fn reachable(client: &kube::Client, within: std::time::Duration) -> bool {
    matches!(tokio::time::timeout(within, client.apiserver_version()).await, Ok(Ok(_)))
}

/// Watches one object until `done` holds (also consulted with `None` when it
/// does not exist), bounded by `deadline`. Returns the last object seen.
async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    deadline: Instant,
    what: &str,
    done: impl Fn(Option<&K>) -> bool,
) -> Result<Option<K>>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    // A watch can end in an error that is routine on a real apiserver (410 Gone after compaction,
    // a restart): watch again, until the deadline.
    loop {
        match tokio::time::timeout_at(deadline, await_condition(api.clone(), name, &done)).await {
            Ok(Ok(obj)) => return Ok(obj),
            Ok(Err(e)) => {
                let failed = || Error::Unavailable(format!("watching {name} while waiting for {what}: {e}"));
                if watch_failure_is_permanent(&e) {
                    return Err(failed());
                }
                tracing::info!(object = name, error = %e, "watch failed while waiting for {what}; watching again");
                if tokio::time::timeout_at(deadline, tokio::time::sleep(WATCH_RETRY_DELAY)).await.is_err() {
                    return Err(failed());
                }
            }
            Err(_) => return Err(Error::DeadlineExceeded(format!("timed out waiting for {what}"))),
        }
    }
}

/// [`wait_for`] over a typed view of a dynamic object: `done` sees the object as `parse`
/// reads it. An object the driver cannot read ends the wait with that error instead of
/// waiting out the deadline. Returns the last object seen.
async fn wait_typed<T>(
    api: Api<DynamicObject>,
    name: &str,
    deadline: Instant,
    what: &str,
    parse: impl Fn(&DynamicObject) -> Result<T>,
    done: impl Fn(Option<&T>) -> bool,
) -> Result<Option<T>> {
    let unreadable: Mutex<Option<Error>> = Mutex::new(None);
    let found = wait_for(api, name, deadline, what, |o| match o.map(&parse).transpose() {
        Ok(t) => done(t.as_ref()),
        Err(e) => {
            *unreadable.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
            true
        }
    })
    .await?;
    if let Some(e) = unreadable.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    found.as_ref().map(parse).transpose()
}

/// Watch failures another watch would not fix: denied, or a resource the host does not serve.
fn watch_failure_is_permanent(e: &kube::runtime::wait::Error) -> bool {
    use kube::runtime::watcher::Error as W;
    let kube::runtime::wait::Error::ProbeFailed(w) = e;
    let code = match w {
        W::InitialListFailed(kube::Error::Api(s))
        | W::WatchStartFailed(kube::Error::Api(s))
        | W::WatchFailed(kube::Error::Api(s)) => s.code,
        W::WatchError(s) => s.code,
        W::NoResourceVersion => return true,
        _ => return false,
    };
    matches!(code, 401 | 403 | 404 | 405)
}

/// Pause before watching again after a failed watch.
const WATCH_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);
