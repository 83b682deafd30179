//! kube-controller-manager's persistent-volume controller, for the one case no
//! other component covers: a claim that names its PV (a restored or statically
//! made volume) and a PV whose `claimRef` names the claim back, without a uid yet
//! (a restore clears it) or with the claim's own. Bound as the controller binds:
//! the PV gets the claim's uid, the claim `pv.kubernetes.io/bind-completed`, and
//! both phase Bound with the PV's capacity and access modes on the claim. The
//! scheduler only takes a claim with that annotation as bound.
//!
//! Claims the provisioner component binds itself are already Bound and left alone.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::env::Env;

pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";

/// Binds every claim in `claims` that waits for its named PV and whose PV names it
/// back. A claim whose PV is missing or claimed by another stays as it is (the
/// real controller marks it Pending or Lost; no scenario needs either here).
pub async fn bind_prebound(env: &Env, claims: &[PersistentVolumeClaim]) {
    for claim in claims.iter().filter(|c| waits_for_binding(c)) {
        if let Err(e) = bind(env, claim).await {
            let name = claim.metadata.name.as_deref().unwrap_or_default();
            tracing::info!(claim = %name, error = %e, "binding a pre-bound claim (will retry)");
        }
    }
}

/// Gives a PV that no claim holds yet phase Available, as the controller does on
/// its first look at it (a pre-bound one too: it waits for its claim).
pub async fn mark_available(env: &Env, pvs: &[PersistentVolume]) {
    for pv in pvs.iter().filter(|pv| is_new_and_unclaimed(pv)) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let phase = Patch::Merge(json!({"status": {"phase": "Available"}}));
        if let Err(e) = env.pvs().patch_status(name, &PatchParams::default(), &phase).await {
            tracing::info!(pv = %name, error = %e, "marking a PV Available (will retry)");
        }
    }
}

fn is_new_and_unclaimed(pv: &PersistentVolume) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let claim_uid = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.as_deref());
    matches!(phase, None | Some("Pending"))
        && claim_uid.is_none_or(str::is_empty)
        && pv.metadata.deletion_timestamp.is_none()
}

fn waits_for_binding(claim: &PersistentVolumeClaim) -> bool {
    let names_volume = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty());
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let completed = claim.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(BIND_COMPLETED));
    names_volume && !bound && !completed && claim.metadata.deletion_timestamp.is_none()
}

/// Whether `pv`'s claimRef is this claim: same namespace and name, and no uid or the
/// claim's uid.
fn claimed_by(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    r.namespace == claim.metadata.namespace
        && r.name == claim.metadata.name
        && r.uid.as_deref().is_none_or(|uid| uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref())
}

async fn bind(env: &Env, claim: &PersistentVolumeClaim) -> Result<(), String> {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    let Some(pv) = env.pvs().get_opt(&volume).await.map_err(|e| format!("PV {volume}: {e}"))? else {
        return Ok(());
    };
    if !claimed_by(&pv, claim) {
        return Ok(());
    }
    let params = PatchParams::default();
    env.pvs()
        .patch(&volume, &params, &Patch::Merge(json!({"spec": {"claimRef": {"uid": claim.metadata.uid}}})))
        .await
        .map_err(|e| format!("PV {volume}: {e}"))?;
    env.pvs()
        .patch_status(&volume, &params, &Patch::Merge(json!({"status": {"phase": "Bound"}})))
        .await
        .map_err(|e| format!("PV {volume} status: {e}"))?;
    let pvcs = env.pvcs(&ns);
    pvcs.patch(&name, &params, &Patch::Merge(json!({"metadata": {"annotations": {BIND_COMPLETED: "yes"}}})))
        .await
        .map_err(|e| e.to_string())?;
    let spec = pv.spec.unwrap_or_default();
    pvcs.patch_status(
        &name,
        &params,
        &Patch::Merge(
            json!({"status": {"phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity}}),
        ),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn claim(volume: Option<&str>, phase: Option<&str>, completed: bool) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "default", "uid": "u-1",
                         "annotations": if completed { json!({BIND_COMPLETED: "yes"}) } else { json!({}) }},
            "spec": {"volumeName": volume},
            "status": {"phase": phase},
        }))
        .expect("a claim")
    }

    fn pv(claim_ref: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "pv-1"}, "spec": {"claimRef": claim_ref}})).expect("a PV")
    }

    #[rstest]
    #[case::prebound_pending(Some("pv-1"), Some("Pending"), false, true)]
    #[case::prebound_new(Some("pv-1"), None, false, true)]
    #[case::no_volume(None, None, false, false)]
    #[case::empty_volume(Some(""), None, false, false)]
    #[case::already_bound(Some("pv-1"), Some("Bound"), false, false)]
    #[case::completed(Some("pv-1"), Some("Pending"), true, false)]
    fn which_claims_wait(
        #[case] volume: Option<&str>,
        #[case] phase: Option<&str>,
        #[case] completed: bool,
        #[case] waits: bool,
    ) {
        assert_eq!(waits_for_binding(&claim(volume, phase, completed)), waits);
    }

    #[rstest]
    #[case::fresh_prebound(json!({"namespace": "default", "name": "data"}), None, true)]
    #[case::fresh_unclaimed(serde_json::Value::Null, None, true)]
    #[case::pending(serde_json::Value::Null, Some("Pending"), true)]
    #[case::already_available(json!({"namespace": "default", "name": "data"}), Some("Available"), false)]
    #[case::provisioned_for_a_claim(json!({"namespace": "default", "name": "data", "uid": "u-1"}), None, false)]
    #[case::released(json!({"namespace": "default", "name": "data", "uid": "u-1"}), Some("Released"), false)]
    fn which_pvs_become_available(
        #[case] claim_ref: serde_json::Value,
        #[case] phase: Option<&str>,
        #[case] available: bool,
    ) {
        let mut pv = pv(claim_ref);
        pv.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: phase.map(String::from),
            ..Default::default()
        });
        assert_eq!(is_new_and_unclaimed(&pv), available);
    }

    #[rstest]
    #[case::no_uid(json!({"namespace": "default", "name": "data"}), true)]
    #[case::empty_uid(json!({"namespace": "default", "name": "data", "uid": ""}), true)]
    #[case::same_uid(json!({"namespace": "default", "name": "data", "uid": "u-1"}), true)]
    #[case::other_uid(json!({"namespace": "default", "name": "data", "uid": "u-2"}), false)]
    #[case::other_name(json!({"namespace": "default", "name": "logs"}), false)]
    #[case::other_namespace(json!({"namespace": "apps", "name": "data"}), false)]
    #[case::unclaimed(serde_json::Value::Null, false)]
    fn which_pvs_name_the_claim(#[case] claim_ref: serde_json::Value, #[case] claimed: bool) {
        assert_eq!(claimed_by(&pv(claim_ref), &claim(Some("pv-1"), None, false)), claimed);
    }
}
