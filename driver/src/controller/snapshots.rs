//! Snapshots: host VolumeSnapshots (local) and Harvester remote backups
//! (`type: backup`). Not-ready snapshots are reported `ready_to_use=false`
//! instead of failing; listing is paginated over both kinds together.

use csi_proto::csi::v1 as csi;
use serde_json::{json, Value};

use super::ControllerService;
use crate::error::{Error, Result};
use crate::host::pvc::{pvc_capacity, quantity_bytes};
use crate::host::{str_at, Feature};
use crate::names::{self, keys, SnapshotId};

const TYPE_PARAM: &str = "type";

fn timestamp(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t: jiff::Timestamp = rfc3339.parse().ok()?;
    Some(prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() })
}

fn label<'a>(obj: &'a Value, key: &str) -> &'a str {
    str_at(obj, &format!("/metadata/labels/{}", key.replace('/', "~1")))
}

fn local_snapshot(vs: &Value) -> csi::Snapshot {
    let size = quantity_bytes(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        str_at(vs, "/status/restoreSize").to_string(),
    ))
    .unwrap_or(0);
    let created = str_at(vs, "/status/creationTime");
    csi::Snapshot {
        size_bytes: size as i64,
        snapshot_id: str_at(vs, "/metadata/name").to_string(),
        source_volume_id: str_at(vs, "/spec/source/persistentVolumeClaimName").to_string(),
        creation_time: timestamp(if created.is_empty() { str_at(vs, "/metadata/creationTimestamp") } else { created }),
        ready_to_use: vs.pointer("/status/readyToUse") == Some(&json!(true)),
        group_snapshot_id: String::new(),
        accessible_topology: vec![],
    }
}

fn backup_snapshot(vrb: &Value) -> csi::Snapshot {
    let size = quantity_bytes(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        str_at(vrb, "/status/sourceSpec/resources/requests/storage").to_string(),
    ))
    .unwrap_or(0);
    csi::Snapshot {
        size_bytes: size as i64,
        snapshot_id: SnapshotId::Backup {
            namespace: str_at(vrb, "/metadata/namespace").into(),
            name: str_at(vrb, "/metadata/name").into(),
        }
        .render(),
        source_volume_id: str_at(vrb, "/spec/source").to_string(),
        creation_time: timestamp(str_at(vrb, "/metadata/creationTimestamp")),
        ready_to_use: vrb.pointer("/status/success") == Some(&json!(true)),
        group_snapshot_id: String::new(),
        accessible_topology: vec![],
    }
}

impl ControllerService {
    fn owner_labels(&self) -> serde_json::Map<String, Value> {
        let mut labels = serde_json::Map::new();
        labels.insert(keys::MANAGED_BY.into(), json!(keys::MANAGED_BY_VALUE));
        if let Some(id) = &self.settings.cluster_id {
            labels.insert(keys::GUEST_CLUSTER.into(), json!(names::label_value(id)));
        }
        labels
    }

    /// The host VolumeSnapshotClass for a provisioner, from Harvester's `csi-driver-config`.
    async fn snapshot_class_for(&self, provisioner: &str) -> Result<Option<String>> {
        let Some(config) = self.host.setting("csi-driver-config").await? else { return Ok(None) };
        let parsed: Value = serde_json::from_str(&config)
            .map_err(|e| Error::Internal(format!("Harvester setting csi-driver-config is not JSON: {e}")))?;
        Ok(parsed
            .pointer(&format!("/{}/volumeSnapshotClassName", provisioner.replace('/', "~1")))
            .and_then(Value::as_str)
            .map(String::from))
    }

    pub(super) async fn create_snapshot_impl(
        &self,
        mut req: csi::CreateSnapshotRequest,
    ) -> Result<csi::CreateSnapshotResponse> {
        req.name = names::snapshot_object_for(&req.name)?;
        if req.source_volume_id.is_empty() {
            return Err(Error::InvalidArgument("source volume id is required".into()));
        }
        names::validate_volume_id(&req.source_volume_id)?;
        let kind = req.parameters.get(TYPE_PARAM).map(String::as_str).unwrap_or("snapshot");
        if let Some(k) =
            req.parameters.keys().find(|k| k.as_str() != TYPE_PARAM && !k.starts_with("csi.storage.k8s.io/"))
        {
            return Err(Error::InvalidArgument(format!(
                "unknown VolumeSnapshotClass parameter {k:?}; this driver understands \"type\""
            )));
        }
        let _guard = self.locks.try_lock(&format!("snapshot/{}", req.name))?;
        tracing::info!(snapshot = %req.name, source = %req.source_volume_id, kind, "CreateSnapshot");
        let source = self
            .host
            .get_pvc(&req.source_volume_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("source volume {} not found", req.source_volume_id)))?;
        let source = self.adopt_if_upstream(source).await;
        let snapshot = match kind {
            "snapshot" => {
                self.host
                    .require(Feature::Snapshots, "snapshots need Harvester ≥ v1.7")
                    .await
                    .map_err(Error::FailedPrecondition)?;
                let vs = match self.host.get_snapshot(&req.name).await? {
                    Some(vs) => vs,
                    None => {
                        let sc = source.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
                        let provisioner = match self.host.get_storage_class(&sc).await {
                            Ok(Some(c)) => c.provisioner,
                            _ => crate::host::LONGHORN_PROVISIONER.to_string(),
                        };
                        let class = self.snapshot_class_for(&provisioner).await?;
                        let mut labels = self.owner_labels();
                        labels.insert(keys::SNAP_HOST_SC.into(), json!(sc));
                        labels.insert(
                            keys::SNAP_HOST_VOLUME_MODE.into(),
                            json!(source
                                .spec
                                .as_ref()
                                .and_then(|s| s.volume_mode.clone())
                                .unwrap_or_else(|| "Block".into())),
                        );
                        let mut spec = json!({"source": {"persistentVolumeClaimName": req.source_volume_id}});
                        if let Some(c) = class {
                            spec["volumeSnapshotClassName"] = json!(c);
                        }
                        self.host
                            .create_snapshot(json!({
                                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                "metadata": {"name": req.name, "namespace": self.host.namespace, "labels": labels},
                                "spec": spec,
                            }))
                            .await?
                    }
                };
                let mut s = local_snapshot(&vs);
                if s.source_volume_id != req.source_volume_id {
                    return Err(Error::AlreadyExists(format!(
                        "snapshot {} exists for another volume ({})",
                        req.name, s.source_volume_id
                    )));
                }
                if s.size_bytes == 0 {
                    s.size_bytes = pvc_capacity(&source) as i64;
                }
                s
            }
            "backup" => {
                self.host
                    .require(Feature::RemoteBackups, "remote backups need Harvester ≥ v1.8")
                    .await
                    .map_err(Error::FailedPrecondition)?;
                let vrb = match self.host.get_backup(&self.host.namespace, &req.name).await? {
                    Some(b) => b,
                    None => {
                        let mut labels = self.owner_labels();
                        labels.insert(keys::BACKUP_SOURCE_VOLUME.into(), json!(req.source_volume_id));
                        self.host
                            .create_backup(json!({
                                "apiVersion": "harvesterhci.io/v1beta1", "kind": "VolumeRemoteBackup",
                                "metadata": {"name": req.name, "namespace": self.host.namespace, "labels": labels},
                                "spec": {"type": "lh", "source": req.source_volume_id},
                            }))
                            .await?
                    }
                };
                let mut s = backup_snapshot(&vrb);
                if s.source_volume_id != req.source_volume_id {
                    return Err(Error::AlreadyExists(format!(
                        "backup {} exists for another volume ({})",
                        req.name, s.source_volume_id
                    )));
                }
                if s.size_bytes == 0 {
                    s.size_bytes = pvc_capacity(&source) as i64;
                }
                s
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "snapshot type {other:?} must be \"snapshot\" or \"backup\""
                )))
            }
        };
        Ok(csi::CreateSnapshotResponse { snapshot: Some(snapshot) })
    }

    pub(super) async fn delete_snapshot_impl(
        &self,
        req: csi::DeleteSnapshotRequest,
    ) -> Result<csi::DeleteSnapshotResponse> {
        let id = SnapshotId::parse(&req.snapshot_id)?;
        let _guard = self.locks.try_lock(&format!("snapshot/{}", req.snapshot_id))?;
        tracing::info!(snapshot = %req.snapshot_id, "DeleteSnapshot");
        match id {
            SnapshotId::Local(name) => match self.host.delete_snapshot(&name).await {
                Err(e) if e.is_forbidden() && !self.host.features.enabled(Feature::Snapshots) => {}
                other => other?,
            },
            SnapshotId::Backup { namespace, name } => {
                if namespace != self.host.namespace {
                    return Err(Error::PermissionDenied(format!(
                        "backup {namespace}/{name} belongs to another namespace"
                    )));
                }
                self.host.delete_backup(&namespace, &name).await?
            }
        }
        Ok(csi::DeleteSnapshotResponse {})
    }

    pub(super) async fn get_snapshot_impl(&self, req: csi::GetSnapshotRequest) -> Result<csi::GetSnapshotResponse> {
        let snapshot = match SnapshotId::parse(&req.snapshot_id)? {
            SnapshotId::Local(name) => {
                let vs = self
                    .host
                    .get_snapshot(&name)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("snapshot {name} not found")))?;
                local_snapshot(&vs)
            }
            SnapshotId::Backup { namespace, name } => {
                if namespace != self.host.namespace {
                    return Err(Error::NotFound(format!("backup {namespace}/{name} not found")));
                }
                let vrb = self
                    .host
                    .get_backup(&namespace, &name)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("backup {namespace}/{name} not found")))?;
                backup_snapshot(&vrb)
            }
        };
        Ok(csi::GetSnapshotResponse { snapshot: Some(snapshot) })
    }

    pub(super) async fn list_snapshots_impl(
        &self,
        req: csi::ListSnapshotsRequest,
    ) -> Result<csi::ListSnapshotsResponse> {
        if req.max_entries < 0 {
            return Err(Error::InvalidArgument("max_entries must not be negative".into()));
        }
        let mut all: Vec<csi::Snapshot> = Vec::new();
        if self.host.features.enabled(Feature::Snapshots) {
            all.extend(
                self.host
                    .list_snapshots()
                    .await?
                    .iter()
                    .filter(|vs| !label(vs, keys::SNAP_HOST_SC).is_empty() || !label(vs, keys::MANAGED_BY).is_empty())
                    .map(local_snapshot),
            );
        }
        if self.host.features.enabled(Feature::RemoteBackups) {
            all.extend(self.host.list_backups().await?.iter().map(backup_snapshot));
        }
        all.retain(|s| {
            (req.snapshot_id.is_empty() || s.snapshot_id == req.snapshot_id)
                && (req.source_volume_id.is_empty() || s.source_volume_id == req.source_volume_id)
        });
        all.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        let (entries, next_token) = super::list::paginate(all, &req.starting_token, req.max_entries)?;
        Ok(csi::ListSnapshotsResponse {
            entries: entries.into_iter().map(|s| csi::list_snapshots_response::Entry { snapshot: Some(s) }).collect(),
            next_token,
        })
    }
}
