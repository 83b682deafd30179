//! The out-of-service taint controller (upstream §5.3, fixed): when a guest
//! node is NotReady and its VM is not running, taint it out-of-service so
//! Kubernetes force-detaches its volumes; once it is back, remove only the taint
//! this controller added, and only ever unplug volumes this driver attached (its
//! disk serial) or, for volumes the upstream driver attached before the switch
//! (no serial), volumes a guest PV of this driver names.
//! Runs in the controller under a guest Lease (one active replica).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::host::{str_at, Host};
use crate::names;

const LEASE: &str = "harvester-csi-node-monitor";
const LEASE_NS: &str = "kube-system";
use super::OUT_OF_SERVICE_TAINT as TAINT;
/// Marks a taint this controller added, so it never removes someone else's.
const ADDED_BY_US: &str = "csi.harvesterhci.io/out-of-service-taint";
const LEASE_SECONDS: i32 = 15;

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now())
}

/// Takes or renews the lease; true while this replica leads.
async fn lead(leases: &Api<Lease>, me: &str) -> kube::Result<bool> {
    let lease = match leases.get_opt(LEASE).await? {
        Some(l) => l,
        None => {
            let fresh = Lease {
                metadata: ObjectMeta { name: Some(LEASE.into()), ..Default::default() },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(me.into()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now()),
                    acquire_time: Some(now()),
                    ..Default::default()
                }),
            };
            return match leases.create(&PostParams::default(), &fresh).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        jiff::Timestamp::now().duration_since(t.0).as_secs()
            > i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS))
    });
    if holder != me && !expired {
        return Ok(false);
    }
    let mut updated = lease.clone();
    let s = updated.spec.get_or_insert_with(Default::default);
    s.holder_identity = Some(me.into());
    s.lease_duration_seconds = Some(LEASE_SECONDS);
    s.renew_time = Some(now());
    // Replace guards with resourceVersion: two candidates cannot both win.
    match leases.replace(LEASE, &PostParams::default(), &updated).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn has_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == TAINT && t.effect == "NoExecute"))
}

/// The VM behind a guest node: the driver's registered node id, else the node name.
fn vm_of(node: &Node) -> String {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("csi.volume.kubernetes.io/nodeid"))
        .and_then(|j| serde_json::from_str::<BTreeMap<String, String>>(j).ok())
        .and_then(|m| m.get(names::DRIVER_NAME).cloned())
        .or_else(|| node.metadata.name.clone())
        .unwrap_or_default()
}

/// `None` when the host cannot be asked or has no such VM: a node this driver
/// cannot map to a VM (another infrastructure, a deleted VM) is never tainted.
async fn vm_healthy(host: &Host, vm: &str) -> Option<bool> {
    let obj = host.get_vm(vm).await.ok()??;
    Some(crate::host::kubevirt::vm_is_running(&obj))
}

/// Whether a serial-less hot-plugged disk is a volume of this driver that the
/// upstream driver attached: upstream hot-plugged `claimName` under its own name
/// with no serial, and a guest PV of this driver has it as its volume handle. A
/// disk a human added has no such PV and stays.
async fn upstream_attached_ours(
    pvs: &Api<PersistentVolume>,
    volume: &Value,
    disk: Option<&Value>,
) -> kube::Result<bool> {
    let name = str_at(volume, "/name");
    let upstream_shape = disk.is_some_and(|d| str_at(d, "/serial").is_empty())
        && str_at(volume, "/persistentVolumeClaim/claimName") == name;
    if !upstream_shape {
        return Ok(false);
    }
    Ok(pvs.list(&Default::default()).await?.items.iter().any(|pv| {
        pv.spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .is_some_and(|c| c.driver == names::DRIVER_NAME && c.volume_handle == name)
    }))
}

async fn reconcile(
    nodes: &Api<Node>,
    pvs: &Api<PersistentVolume>,
    host: &Host,
    node: &Node,
) -> anyhow_like::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let vm = vm_of(node);
    let Some(healthy) = vm_healthy(host, &vm).await else { return Ok(()) };
    let ready = node_ready(node);
    let ours = node.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ADDED_BY_US));
    match (ready, healthy, has_taint(node)) {
        (true, true, true) if ours => {
            // Only the NoExecute taint this controller added; the patch pins the
            // resourceVersion so a taint someone adds meanwhile is not overwritten.
            let taints: Vec<_> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| !(t.key == TAINT && t.effect == "NoExecute"))
                .collect();
            let rv = node.metadata.resource_version.clone();
            let patch = json!({"metadata": {"annotations": {ADDED_BY_US: null}, "resourceVersion": rv}, "spec": {"taints": taints}});
            nodes.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            tracing::info!(node = %name, "node back: removed the out-of-service taint this driver added");
        }
        (false, false, false) => {
            let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            taints.push(k8s_openapi::api::core::v1::Taint {
                key: TAINT.into(),
                effect: "NoExecute".into(),
                value: Some("nodeshutdown".into()),
                time_added: None,
            });
            let rv = node.metadata.resource_version.clone();
            let patch = json!({"metadata": {"annotations": {ADDED_BY_US: "true"}, "resourceVersion": rv}, "spec": {"taints": taints}});
            nodes.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            tracing::warn!(node = %name, vm = %vm, "node NotReady and its VM is down: tainted out-of-service");
        }
        (false, false, true) if ours => {
            // Free this driver's disks from the dead VM so they can attach elsewhere.
            if let Some(vm_obj) = host.get_vm(&vm).await? {
                for v in vm_obj.pointer("/spec/template/spec/volumes").and_then(|v| v.as_array()).into_iter().flatten()
                {
                    let vol = str_at(v, "/name");
                    let hot =
                        v.pointer("/persistentVolumeClaim/hotpluggable").and_then(|h| h.as_bool()).unwrap_or(false);
                    let disk = vm_obj
                        .pointer("/spec/template/spec/domain/devices/disks")
                        .and_then(|d| d.as_array())
                        .and_then(|d| d.iter().find(|x| str_at(x, "/name") == vol));
                    let serial_ours = disk.is_some_and(|x| str_at(x, "/serial") == names::disk_serial(vol));
                    if hot && (serial_ours || upstream_attached_ours(pvs, v, disk).await?) {
                        host.unplug(&vm, vol).await?;
                        tracing::warn!(vm = %vm, volume = vol, "removed volume from dead VM");
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Tiny result alias so both kube and driver errors flow through `?`.
mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

pub async fn run(guest: kube::Client, host: Host, identity: String, shutdown: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(guest.clone(), LEASE_NS);
    let nodes: Api<Node> = Api::all(guest.clone());
    let pvs: Api<PersistentVolume> = Api::all(guest);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match lead(&leases, &identity).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "node-health lease");
                continue;
            }
        }
        let list = match nodes.list(&Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing guest nodes");
                continue;
            }
        };
        for node in list.items.iter().filter(|n| n.metadata.deletion_timestamp.is_none()) {
            if let Err(e) = reconcile(&nodes, &pvs, &host, node).await {
                tracing::warn!(node = node.metadata.name.as_deref().unwrap_or(""), error = %e, "node health");
            }
        }
    }
}
