//! KubeVirt VMs/VMIs: where a volume is attached, hotplug and unplug in the
//! legacy subresource form or as a declarative VM patch, and confirmation by
//! watching the VMI (no fixed sleeps).

mod attachment;
mod objects;
mod view;

use std::collections::BTreeMap;

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use tokio::time::Instant;

pub use attachment::{attachment_in, attachments_by_volume, Attachment};
pub use objects::{Disk, Vm, Vmi, Volume, VolumeStatus};
pub use view::{VmView, Waited};

use super::shape::typed;
use super::{wait_typed, Host, HotplugMode};
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

pub(super) fn vm_of(obj: &DynamicObject) -> Result<Vm> {
    typed(obj, "VirtualMachine")
}

pub(super) fn vmi_of(obj: &DynamicObject) -> Result<Vmi> {
    typed(obj, "VirtualMachineInstance")
}

impl Host {
    pub async fn get_vm(&self, name: &str) -> Result<Option<Vm>> {
        self.call_opt("get virtualmachine", self.vms().get(name)).await?.as_ref().map(vm_of).transpose()
    }

    pub async fn get_vmi(&self, name: &str) -> Result<Option<Vmi>> {
        self.call_opt("get virtualmachineinstance", self.vmis().get(name)).await?.as_ref().map(vmi_of).transpose()
    }

    pub async fn list_vmis(&self) -> Result<Vec<Vmi>> {
        let list = self.call("list virtualmachineinstances", self.vmis().list(&Default::default())).await?;
        list.items.iter().map(vmi_of).collect()
    }

    /// The names of the VMs in the guest's namespace.
    pub async fn vm_names(&self) -> Result<Vec<String>> {
        let list = self.call("list virtualmachines", self.vms().list(&Default::default())).await?;
        Ok(list.items.into_iter().filter_map(|o| o.metadata.name).collect())
    }

    pub async fn list_vms(&self) -> Result<Vec<Vm>> {
        let list = self.call("list virtualmachines", self.vms().list(&Default::default())).await?;
        list.items.iter().map(vm_of).collect()
    }

    /// The volume as seen from one VM.
    pub async fn attachment(&self, vm: &str, volume: &str) -> Result<Attachment> {
        Ok(self.attachment_and_vm(vm, volume).await?.0)
    }

    /// The volume as seen from one VM, and the VM (fresh reads).
    async fn attachment_and_vm(&self, vm: &str, volume: &str) -> Result<(Attachment, Option<Vm>)> {
        let (vm_obj, vmi_obj) = tokio::try_join!(self.get_vm(vm), self.get_vmi(vm))?;
        Ok((attachment_in(vm, vm_obj.as_ref(), vmi_obj.as_ref(), volume), vm_obj))
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

    /// `volume`'s attachments, and the VM `vm` (if it exists). With the
    /// controller's view synced, read fresh: `vm` and the few VMs the view says
    /// may hold the volume (two GETs each, whatever the number of VMs); else
    /// from one listing of every VM and VMI.
    pub async fn attachments_and_vm(&self, volume: &str, vm: &str) -> Result<(Vec<Attachment>, Option<Vm>)> {
        if let Some(candidates) = self.vm_view.as_ref().and_then(|v| v.candidates(volume, vm)) {
            let (here, elsewhere) = tokio::try_join!(
                self.attachment_and_vm(vm, volume),
                futures::future::try_join_all(candidates.iter().map(|c| self.attachment_and_vm(c, volume)))
            )?;
            let (here, vm_obj) = here;
            let found =
                elsewhere.into_iter().map(|(a, _)| a).chain(std::iter::once(here)).filter(Attachment::is_present);
            return Ok((found.collect(), vm_obj));
        }
        let (vms, vmis) = tokio::try_join!(self.list_vms(), self.list_vmis())?;
        let vm_obj = vms.iter().find(|v| v.name() == vm).cloned();
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
        // Before the request: a reply lost on the way still leaves the volume
        // counted as attached here.
        if let Some(view) = &self.vm_view {
            view.note_plugging(volume, vm);
        }
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
            let rv = obj.resource_version().to_string();
            let vols = obj.template_volumes();
            let disks = obj.template_disks();
            let vol_idx = vols.iter().position(|v| v.refers_to(volume));
            let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
            match add {
                Some(disk) => {
                    if vol_idx.is_some() {
                        return Ok(());
                    }
                    let volume_entry =
                        json!({"name": volume, "persistentVolumeClaim": {"claimName": volume, "hotpluggable": true}});
                    if obj.spec.template.spec.volumes.is_some() {
                        ops.push(json!({"op": "add", "path": "/spec/template/spec/volumes/-", "value": volume_entry}));
                    } else {
                        ops.push(json!({"op": "add", "path": "/spec/template/spec/volumes", "value": [volume_entry]}));
                    }
                    if !disks.iter().any(|d| d.name() == volume) {
                        if obj.spec.template.spec.domain.devices.disks.is_some() {
                            ops.push(json!({"op": "add", "path": "/spec/template/spec/domain/devices/disks/-", "value": disk.to_json(volume)}));
                        } else {
                            ops.push(json!({"op": "add", "path": "/spec/template/spec/domain/devices/disks", "value": [disk.to_json(volume)]}));
                        }
                    }
                }
                None => {
                    let Some(i) = vol_idx else { return Ok(()) };
                    let name = vols[i].name();
                    ops.push(json!({"op": "remove", "path": format!("/spec/template/spec/volumes/{i}")}));
                    if let Some(d) = disks.iter().position(|d| d.name() == name) {
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
                    if now.as_ref().map(|v| v.resource_version()) != Some(rv.as_str()) {
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
        let ready = |o: Option<&Vmi>| o.is_some_and(|vmi| attachment_in(vm, None, Some(vmi), volume).is_ready());
        let waited = match &self.vm_view {
            Some(view) => view.wait_vmi(vm, deadline, ready).await,
            None => Waited::Unusable,
        };
        match waited {
            Waited::Done => {}
            Waited::TimedOut => return Err(Error::DeadlineExceeded(format!("timed out waiting for {what}"))),
            Waited::Unusable => {
                wait_typed(self.vmis(), vm, deadline, &what, vmi_of, ready).await?;
            }
        }
        let att = self.attachment(vm, volume).await?;
        if !att.is_ready() {
            return Err(Error::Aborted(format!("volume {volume} changed state in VM {vm} while attaching; retry")));
        }
        Ok(att)
    }

    /// Watches until neither the VM nor its VMI lists the volume (the device is gone from the guest).
    pub async fn wait_detached(&self, vm: &str, volume: &str, deadline: Instant) -> Result<()> {
        let what = format!("volume {volume} to leave VM {vm}");
        wait_typed(self.vms(), vm, deadline, &what, vm_of, |o| {
            o.is_none_or(|v| !attachment_in(vm, Some(v), None, volume).in_vm)
        })
        .await?;
        wait_typed(self.vmis(), vm, deadline, &what, vmi_of, |o| {
            o.is_none_or(|v| !attachment_in(vm, None, Some(v), volume).is_present())
        })
        .await?;
        if let Some(view) = &self.vm_view {
            view.note_detached(volume, vm);
        }
        Ok(())
    }
}
