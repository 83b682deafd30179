//! Built-in validation (what the apiserver's registry strategies and CRD schemas
//! reject with 422 and field causes). Webhooks of Harvester/KubeVirt live with
//! their controllers as admission plugins.

use serde_json::Value;

use super::error::Cause;
use super::meta;
use super::quantity;
use super::resources::ResourceType;

/// One dot-free part of an RFC 1123 name, without the 63-character cap.
fn is_dns_label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.as_bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_chars(s)
}

/// Kubernetes' IsDNS1123Subdomain: at most 253 characters matching the label
/// pattern between dots. The parts are *not* capped at 63 characters: the
/// attacher names VolumeAttachments `csi-<sha256 hex>` (68 characters).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label_chars)
}

/// RBAC names only need to be valid path segments (`system:…`, `harvesterhci.io:csi-driver`).
fn is_path_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('%')
}

fn check_name(rt: &ResourceType, obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta::name(obj);
    let ok = match (rt.group, rt.plural) {
        ("rbac.authorization.k8s.io", _) => is_path_segment(name),
        ("", "namespaces") => is_dns_label(name),
        _ => is_dns_subdomain(name),
    };
    if !ok {
        let why = if rt.plural == "namespaces" {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        causes.push(Cause::invalid("metadata.name", name, why));
    }
}

fn non_empty_array(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer).and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

const ACCESS_MODES: &[&str] = &["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];

fn check_access_modes(obj: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    match obj.pointer(pointer).and_then(Value::as_array) {
        Some(modes) if !modes.is_empty() => {
            for (i, m) in modes.iter().enumerate() {
                let m = m.as_str().unwrap_or("");
                if !ACCESS_MODES.contains(&m) {
                    causes.push(Cause::unsupported(&format!("{field}[{i}]"), m, ACCESS_MODES));
                }
            }
        }
        _ => causes.push(Cause::required(field)),
    }
}

fn check_quantity(obj: &Value, pointer: &str, field: &str, required: bool, causes: &mut Vec<Cause>) {
    match obj.pointer(pointer) {
        None | Some(Value::Null) => {
            if required {
                causes.push(Cause::required(field));
            }
        }
        Some(Value::String(s)) => {
            if quantity::parse_bytes(s).is_none() {
                causes.push(Cause::invalid(
                    field,
                    s,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                ));
            }
        }
        Some(Value::Number(_)) => {}
        Some(other) => causes.push(Cause::invalid(field, &other.to_string(), "must be a quantity")),
    }
}

fn check_enum(obj: &Value, pointer: &str, field: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    if let Some(v) = obj.pointer(pointer) {
        let s = v.as_str().unwrap_or("");
        if !allowed.contains(&s) {
            causes.push(Cause::unsupported(field, s, allowed));
        }
    }
}

pub fn on_create(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    check_name(rt, obj, &mut causes);
    check_kind(rt, obj, &mut causes);
    causes
}

fn check_kind(rt: &ResourceType, obj: &Value, causes: &mut Vec<Cause>) {
    match (rt.group, rt.plural) {
        ("", "persistentvolumeclaims") => {
            check_access_modes(obj, "/spec/accessModes", "spec.accessModes", causes);
            check_quantity(obj, "/spec/resources/requests/storage", "spec.resources[storage]", true, causes);
            check_enum(obj, "/spec/volumeMode", "spec.volumeMode", &["Block", "Filesystem"], causes);
        }
        ("", "persistentvolumes") => {
            check_access_modes(obj, "/spec/accessModes", "spec.accessModes", causes);
            check_quantity(obj, "/spec/capacity/storage", "spec.capacity", true, causes);
        }
        ("", "pods") => match obj.pointer("/spec/containers").and_then(Value::as_array) {
            Some(cs) if !cs.is_empty() => {
                for (i, c) in cs.iter().enumerate() {
                    if meta::str_at(c, "/name").is_empty() {
                        causes.push(Cause::required(&format!("spec.containers[{i}].name")));
                    }
                    if meta::str_at(c, "/image").is_empty() {
                        causes.push(Cause::required(&format!("spec.containers[{i}].image")));
                    }
                }
            }
            _ => causes.push(Cause::required("spec.containers")),
        },
        ("storage.k8s.io", "storageclasses") => {
            if meta::str_at(obj, "/provisioner").is_empty() {
                causes.push(Cause::required("provisioner"));
            }
            check_enum(obj, "/reclaimPolicy", "reclaimPolicy", &["Delete", "Retain"], causes);
            check_enum(obj, "/volumeBindingMode", "volumeBindingMode", &["Immediate", "WaitForFirstConsumer"], causes);
        }
        ("storage.k8s.io", "volumeattachments") => {
            if meta::str_at(obj, "/spec/attacher").is_empty() {
                causes.push(Cause::required("spec.attacher"));
            }
            if meta::str_at(obj, "/spec/nodeName").is_empty() {
                causes.push(Cause::required("spec.nodeName"));
            }
            let pv = !meta::str_at(obj, "/spec/source/persistentVolumeName").is_empty();
            let inline = obj.pointer("/spec/source/inlineVolumeSpec").is_some_and(|v| !v.is_null());
            if pv == inline {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: must specify exactly one of persistentVolumeName and inlineVolumeSpec"
                        .into(),
                    field: "spec.source".into(),
                });
            }
        }
        ("kubevirt.io", "virtualmachines") if obj.pointer("/spec/template").is_none() => {
            causes.push(Cause::required("spec.template"));
        }
        ("longhorn.io", "volumes") => {
            check_quantity(obj, "/spec/size", "spec.size", false, causes);
            check_enum(obj, "/spec/accessMode", "spec.accessMode", &["rwo", "rwop", "rwx"], causes);
        }
        ("harvesterhci.io", "networkfilesystems") => {
            if meta::str_at(obj, "/spec/networkFSName").is_empty() {
                causes.push(Cause::required("spec.networkFSName"));
            }
            check_enum(
                obj,
                "/spec/desiredState",
                "spec.desiredState",
                &["Enabled", "Enabling", "Disabled", "Disabling", "Unknown"],
                causes,
            );
        }
        ("snapshot.storage.k8s.io", "volumesnapshots") => {
            let pvc = !meta::str_at(obj, "/spec/source/persistentVolumeClaimName").is_empty();
            let content = !meta::str_at(obj, "/spec/source/volumeSnapshotContentName").is_empty();
            if pvc == content {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: exactly one of persistentVolumeClaimName and volumeSnapshotContentName must be set".into(),
                    field: "spec.source".into(),
                });
            }
        }
        ("harvesterhci.io", "volumeremotebackups") if meta::str_at(obj, "/spec/source").is_empty() => {
            causes.push(Cause::required("spec.source"));
        }
        ("harvesterhci.io", "volumeremoterestores") if meta::str_at(obj, "/spec/from").is_empty() => {
            causes.push(Cause::required("spec.from"));
        }
        _ => {}
    }
    if non_empty_array(obj, "/metadata/finalizers") {
        if let Some(fs) = obj.pointer("/metadata/finalizers").and_then(Value::as_array) {
            for (i, f) in fs.iter().enumerate() {
                if f.as_str().is_none_or(|s| s.is_empty()) {
                    causes.push(Cause::invalid(
                        &format!("metadata.finalizers[{i}]"),
                        &f.to_string(),
                        "must be a non-empty string",
                    ));
                }
            }
        }
    }
}

pub fn on_update(rt: &ResourceType, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    check_kind(rt, new, &mut causes);
    match (rt.group, rt.plural) {
        ("", "persistentvolumeclaims") => {
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = spec.as_object_mut() {
                    m.remove("resources");
                    m.remove("volumeAttributesClassName");
                    // The binder fills volumeName once.
                    if meta::str_at(v, "/spec/volumeName").is_empty()
                        || meta::str_at(old, "/spec/volumeName").is_empty()
                    {
                        m.remove("volumeName");
                    }
                }
                spec
            };
            if strip(old) != strip(new) {
                causes.push(Cause::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
            let size = |v: &Value| quantity::parse_bytes(meta::str_at(v, "/spec/resources/requests/storage"));
            if let (Some(o), Some(n)) = (size(old), size(new)) {
                if n < o {
                    causes.push(Cause::forbidden(
                        "spec.resources.requests.storage",
                        "field can not be less than previous value",
                    ));
                }
            }
        }
        ("storage.k8s.io", "storageclasses") => {
            for field in ["parameters", "provisioner", "reclaimPolicy", "volumeBindingMode"] {
                if old.get(field) != new.get(field) {
                    causes.push(Cause::forbidden(field, &format!("updates to {field} are forbidden.")));
                }
            }
        }
        ("storage.k8s.io", "volumeattachments") if old.get("spec") != new.get("spec") => {
            causes.push(Cause::invalid("spec", "", "field is immutable"));
        }
        ("", "secrets") if old.get("type") != new.get("type") => {
            causes.push(Cause::invalid("type", meta::str_at(new, "/type"), "field is immutable"));
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::all_types;
    use serde_json::json;

    fn rt(plural: &str) -> ResourceType {
        all_types().into_iter().find(|t| t.plural == plural && t.group.is_empty()).unwrap()
    }

    #[test]
    fn pvc_needs_modes_and_size() {
        let causes = on_create(&rt("persistentvolumeclaims"), &json!({"metadata": {"name": "a"}, "spec": {}}));
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.accessModes", "spec.resources[storage]"]);
    }

    #[test]
    fn pvc_cannot_shrink() {
        let old = json!({"metadata": {"name": "a"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}});
        let mut new = old.clone();
        new["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
        let causes = on_update(&rt("persistentvolumeclaims"), &old, &new);
        assert_eq!(causes[0].field, "spec.resources.requests.storage");
    }

    #[test]
    fn subdomain_parts_may_be_longer_than_a_label() {
        let va = all_types().into_iter().find(|t| t.plural == "volumeattachments").unwrap();
        let name = format!("csi-{}", "ab".repeat(32));
        let obj = json!({"metadata": {"name": name}, "spec": {"attacher": "driver.longhorn.io", "nodeName": "n", "source": {"persistentVolumeName": "pv"}}});
        assert_eq!(on_create(&va, &obj), vec![]);
        let causes = on_create(&rt("namespaces"), &json!({"metadata": {"name": "n".repeat(64)}}));
        assert_eq!(causes[0].field, "metadata.name");
        let causes = on_create(&rt("configmaps"), &json!({"metadata": {"name": "n".repeat(254)}}));
        assert_eq!(causes[0].field, "metadata.name");
    }

    #[test]
    fn bad_names_are_rejected() {
        let causes = on_create(&rt("configmaps"), &json!({"metadata": {"name": "Bad_Name"}}));
        assert_eq!(causes[0].field, "metadata.name");
    }
}
