//! The world file: what a fresh simulator is seeded with (namespaces, host nodes,
//! VMs, storage classes, settings, guest credentials, timing, faults), and the
//! documented default world used without one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::faults::FaultSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostNode {
    pub name: String,
    #[serde(default = "default_zone")]
    pub zone: String,
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_zone() -> String {
    "zone-a".into()
}
fn default_region() -> String {
    "region-1".into()
}
fn default_ns() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}

/// A NIC the guest sees that the VMI does not report (e.g. a Calico veth with
/// `ee:ee:ee:ee:ee:ee`, harvester#6981).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GuestNic {
    pub name: String,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vm {
    pub name: String,
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// Host node it runs on; defaults to round-robin over the host nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_node: Option<String>,
    /// SMBIOS UUID; defaults to KubeVirt's legacy derivation from the VM name only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_uuid: Option<String>,
    /// MACs of its NICs; defaults to one MAC derived from namespace/name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_guest_nics: Vec<GuestNic>,
    #[serde(default = "yes")]
    pub running: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageClass {
    pub name: String,
    #[serde(default = "longhorn")]
    pub provisioner: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub allow_volume_expansion: bool,
}

fn longhorn() -> String {
    "driver.longhorn.io".into()
}

/// A guest cluster's host credentials (the ServiceAccount behind a cloud-config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credentials {
    #[serde(default = "default_ns")]
    pub namespace: String,
    pub service_account: String,
}

/// Latencies of the simulated controllers, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timing {
    #[serde(default = "t_provision")]
    pub provision_ms: u64,
    /// Time from a bound volume entering the VMI spec to `Ready` (three timed phase steps).
    #[serde(default = "t_hotplug")]
    pub hotplug_ms: u64,
    #[serde(default = "t_unplug")]
    pub unplug_ms: u64,
    #[serde(default = "t_snapshot")]
    pub snapshot_ms: u64,
    #[serde(default = "t_expand")]
    pub expand_ms: u64,
    #[serde(default = "t_export")]
    pub export_ms: u64,
}

fn t_provision() -> u64 {
    300
}
fn t_hotplug() -> u64 {
    1000
}
fn t_unplug() -> u64 {
    500
}
fn t_snapshot() -> u64 {
    500
}
fn t_expand() -> u64 {
    300
}
fn t_export() -> u64 {
    500
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            provision_ms: t_provision(),
            hotplug_ms: t_hotplug(),
            unplug_ms: t_unplug(),
            snapshot_ms: t_snapshot(),
            expand_ms: t_expand(),
            export_ms: t_export(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct World {
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub host_nodes: Vec<HostNode>,
    #[serde(default)]
    pub vms: Vec<Vm>,
    #[serde(default)]
    pub storage_classes: Vec<StorageClass>,
    /// Setting name → value (overrides the profile's).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub credentials: Vec<Credentials>,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub faults: FaultSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("reading world file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("world file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("world file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl World {
    /// The default world: host nodes `harvester-1..3` over two zones, running
    /// VMs `guest-1..3` in `default`, classes `harvester-longhorn` (default,
    /// migratable), `replica-2` and the non-migratable RWX class `longhorn-rwx`.
    pub fn default_world() -> Self {
        let node = |name: &str, zone: &str| HostNode { name: name.into(), zone: zone.into(), region: default_region() };
        let vm = |name: &str| Vm {
            name: name.into(),
            namespace: default_ns(),
            host_node: None,
            firmware_uuid: None,
            macs: Vec::new(),
            extra_guest_nics: Vec::new(),
            running: true,
            labels: BTreeMap::new(),
        };
        let params = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self {
            namespaces: Vec::new(),
            host_nodes: vec![
                node("harvester-1", "zone-a"),
                node("harvester-2", "zone-a"),
                node("harvester-3", "zone-b"),
            ],
            vms: vec![vm("guest-1"), vm("guest-2"), vm("guest-3")],
            storage_classes: vec![
                StorageClass {
                    name: "harvester-longhorn".into(),
                    provisioner: longhorn(),
                    default: true,
                    parameters: params(&[
                        ("numberOfReplicas", "3"),
                        ("staleReplicaTimeout", "30"),
                        ("migratable", "true"),
                    ]),
                    allow_volume_expansion: true,
                },
                StorageClass {
                    name: "replica-2".into(),
                    provisioner: longhorn(),
                    default: false,
                    parameters: params(&[
                        ("numberOfReplicas", "2"),
                        ("staleReplicaTimeout", "30"),
                        ("migratable", "true"),
                    ]),
                    allow_volume_expansion: true,
                },
                StorageClass {
                    name: "longhorn-rwx".into(),
                    provisioner: longhorn(),
                    default: false,
                    parameters: params(&[
                        ("numberOfReplicas", "3"),
                        ("staleReplicaTimeout", "2880"),
                        ("fsType", "ext4"),
                        ("nfsOptions", "vers=4.2,noresvport,softerr,timeo=600,retrans=5"),
                    ]),
                    allow_volume_expansion: true,
                },
            ],
            settings: BTreeMap::new(),
            credentials: Vec::new(),
            timing: Timing::default(),
            faults: FaultSpec::default(),
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, WorldError> {
        let mut world: World = serde_saphyr::from_str(text)
            .map_err(|e| WorldError::Parse { path: origin.into(), message: e.to_string() })?;
        world.fill_defaults();
        world.check().map_err(|message| WorldError::Invalid { path: origin.into(), message })?;
        Ok(world)
    }

    /// A world already parsed into JSON (a section of a larger document, such as a scenario).
    pub fn from_value(value: serde_json::Value, origin: &str) -> Result<Self, WorldError> {
        let mut world: World = serde_json::from_value(value)
            .map_err(|e| WorldError::Parse { path: origin.into(), message: e.to_string() })?;
        world.fill_defaults();
        world.check().map_err(|message| WorldError::Invalid { path: origin.into(), message })?;
        Ok(world)
    }

    pub fn load(path: &Path) -> Result<Self, WorldError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| WorldError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// An empty section in a world file means "the default one".
    fn fill_defaults(&mut self) {
        let d = Self::default_world();
        if self.host_nodes.is_empty() {
            self.host_nodes = d.host_nodes;
        }
        if self.storage_classes.is_empty() {
            self.storage_classes = d.storage_classes;
        }
        if self.vms.is_empty() {
            self.vms = d.vms;
        }
        let nodes: Vec<String> = self.host_nodes.iter().map(|n| n.name.clone()).collect();
        for (i, vm) in self.vms.iter_mut().enumerate() {
            if vm.host_node.is_none() {
                vm.host_node = nodes.get(i % nodes.len().max(1)).cloned();
            }
        }
    }

    pub fn check(&self) -> Result<(), String> {
        // Every name becomes an object name, and a VM name a directory under
        // the state dir: refuse what Kubernetes would (and `..` with it).
        for ns in &self.namespaces {
            check_name("namespace", ns, is_dns_label)?;
        }
        for node in &self.host_nodes {
            check_name("host node", &node.name, is_dns_subdomain)?;
        }
        for class in &self.storage_classes {
            check_name("storage class", &class.name, is_dns_subdomain)?;
        }
        for vm in &self.vms {
            check_name("vm", &vm.name, is_dns_label)?;
            check_name("vm namespace", &vm.namespace, is_dns_label)?;
        }
        for cred in &self.credentials {
            check_name("credentials namespace", &cred.namespace, is_dns_label)?;
            check_name("credentials service account", &cred.service_account, is_dns_subdomain)?;
        }
        let nodes: Vec<&str> = self.host_nodes.iter().map(|n| n.name.as_str()).collect();
        for (i, vm) in self.vms.iter().enumerate() {
            // Devices live under DIR/vms/<name>: one name, one VM, whatever its namespace.
            if let Some(other) = self.vms[..i].iter().find(|o| o.name == vm.name) {
                return Err(format!(
                    "vm {}/{}: the name is taken by {}/{} (VM names must be unique across namespaces)",
                    vm.namespace, vm.name, other.namespace, other.name
                ));
            }
            if let Some(h) = &vm.host_node {
                if !nodes.contains(&h.as_str()) {
                    return Err(format!(
                        "vm {}/{}: hostNode {h:?} is not one of the hostNodes ({})",
                        vm.namespace,
                        vm.name,
                        nodes.join(", ")
                    ));
                }
            }
            for mac in vm.macs.iter().chain(vm.extra_guest_nics.iter().map(|n| &n.mac)) {
                if !is_mac(mac) {
                    return Err(format!("vm {}/{}: {mac:?} is not a MAC address", vm.namespace, vm.name));
                }
            }
        }
        let defaults = self.storage_classes.iter().filter(|c| c.default).count();
        if defaults > 1 {
            return Err("more than one storage class is marked default".into());
        }
        self.faults.validate().map_err(|e| format!("faults: {e}"))
    }

    /// Guest credentials, with the default (`default/guest-cluster`) when none are listed.
    pub fn credentials(&self) -> Vec<Credentials> {
        if self.credentials.is_empty() {
            vec![Credentials { namespace: default_ns(), service_account: "guest-cluster".into() }]
        } else {
            self.credentials.clone()
        }
    }

    /// With defaults filled (used when no world file is given).
    pub fn resolved_default() -> Self {
        let mut w = Self::default_world();
        w.fill_defaults();
        w
    }
}

fn check_name(what: &str, name: &str, valid: fn(&str) -> bool) -> Result<(), String> {
    if valid(name) {
        Ok(())
    } else {
        Err(format!("{what} {name:?} is not a valid Kubernetes name (lowercase letters, digits and '-')"))
    }
}

/// RFC 1123 label: what namespaces and VM names must be.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// RFC 1123 subdomain: what node, storage class and service account names must be.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// KubeVirt's legacy firmware UUID: name-based (SHA-1) from the VM name only,
/// so same-named VMs in different namespaces share it.
pub fn legacy_firmware_uuid(vm_name: &str) -> String {
    const KUBEVIRT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1a24a1_4061_4607_8bf4_a3963d0c5895);
    uuid::Uuid::new_v5(&KUBEVIRT_NAMESPACE, vm_name.as_bytes()).to_string()
}

/// A stable locally administered MAC for a VM NIC.
pub fn derived_mac(namespace: &str, name: &str, index: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{namespace}/{name}/{index}").as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", digest[0], digest[1], digest[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_world_is_as_documented() {
        let w = World::resolved_default();
        assert_eq!(w.vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["guest-1", "guest-2", "guest-3"]);
        assert_eq!(w.vms[2].host_node.as_deref(), Some("harvester-3"));
        let rwx = w.storage_classes.iter().find(|c| c.name == "longhorn-rwx").unwrap();
        assert!(rwx.parameters.contains_key("nfsOptions") && !rwx.parameters.contains_key("migratable"));
        assert!(w.storage_classes.iter().find(|c| c.name == "harvester-longhorn").unwrap().default);
    }

    #[test]
    fn typos_are_reported_with_position() {
        let err = World::parse("vms:\n  - name: a\n    hostNod: x\n", "w.yaml").unwrap_err().to_string();
        assert!(err.contains("w.yaml") && err.contains("hostNod"), "{err}");
    }

    #[test]
    fn omitted_sections_are_the_default_ones() {
        let w = World::parse("timing: {hotplugMs: 200}\n", "w.yaml").unwrap();
        assert_eq!(w.vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["guest-1", "guest-2", "guest-3"]);
        assert_eq!(w.vms[1].host_node.as_deref(), Some("harvester-2"));
        assert_eq!(w.timing.hotplug_ms, 200);
    }

    // Found by fuzzing (world_yaml): names Kubernetes refuses were loaded,
    // and a VM name becomes a directory under the state dir.
    #[rstest::rstest]
    #[case("namespaces: [tenantnAmespaces-a]\n")]
    #[case("vms: [{name: ../x}]\n")]
    #[case("vms: [{name: vm, namespace: \"\"}]\n")]
    #[case("hostNodes: [{name: \"a/b\"}]\n")]
    fn invalid_names_are_refused(#[case] text: &str) {
        let err = World::parse(text, "w.yaml").expect_err("an invalid name must be refused");
        assert!(err.to_string().contains("not a valid Kubernetes name"), "{err}");
    }

    #[test]
    fn a_vm_name_twice_is_refused_even_across_namespaces() {
        let text = "namespaces: [a, b]\nvms:\n  - {name: vm, namespace: a}\n  - {name: vm, namespace: b}\n";
        let err = World::parse(text, "w.yaml").unwrap_err().to_string();
        assert!(err.contains("b/vm") && err.contains("a/vm") && err.contains("unique"), "{err}");
    }

    #[test]
    fn unknown_host_node_is_refused() {
        let err = World::parse("vms:\n  - name: a\n    hostNode: nowhere\n", "w.yaml").unwrap_err().to_string();
        assert!(err.contains("nowhere"), "{err}");
    }

    #[test]
    fn legacy_uuid_is_kubevirts_name_based_v5_uuid() {
        // KubeVirt's legacy firmware UUID: UUIDv5 of the VM name in its fixed namespace
        // (value computed independently with Python's uuid.uuid5).
        assert_eq!(legacy_firmware_uuid("guest-1"), "4584ce03-05a8-512e-ab95-c891198ef3db");
        assert_ne!(legacy_firmware_uuid("vm"), legacy_firmware_uuid("vm2"));
        assert_ne!(derived_mac("a", "vm", 0), derived_mac("b", "vm", 0));
    }
}
