//! Admission rules a Harvester host enforces (Kubernetes built-in plugins,
//! Harvester's validating webhooks, KubeVirt's hotplug admitter), per profile.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::meta;
use crate::api::ops::{Admission, AdmissionRequest, Api, Operation};
use crate::api::quantity;
use crate::api::resources::ResourceType;
use crate::profiles::Profile;

pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const LONGHORN: &str = "driver.longhorn.io";

pub struct Webhooks {
    profile: Profile,
    _state_dir: PathBuf,
}

impl Webhooks {
    pub fn new(profile: Profile, state_dir: PathBuf) -> Self {
        Self { profile, _state_dir: state_dir }
    }
}

/// The default StorageClass (annotation `storageclass.kubernetes.io/is-default-class`).
pub fn default_storage_class(api: &Api) -> Option<String> {
    api.list("storage.k8s.io", "storageclasses", None)
        .iter()
        .find(|sc| meta::annotation(sc, "storageclass.kubernetes.io/is-default-class") == Some("true"))
        .map(|sc| meta::name(sc).to_string())
}

/// Claim names a VM template (or VMI spec) references, with whether each is hotpluggable.
pub fn claims_of(spec_volumes: Option<&Value>) -> Vec<(String, String, bool)> {
    spec_volumes
        .and_then(Value::as_array)
        .map(|vols| {
            vols.iter()
                .filter_map(|v| {
                    let claim = v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str)?;
                    let hot =
                        v.pointer("/persistentVolumeClaim/hotpluggable").and_then(Value::as_bool).unwrap_or(false);
                    Some((meta::str_at(v, "/name").to_string(), claim.to_string(), hot))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn vm_claims(vm: &Value) -> Vec<(String, String, bool)> {
    claims_of(vm.pointer("/spec/template/spec/volumes"))
}

/// The provisioner behind a PVC (its StorageClass's), if known.
pub fn provisioner_of(api: &Api, pvc: &Value) -> Option<String> {
    let sc = meta::str_at(pvc, "/spec/storageClassName");
    api.get_opt("storage.k8s.io", "storageclasses", "", sc).map(|s| meta::str_at(&s, "/provisioner").to_string())
}

/// Disks newly added as hotplug targets must use a bus this KubeVirt accepts.
fn check_hotplug_buses(
    profile: &Profile,
    old_disks: Option<&Value>,
    new_disks: Option<&Value>,
    hot_names: &[String],
) -> ApiResult<()> {
    let names = |d: Option<&Value>| -> Vec<String> {
        d.and_then(Value::as_array)
            .map(|a| a.iter().map(|x| meta::str_at(x, "/name").to_string()).collect())
            .unwrap_or_default()
    };
    let before = names(old_disks);
    for disk in new_disks.and_then(Value::as_array).into_iter().flatten() {
        let name = meta::str_at(disk, "/name");
        if before.iter().any(|b| b == name) || !hot_names.iter().any(|h| h == name) {
            continue;
        }
        check_disk_bus(profile, disk)?;
    }
    Ok(())
}

/// KubeVirt's hotplug disk rules: SCSI only before 1.6; virtio too afterwards; LUN SCSI only.
pub fn check_disk_bus(profile: &Profile, disk: &Value) -> ApiResult<()> {
    let name = meta::str_at(disk, "/name");
    if let Some(bus) = disk.pointer("/disk/bus").and_then(Value::as_str) {
        let ok = bus == "scsi" || (profile.virtio_hotplug && bus == "virtio");
        if !ok {
            let msg = if profile.virtio_hotplug {
                format!("hotplugged Disk {name} does not use a scsi or virtio bus")
            } else {
                format!("hotplugged Disk {name} does not use a scsi bus")
            };
            return Err(ApiError::denied(format!(
                "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: {msg}"
            )));
        }
    } else if let Some(bus) = disk.pointer("/lun/bus").and_then(Value::as_str) {
        if bus != "scsi" {
            return Err(ApiError::denied(format!("admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: hotplugged Disk {name} does not use a scsi bus")));
        }
    } else if disk.get("cdrom").is_some() {
        return Err(ApiError::denied(format!("admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: hotplugged Disk {name} must be a disk or lun")));
    }
    Ok(())
}

impl Webhooks {
    fn validate_pvc_update(&self, api: &Api, old: &Value, new: &Value) -> ApiResult<()> {
        let size = |v: &Value| quantity::parse_bytes(meta::str_at(v, "/spec/resources/requests/storage")).unwrap_or(0);
        if size(new) <= size(old) {
            return Ok(());
        }
        let name = meta::name(new);
        let sc_name = meta::str_at(new, "/spec/storageClassName");
        let sc = api.get_opt("storage.k8s.io", "storageclasses", "", sc_name);
        if !sc.as_deref().is_some_and(|s| s.get("allowVolumeExpansion") == Some(&json!(true))) {
            return Err(ApiError::forbidden(
                "",
                "persistentvolumeclaims",
                name,
                format!("persistentvolumeclaims \"{name}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"),
            ));
        }
        let ns = meta::namespace(new);
        let running_users: Vec<String> = api
            .list("kubevirt.io", "virtualmachines", Some(ns))
            .iter()
            .filter(|vm| vm_claims(vm).iter().any(|(_, c, _)| c == name))
            .filter(|vm| api.get_opt("kubevirt.io", "virtualmachineinstances", ns, meta::name(vm)).is_some())
            .map(|vm| format!("{ns}/{}", meta::name(vm)))
            .collect();
        let Some(vm) = running_users.first() else { return Ok(()) };
        let deny = |why: String| {
            Err(ApiError::denied(format!(
                "admission webhook \"validator.harvesterhci.io\" denied the request: PVC_EXPAND: {why}"
            )))
        };
        if !self.profile.online_expansion {
            return deny(format!(
                "can not expand volume {name} while it is used by running VM {vm}; stop the VM first"
            ));
        }
        let hotplugged_fs = api
            .get_opt("kubevirt.io", "virtualmachines", ns, vm.rsplit('/').next().unwrap_or(""))
            .is_some_and(|v| vm_claims(&v).iter().any(|(_, c, hot)| c == name && *hot))
            && meta::str_at(new, "/spec/volumeMode") == "Filesystem";
        if hotplugged_fs {
            return deny(format!("online expansion of hot-plugged filesystem volume {name} is not supported"));
        }
        let provisioner = sc.as_deref().map(|s| meta::str_at(s, "/provisioner").to_string()).unwrap_or_default();
        let setting = api.get_opt("harvesterhci.io", "settings", "", "csi-online-expand-validation");
        let allowed = setting
            .as_deref()
            .map(|s| {
                let v = meta::str_at(s, "/value");
                let text = if v.is_empty() { meta::str_at(s, "/default") } else { v };
                serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|m| m.get(&provisioner).and_then(Value::as_bool))
                    .unwrap_or(false)
            })
            .unwrap_or(false);
        if !allowed {
            return deny(format!("online expansion is not supported for provisioner {provisioner}"));
        }
        Ok(())
    }

    fn validate_pvc_delete(&self, api: &Api, pvc: &Value) -> ApiResult<()> {
        let (ns, name) = (meta::namespace(pvc), meta::name(pvc));
        for vm in api.list("kubevirt.io", "virtualmachines", Some(ns)) {
            if meta::is_deleting(&vm) {
                continue;
            }
            if vm_claims(&vm).iter().any(|(_, c, _)| c == name) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("admission webhook \"validator.harvesterhci.io\" denied the request: can not delete the volume {name} which is currently attached to VM: {ns}/{}", meta::name(&vm)),
                ));
            }
        }
        Ok(())
    }

    fn validate_vm(&self, api: &Api, old: Option<&Value>, new: &Value) -> ApiResult<()> {
        let ns = meta::namespace(new);
        let me = meta::name(new);
        let before: Vec<String> = old.map(vm_claims).unwrap_or_default().into_iter().map(|(_, c, _)| c).collect();
        for (_, claim, _) in vm_claims(new) {
            if before.contains(&claim) {
                continue;
            }
            let Some(pvc) = api.get_opt("", "persistentvolumeclaims", ns, &claim) else { continue };
            if provisioner_of(api, &pvc).as_deref() != Some(LONGHORN) {
                continue;
            }
            let used_elsewhere = api
                .list("kubevirt.io", "virtualmachines", Some(ns))
                .iter()
                .any(|vm| meta::name(vm) != me && vm_claims(vm).iter().any(|(_, c, _)| *c == claim));
            if used_elsewhere {
                return Err(ApiError::denied(format!(
                    "admission webhook \"validator.harvesterhci.io\" denied the request: PVC {ns}/{claim} is already used by other VM, please use a shareable RWX volume."
                )));
            }
        }
        let hot: Vec<String> = vm_claims(new).into_iter().filter(|(_, _, h)| *h).map(|(n, _, _)| n).collect();
        check_hotplug_buses(
            &self.profile,
            old.and_then(|o| o.pointer("/spec/template/spec/domain/devices/disks")),
            new.pointer("/spec/template/spec/domain/devices/disks"),
            &hot,
        )
    }
}

impl Admission for Webhooks {
    fn mutate(&self, api: &Api, op: Operation, rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
        if op == Operation::Create && rt.group.is_empty() && rt.plural == "persistentvolumeclaims" {
            // DefaultStorageClass admission: only when the field is absent (not "").
            if obj.pointer("/spec/storageClassName").is_none() {
                if let Some(default) = default_storage_class(api) {
                    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("storageClassName".into(), json!(default));
                    }
                }
            }
            if obj.pointer("/spec/volumeMode").is_none() {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("volumeMode".into(), json!("Filesystem"));
                }
            }
            meta::add_finalizer(obj, PVC_PROTECTION);
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({"phase": "Pending"}));
            }
        }
        Ok(())
    }

    fn validate(&self, api: &Api, req: &AdmissionRequest<'_>) -> ApiResult<()> {
        match (req.resource.group, req.resource.plural, req.operation) {
            ("", "persistentvolumeclaims", Operation::Update) if req.subresource.is_empty() => match (req.old, req.new)
            {
                (Some(old), Some(new)) => self.validate_pvc_update(api, old, new),
                _ => Ok(()),
            },
            ("", "persistentvolumeclaims", Operation::Delete) => match req.old {
                Some(old) => self.validate_pvc_delete(api, old),
                None => Ok(()),
            },
            ("kubevirt.io", "virtualmachines", Operation::Create | Operation::Update) if req.subresource.is_empty() => {
                match req.new {
                    Some(new) => self.validate_vm(api, req.old, new),
                    None => Ok(()),
                }
            }
            ("kubevirt.io", "virtualmachineinstances", Operation::Update) => match (req.old, req.new) {
                (Some(old), Some(new)) => {
                    let hot: Vec<String> = claims_of(new.pointer("/spec/volumes"))
                        .into_iter()
                        .filter(|(_, _, h)| *h)
                        .map(|(n, _, _)| n)
                        .collect();
                    check_hotplug_buses(
                        &self.profile,
                        old.pointer("/spec/domain/devices/disks"),
                        new.pointer("/spec/domain/devices/disks"),
                        &hot,
                    )
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}
