//! The parts of KubeVirt VirtualMachines and VirtualMachineInstances this driver
//! reads, typed (kubevirt.io/v1). Everything else in those objects is ignored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::host::shape::or_default;

/// A VirtualMachine: its template (persistent disks and volumes), its state, and
/// the hotplug requests the legacy subresource queued in its status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Vm {
    #[serde(default, deserialize_with = "or_default")]
    pub(in crate::host) metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub(in crate::host) spec: VmSpec,
    #[serde(default, deserialize_with = "or_default")]
    pub(in crate::host) status: VmStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct VmSpec {
    #[serde(default, deserialize_with = "or_default")]
    pub template: VmTemplate,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct VmTemplate {
    #[serde(default, deserialize_with = "or_default")]
    pub spec: InstanceSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(in crate::host) struct VmStatus {
    pub printable_status: Option<String>,
    pub ready: Option<bool>,
    pub volume_requests: Option<Vec<VolumeRequest>>,
}

/// A legacy hotplug request still pending in the VM status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(in crate::host) struct VolumeRequest {
    pub add_volume_options: Option<AddVolumeOptions>,
    pub remove_volume_options: Option<RemoveVolumeOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct AddVolumeOptions {
    pub name: Option<String>,
    pub disk: Option<Disk>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct RemoveVolumeOptions {
    pub name: Option<String>,
}

/// A VirtualMachineInstance: the running VM, its devices and the hotplug progress.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Vmi {
    #[serde(default, deserialize_with = "or_default")]
    pub(in crate::host) metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub(in crate::host) spec: InstanceSpec,
    #[serde(default, deserialize_with = "or_default")]
    pub(in crate::host) status: VmiStatus,
}

/// The instance spec: a VMI's `spec`, and a VM's `spec.template.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct InstanceSpec {
    /// `None` when the list is absent (a JSON patch must then create it, not append).
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, deserialize_with = "or_default")]
    pub domain: Domain,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct Domain {
    #[serde(default, deserialize_with = "or_default")]
    pub devices: Devices,
    #[serde(default, deserialize_with = "or_default")]
    pub firmware: Firmware,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct Devices {
    /// `None` when the list is absent, as for `volumes`.
    pub disks: Option<Vec<Disk>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct Firmware {
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(in crate::host) struct VmiStatus {
    pub node_name: Option<String>,
    pub interfaces: Option<Vec<Interface>>,
    pub volume_status: Option<Vec<VolumeStatus>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(in crate::host) struct Interface {
    pub mac: Option<String>,
}

/// A volume of a VM template or VMI spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    name: Option<String>,
    persistent_volume_claim: Option<ClaimSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimSource {
    claim_name: Option<String>,
    hotpluggable: Option<bool>,
}

/// A disk of a VM template or VMI spec (or of a pending hotplug request).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Disk {
    name: Option<String>,
    serial: Option<String>,
    disk: Option<DiskTarget>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
struct DiskTarget {
    bus: Option<String>,
    readonly: Option<bool>,
}

/// A VMI `status.volumeStatus` entry: where a (hot-plugged) volume stands.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    name: Option<String>,
    phase: Option<String>,
    target: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    persistent_volume_claim_info: Option<ClaimInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimInfo {
    claim_name: Option<String>,
}

fn text(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

fn list<T>(l: &Option<Vec<T>>) -> &[T] {
    l.as_deref().unwrap_or_default()
}

impl Vm {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
    pub(in crate::host) fn resource_version(&self) -> &str {
        self.metadata.resource_version.as_deref().unwrap_or("")
    }
    /// KubeVirt's summary of the VM state (`Running`, `Stopped`, …; "" when unset).
    pub fn printable_status(&self) -> &str {
        text(&self.status.printable_status)
    }
    /// Running with its guest up (`printableStatus` Running and `ready`): the only
    /// state in which a disk may be plugged into it.
    pub fn is_running(&self) -> bool {
        self.printable_status() == "Running" && self.status.ready == Some(true)
    }
    /// The printable status for messages ("unknown" when unset).
    pub fn status_for_messages(&self) -> &str {
        match self.printable_status() {
            "" => "unknown",
            s => s,
        }
    }
    pub fn template_volumes(&self) -> &[Volume] {
        list(&self.spec.template.spec.volumes)
    }
    pub fn template_disks(&self) -> &[Disk] {
        list(&self.spec.template.spec.domain.devices.disks)
    }
    /// The template volumes marked hot-pluggable.
    pub fn hotplugged_volumes(&self) -> impl Iterator<Item = &Volume> {
        self.template_volumes().iter().filter(|v| v.hotpluggable())
    }
    /// The template disk named `name` (the first, as KubeVirt names are unique).
    pub fn template_disk(&self, name: &str) -> Option<&Disk> {
        self.template_disks().iter().find(|d| d.name() == name)
    }
    fn volume_requests(&self) -> &[VolumeRequest] {
        list(&self.status.volume_requests)
    }
    /// The first pending legacy request naming `volume`.
    pub(in crate::host) fn pending_request(&self, volume: &str) -> Option<Pending> {
        self.volume_requests().iter().find_map(|r| {
            if r.add_volume_options.as_ref().is_some_and(|o| text(&o.name) == volume) {
                Some(Pending::Add)
            } else if r.remove_volume_options.as_ref().is_some_and(|o| text(&o.name) == volume) {
                Some(Pending::Remove)
            } else {
                None
            }
        })
    }
    /// Every volume named by a pending add or remove request.
    pub(in crate::host) fn requested_volumes(&self) -> impl Iterator<Item = &str> {
        self.volume_requests()
            .iter()
            .flat_map(|r| {
                [
                    r.add_volume_options.as_ref().map(|o| text(&o.name)),
                    r.remove_volume_options.as_ref().map(|o| text(&o.name)),
                ]
            })
            .flatten()
            .filter(|n| !n.is_empty())
    }
    /// The disk of the first pending add request for `volume`, if that request gives one.
    pub(in crate::host) fn requested_disk(&self, volume: &str) -> Option<&Disk> {
        self.volume_requests()
            .iter()
            .filter_map(|r| r.add_volume_options.as_ref())
            .find(|o| text(&o.name) == volume)
            .and_then(|o| o.disk.as_ref())
    }
}

/// A pending legacy hotplug request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::host) enum Pending {
    Add,
    Remove,
}

impl Vmi {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
    /// The firmware UUID the guest sees as its product UUID ("" when unset).
    pub fn firmware_uuid(&self) -> &str {
        text(&self.spec.domain.firmware.uuid)
    }
    /// The MACs of the VMI's interfaces, as reported (unset ones skipped).
    pub fn interface_macs(&self) -> impl Iterator<Item = &str> {
        list(&self.status.interfaces).iter().map(|i| text(&i.mac)).filter(|m| !m.is_empty())
    }
    /// The host node running the VMI ("" when not scheduled).
    pub fn node_name(&self) -> &str {
        text(&self.status.node_name)
    }
    pub fn volumes(&self) -> &[Volume] {
        list(&self.spec.volumes)
    }
    pub(in crate::host) fn disk(&self, name: &str) -> Option<&Disk> {
        list(&self.spec.domain.devices.disks).iter().find(|d| d.name() == name)
    }
    pub fn volume_statuses(&self) -> &[VolumeStatus] {
        list(&self.status.volume_status)
    }
    /// The status entry of host PVC `volume` (by entry name or claim).
    pub fn volume_status(&self, volume: &str) -> Option<&VolumeStatus> {
        self.volume_statuses().iter().find(|s| s.name() == volume || s.claim() == volume)
    }
}

#[cfg(test)]
impl Vmi {
    /// A VMI with only what identifies it: name, firmware UUID and interface MACs.
    pub fn with_identity(name: &str, uuid: &str, macs: &[&str]) -> Self {
        let interfaces = macs.iter().map(|m| Interface { mac: Some(m.to_string()) }).collect();
        Self {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: InstanceSpec {
                domain: Domain { firmware: Firmware { uuid: Some(uuid.into()) }, ..Default::default() },
                ..Default::default()
            },
            status: VmiStatus { interfaces: Some(interfaces), ..Default::default() },
        }
    }
}

impl Volume {
    pub fn name(&self) -> &str {
        text(&self.name)
    }
    /// `persistentVolumeClaim.claimName` ("" for other volume sources).
    pub fn claim(&self) -> &str {
        self.persistent_volume_claim.as_ref().map(|c| text(&c.claim_name)).unwrap_or("")
    }
    pub fn hotpluggable(&self) -> bool {
        self.persistent_volume_claim.as_ref().is_some_and(|c| c.hotpluggable == Some(true))
    }
    /// Whether this entry refers to the host PVC `volume` (by name or claim).
    pub fn refers_to(&self, volume: &str) -> bool {
        self.name() == volume || self.claim() == volume
    }
    /// The host PVC this entry names: its claim, else its own name.
    pub fn host_pvc(&self) -> &str {
        match self.claim() {
            "" => self.name(),
            claim => claim,
        }
    }
}

impl Disk {
    pub fn name(&self) -> &str {
        text(&self.name)
    }
    pub fn serial(&self) -> &str {
        text(&self.serial)
    }
    /// `disk.bus` ("" when unset or not a plain disk).
    pub fn bus(&self) -> &str {
        self.disk.as_ref().map(|d| text(&d.bus)).unwrap_or("")
    }
    pub fn readonly(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.readonly == Some(true))
    }
}

impl VolumeStatus {
    pub fn name(&self) -> &str {
        text(&self.name)
    }
    /// The hotplug phase (`Pending`, `AttachedToNode`, `Ready`, `Detaching`, …; "" when unset).
    pub fn phase(&self) -> &str {
        text(&self.phase)
    }
    /// The guest device (`sda`, …; "" until the disk is in the domain).
    pub fn target(&self) -> &str {
        text(&self.target)
    }
    pub fn reason(&self) -> &str {
        text(&self.reason)
    }
    pub fn message(&self) -> &str {
        text(&self.message)
    }
    /// `persistentVolumeClaimInfo.claimName` ("" when unset).
    pub fn claim(&self) -> &str {
        self.persistent_volume_claim_info.as_ref().map(|c| text(&c.claim_name)).unwrap_or("")
    }
    /// The host PVC this entry is about: its claim, else its own name.
    pub fn host_pvc(&self) -> &str {
        match self.claim() {
            "" => self.name(),
            claim => claim,
        }
    }
    /// In the guest: phase `Ready` with a target device.
    pub fn is_ready(&self) -> bool {
        self.phase() == "Ready" && !self.target().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::{json, Value};

    fn vm(v: Value) -> Vm {
        serde_json::from_value(v).expect("VM fixture parses")
    }
    fn vmi(v: Value) -> Vmi {
        serde_json::from_value(v).expect("VMI fixture parses")
    }

    #[rstest]
    #[case::running_ready(json!({"status": {"printableStatus": "Running", "ready": true}}), "Running", true)]
    #[case::running_not_ready(json!({"status": {"printableStatus": "Running", "ready": false}}), "Running", false)]
    #[case::ready_unset(json!({"status": {"printableStatus": "Running"}}), "Running", false)]
    #[case::stopped(json!({"status": {"printableStatus": "Stopped", "ready": true}}), "Stopped", false)]
    #[case::no_status(json!({"metadata": {"name": "vm"}}), "", false)]
    #[case::null_status(json!({"status": null}), "", false)]
    fn vm_state(#[case] v: Value, #[case] printable: &str, #[case] running: bool) {
        let vm = vm(v);
        assert_eq!((vm.printable_status(), vm.is_running()), (printable, running));
        let shown = if printable.is_empty() { "unknown" } else { printable };
        assert_eq!(vm.status_for_messages(), shown);
    }

    #[rstest]
    #[case::claim_hotpluggable(json!({"name": "d", "persistentVolumeClaim": {"claimName": "pvc-a", "hotpluggable": true}}), "d", "pvc-a", true, "pvc-a")]
    #[case::claim_not_hotpluggable(json!({"name": "d", "persistentVolumeClaim": {"claimName": "pvc-a"}}), "d", "pvc-a", false, "pvc-a")]
    #[case::hotpluggable_false(json!({"name": "d", "persistentVolumeClaim": {"claimName": "pvc-a", "hotpluggable": false}}), "d", "pvc-a", false, "pvc-a")]
    #[case::data_volume(json!({"name": "rootdisk", "dataVolume": {"name": "dv"}}), "rootdisk", "", false, "rootdisk")]
    #[case::empty(json!({}), "", "", false, "")]
    fn volumes(#[case] v: Value, #[case] name: &str, #[case] claim: &str, #[case] hot: bool, #[case] host_pvc: &str) {
        let vol: Volume = serde_json::from_value(v).expect("volume parses");
        assert_eq!((vol.name(), vol.claim(), vol.hotpluggable(), vol.host_pvc()), (name, claim, hot, host_pvc));
    }

    #[rstest]
    #[case::scsi_rw(json!({"name": "a", "serial": "s1", "disk": {"bus": "scsi"}}), "s1", "scsi", false)]
    #[case::virtio_ro(json!({"name": "a", "disk": {"bus": "virtio", "readonly": true}}), "", "virtio", true)]
    #[case::cdrom(json!({"name": "a", "cdrom": {"bus": "sata"}}), "", "", false)]
    #[case::null_target(json!({"name": "a", "disk": null, "serial": null}), "", "", false)]
    fn disks(#[case] v: Value, #[case] serial: &str, #[case] bus: &str, #[case] readonly: bool) {
        let d: Disk = serde_json::from_value(v).expect("disk parses");
        assert_eq!((d.name(), d.serial(), d.bus(), d.readonly()), ("a", serial, bus, readonly));
    }

    #[rstest]
    #[case::ready(json!({"name": "pvc-a", "phase": "Ready", "target": "sda"}), "pvc-a", true)]
    #[case::ready_without_target(json!({"name": "pvc-a", "phase": "Ready"}), "pvc-a", false)]
    #[case::attaching(json!({"name": "pvc-a", "phase": "AttachedToNode", "target": ""}), "pvc-a", false)]
    #[case::named_by_claim_info(json!({"name": "disk-0", "phase": "Ready", "target": "sdb", "persistentVolumeClaimInfo": {"claimName": "pvc-a"}}), "pvc-a", true)]
    fn volume_status(#[case] s: Value, #[case] host_pvc: &str, #[case] ready: bool) {
        let s: VolumeStatus = serde_json::from_value(s).expect("status parses");
        assert_eq!((s.host_pvc(), s.is_ready()), (host_pvc, ready));
    }

    #[test]
    fn volume_status_keeps_reason_and_message() {
        let v = vmi(json!({"status": {"volumeStatus": [
            {"name": "disk-0", "persistentVolumeClaimInfo": {"claimName": "pvc-a"}, "phase": "Failed",
             "reason": "FailedAttach", "message": "no room"}]}}));
        let s = v.volume_status("pvc-a").expect("found by claim");
        assert_eq!((s.phase(), s.reason(), s.message()), ("Failed", "FailedAttach", "no room"));
        assert!(v.volume_status("disk-0").is_some(), "found by name");
        assert!(v.volume_status("pvc-b").is_none());
    }

    #[test]
    fn vmi_identity_fields() {
        let v = vmi(json!({"metadata": {"name": "guest-1"},
            "spec": {"domain": {"firmware": {"uuid": "U-1"}}},
            "status": {"nodeName": "host-a", "interfaces": [{"mac": "52:54:00:00:00:01"}, {"name": "no-mac"}, {"mac": ""}]}}));
        assert_eq!((v.name(), v.firmware_uuid(), v.node_name()), ("guest-1", "U-1", "host-a"));
        assert_eq!(v.interface_macs().collect::<Vec<_>>(), ["52:54:00:00:00:01"]);
        let empty = vmi(json!({}));
        assert_eq!((empty.name(), empty.firmware_uuid(), empty.node_name()), ("", "", ""));
        assert_eq!(empty.interface_macs().count(), 0);
    }

    #[test]
    fn the_identity_constructor_matches_the_wire_shape() {
        let wire = vmi(json!({"metadata": {"name": "g"}, "spec": {"domain": {"firmware": {"uuid": "u"}}},
            "status": {"interfaces": [{"mac": "52:54:00:00:00:01"}]}}));
        let built = Vmi::with_identity("g", "u", &["52:54:00:00:00:01"]);
        assert_eq!((built.name(), built.firmware_uuid()), (wire.name(), wire.firmware_uuid()));
        assert_eq!(built.interface_macs().collect::<Vec<_>>(), wire.interface_macs().collect::<Vec<_>>());
    }

    #[test]
    fn pending_requests() {
        let v = vm(json!({"status": {"volumeRequests": [
            {"addVolumeOptions": {"name": "pvc-a", "disk": {"name": "pvc-a", "serial": "s-a"}}},
            {"removeVolumeOptions": {"name": "pvc-b"}},
            {"addVolumeOptions": {"name": "pvc-c"}},
            {}]}}));
        assert_eq!(v.pending_request("pvc-a"), Some(Pending::Add));
        assert_eq!(v.pending_request("pvc-b"), Some(Pending::Remove));
        assert_eq!(v.pending_request("pvc-z"), None);
        assert_eq!(v.requested_volumes().collect::<Vec<_>>(), ["pvc-a", "pvc-b", "pvc-c"]);
        assert_eq!(v.requested_disk("pvc-a").map(Disk::serial), Some("s-a"));
        assert_eq!(v.requested_disk("pvc-c"), None, "a request without a disk");
    }

    #[test]
    fn hotplugged_template_volumes() {
        let v = vm(json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "root"}},
            {"name": "pvc-a", "persistentVolumeClaim": {"claimName": "pvc-a", "hotpluggable": true}},
            {"name": "cloudinit", "cloudInitNoCloud": {}}]}}}}));
        assert_eq!(v.hotplugged_volumes().map(Volume::name).collect::<Vec<_>>(), ["pvc-a"]);
        assert_eq!(vm(json!({"spec": {"template": {"spec": {"volumes": null}}}})).hotplugged_volumes().count(), 0);
    }
}
