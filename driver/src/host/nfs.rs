//! Harvester NetworkFilesystem objects: the RWX export of a Longhorn volume.

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{nfs_resource, str_at, wait_for, Host, NFS_NAMESPACE};
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

pub fn export_of(nfs: &Value) -> Export {
    let opts = str_at(nfs, "/status/mountOpts");
    Export {
        endpoint: str_at(nfs, "/status/endpoint").to_string(),
        path: format!("/{}", str_at(nfs, "/spec/networkFSName")),
        options: if opts.is_empty() { DEFAULT_NFS_OPTIONS.into() } else { opts.to_string() },
        ready: str_at(nfs, "/status/status") == "Ready" && str_at(nfs, "/status/state") == "Enabled",
        desired_enabled: str_at(nfs, "/spec/desiredState") == "Enabled",
    }
}

impl Host {
    fn nfs_api(&self) -> kube::Api<kube::api::DynamicObject> {
        self.dynamic(&nfs_resource(), Some(NFS_NAMESPACE))
    }

    pub async fn get_nfs(&self, pv: &str) -> Result<Option<Value>> {
        Ok(self.call_opt("get networkfilesystem", self.nfs_api().get(pv)).await?.map(|o| {
            let mut v = o.data.clone();
            v["metadata"] = serde_json::to_value(&o.metadata).unwrap_or(Value::Null);
            v
        }))
    }

    /// Creates the export object, Disabled; present already is fine.
    pub async fn ensure_nfs(&self, pv: &str) -> Result<()> {
        let obj: kube::api::DynamicObject = serde_json::from_value(json!({
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
        Ok(list
            .items
            .into_iter()
            .filter(|o| {
                let export = export_of(&o.data);
                export.ready && export.desired_enabled
            })
            .filter_map(|o| o.metadata.name)
            .collect())
    }

    /// Watches until the export is Enabled and Ready.
    pub async fn wait_nfs_ready(&self, pv: &str, deadline: Instant) -> Result<Export> {
        let found = wait_for(self.nfs_api(), pv, deadline, &format!("NFS export {pv} to become ready"), |o| {
            o.is_some_and(|n| export_of(&n.data).ready)
        })
        .await?;
        let obj = found.ok_or_else(|| Error::NotFound(format!("NetworkFilesystem {pv} disappeared")))?;
        let mut v = obj.data.clone();
        v["spec"] = obj.data.get("spec").cloned().unwrap_or(Value::Null);
        Ok(export_of(&v))
    }
}
