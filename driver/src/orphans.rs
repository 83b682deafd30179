//! The orphan report: host volumes this driver made for a guest cluster, with
//! whether anything still uses them. For cleaning up after a guest cluster is
//! deleted (harvester#3272, #7765) — it reports, it never deletes. On request it
//! also lists volumes the upstream driver made that this one never used (so never
//! labelled, see `controller/adopt.rs`): their guest cluster is unknown.

use serde::Serialize;

use crate::error::Result;
use crate::host::Host;
use crate::names::{self, keys};

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
    /// Made by another driver (upstream's shape, no owner): which guest cluster it
    /// belongs to is unknown; its guest PV is named after it, as upstream named PVs.
    pub unowned: bool,
}

/// Lists this driver's host volumes (optionally of one guest cluster), and with
/// `include_unowned` also the unowned volumes the upstream driver made.
pub async fn report(
    host: &Host,
    cluster_id: Option<&str>,
    guest: Option<&kube::Client>,
    include_unowned: bool,
) -> Result<Vec<HostVolume>> {
    let mut pvcs = host.list_pvcs(&names::owned_volumes_selector(cluster_id)).await?;
    let owned = pvcs.len();
    if include_unowned {
        let all = host.list_pvcs("").await?;
        pvcs.extend(all.into_iter().filter(crate::host::pvc::looks_like_upstream_volume));
    }
    // Everything that may hold a volume counts, pending hotplugs and unplugs included:
    // the report must never call an attached volume an orphan.
    let attached = host.vms_by_volume().await?;
    let mut out = Vec::new();
    for (i, pvc) in pvcs.into_iter().enumerate() {
        let unowned = i >= owned;
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let ann = pvc.metadata.annotations.clone().unwrap_or_default();
        let labels = pvc.metadata.labels.clone().unwrap_or_default();
        let guest_pv = match ann.get(keys::GUEST_PV_NAME) {
            Some(pv) => pv.clone(),
            None if unowned => name.clone(),
            None => String::new(),
        };
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
            guest_cluster: ann
                .get(keys::GUEST_CLUSTER_ID)
                .cloned()
                .or_else(|| labels.get(keys::GUEST_CLUSTER).cloned())
                .unwrap_or_default(),
            guest_claim: format!(
                "{}/{}",
                ann.get(keys::GUEST_PVC_NAMESPACE).map(String::as_str).unwrap_or("?"),
                ann.get(keys::GUEST_PVC_NAME).map(String::as_str).unwrap_or("?")
            ),
            guest_pv,
            attached_to,
            guest_pv_exists,
            orphan,
            unowned,
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
            match (v.unowned, v.guest_cluster.is_empty()) {
                (true, _) => "unknown (another driver's)",
                (false, true) => "-",
                (false, false) => &v.guest_cluster,
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(unowned: bool, cluster: &str) -> HostVolume {
        HostVolume {
            host_pvc: "pvc-1".into(),
            guest_cluster: cluster.into(),
            guest_claim: "?/?".into(),
            guest_pv: "pvc-1".into(),
            attached_to: vec![],
            guest_pv_exists: None,
            orphan: true,
            unowned,
        }
    }

    #[test]
    fn unowned_volumes_say_their_cluster_is_unknown() {
        let table = render(&[row(false, "prod"), row(true, ""), row(false, "")]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1].split('\t').nth(1), Some("prod"));
        assert_eq!(lines[2].split('\t').nth(1), Some("unknown (another driver's)"));
        assert_eq!(lines[3].split('\t').nth(1), Some("-"));
        let json = serde_json::to_value(row(true, "")).expect("json");
        assert_eq!(json["unowned"], true);
    }
}
