//! Identifiers: what a valid volume/node/snapshot id looks like, and how ids map
//! to host objects. Everything is validated before any host call or path is
//! built from it.

use sha2::Digest;

use crate::error::{Error, Result};

pub const DRIVER_NAME: &str = "driver.harvesterhci.io";
/// Prefix of remote-backup snapshot ids: `backup:<namespace>/<name>` (upstream's format).
pub const BACKUP_PREFIX: &str = "backup:";

/// Labels and annotations this driver puts on host objects.
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
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A volume id is the host PVC name, also used as KubeVirt volume and disk name:
/// an RFC 1123 label (the external-provisioner's `pvc-<uid>` is 40 characters).
pub fn validate_volume_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("volume id is required".into()));
    }
    if !is_dns_label(id) {
        return Err(Error::InvalidArgument(format!(
            "volume id {id:?} is not valid: it must be a lowercase RFC 1123 label of at most 63 characters"
        )));
    }
    Ok(())
}

/// The longest CO-suggested name accepted (the CSI spec's size limit for strings).
pub const MAX_NAME_BYTES: usize = 128;

fn hashed(prefix: &str, name: &str) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}", &hex[..32])
}

/// The volume id (host PVC name) for CreateVolume's `name`: the name itself when
/// it is already a valid label (the external-provisioner's `pvc-<uid>`), else a
/// stable hash of it, so any name the CO picks maps to the same host object.
pub fn volume_id_for(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("volume name is required".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidArgument(format!("volume name is longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(if is_dns_label(name) { name.to_string() } else { hashed("hcsi-", name) })
}

/// The host VolumeSnapshot/backup name for CreateSnapshot's `name` (same scheme).
pub fn snapshot_object_for(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("snapshot name is required".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidArgument(format!("snapshot name is longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(if is_dns_label(name) { name.to_string() } else { hashed("hsnap-", name) })
}

/// A node id is the name of the VM in the host namespace.
pub fn validate_node_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("node id is required".into()));
    }
    if !is_dns_subdomain(id) || id.len() > 63 {
        return Err(Error::InvalidArgument(format!("node id {id:?} is not a valid VM name")));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotId {
    /// A host VolumeSnapshot in the host namespace.
    Local(String),
    /// A Harvester VolumeRemoteBackup.
    Backup { namespace: String, name: String },
}

impl SnapshotId {
    pub fn parse(id: &str) -> Result<Self> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("snapshot id is required".into()));
        }
        if let Some(rest) = id.strip_prefix(BACKUP_PREFIX) {
            let (ns, name) = rest.split_once('/').ok_or_else(|| {
                Error::InvalidArgument(format!("backup snapshot id {id:?} must be backup:<namespace>/<name>"))
            })?;
            if !is_dns_label(ns) || !is_dns_subdomain(name) {
                return Err(Error::InvalidArgument(format!(
                    "backup snapshot id {id:?} has an invalid namespace or name"
                )));
            }
            return Ok(SnapshotId::Backup { namespace: ns.into(), name: name.into() });
        }
        if !is_dns_subdomain(id) {
            return Err(Error::InvalidArgument(format!("snapshot id {id:?} is not a valid object name")));
        }
        Ok(SnapshotId::Local(id.into()))
    }

    pub fn render(&self) -> String {
        match self {
            SnapshotId::Local(n) => n.clone(),
            SnapshotId::Backup { namespace, name } => format!("{BACKUP_PREFIX}{namespace}/{name}"),
        }
    }
}

/// The disk serial this driver gives a hot-plugged volume: 20 characters, the
/// most a SCSI device id (VPD 0x83) or a virtio serial keeps, so the guest's
/// by-id name is exact and unique.
pub fn disk_serial(volume_id: &str) -> String {
    let digest = sha2::Sha256::digest(volume_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("hcsi{}", &hex[..16])
}

/// The `/dev/disk/by-id` name of a hot-plugged disk as a guest's udev makes it.
pub fn by_id_name(disk_name: &str, serial: Option<&str>, virtio: bool) -> String {
    let serial: Option<String> = serial.filter(|s| !s.is_empty()).map(|s| s.chars().take(20).collect());
    match (virtio, serial) {
        (true, Some(s)) => format!("virtio-{s}"),
        (true, None) => format!("virtio-{}", disk_name.chars().take(20).collect::<String>()),
        (false, Some(s)) => format!("scsi-0QEMU_QEMU_HARDDISK_{s}"),
        (false, None) => format!("scsi-0QEMU_QEMU_HARDDISK_drive-ua-{disk_name}"),
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

/// A guest cluster id as a label value (≤ 63, alphanumeric ends).
pub fn label_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' })
        .take(63)
        .collect();
    cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11", true)]
    #[case("a", true)]
    #[case("", false)]
    #[case("../etc", false)]
    #[case("a/b", false)]
    #[case("UPPER", false)]
    #[case("-leading", false)]
    #[case("trailing-", false)]
    #[case("has.dot", false)]
    #[case(&"x".repeat(64), false)]
    fn volume_ids(#[case] id: &str, #[case] ok: bool) {
        assert_eq!(validate_volume_id(id).is_ok(), ok, "{id}");
    }

    #[rstest]
    #[case("snap-1", Ok(SnapshotId::Local("snap-1".into())))]
    #[case("backup:default/vrb-1", Ok(SnapshotId::Backup { namespace: "default".into(), name: "vrb-1".into() }))]
    #[case("backup:default", Err(()))]
    #[case("backup:../x/y", Err(()))]
    #[case("a/b", Err(()))]
    #[case("", Err(()))]
    fn snapshot_ids(#[case] id: &str, #[case] want: std::result::Result<SnapshotId, ()>) {
        let got = SnapshotId::parse(id).map_err(|_| ());
        assert_eq!(got, want);
        if let Ok(s) = got {
            assert_eq!(s.render(), id);
        }
    }

    #[rstest]
    #[case("pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11", Some("pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11"))]
    #[case("Sanity-Volume-ABC", None)]
    #[case("", Some("error"))]
    fn volume_ids_for_names(#[case] name: &str, #[case] want: Option<&str>) {
        match (volume_id_for(name), want) {
            (Err(_), Some("error")) => {}
            (Ok(id), Some(w)) => assert_eq!(id, w),
            (Ok(id), None) => {
                assert!(id.starts_with("hcsi-") && validate_volume_id(&id).is_ok());
                assert_eq!(volume_id_for(name).unwrap(), id);
            }
            (other, w) => panic!("{other:?} vs {w:?}"),
        }
        assert!(volume_id_for(&"a".repeat(129)).is_err());
        assert!(volume_id_for(&"A".repeat(128)).is_ok());
    }

    #[test]
    fn serials_are_short_stable_and_distinct() {
        let a = disk_serial("pvc-a");
        assert_eq!(a.len(), 20);
        assert_eq!(a, disk_serial("pvc-a"));
        assert_ne!(a, disk_serial("pvc-b"));
    }

    #[rstest]
    #[case("pvc-1", None, false, "scsi-0QEMU_QEMU_HARDDISK_drive-ua-pvc-1")]
    #[case("pvc-1", Some("hcsi0123456789abcdef"), false, "scsi-0QEMU_QEMU_HARDDISK_hcsi0123456789abcdef")]
    #[case("pvc-1", Some("hcsi0123456789abcdefXYZ"), true, "virtio-hcsi0123456789abcdef")]
    fn by_id(#[case] disk: &str, #[case] serial: Option<&str>, #[case] virtio: bool, #[case] want: &str) {
        assert_eq!(by_id_name(disk, serial, virtio), want);
    }

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(label_value("c-m-abc/def"), "c-m-abc-def");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
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
