//! The VMI hotplug phase machine (virt-controller + virt-handler in one):
//! Pending → Bound → AttachedToNode (attachment pod) → MountedToPod (device
//! visible in the guest) → Ready, and on removal UnMountedFromPod (device gone)
//! → Detaching (pod deleted) → entry removed. Latency per step from the world's
//! timing; the stuck-phase fault holds a volume where it is.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{by_id_name, disk_named, hotplug_volumes, vm_root_name};
use crate::api::meta;
use crate::api::store::Event;
use crate::controllers::queue::{self, Key, Requeue};
use crate::controllers::{longhorn, Ctx};

const VMI: &str = "vmi";
const VMI_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";

fn map(ctx: &Ctx, e: &Event) -> Vec<Key> {
    match (e.key.group.as_str(), e.key.plural.as_str()) {
        ("kubevirt.io", "virtualmachineinstances") => vec![Key::new(VMI, &e.namespace, &e.name)],
        // A claim binding moves Pending volumes on.
        ("", "persistentvolumeclaims") => ctx
            .api
            .list("kubevirt.io", "virtualmachineinstances", Some(&e.namespace))
            .iter()
            .filter(|vmi| hotplug_volumes(vmi.get("spec").unwrap_or(&Value::Null)).iter().any(|(_, c)| *c == e.name))
            .map(|vmi| Key::new(VMI, meta::namespace(vmi), meta::name(vmi)))
            .collect(),
        _ => vec![],
    }
}

fn all(ctx: &Ctx) -> Vec<Key> {
    ctx.api
        .list("kubevirt.io", "virtualmachineinstances", None)
        .iter()
        .map(|v| Key::new(VMI, meta::namespace(v), meta::name(v)))
        .collect()
}

pub async fn run_hotplug_controller(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    queue::run(ctx, "kubevirt-hotplug", shutdown, map, all, |ctx, key| async move { reconcile(&ctx, &key).await }).await
}

fn status_entry(name: &str, phase: &str, reason: &str, message: &str) -> Value {
    json!({"name": name, "target": "", "phase": phase, "reason": reason, "message": message, "hotplugVolume": {}})
}

fn set_phase(entry: &mut Value, phase: &str, reason: &str, message: &str) {
    entry["phase"] = json!(phase);
    entry["reason"] = json!(reason);
    entry["message"] = json!(message);
}

fn claim_info(pvc: &Value) -> Value {
    json!({
        "claimName": meta::name(pvc),
        "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or_else(|| json!([])),
        "volumeMode": meta::str_at(pvc, "/spec/volumeMode"),
        "capacity": pvc.pointer("/status/capacity").cloned().unwrap_or_else(|| json!({})),
        "requests": pvc.pointer("/spec/resources/requests").cloned().unwrap_or_else(|| json!({})),
        "filesystemOverhead": "0",
    })
}

/// Picks the first free target name on the bus (`sda`… or `vdb`…).
fn free_target(entries: &[Value], virtio: bool) -> String {
    let used: Vec<&str> = entries.iter().map(|e| meta::str_at(e, "/target")).collect();
    let prefix = if virtio { "vd" } else { "sd" };
    for c in b'a'..=b'z' {
        let t = format!("{prefix}{}", c as char);
        if !used.contains(&t.as_str()) {
            return t;
        }
    }
    format!("{prefix}aa")
}

/// A volume whose device attaches in this pass: its status entry, and the
/// backing volume and by-id link name for the device.
struct Plugging {
    idx: usize,
    vol: String,
    backing: String,
    link: String,
}

struct Step {
    elapsed_ok: bool,
    remaining: Duration,
}

fn step_due(ctx: &Ctx, ns: &str, vmi: &str, vol: &str, phase: &str, step: Duration) -> Step {
    let mut since = ctx.hotplug.since.lock().unwrap_or_else(|p| p.into_inner());
    let k = (ns.to_string(), vmi.to_string(), vol.to_string());
    let entered = *since.entry(k).or_insert_with(Instant::now);
    if ctx.faults.stuck_phase(vol).as_deref() == Some(phase) {
        return Step { elapsed_ok: false, remaining: Duration::from_millis(200) };
    }
    let elapsed = entered.elapsed();
    Step { elapsed_ok: elapsed >= step, remaining: step.saturating_sub(elapsed) }
}

fn entered_phase(ctx: &Ctx, ns: &str, vmi: &str, vol: &str) {
    ctx.hotplug
        .since
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((ns.into(), vmi.into(), vol.into()), Instant::now());
}

/// Moves a volume into the next timed phase. Its clock starts when the step
/// before was due, not when this reconcile ran: the world's hotplug latency is
/// the whole of the Bound → Ready walk, and the few milliseconds each wake-up
/// takes must not pile up on top of it. After a stall of more than a step (a
/// stuck-phase fault, a claim that was not bound yet) the clock starts now, so
/// the steps after it keep their length. Returns how late this reconcile ran.
fn advance_phase(ctx: &Ctx, ns: &str, vmi: &str, vol: &str, step: Duration) -> Duration {
    let mut since = ctx.hotplug.since.lock().unwrap_or_else(|p| p.into_inner());
    let k = (ns.to_string(), vmi.to_string(), vol.to_string());
    let (entered, late) = next_phase_clock(since.get(&k).copied(), step, Instant::now());
    since.insert(k, entered);
    late
}

/// When the phase a volume enters at `now` started by the schedule (see
/// [`advance_phase`]), and how late `now` is for it.
fn next_phase_clock(previous: Option<Instant>, step: Duration, now: Instant) -> (Instant, Duration) {
    let due = previous.map_or(now, |entered| entered + step);
    let late = now.saturating_duration_since(due);
    (if late > step { now } else { due }, late)
}

fn forget(ctx: &Ctx, ns: &str, vmi: &str, vol: &str) {
    ctx.hotplug.since.lock().unwrap_or_else(|p| p.into_inner()).remove(&(ns.into(), vmi.into(), vol.into()));
}

async fn attach_device(ctx: &Ctx, ns: &str, vmi: &str, vol: &str, backing: &str, link: &str) -> Result<(), String> {
    ctx.devices.attach(&vm_root_name(ns, vmi), backing, link).await.map_err(|e| e.to_string())?;
    ctx.hotplug
        .attached
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((ns.into(), vmi.into()))
        .or_default()
        .insert(vol.into(), (backing.into(), link.into()));
    Ok(())
}

async fn detach_device(ctx: &Ctx, ns: &str, vmi: &str, vol: &str) -> Result<(), String> {
    let known = ctx
        .hotplug
        .attached
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(ns.to_string(), vmi.to_string()))
        .and_then(|m| m.get(vol).cloned());
    if let Some((backing, link)) = known {
        ctx.devices.detach(&vm_root_name(ns, vmi), &backing, &link).await.map_err(|e| e.to_string())?;
        if let Some(m) =
            ctx.hotplug.attached.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&(ns.to_string(), vmi.to_string()))
        {
            m.remove(vol);
        }
    }
    Ok(())
}

async fn detach_all(ctx: &Ctx, ns: &str, vmi: &str) -> Result<(), String> {
    let vols: Vec<String> = ctx
        .hotplug
        .attached
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(ns.to_string(), vmi.to_string()))
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for v in vols {
        detach_device(ctx, ns, vmi, &v).await?;
    }
    Ok(())
}

fn create_attachment_pod(ctx: &Ctx, vmi: &Value, vol: &str, claim: &str) -> Result<Value, String> {
    let pod_rt = ctx.rt("", "pods").map_err(|e| e.to_string())?;
    let ns = meta::namespace(vmi);
    let launcher = ctx.api.list("", "pods", Some(ns)).into_iter().find(|p| {
        meta::label(p, "kubevirt.io/created-by") == Some(meta::uid(vmi))
            && meta::label(p, "kubevirt.io") == Some("virt-launcher")
    });
    let owner = launcher.as_deref().map(|l| json!([meta::owner_reference(l, true)])).unwrap_or_else(|| json!([]));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "hp-volume-", "namespace": ns,
            "labels": {"kubevirt.io": "hotplug-disk", "kubevirt.io/created-by": meta::uid(vmi)},
            "annotations": {"sim.harvesterhci.io/volume": vol},
            "ownerReferences": owner,
        },
        "spec": {
            "nodeName": meta::str_at(vmi, "/status/nodeName"),
            "containers": [{"name": "hotplug-disk", "image": ctx.profile.virt_launcher_image()}],
            "volumes": [{"name": vol, "persistentVolumeClaim": {"claimName": claim}}],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    });
    let created = ctx
        .api
        .create(&pod_rt, ns, pod, &crate::api::ops::WriteOptions { keep_status: true, ..Default::default() })
        .map_err(|e| e.to_string())?;
    longhorn::sync_attachment(ctx, ns, claim);
    Ok((*created).clone())
}

fn delete_attachment_pod(ctx: &Ctx, ns: &str, entry: &Value, claim: Option<&str>) -> Result<(), String> {
    let pod = meta::str_at(entry, "/hotplugVolume/attachPodName");
    if !pod.is_empty() {
        let pod_rt = ctx.rt("", "pods").map_err(|e| e.to_string())?;
        ctx.api.delete_if_exists(&pod_rt, ns, pod).map_err(|e| e.to_string())?;
    }
    if let Some(c) = claim {
        longhorn::sync_attachment(ctx, ns, c);
    }
    Ok(())
}

async fn reconcile(ctx: &Arc<Ctx>, key: &Key) -> Result<Requeue, String> {
    let (ns, name) = (key.namespace.as_str(), key.name.as_str());
    let vmi_rt = ctx.rt("kubevirt.io", "virtualmachineinstances").map_err(|e| e.to_string())?;
    let Some(vmi) = ctx.api.get_opt("kubevirt.io", "virtualmachineinstances", ns, name) else {
        detach_all(ctx, ns, name).await?;
        return Ok(None);
    };
    if meta::is_deleting(&vmi) || meta::str_at(&vmi, "/status/phase") != "Running" {
        // The VM went away or stopped: every hot-plugged disk disappears with it.
        detach_all(ctx, ns, name).await?;
        let entries = vmi.pointer("/status/volumeStatus").and_then(Value::as_array).cloned().unwrap_or_default();
        for e in entries.iter().filter(|e| e.get("hotplugVolume").is_some()) {
            let claim = e.pointer("/persistentVolumeClaimInfo/claimName").and_then(Value::as_str);
            delete_attachment_pod(ctx, ns, e, claim)?;
        }
        if meta::is_deleting(&vmi) {
            ctx.api
                .modify(&vmi_rt, ns, name, "", |obj| {
                    if !meta::finalizers(obj).iter().any(|f| f == VMI_FINALIZER) {
                        return false;
                    }
                    meta::remove_finalizer(obj, VMI_FINALIZER);
                    true
                })
                .map_err(|e| e.to_string())?;
        }
        return Ok(None);
    }

    let timing = ctx.timing();
    // Three timed transitions (Bound → AttachedToNode → MountedToPod → Ready) make up the latency.
    let step = Duration::from_millis(timing.hotplug_ms / 3);
    let unplug_step = Duration::from_millis(timing.unplug_ms / 2);
    let spec = vmi.get("spec").cloned().unwrap_or(Value::Null);
    let wanted = hotplug_volumes(&spec);
    let mut entries: Vec<Value> =
        vmi.pointer("/status/volumeStatus").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut requeue: Option<Duration> = None;
    let mut soonest = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
    let mut plugging: Vec<Plugging> = Vec::new();

    for (vol, claim) in &wanted {
        let pvc = ctx.api.get_opt("", "persistentvolumeclaims", ns, claim);
        let idx = match entries.iter().position(|e| meta::str_at(e, "/name") == vol) {
            Some(i) => i,
            None => {
                entries.push(status_entry(vol, "Pending", "", ""));
                entered_phase(ctx, ns, name, vol);
                entries.len() - 1
            }
        };
        let phase = meta::str_at(&entries[idx], "/phase").to_string();
        if let Some(p) = &pvc {
            entries[idx]["persistentVolumeClaimInfo"] = claim_info(p);
        }
        match phase.as_str() {
            "Pending" | "Bound" | "" | "Detaching" | "UnMountedFromPod" => {
                // Re-added while detaching: start again from the claim's state (kubevirt#17139).
                let Some(p) = &pvc else {
                    set_phase(&mut entries[idx], "Pending", "FailedPvcNotFound", &format!("PVC {claim} not found"));
                    continue;
                };
                let pvc_phase = meta::str_at(p, "/status/phase");
                if pvc_phase != "Bound" {
                    set_phase(
                        &mut entries[idx],
                        "Pending",
                        "PVCNotReady",
                        &format!("PVC is in phase {}", if pvc_phase.is_empty() { "Pending" } else { pvc_phase }),
                    );
                    continue;
                }
                if phase != "Bound" {
                    set_phase(&mut entries[idx], "Bound", "PVCNotReady", "PVC is in phase Bound");
                    entered_phase(ctx, ns, name, vol);
                }
                let due = step_due(ctx, ns, name, vol, "Bound", step);
                if !due.elapsed_ok {
                    soonest(due.remaining);
                    continue;
                }
                let pod = create_attachment_pod(ctx, &vmi, vol, claim)?;
                entries[idx]["hotplugVolume"] = json!({"attachPodName": meta::name(&pod), "attachPodUID": ""});
                set_phase(
                    &mut entries[idx],
                    "AttachedToNode",
                    "SuccessfulCreate",
                    &format!("Created hotplug attachment pod {}, for volume {vol}", meta::name(&pod)),
                );
                advance_phase(ctx, ns, name, vol, step);
                ctx.event(
                    &vmi,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created hotplug attachment pod {}, for volume {vol}", meta::name(&pod)),
                );
                soonest(step);
            }
            "AttachedToNode" => {
                let due = step_due(ctx, ns, name, vol, "AttachedToNode", step);
                if !due.elapsed_ok {
                    soonest(due.remaining);
                    continue;
                }
                let Some(backing) =
                    pvc.as_deref().map(|p| meta::str_at(p, "/spec/volumeName").to_string()).filter(|b| !b.is_empty())
                else {
                    soonest(step);
                    continue;
                };
                // The disk reaches the guest here (libvirt attaches it once it is in the
                // virt-launcher pod), so the loop device's own set-up time is spent inside
                // the step and Ready still comes when the world's latency says.
                let disk =
                    disk_named(&spec, vol).cloned().unwrap_or_else(|| json!({"name": vol, "disk": {"bus": "scsi"}}));
                plugging.push(Plugging { idx, vol: vol.clone(), backing, link: by_id_name(&disk) });
            }
            "MountedToPod" => {
                let due = step_due(ctx, ns, name, vol, "MountedToPod", step);
                if !due.elapsed_ok {
                    soonest(due.remaining);
                    continue;
                }
                let late = advance_phase(ctx, ns, name, vol, step);
                tracing::debug!(
                    vmi = name,
                    volume = vol,
                    late_ms = late.as_millis() as u64,
                    "hot-plugged volume ready"
                );
                let virtio = disk_named(&spec, vol).and_then(|d| d.pointer("/disk/bus")).and_then(Value::as_str)
                    == Some("virtio");
                let target = free_target(&entries, virtio);
                entries[idx]["target"] = json!(target);
                set_phase(
                    &mut entries[idx],
                    "Ready",
                    "VolumeReady",
                    &format!("Successfully attach hotplugged volume {vol} to VM"),
                );
                forget(ctx, ns, name, vol);
                ctx.event(&vmi, "Normal", "VolumeReady", &format!("Successfully attach hotplugged volume {vol} to VM"));
            }
            _ => {}
        }
    }

    // The devices whose step is due attach side by side: one after another, the
    // ten volumes a VM gets in a burst would each wait out the others' losetup.
    let attached =
        futures::future::join_all(plugging.iter().map(|p| attach_device(ctx, ns, name, &p.vol, &p.backing, &p.link)))
            .await;
    for (p, result) in plugging.iter().zip(attached) {
        // A failure leaves the volume AttachedToNode; the retry finds the devices
        // that did attach already there.
        result?;
        let vol = &p.vol;
        let pod_name = meta::str_at(&entries[p.idx], "/hotplugVolume/attachPodName").to_string();
        let pod_uid = ctx.api.get_opt("", "pods", ns, &pod_name).map(|p| meta::uid(&p).to_string()).unwrap_or_default();
        entries[p.idx]["hotplugVolume"]["attachPodUID"] = json!(pod_uid);
        set_phase(
            &mut entries[p.idx],
            "MountedToPod",
            "VolumeMountedToPod",
            &format!("Volume {vol} has been mounted in virt-launcher pod"),
        );
        advance_phase(ctx, ns, name, vol, step);
        ctx.event(&vmi, "Normal", "VolumeMountedToPod", &format!("Volume {vol} has been mounted in virt-launcher pod"));
        soonest(step);
    }

    // Volumes gone from the spec walk out.
    let mut keep = Vec::new();
    for mut entry in entries.into_iter() {
        let vol = meta::str_at(&entry, "/name").to_string();
        let hot = entry.get("hotplugVolume").is_some();
        if !hot || wanted.iter().any(|(w, _)| *w == vol) {
            keep.push(entry);
            continue;
        }
        let claim = entry.pointer("/persistentVolumeClaimInfo/claimName").and_then(Value::as_str).map(String::from);
        match meta::str_at(&entry, "/phase") {
            "Ready" | "MountedToPod" => {
                detach_device(ctx, ns, name, &vol).await?;
                entry["target"] = json!("");
                set_phase(
                    &mut entry,
                    "UnMountedFromPod",
                    "VolumeUnMountedFromPod",
                    &format!("Volume {vol} has been unmounted from virt-launcher pod"),
                );
                entered_phase(ctx, ns, name, &vol);
                soonest(unplug_step);
                keep.push(entry);
            }
            "UnMountedFromPod" | "AttachedToNode" => {
                let due = step_due(ctx, ns, name, &vol, "UnMountedFromPod", unplug_step);
                if !due.elapsed_ok {
                    soonest(due.remaining);
                    keep.push(entry);
                    continue;
                }
                // The device is attached on leaving AttachedToNode; a status write that
                // failed after that leaves the volume there with its device in the guest.
                // (A no-op when nothing is attached, as after UnMountedFromPod.)
                detach_device(ctx, ns, name, &vol).await?;
                delete_attachment_pod(ctx, ns, &entry, claim.as_deref())?;
                let pod = meta::str_at(&entry, "/hotplugVolume/attachPodName").to_string();
                set_phase(
                    &mut entry,
                    "Detaching",
                    "SuccessfulDelete",
                    &format!("Deleted hotplug attachment pod {pod}, for volume {vol}"),
                );
                entered_phase(ctx, ns, name, &vol);
                soonest(unplug_step);
                keep.push(entry);
            }
            "Detaching" => {
                let due = step_due(ctx, ns, name, &vol, "Detaching", unplug_step);
                if !due.elapsed_ok {
                    soonest(due.remaining);
                    keep.push(entry);
                    continue;
                }
                forget(ctx, ns, name, &vol);
                ctx.event(&vmi, "Normal", "VolumeUnplugged", &format!("Volume {vol} has been unplugged"));
            }
            _ => {
                // Never got an attachment pod: nothing to undo.
                delete_attachment_pod(ctx, ns, &entry, claim.as_deref())?;
                forget(ctx, ns, name, &vol);
            }
        }
    }
    keep.sort_by(|a, b| meta::str_at(a, "/name").cmp(meta::str_at(b, "/name")));
    let new_status = json!(keep);
    ctx.api
        .modify(&vmi_rt, ns, name, "", |obj| {
            if obj.pointer("/status/volumeStatus") == Some(&new_status) {
                return false;
            }
            obj["status"]["volumeStatus"] = new_status.clone();
            true
        })
        .map_err(|e| e.to_string())?;
    Ok(requeue)
}

/// After a restart: devices of hotplug volumes the guest sees (MountedToPod or
/// Ready) are re-attached (a reboot of the simulator host may have lost the
/// loop devices; links may be stale).
pub async fn reattach_devices(ctx: &Arc<Ctx>) {
    let mut wanted = Vec::new();
    for vmi in ctx.api.list("kubevirt.io", "virtualmachineinstances", None) {
        let (ns, name) = (meta::namespace(&vmi), meta::name(&vmi));
        let spec = vmi.get("spec").cloned().unwrap_or(Value::Null);
        for entry in vmi.pointer("/status/volumeStatus").and_then(Value::as_array).into_iter().flatten() {
            if !matches!(meta::str_at(entry, "/phase"), "Ready" | "MountedToPod")
                || entry.get("hotplugVolume").is_none()
            {
                continue;
            }
            let vol = meta::str_at(entry, "/name");
            let claim = meta::str_at(entry, "/persistentVolumeClaimInfo/claimName");
            let Some(pvc) = ctx.api.get_opt("", "persistentvolumeclaims", ns, claim) else { continue };
            let backing = meta::str_at(&pvc, "/spec/volumeName").to_string();
            let disk = disk_named(&spec, vol).cloned().unwrap_or_else(|| json!({"name": vol, "disk": {"bus": "scsi"}}));
            let link = by_id_name(&disk);
            ctx.hotplug
                .attached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((ns.to_string(), name.to_string()))
                .or_default()
                .insert(vol.to_string(), (backing.clone(), link.clone()));
            wanted.push((vm_root_name(ns, name), backing, link));
        }
    }
    if let Err(e) = ctx.devices.reconcile(&wanted).await {
        tracing::error!(error = %e, "re-attaching devices after restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_starts_when_the_one_before_was_due_not_when_the_reconcile_ran() {
        let step = Duration::from_millis(100);
        let t0 = Instant::now();
        // On time, or a few milliseconds late: the clock keeps the schedule.
        assert_eq!(next_phase_clock(Some(t0), step, t0 + step), (t0 + step, Duration::ZERO));
        assert_eq!(
            next_phase_clock(Some(t0), step, t0 + step + Duration::from_millis(7)),
            (t0 + step, Duration::from_millis(7))
        );
        // Late by more than a step (a stuck-phase fault released): the next step gets its whole length.
        let stalled = t0 + step + Duration::from_millis(250);
        assert_eq!(next_phase_clock(Some(t0), step, stalled), (stalled, Duration::from_millis(250)));
        // Nothing known (a restart): the clock starts now.
        assert_eq!(next_phase_clock(None, step, t0), (t0, Duration::ZERO));
    }
}
