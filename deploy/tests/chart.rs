//! The Helm chart, rendered and linted by the real helm 3 and helm 4: snapshots
//! of the rendered objects for a set of values files, helm 4 rendering exactly
//! what helm 3 renders, every object checked against the Kubernetes API types,
//! the properties the deployment depends on, and the values schema refusing
//! bad values. Needs helm: `ci/cluster/build-tools.sh helm helm4` (or $HELM /
//! $HELM4); `ci/deploy-checks.sh` runs these.

use deploy_checks::helm::{test_values, Helm, HelmError, Major, Render};
use deploy_checks::manifests::{self, args, container, containers, named, of_kind};
use rstest::rstest;
use serde_json::{json, Value};

const NEEDS_HELM: &str = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4";

fn helm(major: Major) -> Helm {
    Helm::locate(major).unwrap_or_else(|e| panic!("{NEEDS_HELM}: {e}"))
}

/// The value sets: a name (the snapshot's) and how to render it.
fn case(name: &str) -> Render {
    match name {
        "default" => Render::default(),
        "snapshot-api" => Render::default().api_version("snapshot.storage.k8s.io/v1"),
        "kind" => Render::default().values(deploy_checks::repo_root().join("kind-config/values-kind.yaml")),
        other => Render::default().values(test_values(other)),
    }
}

const CASES: &[&str] = &[
    "default",
    "snapshot-api",
    "registrar-driver",
    "cloud-config-secret",
    "cloud-config-rke1",
    "kubelet-root",
    "local-cluster",
    "upstream",
    "everything",
    "kind",
];

fn render(major: Major, name: &str) -> Vec<Value> {
    let out = helm(major).template(&case(name)).unwrap_or_else(|e| panic!("{major} template {name}: {e}"));
    manifests::parse(&out).unwrap_or_else(|e| panic!("{major} template {name}: {e}"))
}

#[rstest]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn lint_passes_strict(#[values(Major::V3, Major::V4)] major: Major) {
    for name in CASES {
        // lint has no --api-versions: the snapshot classes are forced instead.
        let render = match *name {
            "snapshot-api" => Render::default().set("volumeSnapshotClasses.create=always"),
            other => case(other),
        };
        let out = helm(major).lint(&render).unwrap_or_else(|e| panic!("{major} lint {name}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{major} lint {name}:\n{out}");
    }
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn rendered_objects_match_the_snapshots_and_helm_4_agrees() {
    for name in CASES {
        let docs = render(Major::V3, name);
        insta::assert_yaml_snapshot!(format!("render-{name}"), docs);
        assert_eq!(render(Major::V4, name), docs, "helm 4 renders {name} differently from helm 3");
    }
}

// ---- every object is a valid Kubernetes object -------------------------------

/// `path: ours vs typed` for every place where a value differs from its round
/// trip through the typed API object: an unknown (misspelt, misplaced) field is
/// dropped by the typed object and shows up here.
fn differences(path: &str, ours: &Value, typed: &Value, out: &mut Vec<String>) {
    match (ours, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                differences(&format!("{path}/{k}"), v, b.get(k).unwrap_or(&Value::Null), out);
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}/{k}: added by the typed object"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}/{i}"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, Value::Null) => out.push(format!("{path}: {a} is not a field of the API type")),
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// VolumeSnapshotClass is a CRD, not in k8s-openapi: its v1 shape, strictly.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeSnapshotClass {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    driver: String,
    deletion_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parameters: Option<std::collections::BTreeMap<String, String>>,
}

fn check_against_api_types(doc: &Value) -> Vec<String> {
    use k8s_openapi::api::storage::v1 as storage;
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, policy::v1 as policy, rbac::v1 as rbac};
    let (kind, _, name) = manifests::key(doc);
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let expected = match kind.as_str() {
        "ServiceAccount" => "v1",
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => "rbac.authorization.k8s.io/v1",
        "Deployment" | "DaemonSet" => "apps/v1",
        "PodDisruptionBudget" => "policy/v1",
        "StorageClass" | "CSIDriver" => "storage.k8s.io/v1",
        "VolumeSnapshotClass" => "snapshot.storage.k8s.io/v1",
        _ => return vec![format!("{kind} {name}: a kind this test does not know")],
    };
    if api_version != expected {
        return vec![format!("{kind} {name}: apiVersion {api_version}, expected {expected}")];
    }
    let typed = match kind.as_str() {
        "ServiceAccount" => roundtrip::<core::ServiceAccount>(doc),
        "Role" => roundtrip::<rbac::Role>(doc),
        "RoleBinding" => roundtrip::<rbac::RoleBinding>(doc),
        "ClusterRole" => roundtrip::<rbac::ClusterRole>(doc),
        "ClusterRoleBinding" => roundtrip::<rbac::ClusterRoleBinding>(doc),
        "Deployment" => roundtrip::<apps::Deployment>(doc),
        "DaemonSet" => roundtrip::<apps::DaemonSet>(doc),
        "PodDisruptionBudget" => roundtrip::<policy::PodDisruptionBudget>(doc),
        "StorageClass" => roundtrip::<storage::StorageClass>(doc),
        "CSIDriver" => roundtrip::<storage::CSIDriver>(doc),
        _ => roundtrip::<VolumeSnapshotClass>(doc),
    };
    match typed {
        Err(e) => vec![format!("{kind} {name}: {e}")],
        Ok(typed) => {
            let mut out = Vec::new();
            differences(&format!("{kind} {name}"), doc, &typed, &mut out);
            out
        }
    }
}

#[test]
fn the_api_type_check_catches_a_misspelt_field() {
    let doc = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/v", "mountPropogation": "Bidirectional"}]}]}}}});
    let found = check_against_api_types(&doc);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("mountPropogation"), "{found:?}");
    let wrong_type = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"},
        "automountServiceAccountToken": "no"});
    assert!(!check_against_api_types(&wrong_type).is_empty());
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn every_rendered_object_is_a_valid_kubernetes_object() {
    for name in CASES {
        let problems: Vec<String> = render(Major::V3, name).iter().flat_map(check_against_api_types).collect();
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    }
}

// ---- what the deployment depends on ------------------------------------------

fn controller(docs: &[Value]) -> &Value {
    named(docs, "Deployment", "-controller").expect("one controller Deployment")
}
fn node(docs: &[Value]) -> &Value {
    named(docs, "DaemonSet", "-node").expect("one node DaemonSet")
}
fn names(items: Vec<&Value>) -> Vec<String> {
    items.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from)).collect()
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn the_controller_runs_every_sidecar_leader_elected_beside_the_driver() {
    let docs = render(Major::V3, "default");
    let c = controller(&docs);
    assert_eq!(c.pointer("/spec/replicas"), Some(&json!(2)));
    assert_eq!(
        names(containers(c)),
        ["harvester-csi-driver", "csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"]
    );
    let driver = args(container(c, "harvester-csi-driver").expect("driver"));
    assert!(driver.contains(&"--mode=controller".to_string()), "{driver:?}");
    for sidecar in ["csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"] {
        let a = args(container(c, sidecar).expect("sidecar"));
        assert!(a.contains(&"--leader-election".to_string()), "{sidecar}: {a:?}");
        assert!(a.contains(&"--leader-election-namespace=$(POD_NAMESPACE)".to_string()), "{sidecar}: {a:?}");
        assert!(a.contains(&"--csi-address=/csi/csi.sock".to_string()), "{sidecar}: {a:?}");
    }
    let provisioner = args(container(c, "csi-provisioner").expect("provisioner"));
    for flag in ["--extra-create-metadata", "--feature-gates=Topology=true", "--default-fstype=ext4"] {
        assert!(provisioner.contains(&flag.to_string()), "provisioner lacks {flag}");
    }
    // The socket is shared over an emptyDir, never a host path.
    let volumes = c.pointer("/spec/template/spec/volumes").and_then(Value::as_array).expect("volumes");
    let socket = volumes.iter().find(|v| v["name"] == "socket-dir").expect("socket-dir");
    assert!(socket.get("emptyDir").is_some(), "{socket}");
    // Liveness from the driver's own /healthz.
    let probe = container(c, "harvester-csi-driver").and_then(|d| d.get("livenessProbe")).expect("liveness probe");
    assert_eq!(probe.pointer("/httpGet/path"), Some(&json!("/healthz")));
    assert!(named(&docs, "PodDisruptionBudget", "-controller").is_some());
    assert!(c.pointer("/spec/template/spec/affinity/podAntiAffinity").is_some());
}

/// The embedded scenario backend plays the kubelet and the provisioner with what the
/// chart deploys (scenarios/src/deployment.rs): the two must not drift apart, or the
/// embedded suite proves the behaviour of a deployment nobody installs.
#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn the_embedded_backend_mirrors_the_charts_csidriver_and_provisioner_defaults() {
    let docs = render(Major::V3, "default");
    let driver = of_kind(&docs, "CSIDriver").into_iter().next().expect("one CSIDriver");
    let mirrored = scenarios::deployment::csi_driver();
    assert_eq!(driver.get("metadata").and_then(|m| m.get("name")), mirrored.pointer("/metadata/name"));
    assert_eq!(driver.get("spec"), mirrored.get("spec"), "CSIDriver spec differs from scenarios::deployment");
    let provisioner = args(container(controller(&docs), "csi-provisioner").expect("provisioner"));
    let flag = format!("--default-fstype={}", scenarios::deployment::DEFAULT_FSTYPE);
    assert!(provisioner.contains(&flag), "provisioner lacks {flag}: {provisioner:?}");
}

#[rstest]
#[case::default("default", "/var/lib/kubelet")]
#[case::custom("kubelet-root", "/var/lib/k0s/kubelet")]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn the_node_plugin_gets_the_kubelet_root(#[case] values: &str, #[case] root: &str) {
    let docs = render(Major::V3, values);
    let n = node(&docs);
    let driver = container(n, "harvester-csi-driver").expect("driver");
    let a = args(driver);
    assert!(a.contains(&"--mode=node".to_string()), "{a:?}");
    assert!(a.contains(&format!("--kubelet-root={root}")), "{a:?}");
    let mounts = driver.get("volumeMounts").and_then(Value::as_array).expect("mounts");
    let kubelet = mounts.iter().find(|m| m["name"] == "kubelet-dir").expect("kubelet-dir mount");
    assert_eq!(kubelet["mountPath"], json!(root));
    assert_eq!(kubelet["mountPropagation"], json!("Bidirectional"));
    assert!(mounts.iter().any(|m| m["mountPath"] == "/dev"), "no /dev: {mounts:?}");
    assert_eq!(driver.pointer("/securityContext/privileged"), Some(&json!(true)));
    let registrar = args(container(n, "node-driver-registrar").expect("registrar sidecar"));
    assert!(
        registrar.contains(&format!("--kubelet-registration-path={root}/plugins/driver.harvesterhci.io/csi.sock")),
        "{registrar:?}"
    );
    assert_eq!(n.pointer("/spec/template/spec/priorityClassName"), Some(&json!("system-node-critical")));
    assert_eq!(n.pointer("/spec/template/spec/hostNetwork"), Some(&json!(true)));
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn in_registrar_mode_driver_the_driver_registers_itself() {
    let docs = render(Major::V3, "registrar-driver");
    let n = node(&docs);
    assert_eq!(names(containers(n)), ["harvester-csi-driver"]);
    let driver = container(n, "harvester-csi-driver").expect("driver");
    let a = args(driver);
    assert!(a.contains(&"--plugin-registration-dir=/registration".to_string()), "{a:?}");
    assert!(
        a.contains(&"--kubelet-registration-path=/var/lib/kubelet/plugins/driver.harvesterhci.io/csi.sock".to_string()),
        "{a:?}"
    );
    let mounts = driver.get("volumeMounts").and_then(Value::as_array).expect("mounts");
    assert!(mounts.iter().any(|m| m["name"] == "registration-dir" && m["mountPath"] == "/registration"));
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn a_per_node_kubelet_root_is_reached_through_node_name() {
    let docs = render(Major::V3, "local-cluster");
    let n = node(&docs);
    let driver = container(n, "harvester-csi-driver").expect("driver");
    let a = args(driver);
    assert!(a.contains(&"--kubelet-root=/var/lib/hcsi-cluster/nodes/$(NODE_NAME)/kubelet".to_string()), "{a:?}");
    assert!(a.contains(&"--root=/var/lib/hcsi-sim/vms/$(NODE_NAME)/root".to_string()), "{a:?}");
    // $(NODE_NAME) only expands in args, env and subPathExpr: the host side is the
    // fixed parent, each node's directories are subPathExpr below it.
    let env = driver.get("env").and_then(Value::as_array).expect("env");
    assert!(env.iter().any(
        |e| e["name"] == "NODE_NAME" && e.pointer("/valueFrom/fieldRef/fieldPath") == Some(&json!("spec.nodeName"))
    ));
    let mounts = driver.get("volumeMounts").and_then(Value::as_array).expect("mounts");
    let socket = mounts.iter().find(|m| m["name"] == "socket-dir").expect("socket-dir");
    assert_eq!(socket["subPathExpr"], json!("$(NODE_NAME)/kubelet/plugins/driver.harvesterhci.io"));
    let kubelet = mounts.iter().find(|m| m["name"] == "kubelet-dir").expect("kubelet-dir");
    assert_eq!(kubelet["mountPath"], json!("/var/lib/hcsi-cluster/nodes"));
    let volumes = n.pointer("/spec/template/spec/volumes").and_then(Value::as_array).expect("volumes");
    for v in volumes.iter().filter_map(|v| v.pointer("/hostPath/path").and_then(Value::as_str)) {
        assert!(!v.contains("$("), "a hostPath cannot expand variables: {v}");
    }
    let c = controller(&docs);
    assert_eq!(c.pointer("/spec/template/spec/hostNetwork"), Some(&json!(true)));
    assert_eq!(c.pointer("/spec/template/spec/dnsPolicy"), Some(&json!("ClusterFirstWithHostNet")));
    assert!(manifests::images(&docs).iter().all(|i| i.starts_with("docker.io/") || i.starts_with("registry.k8s.io/")));
}

#[rstest]
#[case::absent(false, 0)]
#[case::present(true, 2)]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn snapshot_classes_follow_the_snapshot_api(#[case] api: bool, #[case] classes: usize) {
    for major in Major::ALL {
        let docs = render(major, if api { "snapshot-api" } else { "default" });
        let found = of_kind(&docs, "VolumeSnapshotClass");
        assert_eq!(found.len(), classes, "{major}");
        let types: Vec<&Value> = found.iter().map(|c| &c["parameters"]["type"]).collect();
        if api {
            assert_eq!(types, [&json!("backup"), &json!("snapshot")], "{major}");
        }
    }
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn the_cloud_config_comes_from_a_secret_or_the_upstream_host_path() {
    let secret = render(Major::V3, "cloud-config-secret");
    let rke1 = render(Major::V3, "cloud-config-rke1");
    for (docs, source, file) in [
        (
            &secret,
            json!({"secret": {"secretName": "harvester-cloud-config", "defaultMode": 256,
            "items": [{"key": "cloud-provider-config", "path": "cloud-provider-config"}]}}),
            "cloud-provider-config",
        ),
        (&rke1, json!({"hostPath": {"path": "/etc/kubernetes", "type": "DirectoryOrCreate"}}), "cloud-config"),
    ] {
        for workload in [controller(docs), node(docs)] {
            let volumes = workload.pointer("/spec/template/spec/volumes").and_then(Value::as_array).expect("volumes");
            let mut volume = volumes.iter().find(|v| v["name"] == "cloud-config").expect("cloud-config volume").clone();
            volume.as_object_mut().expect("object").remove("name");
            assert_eq!(volume, source);
            let a = args(container(workload, "harvester-csi-driver").expect("driver"));
            assert!(a.contains(&format!("--kubeconfig=/var/lib/harvester/{file}")), "{a:?}");
        }
    }
}

// ---- least-privilege RBAC ------------------------------------------------------

/// (apiGroup, resource, verb) triples a role grants, resourceNames noted.
fn grants(role: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let names: Vec<&str> =
            rule["resourceNames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for group in rule["apiGroups"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    let g = group.as_str().unwrap_or("?");
                    let r = resource.as_str().unwrap_or("?");
                    let v = verb.as_str().unwrap_or("?");
                    out.push(if names.is_empty() {
                        format!("{g}/{r}:{v}")
                    } else {
                        format!("{g}/{r}[{}]:{v}", names.join(","))
                    });
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn rbac_is_per_component_and_least_privilege() {
    let docs = render(Major::V3, "default");
    // The driver controller's own role: exactly what driver/src/guest calls.
    let driver_role = named(&docs, "ClusterRole", "-controller").expect("driver ClusterRole");
    assert_eq!(
        grants(driver_role),
        [
            "/namespaces[kube-system]:get",
            "/nodes:list",
            "/nodes:patch",
            "/nodes:watch",
            "/persistentvolumes:list",
            "/persistentvolumes:watch",
            "/pods:list",
            "/pods:watch",
            "storage.k8s.io/volumeattachments:list",
            "storage.k8s.io/volumeattachments:watch",
        ]
    );
    let node_health = named(&docs, "Role", "-node-health").expect("node-health Role");
    assert_eq!(node_health.pointer("/metadata/namespace"), Some(&json!("kube-system")));
    assert_eq!(
        grants(node_health),
        [
            "coordination.k8s.io/leases:create",
            "coordination.k8s.io/leases[harvester-csi-node-monitor]:get",
            "coordination.k8s.io/leases[harvester-csi-node-monitor]:update",
        ]
    );
    // Nothing grants wildcards, secrets, or cluster-admin.
    for role in of_kind(&docs, "ClusterRole").into_iter().chain(of_kind(&docs, "Role")) {
        for grant in grants(role) {
            assert!(!grant.contains('*'), "{grant} in {}", manifests::key(role).2);
            assert!(!grant.contains("/secrets"), "{grant} in {}", manifests::key(role).2);
        }
    }
    // Every binding names the controller's ServiceAccount; the node's has none and no token.
    let bindings = of_kind(&docs, "ClusterRoleBinding").into_iter().chain(of_kind(&docs, "RoleBinding"));
    for b in bindings {
        assert_ne!(b.pointer("/roleRef/name"), Some(&json!("cluster-admin")));
        let subjects = b["subjects"].as_array().expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert!(subjects[0]["name"].as_str().is_some_and(|n| n.ends_with("-controller")), "{b}");
    }
    let node_sa = named(&docs, "ServiceAccount", "-node").expect("node ServiceAccount");
    assert_eq!(node_sa["automountServiceAccountToken"], json!(false));
    assert_eq!(node(&docs).pointer("/spec/template/spec/automountServiceAccountToken"), Some(&json!(false)));
    // Leader election only in the release namespace.
    let election = named(&docs, "Role", "-leader-election").expect("leader-election Role");
    assert_eq!(election.pointer("/metadata/namespace"), Some(&json!("kube-system")));
}

#[test]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn an_upstream_values_file_renders_with_its_images_and_registry() {
    let docs = render(Major::V3, "upstream");
    assert_eq!(controller(&docs).pointer("/spec/replicas"), Some(&json!(3)));
    assert_eq!(
        manifests::images(&docs),
        [
            "registry.example.internal/harvester-csi/harvester-csi-driver:0.1.0",
            "registry.example.internal/rancher/mirrored-longhornio-csi-attacher:v4.11.0-20260428",
            "registry.example.internal/rancher/mirrored-longhornio-csi-node-driver-registrar:v2.16.0-20260428",
            "registry.example.internal/rancher/mirrored-longhornio-csi-provisioner:v5.3.0-20260428",
            "registry.example.internal/rancher/mirrored-longhornio-csi-resizer:v2.1.0-20260428",
            "registry.example.internal/rancher/mirrored-longhornio-csi-snapshotter:v8.5.0-20260428",
        ]
    );
    let secrets = node(&docs).pointer("/spec/template/spec/imagePullSecrets").expect("pull secrets");
    assert_eq!(secrets, &json!([{"name": "rancher-pull"}, {"name": "mirror-pull"}]));
    let a = args(container(controller(&docs), "harvester-csi-driver").expect("driver"));
    assert!(a.contains(&"--host-storage-class=harvester-longhorn".to_string()), "{a:?}");
    let sc = named(&docs, "StorageClass", "harvester").expect("the harvester class");
    assert_eq!(sc["provisioner"], json!("driver.harvesterhci.io"));
    let driver = of_kind(&docs, "CSIDriver");
    assert_eq!(driver.len(), 1);
    assert_eq!(driver[0].pointer("/metadata/name"), Some(&json!("driver.harvesterhci.io")));
    assert_eq!(driver[0].pointer("/spec/fsGroupPolicy"), Some(&json!("File")));
}

// ---- the values schema -----------------------------------------------------------

/// `lint`: whether `helm lint` fails too. The schema fails both; a template's
/// own `fail` fails template, install and upgrade, while lint only reports it
/// (helm's lint mode downgrades `fail` to an [INFO] line).
#[rstest]
#[case::misspelt_key("node.registrr.mode=driver", "registrr", true)]
#[case::misspelt_top_level_key("replicaCount=3", "replicaCount", true)]
#[case::wrong_type("replicasCount=two", "want integer", true)]
#[case::not_an_enum_value("logFormat=yaml", "logFormat", true)]
#[case::bad_registrar_mode("node.registrar.mode=both", "registrar", true)]
#[case::relative_kubelet_root("kubeletRootDir=var/lib/kubelet", "kubeletRootDir", true)]
#[case::rwx_class_without_host_class("rwxStorageClass.create=true", "hostStorageClass", true)]
#[case::upstream_driver_image(
    "image.harvester.csiDriver.repository=rancher/harvester-csi-driver",
    "upstream Go driver",
    false
)]
#[case::no_cloud_config_source("cloudConfig.hostPath=", "set secretName", false)]
#[case::kubelet_root_is_root("kubeletRootDir=/", "kubeletRootDir \"/\"", false)]
#[ignore = "needs helm 3 and 4: ci/cluster/build-tools.sh helm helm4"]
fn bad_values_are_refused(#[case] set: &str, #[case] message: &str, #[case] lint: bool) {
    for major in Major::ALL {
        let h = helm(major);
        let values = Render::default().set(set);
        let mut runs = vec![("template", h.template(&values))];
        if lint {
            runs.push(("lint", h.lint(&values)));
        }
        for (what, result) in runs {
            match result {
                Err(HelmError::Failed { output, .. }) => {
                    assert!(
                        output.contains(message),
                        "{major} {what} --set {set}: the error does not name {message:?}:\n{output}"
                    );
                }
                Err(e) => panic!("{major} {what} --set {set}: {e}"),
                Ok(out) => panic!("{major} {what} --set {set} succeeded:\n{}", &out[..out.len().min(400)]),
            }
        }
    }
}

// ---- the chart README --------------------------------------------------------

/// Keys whose value is free-form (Kubernetes objects, maps): documented as one row.
const FREE_FORM: &[&str] = &[
    "nodeSelector",
    "tolerations",
    "affinity",
    "podAnnotations",
    "podLabels",
    "resources",
    "parameters",
    "updateStrategy",
    "livenessProbe",
];

fn value_paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    let last = prefix.rsplit('.').next().unwrap_or(prefix);
    match value {
        Value::Object(map) if !map.is_empty() && !FREE_FORM.contains(&last) => {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                value_paths(&path, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_in_the_chart_readme_and_the_schema() {
    let dir = deploy_checks::chart_dir();
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("values.yaml")).expect("values.yaml")).expect("YAML");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("values.schema.json")).expect("schema")).expect("JSON");
    let mut paths = Vec::new();
    value_paths("", &values, &mut paths);
    assert!(paths.len() > 50, "{paths:?}");
    let undocumented: Vec<&String> = paths.iter().filter(|p| !readme.contains(&format!("| `{p}` |"))).collect();
    assert!(undocumented.is_empty(), "values missing from the README's table: {undocumented:?}");
    // Each documented value is a property the schema knows (so it is not refused).
    for path in &paths {
        let mut node = &schema;
        for part in path.split('.') {
            node = node
                .pointer(&format!("/properties/{part}"))
                .map(|n| match n.get("$ref").and_then(Value::as_str) {
                    Some(r) => schema.pointer(r.trim_start_matches('#')).expect("a resolvable $ref"),
                    None => n,
                })
                .unwrap_or_else(|| panic!("the schema has no {path}"));
        }
    }
}
