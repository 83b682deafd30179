//! Where a host volume is attached: one VM's view of it (template, pending legacy
//! request, VMI spec, VMI volume status), and the map of every volume any VM holds.

use std::collections::{BTreeMap, BTreeSet};

use super::objects::{Disk, Pending, VolumeStatus};
use super::{Vm, Vmi};

/// One VM's view of a volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub vm: String,
    /// Listed in the VM template (persistent hotplug) or pending there (legacy request).
    pub in_vm: bool,
    /// Listed in the running VMI's spec.
    pub in_vmi: bool,
    /// The VMI `volumeStatus` entry, while one exists.
    pub status: Option<VolumeStatus>,
    /// The disk as the VM/VMI spec describes it (bus, serial).
    pub disk: Option<Disk>,
}

impl Attachment {
    pub fn phase(&self) -> &str {
        self.status.as_ref().map(VolumeStatus::phase).unwrap_or("")
    }
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(VolumeStatus::is_ready)
    }
    pub fn is_present(&self) -> bool {
        self.in_vm || self.in_vmi || self.status.is_some()
    }
    /// Whether the disk was hot-plugged read-only.
    pub fn readonly(&self) -> bool {
        self.disk.as_ref().is_some_and(Disk::readonly)
    }

    /// The guest's `/dev/disk/by-id` name for this disk.
    pub fn by_id_name(&self, volume: &str) -> String {
        let disk = self.disk.as_ref();
        let serial = disk.map(Disk::serial).filter(|s| !s.is_empty());
        let virtio = disk.is_some_and(|d| d.bus() == "virtio");
        crate::names::by_id_name(volume, serial, virtio)
    }
}

/// The view of `volume` from one VM and its VMI.
pub fn attachment_in(vm_name: &str, vm: Option<&Vm>, vmi: Option<&Vmi>, volume: &str) -> Attachment {
    let vm_vol = vm.and_then(|v| v.template_volumes().iter().find(|x| x.refers_to(volume)));
    let pending = vm.and_then(|v| v.pending_request(volume));
    let vmi_vol = vmi.and_then(|v| v.volumes().iter().find(|x| x.refers_to(volume)));
    let status = vmi.and_then(|v| v.volume_status(volume));
    let disk_name = vm_vol.or(vmi_vol).map(|v| v.name()).unwrap_or(volume);
    let disk = vmi
        .and_then(|v| v.disk(disk_name))
        .or_else(|| vm.and_then(|v| v.template_disk(disk_name)))
        .or_else(|| vm.and_then(|v| v.requested_disk(volume)))
        .cloned();
    Attachment {
        vm: vm_name.to_string(),
        in_vm: vm_vol.is_some() || pending == Some(Pending::Add),
        in_vmi: vmi_vol.is_some(),
        status: status.cloned(),
        disk,
    }
}

/// Attachments keyed by host PVC, counting everything that may hold the volume: the VM
/// template, pending legacy requests, the VMI spec and the VMI's volume status.
pub fn attachments_by_volume(vms: &[Vm], vmis: &[Vmi]) -> BTreeMap<String, Vec<Attachment>> {
    let names: BTreeSet<&str> = vms.iter().map(Vm::name).chain(vmis.iter().map(Vmi::name)).collect();
    let mut map: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
    for name in names {
        let vm = vms.iter().find(|v| v.name() == name);
        let vmi = vmis.iter().find(|v| v.name() == name);
        for volume in volumes_named(vm, vmi) {
            let a = attachment_in(name, vm, vmi, volume);
            if a.is_present() {
                map.entry(volume.to_string()).or_default().push(a);
            }
        }
    }
    map
}

/// Every host PVC a VM and its VMI mention: template, pending requests, VMI spec
/// and volume status.
pub fn volumes_named<'a>(vm: Option<&'a Vm>, vmi: Option<&'a Vmi>) -> BTreeSet<&'a str> {
    let mut volumes: BTreeSet<&str> = BTreeSet::new();
    if let Some(vm) = vm {
        volumes.extend(vm.template_volumes().iter().map(|v| v.host_pvc()));
        volumes.extend(vm.requested_volumes());
    }
    if let Some(vmi) = vmi {
        volumes.extend(vmi.volumes().iter().map(|v| v.host_pvc()));
        volumes.extend(vmi.volume_statuses().iter().map(VolumeStatus::host_pvc));
    }
    volumes.remove("");
    volumes
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::{json, Value};

    fn vm_with(vols: Value, requests: Value) -> Value {
        json!({"metadata": {"name": "vm"}, "spec": {"template": {"spec": {"volumes": vols, "domain": {"devices": {"disks": [
            {"name": "pvc-a", "disk": {"bus": "scsi"}, "serial": "hcsi0000000000000001"}]}}}}},
            "status": {"volumeRequests": requests}})
    }
    fn vm(v: Value) -> Vm {
        serde_json::from_value(v).expect("VM fixture parses")
    }
    fn vmi(v: Value) -> Vmi {
        serde_json::from_value(v).expect("VMI fixture parses")
    }

    #[test]
    fn attachment_sees_template_pending_and_status() {
        let vm_obj = vm(vm_with(
            json!([{"name": "pvc-a", "persistentVolumeClaim": {"claimName": "pvc-a", "hotpluggable": true}}]),
            json!([]),
        ));
        let vmi_obj = vmi(
            json!({"spec": {"volumes": []}, "status": {"volumeStatus": [{"name": "pvc-a", "phase": "Ready", "target": "sda", "hotplugVolume": {}}]}}),
        );
        let a = attachment_in("vm", Some(&vm_obj), Some(&vmi_obj), "pvc-a");
        assert!(a.in_vm && !a.in_vmi && a.is_ready());
        assert_eq!(a.by_id_name("pvc-a"), "scsi-0QEMU_QEMU_HARDDISK_hcsi0000000000000001");

        let pending =
            vm(vm_with(json!([]), json!([{"addVolumeOptions": {"name": "pvc-b", "disk": {"disk": {"bus": "scsi"}}}}])));
        let b = attachment_in("vm", Some(&pending), None, "pvc-b");
        assert!(b.in_vm && !b.is_ready());
        assert_eq!(b.by_id_name("pvc-b"), "scsi-0QEMU_QEMU_HARDDISK_drive-ua-pvc-b");

        assert!(!attachment_in("vm", Some(&vm_obj), Some(&vmi_obj), "pvc-z").is_present());
    }

    /// Which disk description an attachment uses: the VMI's, else the template's, else a pending request's.
    #[rstest]
    #[case::vmi_first(true, true, true, "from-vmi")]
    #[case::then_template(false, true, true, "from-template")]
    #[case::then_request(false, false, true, "from-request")]
    #[case::none(false, false, false, "")]
    fn disk_precedence(#[case] in_vmi: bool, #[case] in_template: bool, #[case] requested: bool, #[case] serial: &str) {
        let disk =
            |serial: &str| json!({"name": "pvc-a", "serial": serial, "disk": {"bus": "virtio", "readonly": true}});
        let disks = |on: bool, serial: &str| if on { json!([disk(serial)]) } else { json!([]) };
        let vm_obj = vm(
            json!({"spec": {"template": {"spec": {"domain": {"devices": {"disks": disks(in_template, "from-template")}}}}},
            "status": {"volumeRequests": if requested { json!([{"addVolumeOptions": {"name": "pvc-a", "disk": disk("from-request")}}]) } else { json!([]) }}}),
        );
        let vmi_obj = vmi(json!({"spec": {"domain": {"devices": {"disks": disks(in_vmi, "from-vmi")}}}}));
        let a = attachment_in("vm", Some(&vm_obj), Some(&vmi_obj), "pvc-a");
        assert_eq!(a.disk.as_ref().map(Disk::serial).unwrap_or(""), serial);
        assert_eq!(a.readonly(), !serial.is_empty());
        let want_by_id = if serial.is_empty() {
            "scsi-0QEMU_QEMU_HARDDISK_drive-ua-pvc-a".to_string()
        } else {
            format!("virtio-{serial}")
        };
        assert_eq!(a.by_id_name("pvc-a"), want_by_id);
    }

    #[test]
    fn the_disk_is_found_under_the_volume_name_when_the_claim_differs() {
        let vm_obj = vm(json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": "pvc-a"}}],
            "domain": {"devices": {"disks": [{"name": "disk-0", "serial": "s0", "disk": {"bus": "scsi"}}]}}}}}}));
        let a = attachment_in("vm", Some(&vm_obj), None, "pvc-a");
        assert!(a.in_vm);
        assert_eq!(a.disk.as_ref().map(Disk::serial), Some("s0"));
    }

    #[rstest]
    #[case::none(None, "", false)]
    #[case::attaching(Some(json!({"name": "pvc-a", "phase": "AttachedToNode"})), "AttachedToNode", false)]
    #[case::ready(Some(json!({"name": "pvc-a", "phase": "Ready", "target": "sdb"})), "Ready", true)]
    fn phase_and_readiness(#[case] status: Option<Value>, #[case] phase: &str, #[case] ready: bool) {
        let statuses = status.map(|s| json!([s])).unwrap_or(json!([]));
        let vmi_obj = vmi(json!({"status": {"volumeStatus": statuses}}));
        let a = attachment_in("vm", None, Some(&vmi_obj), "pvc-a");
        assert_eq!((a.phase(), a.is_ready(), a.is_present()), (phase, ready, !phase.is_empty()));
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

        let map = attachments_by_volume(&[vm(vm1), vm(vm2), vm(vm3)], &[vmi(vmi3), vmi(vmi4)]);
        let vms = |volume: &str| map.get(volume).map(|l| l.iter().map(|a| a.vm.as_str()).collect::<Vec<_>>());
        assert_eq!(vms("pvc-a"), Some(vec!["vm-1", "vm-4"]));
        assert_eq!(vms("pvc-b"), Some(vec!["vm-2"]));
        assert_eq!(vms("pvc-c"), Some(vec!["vm-3"]));
        assert_eq!(vms("disk-0"), None, "keyed by claim, not disk name");
        assert_eq!(map.len(), 3, "{:?}", map.keys().collect::<Vec<_>>());
    }

    #[test]
    fn a_pending_remove_still_counts_while_the_template_lists_the_volume() {
        let v = vm(json!({"metadata": {"name": "vm-1"},
            "spec": {"template": {"spec": {"volumes": [{"name": "pvc-a", "persistentVolumeClaim": {"claimName": "pvc-a"}}]}}},
            "status": {"volumeRequests": [{"removeVolumeOptions": {"name": "pvc-a"}}]}}));
        let map = attachments_by_volume(&[v], &[]);
        assert_eq!(map.get("pvc-a").map(Vec::len), Some(1));
    }
}
