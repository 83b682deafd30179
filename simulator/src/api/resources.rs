//! The resource types the simulated API server serves, and the registry a version
//! profile builds from them (which CRDs exist depends on the Harvester release).

use serde_json::{json, Value};

/// Identifies a resource independent of version: `(group, plural)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub group: String,
    pub plural: String,
}

impl ResourceKey {
    pub fn new(group: &str, plural: &str) -> Self {
        Self { group: group.into(), plural: plural.into() }
    }
}

/// One served resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: &'static str,
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Has a `/status` subresource (main writes ignore status, status writes ignore the rest).
    pub status_subresource: bool,
    /// Built-in Kubernetes kinds accept strategic merge patches; CRDs answer 415.
    pub builtin: bool,
    /// Field selectors beyond metadata.name / metadata.namespace.
    pub field_selectors: &'static [&'static str],
    /// Printed columns for Table output: (header, JSON path).
    pub columns: &'static [(&'static str, &'static str)],
}

impl ResourceType {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.group, self.plural)
    }
    pub fn api_version(&self) -> String {
        self.api_version_for(self.versions[0])
    }
    pub fn api_version_for(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// `obj` as the client asked for it: stored objects carry the first served version, so
    /// an object read through another served version gets that version's apiVersion.
    pub fn as_served<'a>(&self, obj: &'a Value, version: &str) -> std::borrow::Cow<'a, Value> {
        if self.versions.first().is_some_and(|v| *v != version) {
            let mut o = obj.clone();
            o["apiVersion"] = serde_json::json!(self.api_version_for(version));
            std::borrow::Cow::Owned(o)
        } else {
            std::borrow::Cow::Borrowed(obj)
        }
    }
    pub fn is_crd(&self) -> bool {
        !self.builtin
    }
}

const V1: &[&str] = &["v1"];
const NO_FIELDS: &[&str] = &[];
const NO_COLUMNS: &[(&str, &str)] = &[];
const NONE: &[&str] = &[];

macro_rules! rt {
    ($group:expr, $versions:expr, $plural:expr, $singular:expr, $kind:expr, ns=$ns:expr, status=$st:expr, builtin=$b:expr,
     short=$short:expr, fields=$fields:expr, columns=$cols:expr) => {
        ResourceType {
            group: $group,
            versions: $versions,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            status_subresource: $st,
            builtin: $b,
            field_selectors: $fields,
            columns: $cols,
        }
    };
}

/// Every type the simulator knows, before profile filtering.
pub fn all_types() -> Vec<ResourceType> {
    vec![
        // core
        rt!(
            "",
            V1,
            "namespaces",
            "namespace",
            "Namespace",
            ns = false,
            status = true,
            builtin = true,
            short = &["ns"],
            fields = &["status.phase"],
            columns = &[("Status", "status.phase")]
        ),
        rt!(
            "",
            V1,
            "nodes",
            "node",
            "Node",
            ns = false,
            status = true,
            builtin = true,
            short = &["no"],
            fields = &["spec.unschedulable"],
            columns = NO_COLUMNS
        ),
        rt!(
            "",
            V1,
            "persistentvolumes",
            "persistentvolume",
            "PersistentVolume",
            ns = false,
            status = true,
            builtin = true,
            short = &["pv"],
            fields = NO_FIELDS,
            columns = &[
                ("Capacity", "spec.capacity.storage"),
                ("Status", "status.phase"),
                ("StorageClass", "spec.storageClassName")
            ]
        ),
        rt!(
            "",
            V1,
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            "PersistentVolumeClaim",
            ns = true,
            status = true,
            builtin = true,
            short = &["pvc"],
            fields = NO_FIELDS,
            columns = &[
                ("Status", "status.phase"),
                ("Volume", "spec.volumeName"),
                ("Capacity", "status.capacity.storage"),
                ("StorageClass", "spec.storageClassName")
            ]
        ),
        rt!(
            "",
            V1,
            "pods",
            "pod",
            "Pod",
            ns = true,
            status = true,
            builtin = true,
            short = &["po"],
            fields = &["spec.nodeName", "status.phase", "spec.serviceAccountName"],
            columns = &[("Status", "status.phase"), ("Node", "spec.nodeName")]
        ),
        rt!(
            "",
            V1,
            "secrets",
            "secret",
            "Secret",
            ns = true,
            status = false,
            builtin = true,
            short = NONE,
            fields = &["type"],
            columns = &[("Type", "type")]
        ),
        rt!(
            "",
            V1,
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            ns = true,
            status = false,
            builtin = true,
            short = &["sa"],
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        rt!(
            "",
            V1,
            "configmaps",
            "configmap",
            "ConfigMap",
            ns = true,
            status = false,
            builtin = true,
            short = &["cm"],
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        rt!(
            "",
            V1,
            "events",
            "event",
            "Event",
            ns = true,
            status = false,
            builtin = true,
            short = &["ev"],
            fields = &[
                "involvedObject.kind",
                "involvedObject.name",
                "involvedObject.namespace",
                "involvedObject.uid",
                "reason",
                "type"
            ],
            columns =
                &[("Type", "type"), ("Reason", "reason"), ("Object", "involvedObject.name"), ("Message", "message")]
        ),
        rt!(
            "",
            V1,
            "services",
            "service",
            "Service",
            ns = true,
            status = true,
            builtin = true,
            short = &["svc"],
            fields = NO_FIELDS,
            columns = &[("Cluster-IP", "spec.clusterIP")]
        ),
        rt!(
            "",
            V1,
            "endpoints",
            "endpoints",
            "Endpoints",
            ns = true,
            status = false,
            builtin = true,
            short = &["ep"],
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        // storage.k8s.io
        rt!(
            "storage.k8s.io",
            V1,
            "storageclasses",
            "storageclass",
            "StorageClass",
            ns = false,
            status = false,
            builtin = true,
            short = &["sc"],
            fields = NO_FIELDS,
            columns = &[("Provisioner", "provisioner"), ("ReclaimPolicy", "reclaimPolicy")]
        ),
        rt!(
            "storage.k8s.io",
            V1,
            "volumeattachments",
            "volumeattachment",
            "VolumeAttachment",
            ns = false,
            status = true,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = &[
                ("Attacher", "spec.attacher"),
                ("PV", "spec.source.persistentVolumeName"),
                ("Node", "spec.nodeName"),
                ("Attached", "status.attached")
            ]
        ),
        rt!(
            "storage.k8s.io",
            V1,
            "csidrivers",
            "csidriver",
            "CSIDriver",
            ns = false,
            status = false,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        rt!(
            "storage.k8s.io",
            V1,
            "csinodes",
            "csinode",
            "CSINode",
            ns = false,
            status = false,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        // rbac
        rt!(
            "rbac.authorization.k8s.io",
            V1,
            "roles",
            "role",
            "Role",
            ns = true,
            status = false,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        rt!(
            "rbac.authorization.k8s.io",
            V1,
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            ns = false,
            status = false,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        rt!(
            "rbac.authorization.k8s.io",
            V1,
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            ns = true,
            status = false,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = &[("Role", "roleRef.name")]
        ),
        rt!(
            "rbac.authorization.k8s.io",
            V1,
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            ns = false,
            status = false,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = &[("Role", "roleRef.name")]
        ),
        // coordination (leader election in guest clusters served by the same engine)
        rt!(
            "coordination.k8s.io",
            V1,
            "leases",
            "lease",
            "Lease",
            ns = true,
            status = false,
            builtin = true,
            short = NONE,
            fields = NO_FIELDS,
            columns = &[("Holder", "spec.holderIdentity")]
        ),
        // KubeVirt
        rt!(
            "kubevirt.io",
            &["v1", "v1alpha3"],
            "virtualmachines",
            "virtualmachine",
            "VirtualMachine",
            ns = true,
            status = true,
            builtin = false,
            short = &["vm", "vms"],
            fields = NO_FIELDS,
            columns = &[("Status", "status.printableStatus"), ("Ready", "status.ready")]
        ),
        rt!(
            "kubevirt.io",
            &["v1", "v1alpha3"],
            "virtualmachineinstances",
            "virtualmachineinstance",
            "VirtualMachineInstance",
            ns = true,
            status = false,
            builtin = false,
            short = &["vmi", "vmis"],
            fields = NO_FIELDS,
            columns = &[("Phase", "status.phase"), ("NodeName", "status.nodeName")]
        ),
        // Longhorn
        rt!(
            "longhorn.io",
            &["v1beta2"],
            "volumes",
            "volume",
            "Volume",
            ns = true,
            status = true,
            builtin = false,
            short = &["lhv"],
            fields = NO_FIELDS,
            columns = &[
                ("State", "status.state"),
                ("Robustness", "status.robustness"),
                ("Size", "spec.size"),
                ("Node", "status.currentNodeID")
            ]
        ),
        rt!(
            "longhorn.io",
            &["v1beta2"],
            "volumeattachments",
            "volumeattachment",
            "VolumeAttachment",
            ns = true,
            status = true,
            builtin = false,
            short = &["lhva"],
            fields = NO_FIELDS,
            columns = NO_COLUMNS
        ),
        rt!(
            "longhorn.io",
            &["v1beta2"],
            "sharemanagers",
            "sharemanager",
            "ShareManager",
            ns = true,
            status = true,
            builtin = false,
            short = &["lhsm"],
            fields = NO_FIELDS,
            columns = &[("State", "status.state"), ("Endpoint", "status.endpoint")]
        ),
        // Harvester
        rt!(
            "harvesterhci.io",
            &["v1beta1"],
            "settings",
            "setting",
            "Setting",
            ns = false,
            status = false,
            builtin = false,
            short = NONE,
            fields = NO_FIELDS,
            columns = &[("Value", "value")]
        ),
        rt!(
            "harvesterhci.io",
            &["v1beta1"],
            "networkfilesystems",
            "networkfilesystem",
            "NetworkFilesystem",
            ns = true,
            status = true,
            builtin = false,
            short = &["netfilesystem", "netfilesystems"],
            fields = NO_FIELDS,
            columns = &[
                ("DesiredState", "spec.desiredState"),
                ("Endpoint", "status.endpoint"),
                ("EndpointStatus", "status.status"),
                ("State", "status.state"),
                ("Type", "status.type")
            ]
        ),
        rt!(
            "harvesterhci.io",
            &["v1beta1"],
            "volumeremotebackups",
            "volumeremotebackup",
            "VolumeRemoteBackup",
            ns = true,
            status = true,
            builtin = false,
            short = &["vrb"],
            fields = NO_FIELDS,
            columns = &[("Source", "spec.source"), ("Success", "status.success")]
        ),
        rt!(
            "harvesterhci.io",
            &["v1beta1"],
            "volumeremoterestores",
            "volumeremoterestore",
            "VolumeRemoteRestore",
            ns = true,
            status = true,
            builtin = false,
            short = &["vrr"],
            fields = NO_FIELDS,
            columns = &[("From", "spec.from"), ("Success", "status.success")]
        ),
        // snapshots
        rt!(
            "snapshot.storage.k8s.io",
            V1,
            "volumesnapshots",
            "volumesnapshot",
            "VolumeSnapshot",
            ns = true,
            status = true,
            builtin = false,
            short = &["vs"],
            fields = NO_FIELDS,
            columns = &[
                ("ReadyToUse", "status.readyToUse"),
                ("SourcePVC", "spec.source.persistentVolumeClaimName"),
                ("RestoreSize", "status.restoreSize")
            ]
        ),
        rt!(
            "snapshot.storage.k8s.io",
            V1,
            "volumesnapshotcontents",
            "volumesnapshotcontent",
            "VolumeSnapshotContent",
            ns = false,
            status = true,
            builtin = false,
            short = &["vsc", "vscs"],
            fields = NO_FIELDS,
            columns = &[("ReadyToUse", "status.readyToUse"), ("Driver", "spec.driver")]
        ),
        rt!(
            "snapshot.storage.k8s.io",
            V1,
            "volumesnapshotclasses",
            "volumesnapshotclass",
            "VolumeSnapshotClass",
            ns = false,
            status = false,
            builtin = false,
            short = &["vsclass", "vsclasses"],
            fields = NO_FIELDS,
            columns = &[("Driver", "driver"), ("DeletionPolicy", "deletionPolicy")]
        ),
    ]
}

/// `authorization.k8s.io`: the self-subject access and rules reviews (no stored objects).
pub const AUTHORIZATION_GROUP: &str = "authorization.k8s.io";

/// The aggregated KubeVirt subresource API group (not a CRD: served by virt-api).
pub const KUBEVIRT_SUBRESOURCES_GROUP: &str = "subresources.kubevirt.io";
pub const KUBEVIRT_SUBRESOURCES_VERSIONS: &[&str] = &["v1", "v1alpha3"];

/// The set of types a running simulator serves.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<ResourceType>,
    pub kubevirt_subresources: bool,
}

impl Registry {
    /// `enabled` decides per type whether this profile has it.
    pub fn new(enabled: impl Fn(&ResourceType) -> bool, kubevirt_subresources: bool) -> Self {
        Self { types: all_types().into_iter().filter(|t| enabled(t)).collect(), kubevirt_subresources }
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.group == group && t.plural == plural && t.versions.contains(&version))
    }

    pub fn by_key(&self, key: &ResourceKey) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.group == key.group && t.plural == key.plural)
    }

    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.group == group && t.kind == kind)
    }

    /// Groups in discovery order: core first, then by name as the apiserver lists them.
    pub fn groups(&self) -> Vec<(&'static str, &'static [&'static str])> {
        let mut out: Vec<(&'static str, &'static [&'static str])> = Vec::new();
        for t in &self.types {
            if !t.group.is_empty() && !out.iter().any(|(g, _)| *g == t.group) {
                out.push((t.group, t.versions));
            }
        }
        out.push((AUTHORIZATION_GROUP, &["v1"]));
        out
    }

    pub fn group_versions(&self, group: &str) -> Option<&'static [&'static str]> {
        if group == AUTHORIZATION_GROUP {
            return Some(&["v1"]);
        }
        if group == KUBEVIRT_SUBRESOURCES_GROUP && self.kubevirt_subresources {
            return Some(KUBEVIRT_SUBRESOURCES_VERSIONS);
        }
        self.types.iter().find(|t| t.group == group).map(|t| t.versions)
    }

    /// `APIResourceList` for one group version.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if group == AUTHORIZATION_GROUP {
            return (version == "v1").then(|| {
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authorization.k8s.io/v1", "resources": [
                    {"name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview", "namespaced": false,
                     "kind": "SelfSubjectAccessReview", "verbs": ["create"]},
                    {"name": "selfsubjectrulesreviews", "singularName": "selfsubjectrulesreview", "namespaced": false,
                     "kind": "SelfSubjectRulesReview", "verbs": ["create"]}]})
            });
        }
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        if group == KUBEVIRT_SUBRESOURCES_GROUP {
            if !self.kubevirt_subresources || !KUBEVIRT_SUBRESOURCES_VERSIONS.contains(&version) {
                return None;
            }
            // virt-api lists only names; the VM add/removevolume routes are served but not listed.
            let names = [
                "virtualmachineinstances/addvolume",
                "virtualmachineinstances/removevolume",
                "virtualmachineinstances/guestosinfo",
                "virtualmachineinstances/pause",
                "virtualmachineinstances/unpause",
                "virtualmachines/start",
                "virtualmachines/stop",
                "virtualmachines/restart",
                "virtualmachines/migrate",
            ];
            let resources: Vec<Value> = names
                .iter()
                .map(|n| json!({"name": n, "singularName": "", "namespaced": true, "kind": "", "verbs": []}))
                .collect();
            return Some(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            );
        }
        let types: Vec<&ResourceType> =
            self.types.iter().filter(|t| t.group == group && t.versions.contains(&version)).collect();
        if types.is_empty() {
            return None;
        }
        let mut resources = Vec::new();
        for t in types {
            let mut entry = json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            });
            if !t.short_names.is_empty() {
                entry["shortNames"] = json!(t.short_names);
            }
            if t.group == "kubevirt.io" || t.plural == "pods" || t.plural == "persistentvolumeclaims" {
                entry["categories"] = json!(["all"]);
            }
            resources.push(entry);
            if t.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", t.plural),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_read_through_another_served_version_carry_that_version() {
        let types = all_types();
        let vm = types.iter().find(|t| t.plural == "virtualmachines").expect("virtualmachines");
        let stored = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "a"}});
        assert!(matches!(vm.as_served(&stored, "v1"), std::borrow::Cow::Borrowed(_)), "no copy for the stored version");
        let old = vm.as_served(&stored, "v1alpha3");
        assert_eq!(old["apiVersion"], "kubevirt.io/v1alpha3");
        assert_eq!(old["metadata"], stored["metadata"]);
    }
}
