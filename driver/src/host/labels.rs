//! The labels and annotations on host objects, next to the code that reads them back:
//! who owns a host PVC, snapshot or backup (the guest cluster, claim and PV), the
//! source of a snapshot, the shape of a PVC. Labels hold what selectors need
//! (label-safe values); annotations keep exact names.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::label_value;

/// Labels and annotations this driver (and the upstream one) puts on host objects.
pub mod keys {
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "harvester-csi-driver";
    pub const GUEST_CLUSTER: &str = "csi.harvesterhci.io/guest-cluster";
    pub const GUEST_CLUSTER_ID: &str = "csi.harvesterhci.io/guest-cluster-id";
    pub const GUEST_PVC_NAMESPACE: &str = "csi.harvesterhci.io/guest-pvc-namespace";
    pub const GUEST_PVC_NAME: &str = "csi.harvesterhci.io/guest-pvc-name";
    pub const GUEST_PV_NAME: &str = "csi.harvesterhci.io/guest-pv-name";
    pub const VOLUME_FOR_VM: &str = "harvesterhci.io/volumeForVirtualMachine";
    pub const SNAP_HOST_SC: &str = "harvesterhci.io/snapHostSC";
    pub const SNAP_HOST_VOLUME_MODE: &str = "harvesterhci.io/snapHostVolumeMode";
    pub const BACKUP_SOURCE_VOLUME: &str = "harvesterhci.io/backupSourceVolume";
    /// `"true"` on host PVCs that are NFS exports (RWX), `"false"` on disks.
    pub const SHARED: &str = "csi.harvesterhci.io/shared";
    /// The CO's name for a volume/snapshot whose host name is a hash of it.
    pub const CSI_NAME: &str = "csi.harvesterhci.io/csi-name";
    /// `"true"` on a host volume another driver (upstream's) made and this one
    /// labelled as its own when it first used it.
    pub const ADOPTED: &str = "csi.harvesterhci.io/adopted";
    /// Kubernetes' mark of the default StorageClass.
    pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
}

/// Who a host object belongs to. Snapshots, backups and restores carry the labels only;
/// host PVCs the annotations too. Any part may be missing on objects older drivers made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The guest cluster (`--cluster-id`). Read back from the annotation, else from the
    /// label, which holds the label-safe form.
    pub cluster_id: Option<String>,
    /// The guest PVC the volume was provisioned for.
    pub guest_pvc_namespace: Option<String>,
    pub guest_pvc_name: Option<String>,
    pub guest_pv: Option<String>,
    /// The CO's name for the volume when the host name is a hash of it.
    pub csi_name: Option<String>,
    /// Made by another driver (upstream's) and labelled as this one's on first use.
    pub adopted: bool,
}

fn get<'a>(map: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a String> {
    map.as_ref().and_then(|m| m.get(key))
}

impl Ownership {
    /// Owned by the guest cluster `cluster_id` (or by this driver, without one), nothing more.
    pub fn of_cluster(cluster_id: Option<&str>) -> Self {
        Self { cluster_id: cluster_id.map(String::from), ..Self::default() }
    }

    /// As recorded on a host object.
    pub fn of(meta: &ObjectMeta) -> Self {
        let annotation = |key: &str| get(&meta.annotations, key).cloned();
        Self {
            cluster_id: annotation(keys::GUEST_CLUSTER_ID).or_else(|| get(&meta.labels, keys::GUEST_CLUSTER).cloned()),
            guest_pvc_namespace: annotation(keys::GUEST_PVC_NAMESPACE),
            guest_pvc_name: annotation(keys::GUEST_PVC_NAME),
            guest_pv: annotation(keys::GUEST_PV_NAME),
            csi_name: annotation(keys::CSI_NAME),
            adopted: annotation(keys::ADOPTED).as_deref() == Some("true"),
        }
    }

    /// The labels: managed by this driver, and the guest cluster (label-safe).
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([(keys::MANAGED_BY.to_string(), keys::MANAGED_BY_VALUE.to_string())]);
        if let Some(id) = &self.cluster_id {
            labels.insert(keys::GUEST_CLUSTER.into(), label_value(id));
        }
        labels
    }

    /// The annotations: the exact names.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let adopted = self.adopted.then(|| "true".to_string());
        [
            (keys::GUEST_CLUSTER_ID, &self.cluster_id),
            (keys::GUEST_PVC_NAMESPACE, &self.guest_pvc_namespace),
            (keys::GUEST_PVC_NAME, &self.guest_pvc_name),
            (keys::GUEST_PV_NAME, &self.guest_pv),
            (keys::CSI_NAME, &self.csi_name),
            (keys::ADOPTED, &adopted),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
        .collect()
    }
}

/// The label selector for this driver's host volumes, of one guest cluster when given.
pub fn owned_volumes_selector(cluster_id: Option<&str>) -> String {
    let mut selector = format!("{}={}", keys::MANAGED_BY, keys::MANAGED_BY_VALUE);
    if let Some(id) = cluster_id {
        selector.push_str(&format!(",{}={}", keys::GUEST_CLUSTER, label_value(id)));
    }
    selector
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        ObjectMeta { labels: map(labels), annotations: map(annotations), ..Default::default() }
    }

    #[rstest]
    #[case::nothing(Ownership::default())]
    #[case::cluster_only(Ownership::of_cluster(Some("c-m-abc/def")))]
    #[case::everything(Ownership {
        cluster_id: Some("prod".into()),
        guest_pvc_namespace: Some("apps".into()),
        guest_pvc_name: Some("data".into()),
        guest_pv: Some("pvc-1234".into()),
        csi_name: Some("a-very-long-name".into()),
        adopted: false,
    })]
    #[case::adopted(Ownership {
        cluster_id: Some("prod".into()),
        guest_pv: Some("pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11".into()),
        adopted: true,
        ..Default::default()
    })]
    fn ownership_reads_back_what_it_writes(#[case] owner: Ownership) {
        let written =
            ObjectMeta { labels: Some(owner.labels()), annotations: Some(owner.annotations()), ..Default::default() };
        assert_eq!(Ownership::of(&written), owner);
    }

    #[rstest]
    #[case::annotation_wins(&[(keys::GUEST_CLUSTER, "c-m-abc-def")], &[(keys::GUEST_CLUSTER_ID, "c-m-abc/def")], Some("c-m-abc/def"))]
    #[case::label_when_no_annotation(&[(keys::GUEST_CLUSTER, "c-m-abc-def")], &[], Some("c-m-abc-def"))]
    #[case::neither(&[(keys::MANAGED_BY, keys::MANAGED_BY_VALUE)], &[], None)]
    fn the_cluster_id_falls_back_to_the_label(
        #[case] labels: &[(&str, &str)],
        #[case] annotations: &[(&str, &str)],
        #[case] want: Option<&str>,
    ) {
        assert_eq!(Ownership::of(&meta(labels, annotations)).cluster_id.as_deref(), want);
    }

    #[test]
    fn partial_records_stay_partial() {
        let o = Ownership::of(&meta(&[], &[(keys::GUEST_PVC_NAME, "data"), ("other/key", "x")]));
        assert_eq!(o, Ownership { guest_pvc_name: Some("data".into()), ..Default::default() });
        assert_eq!(Ownership::of(&ObjectMeta::default()), Ownership::default());
    }

    #[test]
    fn labels_are_label_safe_and_annotations_exact() {
        let owner = Ownership::of_cluster(Some("c-m-abc/def"));
        assert_eq!(owner.labels().get(keys::GUEST_CLUSTER).map(String::as_str), Some("c-m-abc-def"));
        assert_eq!(owner.annotations().get(keys::GUEST_CLUSTER_ID).map(String::as_str), Some("c-m-abc/def"));
        assert_eq!(Ownership::default().labels().len(), 1, "managed-by only");
        assert!(Ownership::default().annotations().is_empty());
    }

    #[test]
    fn owned_volumes_selector_narrows_to_a_cluster_when_given() {
        assert_eq!(owned_volumes_selector(None), "app.kubernetes.io/managed-by=harvester-csi-driver");
        assert_eq!(
            owned_volumes_selector(Some("prod")),
            "app.kubernetes.io/managed-by=harvester-csi-driver,csi.harvesterhci.io/guest-cluster=prod"
        );
    }
}
