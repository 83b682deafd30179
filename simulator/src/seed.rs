//! Seeds a fresh simulator from the profile and the world: namespaces, host
//! nodes, RBAC exactly as Harvester binds a guest cluster's credentials, settings,
//! storage classes and VMs.

use base64::Engine;
use serde_json::{json, Value};

use crate::api::authn::SA_TOKEN_TYPE;
use crate::api::error::ApiResult;
use crate::api::ops::Api;
use crate::profiles::{self, Profile};
use crate::world::{self, World};

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "harvester-system", "longhorn-system", "cattle-system"];

fn create(api: &Api, group: &str, plural: &str, namespace: &str, obj: Value) -> ApiResult<()> {
    let rt = api
        .resource(group, plural)
        .ok_or_else(|| crate::api::error::ApiError::internal(format!("profile does not serve {plural}.{group}")))?;
    api.ensure(&rt, namespace, obj).map(|_| ())
}

/// The name of the token Secret of a guest ServiceAccount.
pub fn token_secret_name(service_account: &str) -> String {
    format!("{service_account}-token")
}

/// Seeds everything; returns nothing but errors (which mean a bug or a bad world).
pub fn seed(api: &Api, profile: &Profile, world: &World) -> ApiResult<()> {
    let mut namespaces: Vec<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
    namespaces.extend(world.namespaces.iter().cloned());
    namespaces.extend(world.vms.iter().map(|v| v.namespace.clone()));
    namespaces.extend(world.credentials().iter().map(|c| c.namespace.clone()));
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        create(
            api,
            "",
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
        )?;
    }

    for node in &world.host_nodes {
        create(
            api,
            "",
            "nodes",
            "",
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name, "labels": {
                    "kubernetes.io/hostname": node.name,
                    "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/zone": node.zone,
                    "topology.kubernetes.io/region": node.region,
                    "node-role.kubernetes.io/control-plane": "true",
                    "node-role.harvesterhci.io/witness": "false",
                }},
                "spec": {},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                    "capacity": {"cpu": "16", "memory": "64Gi", "pods": "200"},
                    "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "200"},
                    "addresses": [{"type": "Hostname", "address": node.name}],
                    "nodeInfo": {"kubeletVersion": profile.kubernetes_git_version, "operatingSystem": "linux", "architecture": "amd64"},
                },
            }),
        )?;
    }

    seed_rbac(api, profile, world)?;

    for (name, default, value) in profile.settings() {
        let value = world.settings.get(name).cloned().unwrap_or(value);
        create(api, "harvesterhci.io", "settings", "", setting(name, &default, &value))?;
    }
    for (name, value) in &world.settings {
        if !profile.settings().iter().any(|(n, _, _)| n == name) {
            create(api, "harvesterhci.io", "settings", "", setting(name, "", value))?;
        }
    }

    for sc in &world.storage_classes {
        let mut obj = json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": sc.name, "annotations": {"storageclass.kubernetes.io/is-default-class": if sc.default { "true" } else { "false" }}},
            "provisioner": sc.provisioner,
            "parameters": sc.parameters,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": sc.allow_volume_expansion,
        });
        if sc.name == "harvester-longhorn" {
            obj["metadata"]["annotations"]["harvesterhci.io/is-reserved-storageclass"] = json!("true");
        }
        create(api, "storage.k8s.io", "storageclasses", "", obj)?;
    }
    for (name, kind) in [("longhorn-snapshot", "snap"), ("longhorn", "bak")] {
        create(
            api,
            "snapshot.storage.k8s.io",
            "volumesnapshotclasses",
            "",
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": name},
                   "driver": "driver.longhorn.io", "deletionPolicy": "Delete", "parameters": {"type": kind}}),
        )?;
    }

    for vm in &world.vms {
        create(api, "kubevirt.io", "virtualmachines", &vm.namespace, vm_object(vm))?;
    }
    Ok(())
}

fn setting(name: &str, default: &str, value: &str) -> Value {
    json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting", "metadata": {"name": name}, "default": default, "value": value})
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn seed_rbac(api: &Api, profile: &Profile, world: &World) -> ApiResult<()> {
    const RBAC: &str = "rbac.authorization.k8s.io";
    apply_rbac_of(api, profile)?;
    create(api, RBAC, "clusterroles", "", cluster_role(profiles::AUTHENTICATED_ROLE, profile.authenticated_rules()))?;
    create(
        api,
        RBAC,
        "clusterrolebindings",
        "",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": profiles::AUTHENTICATED_ROLE},
               "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": profiles::AUTHENTICATED_ROLE},
               "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": "system:authenticated"}]}),
    )?;
    for cred in world.credentials() {
        let (ns, sa) = (&cred.namespace, &cred.service_account);
        create(
            api,
            "",
            "serviceaccounts",
            ns,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}),
        )?;
        let token = base64::engine::general_purpose::STANDARD.encode(crate::api::authn::new_token());
        create(
            api,
            "",
            "secrets",
            ns,
            json!({"apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_TYPE,
                   "metadata": {"name": token_secret_name(sa), "namespace": ns, "annotations": {"kubernetes.io/service-account.name": sa}},
                   "data": {"token": token}}),
        )?;
        let binding_name = format!("{ns}-{sa}");
        let subject = json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]);
        create(
            api,
            RBAC,
            "rolebindings",
            ns,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": binding_name, "namespace": ns},
                   "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": profiles::CLOUDPROVIDER_ROLE}, "subjects": subject}),
        )?;
        // Bound even on releases without the role (v1.2): the binding then grants nothing.
        create(
            api,
            RBAC,
            "clusterrolebindings",
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": binding_name},
                   "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": profiles::CSI_DRIVER_ROLE}, "subjects": subject}),
        )?;
    }
    Ok(())
}

/// Replaces the guest-facing ClusterRoles with another release's (an RBAC fix
/// or regression applied mid-run).
pub fn apply_rbac_of(api: &Api, profile: &Profile) -> ApiResult<()> {
    let rt = api
        .resource("rbac.authorization.k8s.io", "clusterroles")
        .ok_or_else(|| crate::api::error::ApiError::internal("clusterroles not served"))?;
    let mut roles = vec![(profiles::CLOUDPROVIDER_ROLE, Some(profile.cloudprovider_rules()))];
    roles.push((profiles::CSI_DRIVER_ROLE, profile.csi_driver_rules()));
    for (name, rules) in roles {
        match rules {
            Some(rules) => {
                if api.get_opt(rt.group, rt.plural, "", name).is_some() {
                    api.modify(&rt, "", name, "", |obj| {
                        let new = json!(rules);
                        if obj.get("rules") == Some(&new) {
                            return false;
                        }
                        obj["rules"] = new;
                        true
                    })?;
                } else {
                    api.ensure(&rt, "", cluster_role(name, rules))?;
                }
            }
            None => api.delete_if_exists(&rt, "", name)?,
        }
    }
    Ok(())
}

/// The VM object for a world VM (its VMI is made by the VM controller).
pub fn vm_object(vm: &world::Vm) -> Value {
    let uuid = vm.firmware_uuid.clone().unwrap_or_else(|| world::legacy_firmware_uuid(&vm.name));
    let macs: Vec<String> =
        if vm.macs.is_empty() { vec![world::derived_mac(&vm.namespace, &vm.name, 0)] } else { vm.macs.clone() };
    let interfaces: Vec<Value> = macs
        .iter()
        .enumerate()
        .map(|(i, mac)| json!({"name": if i == 0 { "default".to_string() } else { format!("nic-{i}") }, "macAddress": mac, "bridge": {}}))
        .collect();
    let networks: Vec<Value> = macs
        .iter()
        .enumerate()
        .map(|(i, _)| {
            if i == 0 {
                json!({"name": "default", "pod": {}})
            } else {
                json!({"name": format!("nic-{i}"), "multus": {"networkName": "default/vlan1"}})
            }
        })
        .collect();
    let mut annotations = serde_json::Map::new();
    if !vm.extra_guest_nics.is_empty() {
        annotations.insert(
            "sim.harvesterhci.io/extra-guest-nics".into(),
            json!(serde_json::to_string(&vm.extra_guest_nics).unwrap_or_default()),
        );
    }
    let mut labels = serde_json::Map::new();
    for (k, v) in &vm.labels {
        labels.insert(k.clone(), json!(v));
    }
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": vm.name, "namespace": vm.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "runStrategy": if vm.running { "Always" } else { "Halted" },
            "template": {
                "metadata": {"labels": {"harvesterhci.io/vmName": vm.name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": vm.host_node.clone().unwrap_or_default()},
                    "domain": {
                        "firmware": {"uuid": uuid},
                        "cpu": {"cores": 2},
                        "resources": {"requests": {"memory": "4Gi"}},
                        "devices": {
                            "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": interfaces,
                        },
                    },
                    "networks": networks,
                    "volumes": [{"name": "rootdisk", "containerDisk": {"image": "registry.suse.com/suse/sle-micro:6.0"}}],
                },
            },
        },
    })
}
