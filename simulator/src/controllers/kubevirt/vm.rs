//! The VM controller: run strategy → VMI (with its virt-launcher pod and guest
//! root), legacy `status.volumeRequests`, declarative template → VMI sync, VM status.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{hotplug_volumes, vm_root_name};
use crate::api::meta;
use crate::api::store::Event;
use crate::controllers::queue::{self, Key, Requeue};
use crate::controllers::Ctx;
use crate::profiles::HotplugMode;

const VM: &str = "vm";

fn map(_ctx: &Ctx, e: &Event) -> Vec<Key> {
    match (e.key.group.as_str(), e.key.plural.as_str()) {
        ("kubevirt.io", "virtualmachines" | "virtualmachineinstances") => vec![Key::new(VM, &e.namespace, &e.name)],
        _ => vec![],
    }
}

fn all(ctx: &Ctx) -> Vec<Key> {
    ctx.api
        .list("kubevirt.io", "virtualmachines", None)
        .iter()
        .map(|vm| Key::new(VM, meta::namespace(vm), meta::name(vm)))
        .collect()
}

pub async fn run_vm_controller(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    queue::run(ctx, "kubevirt-vm", shutdown, map, all, |ctx, key| async move { reconcile(&ctx, &key).await }).await
}

fn wants_running(vm: &Value) -> bool {
    match vm.pointer("/spec/runStrategy").and_then(Value::as_str) {
        Some(s) => matches!(s, "Always" | "RerunOnFailure" | "Once"),
        None => vm.pointer("/spec/running").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn volume_entry(name: &str, claim: &str) -> Value {
    json!({"name": name, "persistentVolumeClaim": {"claimName": claim, "hotpluggable": true}})
}

/// Appends a hotplug volume+disk to a spec (`template.spec` or VMI spec); false if present.
pub fn add_to_spec(spec: &mut Value, name: &str, claim: &str, disk: &Value) -> bool {
    let has = spec
        .pointer("/volumes")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|x| meta::str_at(x, "/name") == name));
    if has {
        return false;
    }
    if !spec.get("volumes").is_some_and(Value::is_array) {
        spec["volumes"] = json!([]);
    }
    if let Some(v) = spec["volumes"].as_array_mut() {
        v.push(volume_entry(name, claim));
    }
    if spec.pointer("/domain/devices/disks").and_then(Value::as_array).is_none() {
        spec["domain"]["devices"]["disks"] = json!([]);
    }
    if let Some(d) = spec.pointer_mut("/domain/devices/disks").and_then(Value::as_array_mut) {
        if !d.iter().any(|x| meta::str_at(x, "/name") == name) {
            let mut disk = disk.clone();
            disk["name"] = json!(name);
            d.push(disk);
        }
    }
    true
}

/// Removes a volume and its disk from a spec; false if absent.
pub fn remove_from_spec(spec: &mut Value, name: &str) -> bool {
    let mut changed = false;
    if let Some(v) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        let before = v.len();
        v.retain(|x| meta::str_at(x, "/name") != name);
        changed |= v.len() != before;
    }
    if let Some(d) = spec.pointer_mut("/domain/devices/disks").and_then(Value::as_array_mut) {
        let before = d.len();
        d.retain(|x| meta::str_at(x, "/name") != name);
        changed |= d.len() != before;
    }
    changed
}

async fn reconcile(ctx: &Arc<Ctx>, key: &Key) -> Result<Requeue, String> {
    let vm_rt = ctx.rt("kubevirt.io", "virtualmachines").map_err(|e| e.to_string())?;
    let vmi_rt = ctx.rt("kubevirt.io", "virtualmachineinstances").map_err(|e| e.to_string())?;
    let Some(vm) = ctx.api.get_opt("kubevirt.io", "virtualmachines", &key.namespace, &key.name) else {
        return Ok(None);
    };
    let (ns, name) = (key.namespace.as_str(), key.name.as_str());

    if ctx.profile.hotplug == HotplugMode::Legacy {
        process_volume_requests(ctx, &vm)?;
    }
    let vm = ctx.api.get_opt("kubevirt.io", "virtualmachines", ns, name).ok_or("VM vanished")?;
    let vmi = ctx.api.get_opt("kubevirt.io", "virtualmachineinstances", ns, name);
    let running = wants_running(&vm) && !meta::is_deleting(&vm);
    match (&vmi, running) {
        (None, true) => start_vmi(ctx, &vm).await?,
        (Some(_), false) => {
            ctx.api.delete_if_exists(&vmi_rt, ns, name).map_err(|e| e.to_string())?;
        }
        (Some(vmi), true) if ctx.profile.hotplug == HotplugMode::Declarative => sync_declarative(ctx, &vm, vmi)?,
        _ => {}
    }
    let vmi = ctx.api.get_opt("kubevirt.io", "virtualmachineinstances", ns, name);
    let printable = match (&vmi, running) {
        (Some(_), true) => "Running",
        (Some(_), false) => "Stopping",
        (None, true) => "Starting",
        (None, false) => "Stopped",
    };
    let ready = printable == "Running";
    ctx.api
        .modify(&vm_rt, ns, name, "status", |obj| {
            let want_created = vmi.is_some();
            let status = &obj["status"];
            if status.get("printableStatus") == Some(&json!(printable))
                && status.get("ready") == Some(&json!(ready))
                && status.get("created") == Some(&json!(want_created))
            {
                return false;
            }
            obj["status"]["printableStatus"] = json!(printable);
            obj["status"]["ready"] = json!(ready);
            obj["status"]["created"] = json!(want_created);
            obj["status"]["conditions"] = json!([{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": meta::now_rfc3339()}]);
            true
        })
        .map_err(|e| e.to_string())?;
    Ok(None)
}

/// Legacy mode: apply queued add/remove requests to the template and the running VMI.
fn process_volume_requests(ctx: &Arc<Ctx>, vm: &Value) -> Result<(), String> {
    let requests = vm.pointer("/status/volumeRequests").and_then(Value::as_array).cloned().unwrap_or_default();
    if requests.is_empty() {
        return Ok(());
    }
    let vm_rt = ctx.rt("kubevirt.io", "virtualmachines").map_err(|e| e.to_string())?;
    let vmi_rt = ctx.rt("kubevirt.io", "virtualmachineinstances").map_err(|e| e.to_string())?;
    let (ns, name) = (meta::namespace(vm), meta::name(vm));
    let vmi_running = ctx
        .api
        .get_opt("kubevirt.io", "virtualmachineinstances", ns, name)
        .is_some_and(|v| meta::str_at(&v, "/status/phase") == "Running" && !meta::is_deleting(&v));
    for req in &requests {
        if let Some(add) = req.get("addVolumeOptions") {
            let vol = meta::str_at(add, "/name").to_string();
            let claim = add
                .pointer("/volumeSource/persistentVolumeClaim/claimName")
                .or_else(|| add.pointer("/volumeSource/dataVolume/name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let disk = add.get("disk").cloned().unwrap_or_else(|| json!({"disk": {"bus": "scsi"}}));
            // A webhook refusal (e.g. PVC used by another VM) leaves the request queued, as in KubeVirt.
            ctx.api
                .modify(&vm_rt, ns, name, "", |obj| {
                    add_to_spec(&mut obj["spec"]["template"]["spec"], &vol, &claim, &disk)
                })
                .map_err(|e| format!("applying add volume request {vol}: {e}"))?;
            if vmi_running {
                ctx.api
                    .modify(&vmi_rt, ns, name, "", |obj| add_to_spec(&mut obj["spec"], &vol, &claim, &disk))
                    .map_err(|e| format!("hotplugging {vol} into the VMI: {e}"))?;
            }
        } else if let Some(remove) = req.get("removeVolumeOptions") {
            let vol = meta::str_at(remove, "/name").to_string();
            ctx.api
                .modify(&vm_rt, ns, name, "", |obj| remove_from_spec(&mut obj["spec"]["template"]["spec"], &vol))
                .map_err(|e| e.to_string())?;
            if vmi_running {
                ctx.api
                    .modify(&vmi_rt, ns, name, "", |obj| remove_from_spec(&mut obj["spec"], &vol))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let done = requests.len();
    ctx.api
        .modify(&vm_rt, ns, name, "status", |obj| {
            let Some(list) = obj.pointer_mut("/status/volumeRequests").and_then(Value::as_array_mut) else {
                return false;
            };
            let n = done.min(list.len());
            list.drain(..n);
            if list.is_empty() {
                if let Some(s) = obj.get_mut("status").and_then(Value::as_object_mut) {
                    s.remove("volumeRequests");
                }
            }
            true
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Declarative mode: hotpluggable volumes follow the VM template into the running VMI.
fn sync_declarative(ctx: &Arc<Ctx>, vm: &Value, vmi: &Value) -> Result<(), String> {
    if meta::str_at(vmi, "/status/phase") != "Running" || meta::is_deleting(vmi) {
        return Ok(());
    }
    let template = vm.pointer("/spec/template/spec").cloned().unwrap_or(Value::Null);
    let want = hotplug_volumes(&template);
    let have = hotplug_volumes(vmi.get("spec").unwrap_or(&Value::Null));
    if want == have {
        return Ok(());
    }
    let vmi_rt = ctx.rt("kubevirt.io", "virtualmachineinstances").map_err(|e| e.to_string())?;
    ctx.api
        .modify(&vmi_rt, meta::namespace(vmi), meta::name(vmi), "", |obj| {
            let mut changed = false;
            let spec = &mut obj["spec"];
            for (vol, _) in hotplug_volumes(spec) {
                if !want.iter().any(|(w, _)| *w == vol) {
                    changed |= remove_from_spec(spec, &vol);
                }
            }
            // A volume still listed in volumeStatus is detaching: wait before re-adding it.
            let lingering: Vec<String> = obj
                .pointer("/status/volumeStatus")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|s| meta::str_at(s, "/name").to_string()).collect())
                .unwrap_or_default();
            let spec = &mut obj["spec"];
            for (vol, claim) in &want {
                let present = hotplug_volumes(spec).iter().any(|(h, _)| h == vol);
                if present || lingering.contains(vol) {
                    continue;
                }
                let disk =
                    super::disk_named(&template, vol).cloned().unwrap_or_else(|| json!({"disk": {"bus": "scsi"}}));
                changed |= add_to_spec(spec, vol, claim, &disk);
            }
            changed
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn host_node(vm: &Value) -> String {
    meta::str_at(vm, "/spec/template/spec/nodeSelector/kubernetes.io~1hostname").to_string()
}

async fn start_vmi(ctx: &Arc<Ctx>, vm: &Value) -> Result<(), String> {
    let vmi_rt = ctx.rt("kubevirt.io", "virtualmachineinstances").map_err(|e| e.to_string())?;
    let pod_rt = ctx.rt("", "pods").map_err(|e| e.to_string())?;
    let (ns, name) = (meta::namespace(vm), meta::name(vm));
    let node = host_node(vm);
    let spec = vm.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({}));
    let macs: Vec<(String, String)> = spec
        .pointer("/domain/devices/interfaces")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|i| (meta::str_at(i, "/name").to_string(), meta::str_at(i, "/macAddress").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let interfaces: Vec<Value> = macs
        .iter()
        .enumerate()
        .map(|(i, (n, mac))| {
            let ip = format!("10.52.{}.{}", (i + 1) % 250, 10 + (crate::world::derived_mac(ns, name, i).len() % 200));
            json!({"name": n, "mac": mac, "ipAddress": ip, "ipAddresses": [ip], "interfaceName": format!("enp{}s0", i + 1), "infoSource": "domain, guest-agent"})
        })
        .collect();
    let static_status: Vec<Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|vols| {
            vols.iter()
                .filter(|v| !v.pointer("/persistentVolumeClaim/hotpluggable").and_then(Value::as_bool).unwrap_or(false))
                .enumerate()
                .map(|(i, v)| json!({"name": meta::str_at(v, "/name"), "target": format!("vd{}", (b'a' + i as u8) as char)}))
                .collect()
        })
        .unwrap_or_default();
    let mut labels = vm.pointer("/spec/template/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    labels["kubevirt.io/nodeName"] = json!(node);
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name, "namespace": ns, "labels": labels,
            "annotations": vm.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
            "ownerReferences": [meta::owner_reference(vm, true)],
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
        },
        "spec": spec,
        "status": {
            "phase": "Running", "nodeName": node, "interfaces": interfaces, "volumeStatus": static_status,
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "LiveMigratable", "status": "True"}],
            "guestOSInfo": {"id": "sl-micro", "name": "SUSE Linux Micro"},
            "migrationMethod": "BlockMigration",
        },
    });
    let created = ctx.api.ensure(&vmi_rt, ns, vmi).map_err(|e| e.to_string())?;
    // The finalizer only exists so the VMI outlives the VM briefly, like KubeVirt's; drop it on delete.
    let launcher = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("virt-launcher-{name}-{}", &meta::uid(&created).chars().take(5).collect::<String>()),
            "namespace": ns,
            "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": meta::uid(&created), "vm.kubevirt.io/name": name},
            "ownerReferences": [meta::owner_reference(&created, true)],
        },
        "spec": {"nodeName": node, "containers": [{"name": "compute", "image": ctx.profile.virt_launcher_image()}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    });
    ctx.api.ensure(&pod_rt, ns, launcher).map_err(|e| e.to_string())?;
    let mut nics: Vec<(String, String)> =
        macs.iter().enumerate().map(|(i, (_, mac))| (format!("enp{}s0", i + 1), mac.clone())).collect();
    if let Some(extra) = meta::annotation(vm, "sim.harvesterhci.io/extra-guest-nics") {
        if let Ok(list) = serde_json::from_str::<Vec<crate::world::GuestNic>>(extra) {
            nics.extend(list.into_iter().map(|n| (n.name, n.mac)));
        }
    }
    let uuid = meta::str_at(vm, "/spec/template/spec/domain/firmware/uuid").to_string();
    ctx.devices.prepare_vm_root(&vm_root_name(ns, name), &uuid, &nics).await.map_err(|e| e.to_string())?;
    Ok(())
}
