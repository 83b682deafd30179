//! KubeVirt VMs/VMIs: where a volume is attached, hotplug and unplug in the
//! legacy subresource form or as a declarative VM patch, and confirmation by
//! watching the VMI (no fixed sleeps).

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{str_at, wait_for, Host, HotplugMode};
use crate::error::{Error, Result};

/// How a hot-plugged disk is presented to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub virtio: bool,
    pub serial: String,
    /// Published read-only: the guest gets a read-only disk.
    pub readonly: bool,
}

impl DiskSpec {
    fn to_json(&self, name: &str) -> Value {
        let mut target = json!({"bus": if self.virtio { "virtio" } else { "scsi" }});
        if self.readonly {
            target["readonly"] = json!(true);
        }
        json!({"name": name, "disk": target, "serial": self.serial})
    }
}

/// One VM's view of a volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub vm: String,
    /// Listed in the VM template (persistent hotplug) or pending there (legacy request).
    pub in_vm: bool,
    /// Listed in the running VMI's spec.
    pub in_vmi: bool,
    /// The VMI `volumeStatus` entry, while one exists.
    pub status: Option<Value>,
    /// The disk as the VM/VMI spec describes it (bus, serial).
    pub disk: Option<Value>,
}

impl Attachment {
    pub fn phase(&self) -> &str {
        self.status.as_ref().map(|s| str_at(s, "/phase")).unwrap_or("")
    }
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| str_at(s, "/phase") == "Ready" && !str_at(s, "/target").is_empty())
    }
    pub fn is_present(&self) -> bool {
        self.in_vm || self.in_vmi || self.status.is_some()
    }
    /// Whether the disk was hot-plugged read-only.
    pub fn readonly(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.pointer("/disk/readonly") == Some(&json!(true)))
    }

    /// The guest's `/dev/disk/by-id` name for this disk.
    pub fn by_id_name(&self, volume: &str) -> String {
        let disk = self.disk.as_ref();
        let serial = disk.map(|d| str_at(d, "/serial")).filter(|s| !s.is_empty());
        let virtio = disk.is_some_and(|d| str_at(d, "/disk/bus") == "virtio");
        crate::names::by_id_name(volume, serial, virtio)
    }
}

fn volumes_at<'a>(obj: &'a Value, pointer: &str) -> Vec<&'a Value> {
    obj.pointer(pointer).and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
}

/// Whether a spec volume refers to the host PVC `volume` (by name or claim).
fn refers_to(v: &Value, volume: &str) -> bool {
    str_at(v, "/name") == volume || str_at(v, "/persistentVolumeClaim/claimName") == volume
}

fn disk_named<'a>(obj: &'a Value, pointer: &str, name: &str) -> Option<&'a Value> {
    volumes_at(obj, pointer).into_iter().find(|d| str_at(d, "/name") == name)
}

fn pending_request(vm: &Value, volume: &str) -> Option<&'static str> {
    for r in volumes_at(vm, "/status/volumeRequests") {
        if str_at(r, "/addVolumeOptions/name") == volume {
            return Some("add");
        }
        if str_at(r, "/removeVolumeOptions/name") == volume {
            return Some("remove");
        }
    }
    None
}

/// The view of `volume` from one VM and its VMI.
pub fn attachment_in(vm_name: &str, vm: Option<&Value>, vmi: Option<&Value>, volume: &str) -> Attachment {
    let vm_vol =
        vm.and_then(|v| volumes_at(v, "/spec/template/spec/volumes").into_iter().find(|x| refers_to(x, volume)));
    let pending = vm.and_then(|v| pending_request(v, volume));
    let vmi_vol = vmi.and_then(|v| volumes_at(v, "/spec/volumes").into_iter().find(|x| refers_to(x, volume)));
    let status = vmi.and_then(|v| {
        volumes_at(v, "/status/volumeStatus")
            .into_iter()
            .find(|s| str_at(s, "/name") == volume || str_at(s, "/persistentVolumeClaimInfo/claimName") == volume)
    });
    let disk_name = vm_vol.or(vmi_vol).map(|v| str_at(v, "/name").to_string()).unwrap_or_else(|| volume.to_string());
    let disk = vmi
        .and_then(|v| disk_named(v, "/spec/domain/devices/disks", &disk_name))
        .or_else(|| vm.and_then(|v| disk_named(v, "/spec/template/spec/domain/devices/disks", &disk_name)))
        .or_else(|| {
            vm.and_then(|v| {
                volumes_at(v, "/status/volumeRequests")
                    .into_iter()
                    .find(|r| str_at(r, "/addVolumeOptions/name") == volume)
                    .and_then(|r| r.pointer("/addVolumeOptions/disk"))
            })
        })
        .cloned();
    Attachment {
        vm: vm_name.to_string(),
        in_vm: vm_vol.is_some() || pending == Some("add"),
        in_vmi: vmi_vol.is_some(),
        status: status.cloned(),
        disk,
    }
}

/// The host PVC a VM/VMI volume entry names: its claim, else its own name.
fn claim_of(v: &Value) -> &str {
    let claim = str_at(v, "/persistentVolumeClaim/claimName");
    let claim = if claim.is_empty() { str_at(v, "/persistentVolumeClaimInfo/claimName") } else { claim };
    if claim.is_empty() {
        str_at(v, "/name")
    } else {
        claim
    }
}

/// Attachments keyed by host PVC, counting everything that may hold the volume: the VM
/// template, pending legacy requests, the VMI spec and the VMI's volume status.
pub fn attachments_by_volume(vms: &[Value], vmis: &[Value]) -> BTreeMap<String, Vec<Attachment>> {
    let name_of = |v: &Value| str_at(v, "/metadata/name").to_string();
    let names: BTreeSet<String> = vms.iter().chain(vmis.iter()).map(name_of).collect();
    let mut map: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
    for name in names {
        let vm = vms.iter().find(|v| name_of(v) == name);
        let vmi = vmis.iter().find(|v| name_of(v) == name);
        let mut volumes: BTreeSet<&str> = BTreeSet::new();
        if let Some(vm) = vm {
            volumes.extend(volumes_at(vm, "/spec/template/spec/volumes").into_iter().map(claim_of));
            for r in volumes_at(vm, "/status/volumeRequests") {
                volumes.extend(
                    [str_at(r, "/addVolumeOptions/name"), str_at(r, "/removeVolumeOptions/name")]
                        .into_iter()
                        .filter(|n| !n.is_empty()),
                );
            }
        }
        if let Some(vmi) = vmi {
            volumes.extend(volumes_at(vmi, "/spec/volumes").into_iter().map(claim_of));
            volumes.extend(volumes_at(vmi, "/status/volumeStatus").into_iter().map(claim_of));
        }
        for volume in volumes.into_iter().filter(|v| !v.is_empty()) {
            let a = attachment_in(&name, vm, vmi, volume);
            if a.is_present() {
                map.entry(volume.to_string()).or_default().push(a);
            }
        }
    }
    map
}

/// Whether a VM is running with its guest up (`printableStatus` Running and `ready`):
/// the only state in which a disk may be plugged into it.
pub fn vm_is_running(vm: &Value) -> bool {
    str_at(vm, "/status/printableStatus") == "Running" && vm.pointer("/status/ready") == Some(&json!(true))
}

/// The VM's `printableStatus` ("Stopped", "Starting", ...), for messages.
pub fn vm_status(vm: &Value) -> &str {
    match str_at(vm, "/status/printableStatus") {
        "" => "unknown",
        s => s,
    }
}

fn data(obj: &DynamicObject) -> Value {
    let mut v = obj.data.clone();
    if let Some(m) = v.as_object_mut() {
        m.insert("metadata".into(), serde_json::to_value(&obj.metadata).unwrap_or(Value::Null));
    }
    v
}

impl Host {
    pub async fn get_vm(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.call_opt("get virtualmachine", self.vms().get(name)).await?.map(|o| data(&o)))
    }

    pub async fn get_vmi(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.call_opt("get virtualmachineinstance", self.vmis().get(name)).await?.map(|o| data(&o)))
    }

    pub async fn list_vmis(&self) -> Result<Vec<Value>> {
        let list = self.call("list virtualmachineinstances", self.vmis().list(&Default::default())).await?;
        Ok(list.items.iter().map(data).collect())
    }

    pub async fn list_vms(&self) -> Result<Vec<Value>> {
        let list = self.call("list virtualmachines", self.vms().list(&Default::default())).await?;
        Ok(list.items.iter().map(data).collect())
    }

    /// The volume as seen from one VM.
    pub async fn attachment(&self, vm: &str, volume: &str) -> Result<Attachment> {
        let (vm_obj, vmi_obj) = tokio::try_join!(self.get_vm(vm), self.get_vmi(vm))?;
        Ok(attachment_in(vm, vm_obj.as_ref(), vmi_obj.as_ref(), volume))
    }

    /// Every VM of this namespace that lists the volume anywhere (spec, pending request, VMI, volumeStatus).
    pub async fn attachments(&self, volume: &str) -> Result<Vec<Attachment>> {
        Ok(self.attachment_map().await?.remove(volume).unwrap_or_default())
    }

    /// Every volume in, or on its way into or out of, any VM, from one listing of
    /// VMs and VMIs: ControllerPublish, ListVolumes and the orphan report share it.
    pub async fn attachment_map(&self) -> Result<BTreeMap<String, Vec<Attachment>>> {
        let (vms, vmis) = tokio::try_join!(self.list_vms(), self.list_vmis())?;
        Ok(attachments_by_volume(&vms, &vmis))
    }

    /// From one listing: `volume`'s attachments, and the VM `vm` (if it exists).
    pub async fn attachments_and_vm(&self, volume: &str, vm: &str) -> Result<(Vec<Attachment>, Option<Value>)> {
        let (vms, vmis) = tokio::try_join!(self.list_vms(), self.list_vmis())?;
        let vm_obj = vms.iter().find(|v| str_at(v, "/metadata/name") == vm).cloned();
        Ok((attachments_by_volume(&vms, &vmis).remove(volume).unwrap_or_default(), vm_obj))
    }

    /// The VMs holding each volume (see [`Host::attachment_map`]).
    pub async fn vms_by_volume(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let map = self.attachment_map().await?;
        Ok(map.into_iter().map(|(volume, list)| (volume, list.into_iter().map(|a| a.vm).collect())).collect())
    }

    async fn subresource(&self, kind: &str, name: &str, action: &str, body: Value) -> Result<()> {
        let path = format!("/apis/subresources.kubevirt.io/v1/namespaces/{}/{kind}/{name}/{action}", self.namespace);
        let request = http::Request::put(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| Error::Internal(format!("building {action} request: {e}")))?;
        self.call(&format!("{action} {kind}"), self.client.request_text(request)).await.map(|_| ())
    }

    /// Hot-plugs `volume` (the host PVC of the same name) into `vm`, persistently.
    pub async fn hotplug(&self, vm: &str, volume: &str, disk: &DiskSpec) -> Result<()> {
        match self.features.hotplug() {
            HotplugMode::Declarative => self.patch_vm_volumes(vm, volume, Some(disk)).await,
            HotplugMode::Legacy => {
                let body = json!({
                    "name": volume,
                    "disk": disk.to_json(volume),
                    "volumeSource": {"persistentVolumeClaim": {"claimName": volume, "hotpluggable": true}},
                });
                match self.subresource("virtualmachines", vm, "addvolume", body).await {
                    // Already there or already requested: the watch decides the rest.
                    Err(e)
                        if e.api_response().is_some_and(|r| r.code == 409 && r.message.contains("already exists")) =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            }
        }
    }

    /// Removes `volume` from `vm` (template, and the running VMI with it).
    pub async fn unplug(&self, vm: &str, volume: &str) -> Result<()> {
        let current = self.attachment(vm, volume).await?;
        match self.features.hotplug() {
            HotplugMode::Declarative => {
                if current.in_vm {
                    self.patch_vm_volumes(vm, volume, None).await?;
                }
                Ok(())
            }
            HotplugMode::Legacy => {
                let body = json!({"name": volume});
                let result = if current.in_vm {
                    self.subresource("virtualmachines", vm, "removevolume", body).await
                } else if current.in_vmi {
                    // Only in the VMI (an ephemeral hotplug): the VM endpoint cannot remove it.
                    self.subresource("virtualmachineinstances", vm, "removevolume", body).await
                } else {
                    Ok(())
                };
                match result {
                    Err(e)
                        if e.api_response().is_some_and(|r| {
                            r.code == 409
                                && (r.message.contains("does not exist") || r.message.contains("already exists"))
                        }) =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            }
        }
    }

    /// Declarative form: one JSON patch of the VM template guarded by a
    /// resourceVersion test; re-read and retried when another writer won.
    async fn patch_vm_volumes(&self, vm: &str, volume: &str, add: Option<&DiskSpec>) -> Result<()> {
        for _ in 0..8 {
            let obj = self
                .get_vm(vm)
                .await?
                .ok_or_else(|| Error::NotFound(format!("VM {vm} not found in namespace {}", self.namespace)))?;
            let rv = str_at(&obj, "/metadata/resourceVersion").to_string();
            let vols = volumes_at(&obj, "/spec/template/spec/volumes");
            let disks = volumes_at(&obj, "/spec/template/spec/domain/devices/disks");
            let vol_idx = vols.iter().position(|v| refers_to(v, volume));
            let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
            match add {
                Some(disk) => {
                    if vol_idx.is_some() {
                        return Ok(());
                    }
                    let volume_entry =
                        json!({"name": volume, "persistentVolumeClaim": {"claimName": volume, "hotpluggable": true}});
                    if obj.pointer("/spec/template/spec/volumes").is_some() {
                        ops.push(json!({"op": "add", "path": "/spec/template/spec/volumes/-", "value": volume_entry}));
                    } else {
                        ops.push(json!({"op": "add", "path": "/spec/template/spec/volumes", "value": [volume_entry]}));
                    }
                    if !disks.iter().any(|d| str_at(d, "/name") == volume) {
                        if obj.pointer("/spec/template/spec/domain/devices/disks").is_some() {
                            ops.push(json!({"op": "add", "path": "/spec/template/spec/domain/devices/disks/-", "value": disk.to_json(volume)}));
                        } else {
                            ops.push(json!({"op": "add", "path": "/spec/template/spec/domain/devices/disks", "value": [disk.to_json(volume)]}));
                        }
                    }
                }
                None => {
                    let Some(i) = vol_idx else { return Ok(()) };
                    let name = str_at(vols[i], "/name").to_string();
                    ops.push(json!({"op": "remove", "path": format!("/spec/template/spec/volumes/{i}")}));
                    if let Some(d) = disks.iter().position(|d| str_at(d, "/name") == name) {
                        ops.push(
                            json!({"op": "remove", "path": format!("/spec/template/spec/domain/devices/disks/{d}")}),
                        );
                    }
                }
            }
            let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
                .map_err(|e| Error::Internal(format!("building VM patch: {e}")))?;
            match self
                .call(
                    "patch virtualmachine volumes",
                    self.vms().patch(vm, &PatchParams::default(), &Patch::<Value>::Json(patch)),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // 422 is both "test failed" (someone else wrote) and a webhook refusal: re-read to tell.
                Err(e) if e.api_response().is_some_and(|r| r.code == 422) => {
                    let now = self.get_vm(vm).await?;
                    if now.as_ref().map(|v| str_at(v, "/metadata/resourceVersion").to_string()) != Some(rv) {
                        continue;
                    }
                    return Err(Error::FailedPrecondition(format!(
                        "Harvester refused to change the volumes of VM {vm}: {}",
                        e.api_response().map(|r| r.message.clone()).unwrap_or_default()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Aborted(format!("VM {vm} kept changing while updating its volumes; retry")))
    }

    /// Watches the VMI until the volume is `Ready` with a target, or the deadline passes.
    pub async fn wait_attached(&self, vm: &str, volume: &str, deadline: Instant) -> Result<Attachment> {
        let what = format!("volume {volume} to become Ready in VM {vm}");
        wait_for(self.vmis(), vm, deadline, &what, |o| {
            o.is_some_and(|vmi| attachment_in(vm, None, Some(&data(vmi)), volume).is_ready())
        })
        .await?;
        let att = self.attachment(vm, volume).await?;
        if !att.is_ready() {
            return Err(Error::Aborted(format!("volume {volume} changed state in VM {vm} while attaching; retry")));
        }
        Ok(att)
    }

    /// Watches until neither the VM nor its VMI lists the volume (the device is gone from the guest).
    pub async fn wait_detached(&self, vm: &str, volume: &str, deadline: Instant) -> Result<()> {
        let what = format!("volume {volume} to leave VM {vm}");
        wait_for(self.vms(), vm, deadline, &what, |o| {
            o.is_none_or(|v| !attachment_in(vm, Some(&data(v)), None, volume).in_vm)
        })
        .await?;
        wait_for(self.vmis(), vm, deadline, &what, |o| {
            o.is_none_or(|v| !attachment_in(vm, None, Some(&data(v)), volume).is_present())
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_with(vols: Value, requests: Value) -> Value {
        json!({"metadata": {"name": "vm"}, "spec": {"template": {"spec": {"volumes": vols, "domain": {"devices": {"disks": [
            {"name": "pvc-a", "disk": {"bus": "scsi"}, "serial": "hcsi0000000000000001"}]}}}}},
            "status": {"volumeRequests": requests}})
    }

    #[test]
    fn attachment_sees_template_pending_and_status() {
        let vm = vm_with(
            json!([{"name": "pvc-a", "persistentVolumeClaim": {"claimName": "pvc-a", "hotpluggable": true}}]),
            json!([]),
        );
        let vmi = json!({"spec": {"volumes": []}, "status": {"volumeStatus": [{"name": "pvc-a", "phase": "Ready", "target": "sda", "hotplugVolume": {}}]}});
        let a = attachment_in("vm", Some(&vm), Some(&vmi), "pvc-a");
        assert!(a.in_vm && !a.in_vmi && a.is_ready());
        assert_eq!(a.by_id_name("pvc-a"), "scsi-0QEMU_QEMU_HARDDISK_hcsi0000000000000001");

        let pending =
            vm_with(json!([]), json!([{"addVolumeOptions": {"name": "pvc-b", "disk": {"disk": {"bus": "scsi"}}}}]));
        let b = attachment_in("vm", Some(&pending), None, "pvc-b");
        assert!(b.in_vm && !b.is_ready());
        assert_eq!(b.by_id_name("pvc-b"), "scsi-0QEMU_QEMU_HARDDISK_drive-ua-pvc-b");

        assert!(!attachment_in("vm", Some(&vm), Some(&vmi), "pvc-z").is_present());
    }

    #[test]
    fn the_attachment_map_counts_every_way_a_vm_may_hold_a_volume() {
        let named = |name: &str, mut v: Value| {
            v["metadata"] = json!({"name": name});
            v
        };
        // vm-1: in the template under a disk name that differs from the claim.
        let vm1 = named(
            "vm-1",
            vm_with(json!([{"name": "disk-0", "persistentVolumeClaim": {"claimName": "pvc-a"}}]), json!([])),
        );
        // vm-2: a legacy hotplug request not yet in any spec.
        let vm2 = named("vm-2", vm_with(json!([]), json!([{"addVolumeOptions": {"name": "pvc-b"}}])));
        // vm-3: gone from both specs, its VMI still unplugging the disk.
        let vm3 = named("vm-3", vm_with(json!([]), json!([])));
        let vmi3 = json!({"metadata": {"name": "vm-3"}, "spec": {"volumes": []}, "status": {"volumeStatus": [
            {"name": "pvc-c", "phase": "Detaching", "hotplugVolume": {}, "persistentVolumeClaimInfo": {"claimName": "pvc-c"}}]}});
        // vm-4: only a VMI (no VM object), the volume in its spec.
        let vmi4 = json!({"metadata": {"name": "vm-4"}, "spec": {"volumes": [{"name": "pvc-a", "persistentVolumeClaim": {"claimName": "pvc-a"}}]}});

        let map = attachments_by_volume(&[vm1, vm2, vm3], &[vmi3, vmi4]);
        let vms = |volume: &str| map.get(volume).map(|l| l.iter().map(|a| a.vm.as_str()).collect::<Vec<_>>());
        assert_eq!(vms("pvc-a"), Some(vec!["vm-1", "vm-4"]));
        assert_eq!(vms("pvc-b"), Some(vec!["vm-2"]));
        assert_eq!(vms("pvc-c"), Some(vec!["vm-3"]));
        assert_eq!(vms("disk-0"), None, "keyed by claim, not disk name");
        assert_eq!(map.len(), 3, "{:?}", map.keys().collect::<Vec<_>>());
    }
}
