//! KubeVirt: VMs start/stop into VMIs, hotplug requests in both the legacy
//! (`status.volumeRequests`) and declarative (VM spec) forms, the VMI
//! `volumeStatus` phase machine with attachment pods, and the guest-visible
//! devices (loop device + by-id link in the VM root).

mod hotplug;
mod virtapi;
mod vm;

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

pub use hotplug::{reattach_devices, run_hotplug_controller};
pub use virtapi::{set_run_strategy, VirtApi};
pub use vm::run_vm_controller;

use crate::api::meta;

/// (namespace, vmi) → volume → (backing volume, by-id link).
type Attached = HashMap<(String, String), HashMap<String, (String, String)>>;

/// In-memory bookkeeping of the hotplug controller.
#[derive(Debug, Default)]
pub struct HotplugState {
    /// (namespace, vmi) → volume → (backing volume, by-id link) currently attached.
    pub attached: Mutex<Attached>,
    /// (namespace, vmi, volume) → when the entry entered its current phase.
    pub since: Mutex<HashMap<(String, String, String), tokio::time::Instant>>,
}

/// The `/dev/disk/by-id` name a guest's udev gives the hot-plugged disk.
/// SCSI without serial: libvirt's drive alias `drive-ua-<disk>`; with a serial,
/// its first 20 characters (VPD page 0x83); virtio: `virtio-<serial[:20]>`.
pub fn by_id_name(disk: &Value) -> String {
    let name = meta::str_at(disk, "/name");
    let serial: String = meta::str_at(disk, "/serial").chars().take(20).collect();
    let virtio = disk.pointer("/disk/bus").and_then(Value::as_str) == Some("virtio");
    match (virtio, serial.is_empty()) {
        (true, false) => format!("virtio-{serial}"),
        // Older udev makes no link for a serial-less virtio disk; the simulator
        // uses the disk name cut like a serial so the device stays findable.
        (true, true) => format!("virtio-{}", name.chars().take(20).collect::<String>()),
        (false, false) => format!("scsi-0QEMU_QEMU_HARDDISK_{serial}"),
        (false, true) => format!("scsi-0QEMU_QEMU_HARDDISK_drive-ua-{name}"),
    }
}

/// The VM root directory name of a VM (one simulator keeps VM names unique).
pub fn vm_root_name(_namespace: &str, name: &str) -> String {
    name.to_string()
}

/// Hotpluggable PVC volumes of a VMI/VM template spec: (volume name, claim).
pub fn hotplug_volumes(spec: &Value) -> Vec<(String, String)> {
    crate::controllers::webhooks::claims_of(spec.get("volumes"))
        .into_iter()
        .filter(|(_, _, hot)| *hot)
        .map(|(n, c, _)| (n, c))
        .collect()
}

/// The disk entry named `name` in a spec's `domain.devices.disks`.
pub fn disk_named<'a>(spec: &'a Value, name: &str) -> Option<&'a Value> {
    spec.pointer("/domain/devices/disks").and_then(Value::as_array)?.iter().find(|d| meta::str_at(d, "/name") == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn by_id_names_follow_qemu_and_udev() {
        assert_eq!(
            by_id_name(&json!({"name": "pvc-1", "disk": {"bus": "scsi"}})),
            "scsi-0QEMU_QEMU_HARDDISK_drive-ua-pvc-1"
        );
        assert_eq!(
            by_id_name(&json!({"name": "pvc-1", "serial": "0123456789abcdefghijKLMN", "disk": {"bus": "scsi"}})),
            "scsi-0QEMU_QEMU_HARDDISK_0123456789abcdefghij"
        );
        assert_eq!(by_id_name(&json!({"name": "x", "serial": "abc", "disk": {"bus": "virtio"}})), "virtio-abc");
    }
}
