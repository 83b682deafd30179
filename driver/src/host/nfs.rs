//! Harvester NetworkFilesystem objects: the RWX export of a Longhorn volume.

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::shape::{or_default, typed};
use super::{nfs_resource, wait_typed, Host, NFS_NAMESPACE};
use crate::error::{Error, Result};

/// The export as the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub endpoint: String,
    pub path: String,
    pub options: String,
    pub ready: bool,
    pub desired_enabled: bool,
}

/// Longhorn's RWX mount defaults, used when the host class gave no `nfsOptions` (upstream uses `vers=4`).
pub const DEFAULT_NFS_OPTIONS: &str = "vers=4";

/// The parts of a NetworkFilesystem (harvesterhci.io/v1beta1) this driver reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkFilesystem {
    #[serde(default, deserialize_with = "or_default")]
    spec: NfsSpec,
    #[serde(default, deserialize_with = "or_default")]
    status: NfsStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NfsSpec {
    #[serde(rename = "networkFSName")]
    network_fs_name: Option<String>,
    desired_state: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NfsStatus {
    endpoint: Option<String>,
    mount_opts: Option<String>,
    /// Endpoint readiness: `Ready`, `NotReady`, …
    status: Option<String>,
    /// `Enabled`, `Enabling`, `Disabled`, …
    state: Option<String>,
}

fn text(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

impl NetworkFilesystem {
    /// The export state the networkfs-manager reports (`Enabled`, `Enabling`, …; "" when unset).
    pub fn state(&self) -> &str {
        text(&self.status.state)
    }

    pub fn export(&self) -> Export {
        let opts = text(&self.status.mount_opts);
        Export {
            endpoint: text(&self.status.endpoint).to_string(),
            path: format!("/{}", text(&self.spec.network_fs_name)),
            options: if opts.is_empty() { DEFAULT_NFS_OPTIONS.into() } else { opts.to_string() },
            ready: text(&self.status.status) == "Ready" && self.state() == "Enabled",
            desired_enabled: text(&self.spec.desired_state) == "Enabled",
        }
    }
}

fn nfs_of(obj: &DynamicObject) -> Result<NetworkFilesystem> {
    typed(obj, "NetworkFilesystem")
}

impl Host {
    fn nfs_api(&self) -> kube::Api<DynamicObject> {
        self.dynamic(&nfs_resource(), Some(NFS_NAMESPACE))
    }

    pub async fn get_nfs(&self, pv: &str) -> Result<Option<NetworkFilesystem>> {
        self.call_opt("get networkfilesystem", self.nfs_api().get(pv)).await?.as_ref().map(nfs_of).transpose()
    }

    /// Creates the export object, Disabled; present already is fine.
    pub async fn ensure_nfs(&self, pv: &str) -> Result<()> {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "NetworkFilesystem",
            "metadata": {"name": pv, "namespace": NFS_NAMESPACE},
            "spec": {"networkFSName": pv, "desiredState": "Disabled", "provisioner": "Longhorn"},
        }))
        .map_err(|e| Error::Internal(format!("building NetworkFilesystem: {e}")))?;
        match self.call("create networkfilesystem", self.nfs_api().create(&PostParams::default(), &obj)).await {
            Ok(_) => Ok(()),
            Err(e) if e.api_response().is_some_and(|r| r.reason == "AlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn set_nfs_desired(&self, pv: &str, enabled: bool) -> Result<()> {
        let patch = json!({"spec": {"desiredState": if enabled { "Enabled" } else { "Disabled" }}});
        self.call("patch networkfilesystem", self.nfs_api().patch(pv, &PatchParams::default(), &Patch::Merge(patch)))
            .await
            .map(|_| ())
    }

    pub async fn delete_nfs(&self, pv: &str) -> Result<()> {
        self.call_opt("delete networkfilesystem", self.nfs_api().delete(pv, &Default::default())).await.map(|_| ())
    }

    /// Host PVs whose export is enabled and ready: every VM can mount those.
    pub async fn ready_exports(&self) -> Result<std::collections::BTreeSet<String>> {
        let list = self.call("list networkfilesystems", self.nfs_api().list(&Default::default())).await?;
        let mut ready = std::collections::BTreeSet::new();
        for obj in &list.items {
            let export = nfs_of(obj)?.export();
            if let (true, Some(name)) = (export.ready && export.desired_enabled, &obj.metadata.name) {
                ready.insert(name.clone());
            }
        }
        Ok(ready)
    }

    /// Watches until the export is Enabled and Ready.
    pub async fn wait_nfs_ready(&self, pv: &str, deadline: Instant) -> Result<Export> {
        let what = format!("NFS export {pv} to become ready");
        let found =
            wait_typed(self.nfs_api(), pv, deadline, &what, nfs_of, |o| o.is_some_and(|n| n.export().ready)).await?;
        let nfs = found.ok_or_else(|| Error::NotFound(format!("NetworkFilesystem {pv} disappeared")))?;
        Ok(nfs.export())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::Value;

    fn export(v: Value) -> (Export, String) {
        let nfs: NetworkFilesystem = serde_json::from_value(v).expect("NetworkFilesystem fixture parses");
        (nfs.export(), nfs.state().to_string())
    }

    #[rstest]
    #[case::enabled_ready(
        json!({"spec": {"networkFSName": "pvc-1", "desiredState": "Enabled"},
               "status": {"endpoint": "10.0.0.5", "mountOpts": "vers=4.1,soft", "status": "Ready", "state": "Enabled"}}),
        Export { endpoint: "10.0.0.5".into(), path: "/pvc-1".into(), options: "vers=4.1,soft".into(), ready: true, desired_enabled: true },
        "Enabled")]
    #[case::enabling(
        json!({"spec": {"networkFSName": "pvc-1", "desiredState": "Enabled"},
               "status": {"endpoint": "", "mountOpts": "", "status": "NotReady", "state": "Enabling"}}),
        Export { endpoint: "".into(), path: "/pvc-1".into(), options: DEFAULT_NFS_OPTIONS.into(), ready: false, desired_enabled: true },
        "Enabling")]
    #[case::ready_endpoint_but_disabled(
        json!({"spec": {"networkFSName": "pvc-1", "desiredState": "Disabled"}, "status": {"status": "Ready", "state": "Disabled"}}),
        Export { endpoint: "".into(), path: "/pvc-1".into(), options: DEFAULT_NFS_OPTIONS.into(), ready: false, desired_enabled: false },
        "Disabled")]
    #[case::fresh_without_status(
        json!({"spec": {"networkFSName": "pvc-1", "desiredState": "Disabled"}, "status": null}),
        Export { endpoint: "".into(), path: "/pvc-1".into(), options: DEFAULT_NFS_OPTIONS.into(), ready: false, desired_enabled: false },
        "")]
    #[case::empty(json!({}),
        Export { endpoint: "".into(), path: "/".into(), options: DEFAULT_NFS_OPTIONS.into(), ready: false, desired_enabled: false },
        "")]
    fn exports(#[case] v: Value, #[case] want: Export, #[case] state: &str) {
        assert_eq!(export(v), (want, state.to_string()));
    }
}
