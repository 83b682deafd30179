//! Volumes the upstream (Go) driver provisioned keep working after the switch:
//! the same volume ids (host PVC names), no ownership metadata. The first time
//! this driver changes such a volume (attach, expand, snapshot) it labels the host
//! PVC as its own, as it labels the volumes it creates, so ListVolumes, the orphan
//! report and ownership checks see it from then on. Only a PVC whose shape says it
//! is an unowned upstream volume is touched (`host::pvc::looks_like_upstream_volume`);
//! labelling is best effort and never fails the call that triggered it.
//!
//! Until then ListVolumes leaves the volume out on purpose: the external-attacher
//! then reports a VolumeAttachment upstream left attached as not published and
//! attaches it again through this driver, which fills in the publish context
//! upstream never returned (the node needs it) and adopts the volume.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::ControllerService;
use crate::host::pvc::{is_nfs_export, looks_like_upstream_volume};
use crate::names::{self, keys};

impl ControllerService {
    /// The labels and annotations that make an upstream volume this driver's.
    pub(super) fn adoption_metadata(
        &self,
        pvc: &PersistentVolumeClaim,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let id = pvc.metadata.name.clone().unwrap_or_default();
        let mut labels = BTreeMap::from([(keys::MANAGED_BY.to_string(), keys::MANAGED_BY_VALUE.to_string())]);
        let mut annotations = BTreeMap::from([
            (keys::ADOPTED.to_string(), "true".to_string()),
            // Frozen from the shape now, so the record decides from here on.
            (keys::SHARED.to_string(), is_nfs_export(pvc).to_string()),
        ]);
        if let Some(cluster) = &self.settings.cluster_id {
            labels.insert(keys::GUEST_CLUSTER.into(), names::label_value(cluster));
            annotations.insert(keys::GUEST_CLUSTER_ID.into(), cluster.clone());
        }
        // Upstream's provisioner named the PV after the volume (reference §2.0); the guest
        // view, when there is one, knows for sure and also knows the claim.
        let (pv, claim) = match self.guest.as_ref().and_then(|g| g.pv_of_handle(&id)) {
            Some((pv, claim)) => (pv, claim),
            None => (id.clone(), None),
        };
        annotations.insert(keys::GUEST_PV_NAME.into(), pv);
        if let Some((ns, name)) = claim {
            annotations.insert(keys::GUEST_PVC_NAMESPACE.into(), ns);
            annotations.insert(keys::GUEST_PVC_NAME.into(), name);
        }
        (labels, annotations)
    }

    /// Labels an upstream volume as this driver's (see the module docs). Returns the
    /// PVC as the host now has it.
    pub(super) async fn adopt_if_upstream(&self, pvc: PersistentVolumeClaim) -> PersistentVolumeClaim {
        if !looks_like_upstream_volume(&pvc) {
            return pvc;
        }
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let rv = pvc.metadata.resource_version.clone().unwrap_or_default();
        let (labels, annotations) = self.adoption_metadata(&pvc);
        match self.host.label_pvc(&name, &rv, &labels, &annotations).await {
            Ok(adopted) => {
                tracing::info!(volume = %name, "adopted a volume the upstream driver made: labelled it as this driver's");
                adopted
            }
            Err(e) => {
                tracing::warn!(volume = %name, error = %e, "could not label the upstream volume as this driver's; will try again when it is next used");
                pvc
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{ControllerSettings, VmQueues};
    use crate::guard::VolumeLocks;
    use crate::host::Host;
    use crate::metrics::Metrics;
    use rstest::rstest;
    use std::sync::Arc;

    fn service(cluster_id: Option<&str>) -> ControllerService {
        // Never called: adoption_metadata only reads the settings and the guest view.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        ControllerService {
            host: Host::new(client, "default".into(), Arc::new(Metrics::default())),
            guest: None,
            locks: VolumeLocks::default(),
            vm_queues: VmQueues::default(),
            settings: ControllerSettings { cluster_id: cluster_id.map(String::from), ..Default::default() },
            metrics: Arc::new(Metrics::default()),
        }
    }

    fn upstream(mode: &str) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": mode},
        }))
        .expect("test PVC")
    }

    #[rstest]
    #[case::disk_with_cluster_id("Block", Some("prod"), "false", Some("prod"))]
    #[case::export_without_cluster_id("Filesystem", None, "true", None)]
    #[tokio::test]
    async fn adoption_labels_like_the_volumes_this_driver_creates(
        #[case] mode: &str,
        #[case] cluster: Option<&str>,
        #[case] shared: &str,
        #[case] cluster_label: Option<&str>,
    ) {
        let (labels, annotations) = service(cluster).adoption_metadata(&upstream(mode));
        assert_eq!(labels.get(keys::MANAGED_BY).map(String::as_str), Some(keys::MANAGED_BY_VALUE));
        assert_eq!(labels.get(keys::GUEST_CLUSTER).map(String::as_str), cluster_label);
        assert_eq!(annotations.get(keys::ADOPTED).map(String::as_str), Some("true"));
        assert_eq!(annotations.get(keys::SHARED).map(String::as_str), Some(shared));
        assert_eq!(
            annotations.get(keys::GUEST_PV_NAME).map(String::as_str),
            Some("pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8d11"),
            "upstream PVs are named after their volume"
        );
        assert!(!annotations.contains_key(keys::GUEST_PVC_NAME), "no guest view: the claim is not guessed");
    }
}
