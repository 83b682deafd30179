//! What this host allows: the Harvester version (which selects the hotplug
//! form) and one probe per permission-gated feature. Probed at start, again
//! whenever a host call is denied (a fixed RBAC takes effect without a
//! restart, harvester#7249), and before refusing a request for a feature
//! that was off.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::retry::{retry_transient, PROBE_BUDGET};
use super::settings::is_at_least;
use super::{
    longhorn_volume_resource, nfs_resource, snapshot_resource, vrb_resource, Host, LONGHORN_NAMESPACE, NFS_NAMESPACE,
};
use crate::error::Error;

/// First and longest wait before probing again after a probe met host failures.
const UNSETTLED_FIRST_DELAY: Duration = Duration::from_secs(5);
const UNSETTLED_MAX_DELAY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// RWX volumes through NetworkFilesystem (Harvester ≥ v1.4).
    Rwx,
    /// Validating `hostStorageClass` against the host's classes.
    HostStorageClasses,
    /// Reading host CSI VolumeAttachments (Harvester ≥ v1.6).
    HostVolumeAttachments,
    /// Reading Longhorn volume state (Harvester ≥ v1.4, the #6849 rule).
    LonghornVolumeStatus,
    /// Online expansion validation setting readable (Harvester ≥ v1.6).
    OnlineExpansion,
    /// Host CSI snapshots (Harvester ≥ v1.7).
    Snapshots,
    /// Remote backups (Harvester ≥ v1.8).
    RemoteBackups,
    /// Hotplug by patching the VM spec (Harvester ≥ v1.8 and `patch` on VMs).
    DeclarativeHotplug,
    /// Zone/region of the host node running the VM.
    Topology,
    /// Guest VolumeAttachment checks before attaching (needs guest access).
    GuestVolumeAttachments,
    /// Keeping an RWX export up while guest pods use it (needs a synced guest view).
    RwxExportRefcount,
    /// The out-of-service taint controller (needs guest access).
    NodeHealth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HotplugMode {
    /// `PUT …/virtualmachines/<vm>/addvolume|removevolume`.
    Legacy,
    /// JSON patch of the VM spec with a resourceVersion test.
    Declarative,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeatureStatus {
    pub enabled: bool,
    /// Why it is off: the missing permission or the missing host piece.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Off only because the host kept failing while probing: not an answer, so probe again.
    #[serde(skip)]
    pub transient: bool,
}

impl FeatureStatus {
    pub fn on() -> Self {
        Self { enabled: true, ..Default::default() }
    }
    pub fn off(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), ..Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityReport {
    pub host_version: String,
    pub hotplug: HotplugMode,
    pub features: BTreeMap<Feature, FeatureStatus>,
    /// The version could not be read because the host kept failing.
    #[serde(skip)]
    pub version_unsettled: bool,
}

impl Default for CapabilityReport {
    fn default() -> Self {
        Self {
            host_version: "unknown".into(),
            hotplug: HotplugMode::Legacy,
            features: BTreeMap::new(),
            version_unsettled: false,
        }
    }
}

impl CapabilityReport {
    /// The report as the metrics publish it.
    pub fn snapshot(&self) -> crate::metrics::CapabilitySnapshot {
        let name = |f: &Feature| serde_json::to_value(f).ok().and_then(|v| v.as_str().map(String::from));
        crate::metrics::CapabilitySnapshot {
            features: self.features.iter().filter_map(|(f, s)| Some((name(f)?, s.enabled))).collect(),
            host_version: self.host_version.clone(),
            hotplug: format!("{:?}", self.hotplug),
            report: serde_json::json!(self),
        }
    }
    pub fn enabled(&self, f: Feature) -> bool {
        self.features.get(&f).is_some_and(|s| s.enabled)
    }
    pub fn reason(&self, f: Feature) -> String {
        self.features.get(&f).map(|s| s.reason.clone()).unwrap_or_else(|| "not probed yet".into())
    }
    /// On, or off only because the host kept failing while probing it.
    pub fn may_be_enabled(&self, f: Feature) -> bool {
        self.features.get(&f).is_some_and(|s| s.enabled || s.transient)
    }
    /// Whether part of the report stands for a host failure rather than an answer.
    pub fn unsettled(&self) -> bool {
        self.version_unsettled || self.features.values().any(|s| s.transient)
    }
}

#[derive(Debug, Default)]
pub struct Features {
    report: RwLock<CapabilityReport>,
    reprobe: Notify,
    last_probe: Mutex<Option<Instant>>,
}

impl Features {
    pub fn report(&self) -> CapabilityReport {
        self.report.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn enabled(&self, f: Feature) -> bool {
        self.report.read().unwrap_or_else(|p| p.into_inner()).enabled(f)
    }
    pub fn hotplug(&self) -> HotplugMode {
        self.report.read().unwrap_or_else(|p| p.into_inner()).hotplug
    }
    pub fn request_reprobe(&self) {
        self.reprobe.notify_one();
    }
    /// Sets features decided outside the host probes (guest access).
    pub fn set(&self, f: Feature, enabled: bool, reason: &str) {
        let mut r = self.report.write().unwrap_or_else(|p| p.into_inner());
        r.features.insert(f, if enabled { FeatureStatus::on() } else { FeatureStatus::off(reason) });
    }
    fn store(&self, mut new: CapabilityReport) -> CapabilityReport {
        let mut r = self.report.write().unwrap_or_else(|p| p.into_inner());
        // Guest-side features are not probed here; keep them.
        for f in [Feature::GuestVolumeAttachments, Feature::RwxExportRefcount, Feature::NodeHealth] {
            if let Some(s) = r.features.get(&f) {
                new.features.insert(f, s.clone());
            }
        }
        // A probe that only met host failures is no news: an earlier answer stands (a
        // flaky spell must not switch a working feature off, nor a denied one on).
        for (f, status) in new.features.iter_mut() {
            if let Some(before) = r.features.get(f).filter(|b| status.transient && !b.transient) {
                *status = before.clone();
            }
        }
        *r = new.clone();
        *self.last_probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        new
    }
    fn probed_recently(&self, within: Duration) -> bool {
        self.last_probe.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < within)
    }
}

fn outcome(result: Result<(), Error>, what: &str) -> FeatureStatus {
    match result {
        Ok(()) => FeatureStatus::on(),
        Err(e) if e.is_forbidden() => FeatureStatus::off(format!("missing permission: {what}")),
        Err(e) if e.is_not_found() => FeatureStatus::off(format!("not served by this Harvester: {what}")),
        Err(e) => FeatureStatus { transient: e.is_transient(), ..FeatureStatus::off(format!("{what}: {e}")) },
    }
}

impl Host {
    async fn probe_list<K>(&self, api: Api<K>, op: &str) -> Result<(), Error>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = ListParams::default().limit(1);
        retry_transient(op, PROBE_BUDGET, || self.call(op, api.list_metadata(&params))).await.map(|_| ())
    }

    /// Probes every host feature and stores (and logs) the report.
    pub async fn probe_features(&self) -> CapabilityReport {
        let stored = self.for_probing().probe_all().await;
        log_report(&stored);
        self.metrics.set_capabilities(stored.snapshot());
        stored
    }

    async fn probe_all(&self) -> CapabilityReport {
        let mut version_unsettled = false;
        let version = match retry_transient("get setting server-version", PROBE_BUDGET, || {
            self.setting("server-version")
        })
        .await
        {
            Ok(Some(v)) => v,
            Ok(None) => "unknown".into(),
            Err(e) => {
                version_unsettled = e.is_transient();
                // A version read before stays true across a flaky spell; hotplug mode hangs on it.
                let before = self.features.report().host_version;
                if version_unsettled && is_at_least(&before, 0, 0) {
                    before
                } else {
                    format!("unreadable ({e})")
                }
            }
        };
        let ns = self.namespace.clone();
        let (rwx, lh, va, sc, snaps, backups, expand) = tokio::join!(
            self.probe_list(self.dynamic(&nfs_resource(), Some(NFS_NAMESPACE)), "list networkfilesystems"),
            self.probe_list(
                self.dynamic(&longhorn_volume_resource(), Some(LONGHORN_NAMESPACE)),
                "list longhorn volumes"
            ),
            self.probe_list(Api::<VolumeAttachment>::all(self.client.clone()), "list volumeattachments"),
            self.probe_list(Api::<StorageClass>::all(self.client.clone()), "list storageclasses"),
            self.probe_list(self.dynamic(&snapshot_resource(), Some(&ns)), "list volumesnapshots"),
            self.probe_list(self.dynamic(&vrb_resource(), Some(&ns)), "list volumeremotebackups"),
            async {
                let read = || self.setting("csi-online-expand-validation");
                match retry_transient("get setting csi-online-expand-validation", PROBE_BUDGET, read).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(Error::NotFound("setting csi-online-expand-validation".into())),
                    Err(e) => Err(e),
                }
            },
        );
        let mut features = BTreeMap::new();
        features.insert(
            Feature::Rwx,
            outcome(rwx, "list networkfilesystems.harvesterhci.io in namespace harvester-system"),
        );
        features.insert(
            Feature::LonghornVolumeStatus,
            outcome(lh, "list volumes.longhorn.io in namespace longhorn-system"),
        );
        features.insert(Feature::HostVolumeAttachments, outcome(va, "list volumeattachments.storage.k8s.io"));
        features.insert(Feature::HostStorageClasses, outcome(sc, "list storageclasses.storage.k8s.io"));
        features.insert(
            Feature::Snapshots,
            outcome(snaps, &format!("list volumesnapshots.snapshot.storage.k8s.io in namespace {ns}")),
        );
        features.insert(
            Feature::RemoteBackups,
            outcome(backups, &format!("list volumeremotebackups.harvesterhci.io in namespace {ns}")),
        );
        features.insert(
            Feature::OnlineExpansion,
            outcome(expand, "get settings.harvesterhci.io csi-online-expand-validation"),
        );

        let (declarative, hotplug_status) = self.probe_declarative(&version).await;
        features.insert(Feature::DeclarativeHotplug, hotplug_status);
        features.insert(Feature::Topology, self.probe_topology().await);

        let report = CapabilityReport {
            host_version: version,
            hotplug: if declarative { HotplugMode::Declarative } else { HotplugMode::Legacy },
            features,
            version_unsettled,
        };
        self.features.store(report)
    }

    async fn probe_declarative(&self, version: &str) -> (bool, FeatureStatus) {
        if !is_at_least(version, 1, 8) {
            return (
                false,
                FeatureStatus::off(format!("Harvester {version} uses legacy hotplug (declarative needs ≥ v1.8)")),
            );
        }
        let one = ListParams::default().limit(1);
        let vms_api = self.vms();
        let list = || self.call("list virtualmachines", vms_api.list_metadata(&one));
        let vms = match retry_transient("list virtualmachines", PROBE_BUDGET, list).await {
            Ok(l) => l,
            Err(e) => return (false, outcome(Err(e), "list virtualmachines.kubevirt.io")),
        };
        let Some(name) = vms.items.first().and_then(|v| v.metadata.name.clone()) else {
            return (true, FeatureStatus::on());
        };
        // A dry-run no-op patch proves the permission without changing anything.
        let params = PatchParams { dry_run: true, ..Default::default() };
        let noop = Patch::Merge(serde_json::json!({}));
        let patch = || self.call("patch virtualmachine (dry run)", vms_api.patch(&name, &params, &noop));
        let r = retry_transient("patch virtualmachine (dry run)", PROBE_BUDGET, patch).await;
        match r {
            Ok(_) => (true, FeatureStatus::on()),
            Err(e) => {
                (false, outcome(Err(e), &format!("patch virtualmachines.kubevirt.io in namespace {}", self.namespace)))
            }
        }
    }

    async fn probe_topology(&self) -> FeatureStatus {
        let one = ListParams::default().limit(1);
        let vmis_api = self.vmis();
        let list = || self.call("list virtualmachineinstances", vmis_api.list(&one));
        let vmis = match retry_transient("list virtualmachineinstances", PROBE_BUDGET, list).await {
            Ok(l) => l,
            Err(e) => return outcome(Err(e), "list virtualmachineinstances.kubevirt.io"),
        };
        let vmi = match vmis.items.first().map(super::kubevirt::vmi_of).transpose() {
            Ok(vmi) => vmi,
            Err(e) => return outcome(Err(e), "read virtualmachineinstances.kubevirt.io"),
        };
        let Some(node) = vmi.as_ref().map(|v| v.node_name().to_string()).filter(|n| !n.is_empty()) else {
            return FeatureStatus::on();
        };
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let get = || self.call("get node", nodes.get_metadata(&node));
        outcome(retry_transient("get node", PROBE_BUDGET, get).await.map(|_| ()), "get nodes")
    }

    /// Whether a feature is on, re-probing first when it is off (at most every 2 s).
    pub async fn ensure_feature(&self, f: Feature) -> bool {
        if self.features.enabled(f) {
            return true;
        }
        if !self.features.probed_recently(Duration::from_secs(2)) {
            self.probe_features().await;
        }
        self.features.enabled(f)
    }

    /// `Ok` when `f` is on (re-probing first when it is off); else `needs` with the reason it
    /// is off, for the caller to wrap in the error code its RPC documents.
    pub async fn require(&self, f: Feature, needs: &str) -> std::result::Result<(), String> {
        if self.ensure_feature(f).await {
            Ok(())
        } else {
            Err(format!("{needs} ({})", self.features.report().reason(f)))
        }
    }

    /// Re-probes after denials, coalescing bursts, and after probes that met host failures.
    pub async fn run_reprobe_loop(self, shutdown: CancellationToken) {
        let mut unsettled_delay = UNSETTLED_FIRST_DELAY;
        loop {
            // A report that stands for host failures is probed again on its own, backing off.
            let unsettled = self.features.report().unsettled();
            let retry = async {
                if unsettled {
                    tokio::time::sleep(unsettled_delay).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.features.reprobe.notified() => {}
                _ = retry => {
                    tracing::info!(after = ?unsettled_delay, "probing the host again: the last probe met host failures");
                    unsettled_delay = (unsettled_delay * 2).min(UNSETTLED_MAX_DELAY);
                }
            }
            if self.features.probed_recently(Duration::from_secs(2)) {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            if !self.probe_features().await.unsettled() {
                unsettled_delay = UNSETTLED_FIRST_DELAY;
            }
        }
    }
}

pub fn log_report(r: &CapabilityReport) {
    let on: Vec<String> = r.features.iter().filter(|(_, s)| s.enabled).map(|(f, _)| format!("{f:?}")).collect();
    tracing::info!(host_version = %r.host_version, hotplug = ?r.hotplug, enabled = %on.join(","), "capability report");
    for (f, s) in r.features.iter().filter(|(_, s)| !s.enabled) {
        tracing::info!(feature = ?f, reason = %s.reason, "feature off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> Error {
        Error::host(
            "list things",
            kube::Error::Api(Box::new(kube::core::Status { code, reason: reason.into(), ..Default::default() })),
        )
    }

    #[test]
    fn a_probe_that_only_met_failures_keeps_the_earlier_answer() {
        let features = Features::default();
        let mut first = CapabilityReport::default();
        first.features.insert(Feature::Snapshots, FeatureStatus::on());
        first.features.insert(Feature::Rwx, FeatureStatus::off("missing permission: list networkfilesystems"));
        features.store(first);

        let failing = outcome(Err(api_error(500, "InternalError")), "list things");
        let mut flaky = CapabilityReport::default();
        flaky.features.insert(Feature::Snapshots, failing.clone());
        flaky.features.insert(Feature::Rwx, failing.clone());
        flaky.features.insert(Feature::Topology, failing);
        let stored = features.store(flaky);
        assert!(stored.enabled(Feature::Snapshots), "a working feature stays on");
        assert!(!stored.enabled(Feature::Rwx) && !stored.may_be_enabled(Feature::Rwx), "a denial stays a denial");
        assert!(stored.may_be_enabled(Feature::Topology), "never answered: still unsettled");
        assert!(stored.unsettled());
    }

    #[test]
    fn only_host_failures_leave_a_feature_unsettled() {
        let denied = outcome(Err(api_error(403, "Forbidden")), "list things");
        assert!(!denied.enabled && !denied.transient && denied.reason.starts_with("missing permission"));
        let absent = outcome(Err(api_error(404, "NotFound")), "list things");
        assert!(!absent.enabled && !absent.transient);
        let failing = outcome(Err(api_error(500, "InternalError")), "list things");
        assert!(!failing.enabled && failing.transient);

        let mut report = CapabilityReport::default();
        report.features.insert(Feature::Rwx, denied);
        assert!(!report.unsettled() && !report.may_be_enabled(Feature::Rwx));
        report.features.insert(Feature::Topology, failing);
        assert!(report.unsettled() && report.may_be_enabled(Feature::Topology));
        assert!(!report.enabled(Feature::Topology), "unsettled is still off for callers that need it on");
    }
}
