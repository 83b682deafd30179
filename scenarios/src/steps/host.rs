//! Expectations on the Harvester host: host PVCs, hot-plugged volumes, exports, what
//! snapshot handles name, and the orphan report.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::{json, Value};

use crate::backend::Cluster;
use crate::model;

use super::{eventually, fail, Result};

fn at<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    let pointer = format!(
        "/{}",
        dotted.split('.').map(|p| p.replace('~', "~0").replace('/', "~1")).collect::<Vec<_>>().join("/")
    );
    v.pointer(&pointer)
}

/// The host PVC of a guest PVC (by the PV's volume handle).
pub(super) async fn host_pvc_of<C: Cluster>(c: &C, ns: &str, claim: &str) -> Result<Value> {
    let env = c.env();
    let pvc = env.pvcs(ns).get(claim).await.map_err(|e| fail(format!("guest pvc {claim}: {e}")))?;
    let pv_name =
        pvc.spec.and_then(|s| s.volume_name).ok_or_else(|| fail(format!("guest pvc {claim} is not bound")))?;
    let pv = env.pvs().get(&pv_name).await.map_err(|e| fail(e.to_string()))?;
    let handle = crate::components::pv_handle(&pv);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
    let host = api.get(&handle).await.map_err(|e| fail(format!("host pvc {handle}: {e}")))?;
    serde_json::to_value(host).map_err(|e| fail(e.to_string()))
}

pub(super) async fn expect_host<C: Cluster>(c: &C, e: &model::ExpectHost) -> Result<()> {
    let env = c.env();
    if let Some(claim) = &e.pvc_of {
        return eventually(e.within, &format!("host volume of {claim}"), || async {
            let host = host_pvc_of(c, "default", claim).await?;
            for (k, v) in &e.labels {
                let have = host.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
                if have != Some(v.as_str()) && !(v == "*" && have.is_some()) {
                    return Ok(Some(format!("label {k}={have:?}, want {v}")));
                }
            }
            for (k, v) in &e.annotations {
                let have = host.pointer("/metadata/annotations").and_then(|l| l.get(k)).and_then(Value::as_str);
                if have != Some(v.as_str()) && !(v == "*" && have.is_some()) {
                    return Ok(Some(format!("annotation {k}={have:?}, want {v}")));
                }
            }
            for (k, v) in &e.fields {
                let have = at(&host, k).map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()));
                // `<none>` (kubectl's word for a missing value): the field must be absent.
                if v == "<none>" && have.is_none() {
                    continue;
                }
                if have.as_deref() != Some(v.as_str()) {
                    return Ok(Some(format!("{k}={have:?}, want {v}")));
                }
            }
            if let Some(n) = e.loop_devices {
                let pv = host.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").to_string();
                let have = c.loop_devices_of(&pv).await?;
                if have != n {
                    return Ok(Some(format!("{have} loop device(s) back the volume, want {n}")));
                }
            }
            Ok(None)
        })
        .await;
    }
    if e.no_host_volumes {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
        let selector = "app.kubernetes.io/managed-by=harvester-csi-driver";
        return eventually(e.within, "no host volume left", || async {
            let mut left: Vec<String> = api
                .list(&kube::api::ListParams::default().labels(selector))
                .await
                .map_err(|x| fail(x.to_string()))?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name.map(|n| format!("pvc/{n}")))
                .collect();
            // Each scenario has its own host: no PV or Longhorn volume may remain either.
            let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(env.host.clone());
            left.extend(
                pvs.list(&Default::default())
                    .await
                    .map_err(|x| fail(x.to_string()))?
                    .items
                    .into_iter()
                    .filter_map(|p| p.metadata.name.map(|n| format!("pv/{n}"))),
            );
            let lh = ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk("longhorn.io", "v1beta2", "Volume"),
                "volumes",
            );
            let volumes: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), "longhorn-system", &lh);
            left.extend(
                volumes
                    .list(&Default::default())
                    .await
                    .map_err(|x| fail(x.to_string()))?
                    .items
                    .into_iter()
                    .filter_map(|v| v.metadata.name.map(|n| format!("longhorn-volume/{n}"))),
            );
            // An RWX volume's export object goes with it (profiles before v1.4 do not serve the kind).
            let nfs_ar = ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk("harvesterhci.io", "v1beta1", "NetworkFilesystem"),
                "networkfilesystems",
            );
            let exports: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), "harvester-system", &nfs_ar);
            match exports.list(&Default::default()).await {
                Ok(l) => left.extend(
                    l.items.into_iter().filter_map(|v| v.metadata.name.map(|n| format!("networkfilesystem/{n}"))),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(x) => return Err(fail(x.to_string())),
            }
            Ok(if left.is_empty() { None } else { Some(format!("host volumes left: {}", left.join(", "))) })
        })
        .await;
    }
    if let Some(vm) = &e.vmi {
        let want: BTreeSet<String> = e.hotplugged.clone().unwrap_or_default().into_iter().collect();
        let ar = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
            "virtualmachineinstances",
        );
        let vmis: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), &env.host_namespace, &ar);
        return eventually(e.within, &format!("hot-plugged volumes of {vm}"), || async {
            let vmi = vmis.get(vm).await.map_err(|x| fail(x.to_string()))?;
            let mut have = BTreeSet::new();
            let mut phases = Vec::new();
            for s in vmi.data.pointer("/status/volumeStatus").and_then(Value::as_array).into_iter().flatten() {
                if s.get("hotplugVolume").is_none() {
                    continue;
                }
                let claim = s.pointer("/persistentVolumeClaimInfo/claimName").and_then(Value::as_str).unwrap_or("");
                let api: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
                let guest_name = api
                    .get_opt(claim)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|p| p.metadata.annotations)
                    .and_then(|a| a.get("csi.harvesterhci.io/guest-pvc-name").cloned())
                    .unwrap_or_else(|| claim.to_string());
                let phase = s.get("phase").and_then(Value::as_str).unwrap_or("").to_string();
                phases.push(format!("{guest_name}: {phase}"));
                if e.hotplug_phase.as_ref().is_some_and(|want| *want != phase) {
                    continue;
                }
                have.insert(guest_name);
            }
            Ok(if have == want {
                None
            } else {
                Some(format!("hot-plugged {have:?}, want {want:?} (phases: {})", phases.join(", ")))
            })
        })
        .await;
    }
    if let Some(vm) = &e.vm_spec {
        let want: BTreeSet<String> = e.hotplugged.clone().unwrap_or_default().into_iter().collect();
        return eventually(e.within, &format!("hot-pluggable volumes in the spec of VM {vm}"), || async {
            let claims = vm_spec_hotplugs(env, vm).await?;
            let mut have = BTreeSet::new();
            for claim in claims {
                have.insert(guest_name_of(env, &claim).await);
            }
            Ok(if have == want { None } else { Some(format!("the spec lists {have:?}, want {want:?}")) })
        })
        .await;
    }
    if let Some(claim) = &e.export_of {
        let want = e.export_state.clone().unwrap_or_else(|| "Enabled".into());
        let ar = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("harvesterhci.io", "v1beta1", "NetworkFilesystem"),
            "networkfilesystems",
        );
        let nfs: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), "harvester-system", &ar);
        return eventually(e.within, &format!("export of {claim}"), || async {
            let host = host_pvc_of(c, "default", claim).await?;
            let pv = host.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").to_string();
            let state = match nfs.get_opt(&pv).await.map_err(|x| fail(x.to_string()))? {
                None => "absent".to_string(),
                Some(o) => o.data.pointer("/status/state").and_then(Value::as_str).unwrap_or("").to_string(),
            };
            Ok(if state == want { None } else { Some(format!("export state {state}, want {want}")) })
        })
        .await;
    }
    Err(fail("expectHost needs pvcOf, vmi, vmSpec, exportOf or noHostVolumes"))
}

fn vm_api(env: &crate::env::Env) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    );
    Api::namespaced_with(env.host.clone(), &env.host_namespace, &ar)
}

/// The host claims a VM's spec lists as hot-pluggable volumes: what it boots with.
async fn vm_spec_hotplugs(env: &crate::env::Env, vm: &str) -> Result<Vec<String>> {
    let obj = vm_api(env).get(vm).await.map_err(|x| fail(format!("VM {vm}: {x}")))?;
    Ok(obj
        .data
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.pointer("/persistentVolumeClaim/hotpluggable") == Some(&json!(true)))
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str).map(String::from))
        .collect())
}

/// The guest claim a host claim was made for (its annotation), else the host name.
async fn guest_name_of(env: &crate::env::Env, host_claim: &str) -> String {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
    api.get_opt(host_claim)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.metadata.annotations)
        .and_then(|a| a.get("csi.harvesterhci.io/guest-pvc-name").cloned())
        .unwrap_or_else(|| host_claim.to_string())
}

/// From now until the scenario ends (its environment is dropped): any hot-pluggable
/// volume in `vm`'s spec is a violation (a disk plugged into a VM that is down or fenced).
pub(super) fn never_plugged_into(env: &std::sync::Arc<crate::env::Env>, vm: String) {
    let weak = std::sync::Arc::downgrade(env);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let Some(env) = weak.upgrade() else { return };
            let Ok(claims) = vm_spec_hotplugs(&env, &vm).await else { continue };
            if let Some(claim) = claims.first() {
                let name = guest_name_of(&env, claim).await;
                env.plugged_while_down
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{name} in the spec of {vm}"));
                return;
            }
        }
    });
}

pub(super) async fn orphan_report<C: Cluster>(c: &C, o: &model::OrphanReport) -> Result<()> {
    let rows = c.orphan_report().await?;
    let row = |claim: &str| {
        let want = if claim.contains('/') { claim.to_string() } else { format!("default/{claim}") };
        rows.iter().find(|r| r.get("guestClaim").and_then(Value::as_str) == Some(want.as_str())).cloned()
    };
    for claim in &o.orphans {
        let r = row(claim).ok_or_else(|| fail(format!("the orphan report does not list {claim} (rows: {rows:?})")))?;
        if r.get("orphan") != Some(&json!(true)) {
            return Err(fail(format!("{claim} is not reported as an orphan: {r}")));
        }
    }
    for claim in &o.in_use {
        let r = row(claim).ok_or_else(|| fail(format!("the orphan report does not list {claim}")))?;
        if r.get("orphan") != Some(&json!(false))
            || r.get("attachedTo").and_then(Value::as_array).is_none_or(|a| a.is_empty())
        {
            return Err(fail(format!("{claim} should be reported attached, not orphaned: {r}")));
        }
    }
    Ok(())
}

/// The host object a snapshot handle names must exist: a VolumeRemoteBackup for
/// `backup:<namespace>/<name>`, a host VolumeSnapshot otherwise.
pub(super) async fn host_object_of_handle(env: &crate::env::Env, handle: &str) -> Result<()> {
    let (group, version, kind, plural, namespace, name) = match handle.strip_prefix("backup:") {
        Some(rest) => {
            let (ns, name) = rest.split_once('/').ok_or_else(|| fail(format!("malformed backup handle {handle:?}")))?;
            ("harvesterhci.io", "v1beta1", "VolumeRemoteBackup", "volumeremotebackups", ns.to_string(), name)
        }
        None => {
            ("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots", env.host_namespace.clone(), handle)
        }
    };
    let ar = ApiResource::from_gvk_with_plural(&kube::core::GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), &namespace, &ar);
    match api.get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(fail(format!("snapshot handle {handle:?} names no host {kind} {namespace}/{name}"))),
        Err(x) => Err(fail(format!("reading host {kind} {namespace}/{name}: {x}"))),
    }
}
