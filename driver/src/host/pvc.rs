//! Host PVCs (one per guest volume) and StorageClasses.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use super::{str_at, wait_for, Host};
use crate::error::{Error, Result};

/// Bytes of a Kubernetes quantity (storage sizes only; fractions round up).
pub fn quantity_bytes(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "m" => 1e-3,
        _ => return None,
    };
    if !num.contains('.') && mult >= 1.0 {
        return num.parse::<u64>().ok()?.checked_mul(mult as u64);
    }
    let v: f64 = num.parse().ok()?;
    Some((v * mult).ceil() as u64)
}

/// What the host actually allocated (status.capacity), else what was asked.
pub fn pvc_capacity(pvc: &PersistentVolumeClaim) -> u64 {
    let status =
        pvc.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")).and_then(quantity_bytes);
    status.unwrap_or_else(|| pvc_request(pvc))
}

pub fn pvc_request(pvc: &PersistentVolumeClaim) -> u64 {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(quantity_bytes)
        .unwrap_or(0)
}

/// Whether a host PVC is an NFS export (RWX) rather than a disk for a VM.
/// This driver records it at creation; for volumes made by the upstream
/// driver the shape decides (Filesystem + RWX and no VM disk image).
pub fn is_nfs_export(pvc: &PersistentVolumeClaim) -> bool {
    let annotations = pvc.metadata.annotations.as_ref();
    match annotations.and_then(|a| a.get(crate::names::keys::SHARED)).map(String::as_str) {
        Some(v) => v == "true",
        None => {
            pvc.spec.as_ref().is_some_and(|s| {
                s.volume_mode.as_deref() == Some("Filesystem")
                    && s.access_modes.as_ref().is_some_and(|m| m.iter().any(|x| x == "ReadWriteMany"))
            }) && annotations.is_none_or(|a| !a.contains_key(crate::names::keys::VOLUME_FOR_VM))
        }
    }
}

/// Whether `name` is the external-provisioner's `pvc-<uuid>` (how every upstream volume is named).
fn is_provisioner_name(name: &str) -> bool {
    let Some(uuid) = name.strip_prefix("pvc-") else { return false };
    let groups: Vec<&str> = uuid.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Whether a host PVC is a volume the upstream (Go) driver provisioned, as far as
/// its shape tells (reference §2.1, §9): named `pvc-<uuid>`, access modes exactly
/// `[ReadWriteMany]`, volume mode Block or Filesystem, and owned by nothing — no
/// `app.kubernetes.io/managed-by` label (this driver's or anyone's), no owner
/// references (a VM's own disks have them), not being deleted. Only such a PVC is
/// ever adopted; anything else keeps whatever it is.
pub fn looks_like_upstream_volume(pvc: &PersistentVolumeClaim) -> bool {
    let meta = &pvc.metadata;
    let unowned = meta.labels.as_ref().is_none_or(|l| !l.contains_key(crate::names::keys::MANAGED_BY))
        && meta.owner_references.as_ref().is_none_or(Vec::is_empty)
        && meta.deletion_timestamp.is_none();
    let shape = pvc.spec.as_ref().is_some_and(|s| {
        s.access_modes.as_deref() == Some(&["ReadWriteMany".to_string()][..])
            && matches!(s.volume_mode.as_deref(), Some("Block") | Some("Filesystem") | None)
    });
    unowned && shape && meta.name.as_deref().is_some_and(is_provisioner_name)
}

pub fn pvc_phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

impl Host {
    pub async fn get_pvc(&self, name: &str) -> Result<Option<PersistentVolumeClaim>> {
        self.call_opt("get persistentvolumeclaim", self.api::<PersistentVolumeClaim>().get(name)).await
    }

    pub async fn create_pvc(&self, pvc: &PersistentVolumeClaim) -> Result<PersistentVolumeClaim> {
        self.call(
            "create persistentvolumeclaim",
            self.api::<PersistentVolumeClaim>().create(&PostParams::default(), pvc),
        )
        .await
    }

    /// Deletes the host PVC; absent is success.
    pub async fn delete_pvc(&self, name: &str) -> Result<()> {
        self.call_opt(
            "delete persistentvolumeclaim",
            self.api::<PersistentVolumeClaim>().delete(name, &DeleteParams::default()),
        )
        .await
        .map(|_| ())
    }

    pub async fn resize_pvc(&self, name: &str, bytes: u64) -> Result<PersistentVolumeClaim> {
        let patch = json!({"spec": {"resources": {"requests": {"storage": bytes.to_string()}}}});
        self.call(
            "resize persistentvolumeclaim",
            self.api::<PersistentVolumeClaim>().patch(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await
    }

    /// Adds labels and annotations to a PVC, only if it is still at `resource_version`
    /// (someone else's change in between wins; the caller tries again next time).
    pub async fn label_pvc(
        &self,
        name: &str,
        resource_version: &str,
        labels: &std::collections::BTreeMap<String, String>,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<PersistentVolumeClaim> {
        let patch =
            json!({"metadata": {"resourceVersion": resource_version, "labels": labels, "annotations": annotations}});
        self.call(
            "label persistentvolumeclaim",
            self.api::<PersistentVolumeClaim>().patch(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await
    }

    pub async fn list_pvcs(&self, label_selector: &str) -> Result<Vec<PersistentVolumeClaim>> {
        let lp = ListParams::default().labels(label_selector);
        Ok(self.call("list persistentvolumeclaims", self.api::<PersistentVolumeClaim>().list(&lp)).await?.items)
    }

    /// Watches the PVC until `done`, bounded by the deadline.
    pub async fn wait_pvc(
        &self,
        name: &str,
        deadline: Instant,
        what: &str,
        done: impl Fn(&PersistentVolumeClaim) -> bool,
    ) -> Result<PersistentVolumeClaim> {
        let found = wait_for(self.api::<PersistentVolumeClaim>(), name, deadline, what, |o| {
            o.is_none() || o.is_some_and(&done)
        })
        .await?;
        found.ok_or_else(|| Error::NotFound(format!("host volume {name} disappeared while waiting for {what}")))
    }

    /// Watches for a PVC the host creates by itself (a restore): not there
    /// yet is not an answer, so unlike `wait_pvc` absence keeps waiting.
    pub async fn wait_pvc_bound(&self, name: &str, deadline: Instant, what: &str) -> Result<PersistentVolumeClaim> {
        wait_for(self.api::<PersistentVolumeClaim>(), name, deadline, what, |o| {
            o.is_some_and(|p| pvc_phase(p) == "Bound")
        })
        .await?
        .ok_or_else(|| Error::Internal(format!("host volume {name} missing after the {what}")))
    }

    /// How Longhorn rates the volume behind host PV `pv` (`healthy`,
    /// `degraded`, `faulted`, …); `None` when Longhorn has no such volume.
    pub async fn longhorn_robustness(&self, pv: &str) -> Result<Option<String>> {
        let api = self.dynamic(&super::longhorn_volume_resource(), Some(super::LONGHORN_NAMESPACE));
        let volume = self.call_opt("get longhorn volume", api.get(pv)).await?;
        Ok(volume.map(|v| str_at(&v.data, "/status/robustness").to_string()))
    }

    pub async fn get_storage_class(&self, name: &str) -> Result<Option<StorageClass>> {
        self.call_opt("get storageclass", Api::<StorageClass>::all(self.client.clone()).get(name)).await
    }

    pub async fn list_storage_classes(&self) -> Result<Vec<StorageClass>> {
        Ok(self
            .call("list storageclasses", Api::<StorageClass>::all(self.client.clone()).list(&ListParams::default()))
            .await?
            .items)
    }

    pub async fn list_host_volume_attachments(&self) -> Result<Vec<VolumeAttachment>> {
        Ok(self
            .call(
                "list volumeattachments",
                Api::<VolumeAttachment>::all(self.client.clone()).list(&ListParams::default()),
            )
            .await?
            .items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("10Gi", Some(10 << 30))]
    #[case("64Mi", Some(64 << 20))]
    #[case("1G", Some(1_000_000_000))]
    #[case("12345", Some(12345))]
    #[case("1.5Gi", Some(3 << 29))]
    #[case("junk", None)]
    fn quantities(#[case] q: &str, #[case] want: Option<u64>) {
        assert_eq!(quantity_bytes(&Quantity(q.into())), want);
    }

    const UPSTREAM: &str = "pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11";

    fn host_pvc(name: &str, modes: &[&str], mode: Option<&str>, meta: serde_json::Value) -> PersistentVolumeClaim {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": modes, "volumeMode": mode, "resources": {"requests": {"storage": "64Mi"}}},
        });
        if let (Some(m), Some(extra)) = (v["metadata"].as_object_mut(), meta.as_object()) {
            m.extend(extra.clone());
        }
        serde_json::from_value(v).expect("test PVC")
    }

    #[rstest]
    #[case::upstream_rwo_block(UPSTREAM, &["ReadWriteMany"], Some("Block"), json!({}), true)]
    #[case::upstream_rwx_filesystem(UPSTREAM, &["ReadWriteMany"], Some("Filesystem"), json!({}), true)]
    #[case::upstream_third_party_fs(UPSTREAM, &["ReadWriteMany"], Some("Filesystem"), json!({"annotations": {"harvesterhci.io/volumeForVirtualMachine": "true"}}), true)]
    #[case::already_ours(UPSTREAM, &["ReadWriteMany"], Some("Block"), json!({"labels": {"app.kubernetes.io/managed-by": "harvester-csi-driver"}}), false)]
    #[case::someone_elses(UPSTREAM, &["ReadWriteMany"], Some("Block"), json!({"labels": {"app.kubernetes.io/managed-by": "helm"}}), false)]
    #[case::owned_by_a_vm(UPSTREAM, &["ReadWriteMany"], Some("Block"), json!({"ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm", "uid": "u"}]}), false)]
    #[case::being_deleted(UPSTREAM, &["ReadWriteMany"], Some("Block"), json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}), false)]
    #[case::a_vm_disk_name("guest-1-disk-0-abcde", &["ReadWriteMany"], Some("Block"), json!({}), false)]
    #[case::not_a_uuid("pvc-data", &["ReadWriteMany"], Some("Block"), json!({}), false)]
    #[case::upper_case_uuid("pvc-0B1C8A3E-51F2-4BD4-9A3C-6A1F0C0E8D11", &["ReadWriteMany"], Some("Block"), json!({}), false)]
    #[case::rwo_host_pvc(UPSTREAM, &["ReadWriteOnce"], Some("Block"), json!({}), false)]
    #[case::two_modes(UPSTREAM, &["ReadWriteMany", "ReadWriteOnce"], Some("Block"), json!({}), false)]
    fn upstream_volumes_are_recognised_by_shape(
        #[case] name: &str,
        #[case] modes: &[&str],
        #[case] mode: Option<&str>,
        #[case] meta: serde_json::Value,
        #[case] want: bool,
    ) {
        assert_eq!(looks_like_upstream_volume(&host_pvc(name, modes, mode, meta)), want);
    }
}
