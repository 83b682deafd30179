//! The orphan report: host volumes this driver made for a guest cluster, with
//! whether anything still uses them. For cleaning up after a guest cluster is
//! deleted (harvester#3272, #7765) — it reports, it never deletes.

use serde::Serialize;

use crate::error::Result;
use crate::host::labels::{owned_volumes_selector, Ownership};
use crate::host::Host;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostVolume {
    pub host_pvc: String,
    pub guest_cluster: String,
    pub guest_claim: String,
    pub guest_pv: String,
    /// VMs the volume is hot-plugged into (or requested for).
    pub attached_to: Vec<String>,
    /// Whether the guest PV still exists (`None`: no guest access to tell).
    pub guest_pv_exists: Option<bool>,
    /// Not attached anywhere and its guest PV is gone (or unknowable).
    pub orphan: bool,
}

/// Lists this driver's host volumes (optionally of one guest cluster).
pub async fn report(host: &Host, cluster_id: Option<&str>, guest: Option<&kube::Client>) -> Result<Vec<HostVolume>> {
    let pvcs = host.list_pvcs(&owned_volumes_selector(cluster_id)).await?;
    // Everything that may hold a volume counts, pending hotplugs and unplugs included:
    // the report must never call an attached volume an orphan.
    let attached = host.vms_by_volume().await?;
    let mut out = Vec::new();
    for pvc in pvcs {
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let owner = Ownership::of(&pvc.metadata);
        let guest_pv = owner.guest_pv.clone().unwrap_or_default();
        let guest_pv_exists = match (guest, guest_pv.is_empty()) {
            (Some(g), false) => {
                let pvs: kube::Api<k8s_openapi::api::core::v1::PersistentVolume> = kube::Api::all(g.clone());
                Some(
                    pvs.get_opt(&guest_pv)
                        .await
                        .map_err(|e| crate::error::Error::Unavailable(format!("guest API: {e}")))?
                        .is_some(),
                )
            }
            _ => None,
        };
        let attached_to = attached.get(&name).cloned().unwrap_or_default();
        let orphan = attached_to.is_empty() && guest_pv_exists != Some(true);
        out.push(HostVolume {
            host_pvc: name,
            guest_cluster: owner.cluster_id.unwrap_or_default(),
            guest_claim: format!(
                "{}/{}",
                owner.guest_pvc_namespace.as_deref().unwrap_or("?"),
                owner.guest_pvc_name.as_deref().unwrap_or("?")
            ),
            guest_pv,
            attached_to,
            guest_pv_exists,
            orphan,
        });
    }
    Ok(out)
}

/// The report as a table.
pub fn render(volumes: &[HostVolume]) -> String {
    let mut out = String::from("HOST PVC\tGUEST CLUSTER\tGUEST CLAIM\tATTACHED TO\tGUEST PV\tORPHAN\n");
    for v in volumes {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            v.host_pvc,
            if v.guest_cluster.is_empty() { "-" } else { &v.guest_cluster },
            v.guest_claim,
            if v.attached_to.is_empty() { "-".to_string() } else { v.attached_to.join(",") },
            match v.guest_pv_exists {
                Some(true) => "present",
                Some(false) => "gone",
                None => "unknown",
            },
            if v.orphan { "yes" } else { "no" }
        ));
    }
    out
}
