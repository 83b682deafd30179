//! Faults: simulator fault specs, VM stop/start, RBAC of another release, watch drops,
//! share-manager moves, kill -9 and restart.

use serde_json::{json, Value};

use crate::backend::Cluster;
use crate::model;

use super::host::host_pvc_of;
use super::Result;

pub(super) async fn fault<C: Cluster>(c: &mut C, f: &model::Fault) -> Result<()> {
    if let Some(spec) = &f.set {
        c.host_admin("PUT", "faults", Some(spec.clone())).await?;
    }
    if f.clear {
        c.host_admin("PUT", "faults", Some(json!({}))).await?;
    }
    if let Some(vm) = &f.stop_vm {
        c.stop_vm(vm).await?;
    }
    if let Some(vm) = &f.start_vm {
        c.start_vm(vm).await?;
    }
    if let Some(p) = &f.rbac {
        c.host_admin("POST", &format!("rbac/{p}"), None).await?;
    }
    if f.drop_watches {
        c.host_admin("POST", "watches/drop", None).await?;
    }
    if let Some(claim) = &f.move_share_of {
        let host = host_pvc_of(c, "default", claim).await?;
        let pv = host.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").to_string();
        c.host_admin("POST", &format!("sharemanagers/{pv}/move"), None).await?;
    }
    if let Some(address) = &f.change_host_address {
        c.change_host_address(address).await?;
    }
    if let Some(what) = &f.kill_and_restart {
        c.kill_and_restart(what).await?;
    }
    Ok(())
}
