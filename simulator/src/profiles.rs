//! Harvester version profiles: everything that differs between releases, in one
//! place — the guest credentials' RBAC (reference §5.1), which CRDs exist, the
//! hotplug mode and bus rules, webhooks, and the version strings served.

use serde_json::{json, Value};

use crate::api::resources::ResourceType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotplugMode {
    /// `HotplugVolumes` gate: VM addvolume queues `status.volumeRequests`; VMI subresources work.
    Legacy,
    /// `DeclarativeHotplugVolumes` gate: VM spec is the source of truth; VMI
    /// subresource calls on VM-owned VMIs are refused.
    Declarative,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// Value of the `server-version` setting.
    pub server_version: &'static str,
    /// What `/version` reports (the RKE2 release Harvester ships).
    pub kubernetes_minor: &'static str,
    pub kubernetes_git_version: &'static str,
    pub kubevirt_version: &'static str,
    pub longhorn_version: &'static str,
    pub hotplug: HotplugMode,
    /// KubeVirt ≥ 1.6 accepts virtio hotplug; older ones only SCSI.
    pub virtio_hotplug: bool,
    /// networkfs-manager and the NetworkFilesystem CRD (RWX), from v1.4.
    pub network_filesystems: bool,
    /// VolumeRemoteBackup/Restore CRDs, from v1.8.
    pub remote_backups: bool,
    /// The PVC webhook allows online expansion (validated per provisioner), from v1.6.
    pub online_expansion: bool,
    /// Which additions the `harvesterhci.io:csi-driver` ClusterRole has (None: role absent).
    pub csi_driver_role: Option<CsiDriverRole>,
}

/// The cumulative content of `harvesterhci.io:csi-driver` by release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CsiDriverRole {
    /// v1.3: storageclasses only.
    StorageClasses,
    /// v1.4, v1.5: + networkfilesystems, Longhorn volumes get/list (#6849 fix).
    NetworkFilesystems,
    /// v1.6: + volumeattachments, settings by resourceNames.
    VolumeAttachments,
    /// v1.7: + snapshot.storage.k8s.io.
    Snapshots,
    /// v1.8: + remote backups/restores, VM patch (declarative hotplug).
    RemoteBackups,
}

const fn profile(
    name: &'static str,
    server_version: &'static str,
    k8s: (&'static str, &'static str),
    kubevirt_version: &'static str,
    longhorn_version: &'static str,
    hotplug: HotplugMode,
    csi_driver_role: Option<CsiDriverRole>,
) -> Profile {
    const fn has(role: Option<CsiDriverRole>, min: CsiDriverRole) -> bool {
        match role {
            Some(r) => r as u8 >= min as u8,
            None => false,
        }
    }
    Profile {
        name,
        server_version,
        kubernetes_minor: k8s.0,
        kubernetes_git_version: k8s.1,
        kubevirt_version,
        longhorn_version,
        hotplug,
        virtio_hotplug: has(csi_driver_role, CsiDriverRole::Snapshots),
        network_filesystems: has(csi_driver_role, CsiDriverRole::NetworkFilesystems),
        remote_backups: has(csi_driver_role, CsiDriverRole::RemoteBackups),
        online_expansion: has(csi_driver_role, CsiDriverRole::VolumeAttachments),
        csi_driver_role,
    }
}

use CsiDriverRole as R;
use HotplugMode::{Declarative, Legacy};

/// Every known release, oldest first.
pub const PROFILES: &[Profile] = &[
    profile("v1.2", "v1.2.2", ("25", "v1.25.16+rke2r1"), "v0.54.0", "v1.5.5", Legacy, None),
    profile("v1.3", "v1.3.2", ("27", "v1.27.16+rke2r1"), "v1.1.1", "v1.6.2", Legacy, Some(R::StorageClasses)),
    profile("v1.4", "v1.4.3", ("29", "v1.29.12+rke2r1"), "v1.3.1", "v1.7.3", Legacy, Some(R::NetworkFilesystems)),
    profile("v1.5", "v1.5.2", ("31", "v1.31.9+rke2r1"), "v1.4.1", "v1.8.2", Legacy, Some(R::NetworkFilesystems)),
    profile("v1.6", "v1.6.1", ("32", "v1.32.7+rke2r1"), "v1.5.0", "v1.9.2", Legacy, Some(R::VolumeAttachments)),
    profile("v1.7", "v1.7.1", ("33", "v1.33.5+rke2r1"), "v1.6.3", "v1.10.2", Legacy, Some(R::Snapshots)),
    profile("v1.8", "v1.8.2", ("34", "v1.34.2+rke2r1"), "v1.7.0", "v1.11.2", Declarative, Some(R::RemoteBackups)),
];

#[derive(Debug, thiserror::Error)]
#[error("unknown Harvester profile {0:?}; known profiles: {known}", known = known_names())]
pub struct UnknownProfile(pub String);

impl Profile {
    /// The virt-launcher image of this release's KubeVirt (launcher and hotplug pods).
    pub fn virt_launcher_image(&self) -> String {
        format!("registry.suse.com/suse/sles/15.6/virt-launcher:{}", self.kubevirt_version.trim_start_matches('v'))
    }

    /// The share-manager image of this release's Longhorn.
    pub fn share_manager_image(&self) -> String {
        format!("longhornio/longhorn-share-manager:{}", self.longhorn_version)
    }
}

pub fn known_names() -> String {
    PROFILES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

pub fn lookup(name: &str) -> Result<Profile, UnknownProfile> {
    let wanted = if name.starts_with('v') { name.to_string() } else { format!("v{name}") };
    PROFILES.iter().find(|p| p.name == wanted).cloned().ok_or_else(|| UnknownProfile(name.to_string()))
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn named_rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "resourceNames": names, "verbs": verbs})
}

pub const CLOUDPROVIDER_ROLE: &str = "harvesterhci.io:cloudprovider";
pub const CSI_DRIVER_ROLE: &str = "harvesterhci.io:csi-driver";
pub const AUTHENTICATED_ROLE: &str = "harvesterhci.io:authenticated";

/// Settings every authenticated user may read (Harvester's whitelist).
pub const PUBLIC_SETTINGS: &[&str] =
    &["server-version", "harvester-csi-ccm-versions", "default-storage-class", "ui-source"];

impl Profile {
    pub fn is_at_least(&self, name: &str) -> bool {
        let idx = |n: &str| PROFILES.iter().position(|p| p.name == n);
        matches!((idx(self.name), idx(name)), (Some(a), Some(b)) if a >= b)
    }

    /// Whether this release has the CRD/type at all.
    pub fn serves(&self, rt: &ResourceType) -> bool {
        match (rt.group, rt.plural) {
            ("harvesterhci.io", "networkfilesystems") => self.network_filesystems,
            ("harvesterhci.io", "volumeremotebackups" | "volumeremoterestores") => self.remote_backups,
            _ => true,
        }
    }

    /// `harvesterhci.io:cloudprovider`, bound by RoleBinding in the VM namespace.
    pub fn cloudprovider_rules(&self) -> Vec<Value> {
        let mut rules = vec![
            rule(
                &["loadbalancer.harvesterhci.io"],
                &["loadbalancers"],
                &["get", "list", "watch", "update", "create", "delete"],
            ),
            rule(
                &["subresources.kubevirt.io"],
                &[
                    "virtualmachines/addvolume",
                    "virtualmachines/removevolume",
                    "virtualmachineinstances/addvolume",
                    "virtualmachineinstances/removevolume",
                    "virtualmachineinstances/guestosinfo",
                ],
                &["get", "update"],
            ),
            rule(&["kubevirt.io"], &["virtualmachines", "virtualmachineinstances"], &["get", "list", "watch"]),
            rule(&[""], &["pods"], &["get", "list", "watch"]),
            rule(&[""], &["persistentvolumeclaims", "persistentvolumeclaims/status"], &["*"]),
        ];
        if !self.is_at_least("v1.4") {
            rules.push(rule(&[""], &["nodes"], &["get", "list", "watch"]));
        }
        rules
    }

    /// `harvesterhci.io:csi-driver`, bound cluster-wide; `None` where the release lacks it.
    pub fn csi_driver_rules(&self) -> Option<Vec<Value>> {
        let level = self.csi_driver_role?;
        let mut rules = vec![rule(&["storage.k8s.io"], &["storageclasses"], &["get", "list", "watch"])];
        if level >= R::NetworkFilesystems {
            rules.push(rule(&["harvesterhci.io"], &["networkfilesystems", "networkfilesystems/status"], &["*"]));
            rules.push(rule(&["longhorn.io"], &["volumes", "volumes/status"], &["get", "list"]));
        }
        if level >= R::VolumeAttachments {
            rules[0] = rule(&["storage.k8s.io"], &["storageclasses", "volumeattachments"], &["get", "list", "watch"]);
            rules.push(named_rule(
                &["harvesterhci.io"],
                &["settings"],
                &["csi-online-expand-validation", "csi-driver-config"],
                &["get", "list"],
            ));
        }
        if level >= R::Snapshots {
            rules.push(rule(
                &["snapshot.storage.k8s.io"],
                &[
                    "volumesnapshots",
                    "volumesnapshotcontents",
                    "volumesnapshotclasses",
                    "volumesnapshots/status",
                    "volumesnapshotcontents/status",
                ],
                &["*"],
            ));
        }
        if level >= R::RemoteBackups {
            rules.push(rule(&["harvesterhci.io"], &["volumeremotebackups", "volumeremoterestores"], &["*"]));
            rules.push(rule(&["kubevirt.io"], &["virtualmachines"], &["patch"]));
        }
        Some(rules)
    }

    /// What every authenticated user gets (public settings).
    pub fn authenticated_rules(&self) -> Vec<Value> {
        vec![named_rule(&["harvesterhci.io"], &["settings"], PUBLIC_SETTINGS, &["get", "watch"])]
    }

    /// Settings this release carries: (name, default, value).
    pub fn settings(&self) -> Vec<(&'static str, String, String)> {
        let mut s = vec![
            ("server-version", "dev".to_string(), self.server_version.to_string()),
            (
                "harvester-csi-ccm-versions",
                r#"{"harvester-cloud-provider":">=0.0.1 <0.3.0","harvester-csi-provider":">=0.0.1 <0.3.0"}"#.to_string(),
                String::new(),
            ),
            (
                "csi-driver-config",
                r#"{"driver.longhorn.io":{"volumeSnapshotClassName":"longhorn-snapshot","backupVolumeSnapshotClassName":"longhorn"}}"#.to_string(),
                String::new(),
            ),
            ("default-storage-class", "longhorn".to_string(), String::new()),
        ];
        if self.online_expansion {
            s.push(("csi-online-expand-validation", r#"{"driver.longhorn.io":true}"#.to_string(), String::new()));
        }
        s
    }

    /// The `/version` document.
    pub fn version_document(&self) -> Value {
        json!({
            "major": "1",
            "minor": self.kubernetes_minor,
            "gitVersion": self.kubernetes_git_version,
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_follow_the_release() {
        let v15 = lookup("v1.5").unwrap();
        assert_eq!(v15.virt_launcher_image(), "registry.suse.com/suse/sles/15.6/virt-launcher:1.4.1");
        assert_eq!(v15.share_manager_image(), "longhornio/longhorn-share-manager:v1.8.2");
        assert_eq!(lookup("v1.8").unwrap().share_manager_image(), "longhornio/longhorn-share-manager:v1.11.2");
    }

    #[test]
    fn unknown_profile_lists_known_ones() {
        let e = lookup("v9.9").unwrap_err().to_string();
        assert!(e.contains("v1.2, v1.3, v1.4, v1.5, v1.6, v1.7, v1.8"), "{e}");
        assert_eq!(lookup("1.5").unwrap().name, "v1.5");
    }

    #[test]
    fn role_content_grows_with_releases() {
        assert!(lookup("v1.2").unwrap().csi_driver_rules().is_none());
        let v13 = serde_json::to_string(&lookup("v1.3").unwrap().csi_driver_rules().unwrap()).unwrap();
        assert!(!v13.contains("longhorn.io"));
        let v14 = serde_json::to_string(&lookup("v1.4").unwrap().csi_driver_rules().unwrap()).unwrap();
        assert!(v14.contains("longhorn.io") && v14.contains("networkfilesystems"));
        let v18 = serde_json::to_string(&lookup("v1.8").unwrap().csi_driver_rules().unwrap()).unwrap();
        assert!(v18.contains("volumeremotebackups") && v18.contains("\"patch\""));
        assert_eq!(lookup("v1.8").unwrap().hotplug, HotplugMode::Declarative);
        assert_eq!(lookup("v1.7").unwrap().hotplug, HotplugMode::Legacy);
        assert!(lookup("v1.7").unwrap().virtio_hotplug && !lookup("v1.6").unwrap().virtio_hotplug);
    }
}
