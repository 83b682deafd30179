//! In-process controllers that make the store behave like a Harvester host:
//! Longhorn provisioning, KubeVirt hotplug, share-manager/networkfs-manager,
//! snapshots, garbage collection. Each is a work queue fed by store events.

pub mod gc;
pub mod kubevirt;
pub mod longhorn;
pub mod networkfs;
pub mod queue;
pub mod snapshots;
pub mod tokens;
pub mod volume_data;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::error::{ApiError, ApiResult};
use crate::api::http::ServerState;
use crate::api::meta;
use crate::api::ops::Api;
use crate::api::resources::ResourceType;
use crate::devices::DeviceManager;
use crate::faults::Faults;
use crate::profiles::Profile;
use crate::world::Timing;

/// What every controller shares.
pub struct Ctx {
    pub api: Arc<Api>,
    pub devices: Arc<DeviceManager>,
    pub faults: Arc<Faults>,
    pub profile: Profile,
    pub timing: RwLock<Timing>,
    pub server: Arc<ServerState>,
    pub state_dir: PathBuf,
    pub admin_token: String,
    pub restart: tokio::sync::Notify,
    pub restart_downtime: RwLock<Duration>,
    pub hotplug: kubevirt::HotplugState,
    pub timers: Timers,
}

/// Named stopwatches for controllers that wait a configured latency.
#[derive(Debug, Default)]
pub struct Timers(std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>);

impl Timers {
    /// Time since `key` was first asked about (starting it now if new).
    pub fn elapsed(&self, key: &str) -> Duration {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_string()).or_insert_with(tokio::time::Instant::now).elapsed()
    }

    /// `None` when `latency` has passed since the timer started, else the time left.
    pub fn wait(&self, key: &str, latency: Duration) -> Option<Duration> {
        let e = self.elapsed(key);
        (e < latency).then(|| latency - e)
    }

    pub fn clear(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

impl Ctx {
    pub fn timing(&self) -> Timing {
        self.timing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_timing(&self, t: Timing) {
        *self.timing.write().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Asks the API listener to go away for `downtime` and come back.
    pub fn request_restart(&self, downtime: Duration) {
        *self.restart_downtime.write().unwrap_or_else(|p| p.into_inner()) = downtime;
        self.restart.notify_one();
    }

    pub async fn restart_requested(&self) -> Duration {
        self.restart.notified().await;
        *self.restart_downtime.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A type this profile serves; an internal error if it does not (a bug).
    pub fn rt(&self, group: &str, plural: &str) -> ApiResult<ResourceType> {
        self.api
            .resource(group, plural)
            .ok_or_else(|| ApiError::internal(format!("{plural}.{group} is not served by this profile")))
    }

    /// Records a Kubernetes Event on an object, like the real controllers do.
    pub fn event(&self, involved: &Value, kind_type: &str, reason: &str, message: &str) {
        let Ok(rt) = self.rt("", "events") else { return };
        let ns = match meta::namespace(involved) {
            "" => "default",
            ns => ns,
        };
        let now = meta::now_rfc3339();
        let obj = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{}.", meta::name(involved)), "namespace": ns},
            "involvedObject": {
                "apiVersion": meta::str_at(involved, "/apiVersion"), "kind": meta::str_at(involved, "/kind"),
                "name": meta::name(involved), "namespace": meta::namespace(involved), "uid": meta::uid(involved),
            },
            "reason": reason, "message": message, "type": kind_type,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "harvester-simulator"},
        });
        if let Err(e) = self.api.create(&rt, ns, obj, &Default::default()) {
            tracing::debug!(error = %e, "recording event");
        }
    }
}

/// Registers the admission plugins (Harvester/KubeVirt/Kubernetes webhooks).
pub fn install_admission(ctx: &Arc<Ctx>) {
    ctx.api.add_admission(Arc::new(webhooks::Webhooks::new(ctx.profile.clone(), ctx.state_dir.clone())));
    ctx.server.aggregated.write().unwrap_or_else(|p| p.into_inner()).insert(
        crate::api::resources::KUBEVIRT_SUBRESOURCES_GROUP.into(),
        Arc::new(kubevirt::VirtApi::new(Arc::downgrade(ctx))),
    );
}

/// Starts every controller. `restored`: the state came from disk (devices may need re-attaching).
pub async fn start(ctx: Arc<Ctx>, restored: bool, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
    if restored {
        kubevirt::reattach_devices(&ctx).await;
    }
    vec![
        tokio::spawn(tokens::run(ctx.clone(), shutdown.clone())),
        tokio::spawn(gc::run(ctx.clone(), shutdown.clone())),
        tokio::spawn(longhorn::run(ctx.clone(), shutdown.clone())),
        tokio::spawn(kubevirt::run_vm_controller(ctx.clone(), shutdown.clone())),
        tokio::spawn(kubevirt::run_hotplug_controller(ctx.clone(), shutdown.clone())),
        tokio::spawn(networkfs::run(ctx.clone(), shutdown.clone())),
        tokio::spawn(snapshots::run(ctx.clone(), shutdown.clone())),
    ]
}
