//! Host VolumeSnapshots (local snapshots), Harvester VolumeRemoteBackups and
//! VolumeRemoteRestores (remote backups, Harvester ≥ v1.8): typed views of what the
//! driver reads, and the objects it creates, built here from typed arguments.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, ListParams, PostParams};
use serde::Deserialize;
use serde_json::{json, Value};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::labels::{keys, Ownership};
use super::pvc::quantity_bytes;
use super::shape::{or_default, typed};
use super::{snapshot_resource, vrb_resource, vrr_resource, Host};
use crate::error::{Error, Result};

/// A host VolumeSnapshot (snapshot.storage.k8s.io/v1): a local snapshot.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostSnapshot {
    #[serde(default, deserialize_with = "or_default")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    spec: SnapshotSpec,
    #[serde(default, deserialize_with = "or_default")]
    status: SnapshotStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotSpec {
    #[serde(default, deserialize_with = "or_default")]
    source: SnapshotSource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotSource {
    persistent_volume_claim_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotStatus {
    ready_to_use: Option<bool>,
    restore_size: Option<Quantity>,
    creation_time: Option<String>,
}

/// A Harvester VolumeRemoteBackup (harvesterhci.io/v1beta1): a backup on the backup target.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RemoteBackup {
    #[serde(default, deserialize_with = "or_default")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    spec: BackupSpec,
    #[serde(default, deserialize_with = "or_default")]
    status: BackupStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct BackupSpec {
    /// The host PVC backed up.
    source: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackupStatus {
    success: Option<bool>,
    /// The spec of the PVC when it was backed up.
    source_spec: Option<PersistentVolumeClaimSpec>,
}

/// A Harvester VolumeRemoteRestore (harvesterhci.io/v1beta1): a PVC made from a backup.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RemoteRestore {
    #[serde(default, deserialize_with = "or_default")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    spec: RestoreSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RestoreSpec {
    /// The backup restored, as `namespace/name`.
    from: Option<String>,
}

fn text(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> &'a str {
    meta.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str).unwrap_or("")
}

impl HostSnapshot {
    pub fn name(&self) -> &str {
        text(&self.metadata.name)
    }
    /// The host PVC snapshotted.
    pub fn source_volume(&self) -> &str {
        text(&self.spec.source.persistent_volume_claim_name)
    }
    pub fn ready_to_use(&self) -> bool {
        self.status.ready_to_use == Some(true)
    }
    /// The size a restore needs, once the snapshot controller reported it.
    pub fn restore_size_bytes(&self) -> Option<u64> {
        self.status.restore_size.as_ref().and_then(quantity_bytes)
    }
    /// When the snapshot was taken (`status.creationTime`), else when the object was made.
    pub fn creation_time(&self) -> Option<jiff::Timestamp> {
        match text(&self.status.creation_time) {
            "" => self.metadata.creation_timestamp.as_ref().map(|t| t.0),
            taken => taken.parse().ok(),
        }
    }
    /// The host StorageClass of the PVC snapshotted, as recorded at creation ("" when not
    /// recorded): a restore uses the same class.
    pub fn source_storage_class(&self) -> &str {
        label(&self.metadata, keys::SNAP_HOST_SC)
    }
    /// The volume mode of the PVC snapshotted, as recorded at creation ("" when not recorded).
    pub fn source_volume_mode(&self) -> &str {
        label(&self.metadata, keys::SNAP_HOST_VOLUME_MODE)
    }
    /// Made for a guest cluster, by this driver or by the upstream one (which records
    /// only the source class): not some other host snapshot of the namespace.
    pub fn is_guest_snapshot(&self) -> bool {
        !self.source_storage_class().is_empty() || !label(&self.metadata, keys::MANAGED_BY).is_empty()
    }
}

impl RemoteBackup {
    pub fn name(&self) -> &str {
        text(&self.metadata.name)
    }
    pub fn namespace(&self) -> &str {
        text(&self.metadata.namespace)
    }
    /// The host PVC backed up.
    pub fn source_volume(&self) -> &str {
        text(&self.spec.source)
    }
    pub fn succeeded(&self) -> bool {
        self.status.success == Some(true)
    }
    /// The storage request of the PVC backed up (what a restore needs).
    pub fn source_size_bytes(&self) -> Option<u64> {
        let spec = self.status.source_spec.as_ref()?;
        spec.resources.as_ref()?.requests.as_ref()?.get("storage").and_then(quantity_bytes)
    }
    pub fn creation_time(&self) -> Option<jiff::Timestamp> {
        self.metadata.creation_timestamp.as_ref().map(|t| t.0)
    }
}

impl RemoteRestore {
    pub fn name(&self) -> &str {
        text(&self.metadata.name)
    }
    /// The backup restored, as `namespace/name`.
    pub fn from(&self) -> &str {
        text(&self.spec.from)
    }
}

fn snapshot_of(obj: &DynamicObject) -> Result<HostSnapshot> {
    typed(obj, "VolumeSnapshot")
}
fn backup_of(obj: &DynamicObject) -> Result<RemoteBackup> {
    typed(obj, "VolumeRemoteBackup")
}
fn restore_of(obj: &DynamicObject) -> Result<RemoteRestore> {
    typed(obj, "VolumeRemoteRestore")
}

/// A new snapshot's labels: its owner, and the class and volume mode of its source
/// (Block when unset) so a restore can recreate the same kind of volume.
fn snapshot_labels(source: &PersistentVolumeClaim, owner: &Ownership) -> BTreeMap<String, String> {
    let spec = source.spec.as_ref();
    let class = spec.and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
    let mode = spec.and_then(|s| s.volume_mode.clone()).unwrap_or_else(|| "Block".into());
    let mut labels = owner.labels();
    labels.insert(keys::SNAP_HOST_SC.into(), class);
    labels.insert(keys::SNAP_HOST_VOLUME_MODE.into(), mode);
    labels
}

fn dynamic(v: Value) -> Result<DynamicObject> {
    serde_json::from_value(v).map_err(|e| Error::Internal(format!("building host object: {e}")))
}

impl Host {
    pub async fn get_snapshot(&self, name: &str) -> Result<Option<HostSnapshot>> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        self.call_opt("get volumesnapshot", api.get(name)).await?.as_ref().map(snapshot_of).transpose()
    }

    /// Creates VolumeSnapshot `name` of host PVC `source` (with the host's default snapshot
    /// class when `class` is `None`), recording the source's class and volume mode.
    pub async fn create_snapshot(
        &self,
        name: &str,
        source: &PersistentVolumeClaim,
        class: Option<&str>,
        owner: &Ownership,
    ) -> Result<HostSnapshot> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        let source_volume =
            source.metadata.name.as_deref().ok_or_else(|| Error::Internal("source PVC has no name".into()))?;
        let mut spec = json!({"source": {"persistentVolumeClaimName": source_volume}});
        if let Some(c) = class {
            spec["volumeSnapshotClassName"] = json!(c);
        }
        let labels = snapshot_labels(source, owner);
        let obj = dynamic(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": spec,
        }))?;
        snapshot_of(&self.call("create volumesnapshot", api.create(&PostParams::default(), &obj)).await?)
    }

    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        self.call_opt("delete volumesnapshot", api.delete(name, &Default::default())).await.map(|_| ())
    }

    pub async fn list_snapshots(&self) -> Result<Vec<HostSnapshot>> {
        let api = self.dynamic(&snapshot_resource(), Some(&self.namespace));
        self.call("list volumesnapshots", api.list(&ListParams::default()))
            .await?
            .items
            .iter()
            .map(snapshot_of)
            .collect()
    }

    pub async fn get_backup(&self, namespace: &str, name: &str) -> Result<Option<RemoteBackup>> {
        let api = self.dynamic(&vrb_resource(), Some(namespace));
        self.call_opt("get volumeremotebackup", api.get(name)).await?.as_ref().map(backup_of).transpose()
    }

    /// Creates VolumeRemoteBackup `name` of host PVC `source_volume` (a Longhorn backup).
    pub async fn create_backup(&self, name: &str, source_volume: &str, owner: &Ownership) -> Result<RemoteBackup> {
        let api = self.dynamic(&vrb_resource(), Some(&self.namespace));
        let mut labels = owner.labels();
        labels.insert(keys::BACKUP_SOURCE_VOLUME.into(), source_volume.into());
        let obj = dynamic(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VolumeRemoteBackup",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {"type": "lh", "source": source_volume},
        }))?;
        backup_of(&self.call("create volumeremotebackup", api.create(&PostParams::default(), &obj)).await?)
    }

    pub async fn delete_backup(&self, namespace: &str, name: &str) -> Result<()> {
        let api = self.dynamic(&vrb_resource(), Some(namespace));
        self.call_opt("delete volumeremotebackup", api.delete(name, &Default::default())).await.map(|_| ())
    }

    /// Backups of this guest's namespace only (upstream listed every tenant's).
    pub async fn list_backups(&self) -> Result<Vec<RemoteBackup>> {
        let api = self.dynamic(&vrb_resource(), Some(&self.namespace));
        self.call("list volumeremotebackups", api.list(&ListParams::default()))
            .await?
            .items
            .iter()
            .map(backup_of)
            .collect()
    }

    pub async fn get_restore(&self, name: &str) -> Result<Option<RemoteRestore>> {
        let api = self.dynamic(&vrr_resource(), Some(&self.namespace));
        self.call_opt("get volumeremoterestore", api.get(name)).await?.as_ref().map(restore_of).transpose()
    }

    /// Creates VolumeRemoteRestore `name` from backup `from` (`namespace/name`); the host
    /// then makes the PVC `name`. Present already is fine.
    pub async fn create_restore(&self, name: &str, from: &str, owner: &Ownership) -> Result<RemoteRestore> {
        let api = self.dynamic(&vrr_resource(), Some(&self.namespace));
        let labels = owner.labels();
        let obj = dynamic(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VolumeRemoteRestore",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {"type": "lh", "from": from},
        }))?;
        match self.call("create volumeremoterestore", api.create(&PostParams::default(), &obj)).await {
            Ok(o) => restore_of(&o),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn snapshot(v: Value) -> HostSnapshot {
        serde_json::from_value(v).expect("VolumeSnapshot fixture parses")
    }
    fn backup(v: Value) -> RemoteBackup {
        serde_json::from_value(v).expect("VolumeRemoteBackup fixture parses")
    }
    fn at(s: &str) -> Option<jiff::Timestamp> {
        Some(s.parse().expect("timestamp"))
    }

    #[rstest]
    #[case::taken_time_wins(json!({"metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"}, "status": {"creationTime": "2025-01-02T03:04:05.5Z"}}), at("2025-01-02T03:04:05.5Z"))]
    #[case::falls_back_to_the_object(json!({"metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"}, "status": {}}), at("2025-01-01T00:00:00Z"))]
    #[case::empty_taken_time_falls_back(json!({"metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"}, "status": {"creationTime": ""}}), at("2025-01-01T00:00:00Z"))]
    #[case::unparsable_taken_time(json!({"metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"}, "status": {"creationTime": "yesterday"}}), None)]
    #[case::neither(json!({}), None)]
    fn snapshot_creation_time(#[case] v: Value, #[case] want: Option<jiff::Timestamp>) {
        assert_eq!(snapshot(v).creation_time(), want);
    }

    #[rstest]
    #[case::ready(json!({"status": {"readyToUse": true, "restoreSize": "1Gi"}}), true, Some(1 << 30))]
    #[case::size_as_a_number(json!({"status": {"readyToUse": true, "restoreSize": 4096}}), true, Some(4096))]
    #[case::not_ready(json!({"status": {"readyToUse": false}}), false, None)]
    #[case::no_status(json!({"status": null}), false, None)]
    #[case::junk_size(json!({"status": {"restoreSize": "lots"}}), false, None)]
    fn snapshot_readiness_and_size(#[case] v: Value, #[case] ready: bool, #[case] size: Option<u64>) {
        let s = snapshot(v);
        assert_eq!((s.ready_to_use(), s.restore_size_bytes()), (ready, size));
    }

    #[test]
    fn snapshot_identity() {
        let s = snapshot(json!({"metadata": {"name": "snap-1"},
            "spec": {"source": {"persistentVolumeClaimName": "pvc-a"}, "volumeSnapshotClassName": "longhorn-snapshot"}}));
        assert_eq!((s.name(), s.source_volume()), ("snap-1", "pvc-a"));
    }

    #[rstest]
    #[case::ours(json!({"app.kubernetes.io/managed-by": "harvester-csi-driver", "harvesterhci.io/snapHostSC": "longhorn",
        "harvesterhci.io/snapHostVolumeMode": "Filesystem"}), "longhorn", "Filesystem", true)]
    #[case::upstream_records_only_the_class(json!({"harvesterhci.io/snapHostSC": "longhorn"}), "longhorn", "", true)]
    #[case::managed_without_source(json!({"app.kubernetes.io/managed-by": "harvester-csi-driver"}), "", "", true)]
    #[case::someone_elses(json!({"app": "backup-tool"}), "", "", false)]
    #[case::no_labels(json!(null), "", "", false)]
    fn snapshot_labels_read(#[case] labels: Value, #[case] class: &str, #[case] mode: &str, #[case] guest: bool) {
        let s = snapshot(json!({"metadata": {"name": "snap-1", "labels": labels}}));
        assert_eq!((s.source_storage_class(), s.source_volume_mode(), s.is_guest_snapshot()), (class, mode, guest));
    }

    #[rstest]
    #[case::filesystem(json!({"spec": {"storageClassName": "longhorn-fast", "volumeMode": "Filesystem"}}), "longhorn-fast", "Filesystem")]
    #[case::mode_unset_is_block(json!({"spec": {"storageClassName": "longhorn"}}), "longhorn", "Block")]
    #[case::no_spec(json!({}), "", "Block")]
    fn new_snapshots_record_their_source(#[case] source: Value, #[case] class: &str, #[case] mode: &str) {
        let source: PersistentVolumeClaim = serde_json::from_value(source).expect("PVC fixture parses");
        let labels = snapshot_labels(&source, &Ownership::of_cluster(Some("prod")));
        let written = snapshot(json!({"metadata": {"labels": labels}}));
        assert_eq!((written.source_storage_class(), written.source_volume_mode()), (class, mode));
        assert!(written.is_guest_snapshot());
        assert_eq!(labels.get(keys::GUEST_CLUSTER).map(String::as_str), Some("prod"));
    }

    #[rstest]
    #[case::done(json!({"metadata": {"name": "b", "namespace": "ns", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"type": "lh", "source": "pvc-a"},
        "status": {"success": true, "sourceSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}}),
        "pvc-a", true, Some(2 << 30), at("2025-01-01T00:00:00Z"))]
    #[case::failed(json!({"metadata": {"name": "b", "namespace": "ns"}, "spec": {"source": "pvc-a"}, "status": {"success": false, "error": "no target"}}),
        "pvc-a", false, None, None)]
    #[case::in_progress(json!({"metadata": {"name": "b", "namespace": "ns"}, "spec": {"source": "pvc-a"}}), "pvc-a", false, None, None)]
    #[case::spec_without_request(json!({"metadata": {"name": "b", "namespace": "ns"}, "status": {"success": true, "sourceSpec": {}}}), "", true, None, None)]
    fn backups(
        #[case] v: Value,
        #[case] source: &str,
        #[case] succeeded: bool,
        #[case] size: Option<u64>,
        #[case] created: Option<jiff::Timestamp>,
    ) {
        let b = backup(v);
        assert_eq!((b.name(), b.namespace()), ("b", "ns"));
        assert_eq!(
            (b.source_volume(), b.succeeded(), b.source_size_bytes(), b.creation_time()),
            (source, succeeded, size, created)
        );
    }

    #[test]
    fn restore_names_its_backup() {
        let r: RemoteRestore =
            serde_json::from_value(json!({"metadata": {"name": "pvc-x"}, "spec": {"type": "lh", "from": "ns/b"}}))
                .expect("VolumeRemoteRestore fixture parses");
        assert_eq!((r.name(), r.from()), ("pvc-x", "ns/b"));
    }
}
