//! Host VolumeSnapshots (local snapshots), Harvester VolumeRemoteBackups and
//! VolumeRemoteRestores (remote backups, Harvester ≥ v1.8).

use kube::api::{DynamicObject, ListParams, PostParams};
use serde_json::{json, Value};

use super::{snapshot_resource, vrb_resource, vrr_resource, Host};
use crate::error::{Error, Result};

fn with_metadata(o: DynamicObject) -> Value {
    let mut v = o.data.clone();
    v["metadata"] = serde_json::to_value(&o.metadata).unwrap_or(Value::Null);
    v
}

fn dynamic(v: Value) -> Result<DynamicObject> {
    serde_json::from_value(v).map_err(|e| Error::Internal(format!("building host object: {e}")))
}

impl Host {
    pub async fn get_snapshot(&self, name: &str) -> Result<Option<Value>> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        Ok(self.call_opt("get volumesnapshot", api.get(name)).await?.map(with_metadata))
    }

    pub async fn create_snapshot(&self, obj: Value) -> Result<Value> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        Ok(with_metadata(self.call("create volumesnapshot", api.create(&PostParams::default(), &dynamic(obj)?)).await?))
    }

    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        self.call_opt("delete volumesnapshot", api.delete(name, &Default::default())).await.map(|_| ())
    }

    pub async fn list_snapshots(&self) -> Result<Vec<Value>> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        Ok(self
            .call("list volumesnapshots", api.list(&ListParams::default()))
            .await?
            .items
            .into_iter()
            .map(with_metadata)
            .collect())
    }

    pub async fn get_backup(&self, namespace: &str, name: &str) -> Result<Option<Value>> {
        let api = self.dynamic(&vrb_resource(), Some(namespace));
        Ok(self.call_opt("get volumeremotebackup", api.get(name)).await?.map(with_metadata))
    }

    pub async fn create_backup(&self, obj: Value) -> Result<Value> {
        let api = self.dynamic(&vrb_resource(), Some(&self.namespace));
        Ok(with_metadata(
            self.call("create volumeremotebackup", api.create(&PostParams::default(), &dynamic(obj)?)).await?,
        ))
    }

    pub async fn delete_backup(&self, namespace: &str, name: &str) -> Result<()> {
        let api = self.dynamic(&vrb_resource(), Some(namespace));
        self.call_opt("delete volumeremotebackup", api.delete(name, &Default::default())).await.map(|_| ())
    }

    /// Backups of this guest's namespace only (upstream listed every tenant's).
    pub async fn list_backups(&self) -> Result<Vec<Value>> {
        let api = self.dynamic(&vrb_resource(), Some(&self.namespace));
        Ok(self
            .call("list volumeremotebackups", api.list(&ListParams::default()))
            .await?
            .items
            .into_iter()
            .map(with_metadata)
            .collect())
    }

    pub async fn get_restore(&self, name: &str) -> Result<Option<Value>> {
        let api = self.dynamic(&vrr_resource(), Some(&self.namespace));
        Ok(self.call_opt("get volumeremoterestore", api.get(name)).await?.map(with_metadata))
    }

    pub async fn create_restore(&self, name: &str, from: &str, labels: Value) -> Result<Value> {
        let api = self.dynamic(&vrr_resource(), Some(&self.namespace));
        let obj = json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VolumeRemoteRestore",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {"type": "lh", "from": from},
        });
        match self.call("create volumeremoterestore", api.create(&PostParams::default(), &dynamic(obj)?)).await {
            Ok(o) => Ok(with_metadata(o)),
            Err(e) if e.api_response().is_some_and(|r| r.reason == "AlreadyExists") => {
                self.get_restore(name).await?.ok_or_else(|| Error::Aborted(format!("restore {name} vanished; retry")))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn delete_restore(&self, name: &str) -> Result<bool> {
        let api = self.dynamic(&vrr_resource(), Some(&self.namespace));
        Ok(self.call_opt("delete volumeremoterestore", api.delete(name, &Default::default())).await?.is_some())
    }
}
