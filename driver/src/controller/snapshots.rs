//! Snapshots: host VolumeSnapshots (local) and Harvester remote backups
//! (`type: backup`). Not-ready snapshots are reported `ready_to_use=false`
//! instead of failing; listing is paginated over both kinds together.

use csi_proto::csi::v1 as csi;

use super::ControllerService;
use crate::error::{Error, Result};
use crate::host::labels::Ownership;
use crate::host::pvc::{pvc_capacity, storage_class};
use crate::host::snapshots::{HostSnapshot, RemoteBackup};
use crate::host::Feature;
use crate::names::{self, SnapshotId};

const TYPE_PARAM: &str = "type";

fn timestamp(t: Option<jiff::Timestamp>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() })
}

fn local_snapshot(vs: &HostSnapshot) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: vs.restore_size_bytes().unwrap_or(0) as i64,
        snapshot_id: vs.name().to_string(),
        source_volume_id: vs.source_volume().to_string(),
        creation_time: timestamp(vs.creation_time()),
        ready_to_use: vs.ready_to_use(),
        group_snapshot_id: String::new(),
        accessible_topology: vec![],
    }
}

fn backup_snapshot(vrb: &RemoteBackup) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: vrb.source_size_bytes().unwrap_or(0) as i64,
        snapshot_id: SnapshotId::Backup { namespace: vrb.namespace().into(), name: vrb.name().into() }.render(),
        source_volume_id: vrb.source_volume().to_string(),
        creation_time: timestamp(vrb.creation_time()),
        ready_to_use: vrb.succeeded(),
        group_snapshot_id: String::new(),
        accessible_topology: vec![],
    }
}

impl ControllerService {
    fn owner(&self) -> Ownership {
        Ownership::of_cluster(self.settings.cluster_id.as_deref())
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
                        let sc = storage_class(&source).unwrap_or_default();
                        let provisioner = match self.host.get_storage_class(sc).await {
                            Ok(Some(c)) => c.provisioner,
                            _ => crate::host::LONGHORN_PROVISIONER.to_string(),
                        };
                        let class = self.host.snapshot_class_for(&provisioner).await?;
                        self.host.create_snapshot(&req.name, &source, class.as_deref(), &self.owner()).await?
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
                    None => self.host.create_backup(&req.name, &req.source_volume_id, &self.owner()).await?,
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
                self.host.list_snapshots().await?.iter().filter(|vs| vs.is_guest_snapshot()).map(local_snapshot),
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
