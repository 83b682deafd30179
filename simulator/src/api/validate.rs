//! Built-in validation (what the apiserver's registry strategies and CRD schemas
//! reject with 422 and field causes). Webhooks of Harvester/KubeVirt live with
//! their controllers as admission plugins.

use serde_json::Value;

use super::error::Cause;
use super::meta;
use super::quantity;
use super::resources::ResourceType;

/// One dot-free part of an RFC 1123 name, without the 63-character cap:
/// apimachinery's `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.as_bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// apimachinery's `RegexError`: the message, the examples (joined with a
/// doubled space, as Go's loop writes them) and the regular expression.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut out = format!("{message} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{format}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `IsDNS1123Label`: what is wrong with a name that must be a label (namespaces).
fn dns_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_dns_label_chars(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// `IsDNS1123Subdomain`: at most 253 characters matching the label pattern
/// between dots. The parts are *not* capped at 63 characters: the attacher
/// names VolumeAttachments `csi-<sha256 hex>` (68 characters).
fn dns_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.split('.').all(is_dns_label_chars) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsValidPathSegmentName`: RBAC names only need to be valid path segments
/// (`system:…`, `harvesterhci.io:csi-driver`).
fn path_segment_errors(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    let mut errs = Vec::new();
    for c in ["/", "%"] {
        if s.contains(c) {
            errs.push(format!("may not contain '{c}'"));
        }
    }
    errs
}

fn check_name(rt: &ResourceType, obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta::name(obj);
    let errs = match (rt.group, rt.plural) {
        ("rbac.authorization.k8s.io", _) => path_segment_errors(name),
        ("", "namespaces") => dns_label_errors(name),
        _ => dns_subdomain_errors(name),
    };
    for why in errs {
        causes.push(Cause::invalid("metadata.name", name, &why));
    }
}

fn non_empty_array(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer).and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// Sorted, as the apiserver lists supported values.
const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

fn check_access_modes(obj: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    match obj.pointer(pointer).and_then(Value::as_array) {
        Some(modes) if !modes.is_empty() => {
            for m in modes {
                let m = m.as_str().unwrap_or("");
                if !ACCESS_MODES.contains(&m) {
                    causes.push(Cause::unsupported(field, m, ACCESS_MODES));
                }
            }
        }
        _ => causes.push(Cause::required_because(field, "at least 1 access mode is required")),
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

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MESSAGE: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// `IsQualifiedName` (finalizers, label keys): an optional DNS subdomain
/// prefix and `/`, then a name of at most 63 characters.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return vec!["prefix part must be non-empty".into()];
            }
            let mut errs: Vec<String> =
                dns_subdomain_errors(prefix).into_iter().map(|e| format!("prefix part {e}")).collect();
            errs.extend(qualified_name_part_errors(name));
            return errs;
        }
        _ => {
            return vec![format!(
                "{} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    &format!("a qualified name {QUALIFIED_NAME_MESSAGE}"),
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )]
        }
    };
    qualified_name_part_errors(name)
}

fn qualified_name_part_errors(name: &str) -> Vec<String> {
    if name.is_empty() {
        return vec!["name part must be non-empty".into()];
    }
    let mut errs = Vec::new();
    if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    let b = name.as_bytes();
    let ok = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if !ok {
        errs.push(regex_error(
            &format!("name part {QUALIFIED_NAME_MESSAGE}"),
            QUALIFIED_NAME_FMT,
            &["MyName", "my.name", "123-abc"],
        ));
    }
    errs
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
            const WHY: &str = "must specify exactly one of inlineVolumeSpec and persistentVolumeName";
            match (pv, inline) {
                (false, false) => causes.push(Cause::required_because("spec.source", WHY)),
                (true, true) => causes.push(Cause::forbidden("spec.source", WHY)),
                _ => {}
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
                // The CRD's CEL rule; the apiserver names the failing value by its type.
                causes.push(Cause::invalid(
                    "spec.source",
                    "object",
                    "exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set",
                ));
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
            for f in fs {
                let name = f.as_str().unwrap_or_default();
                for why in qualified_name_errors(name) {
                    causes.push(Cause::invalid("metadata.finalizers", name, &why));
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
            for field in ["parameters", "provisioner", "reclaimPolicy"] {
                if old.get(field) != new.get(field) {
                    causes.push(Cause::forbidden(field, &format!("updates to {field} are forbidden.")));
                }
            }
            if old.get("volumeBindingMode") != new.get("volumeBindingMode") {
                causes.push(Cause::invalid(
                    "volumeBindingMode",
                    meta::str_at(new, "/volumeBindingMode"),
                    "field is immutable",
                ));
            }
        }
        ("storage.k8s.io", "volumeattachments") if old.get("spec") != new.get("spec") => {
            // The apiserver prints the Go value of the new spec; JSON says the same here.
            let spec = new.get("spec").map(Value::to_string).unwrap_or_default();
            causes.push(Cause::invalid_raw("spec", &spec, "field is immutable"));
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
    fn bad_names_are_rejected_in_the_apiservers_words() {
        let causes = on_create(&rt("configmaps"), &json!({"metadata": {"name": "Bad_Name"}}));
        assert_eq!(causes[0].field, "metadata.name");
        assert_eq!(
            causes[0].message,
            r#"Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
        );
        let causes = on_create(&rt("namespaces"), &json!({"metadata": {"name": "a.b"}}));
        assert_eq!(
            causes[0].message,
            r#"Invalid value: "a.b": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#
        );
        let long = "n".repeat(64);
        let causes = on_create(&rt("namespaces"), &json!({"metadata": {"name": long}}));
        assert_eq!(causes.len(), 1, "only the length is wrong");
        assert!(causes[0].message.ends_with(": must be no more than 63 characters"), "{}", causes[0].message);
        let role = all_types().into_iter().find(|t| t.plural == "roles").expect("roles");
        let causes = on_create(&role, &json!({"metadata": {"name": "a/b"}}));
        assert_eq!(causes[0].message, r#"Invalid value: "a/b": may not contain '/'"#);
    }

    #[test]
    fn finalizers_must_be_qualified_names() {
        let bad = |f: &str| {
            on_create(&rt("configmaps"), &json!({"metadata": {"name": "a", "finalizers": [f]}}))
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert!(bad("example.com/protect").is_empty());
        assert!(bad("kubernetes").is_empty());
        assert_eq!(bad(""), [r#"metadata.finalizers: Invalid value: "": name part must be non-empty"#]);
        assert_eq!(bad("/x"), [r#"metadata.finalizers: Invalid value: "/x": prefix part must be non-empty"#]);
        assert!(bad("a/b/c")[0].contains("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
        assert!(bad("-x")[0].contains("name part must consist of alphanumeric characters, '-', '_' or '.'"));
    }

    #[test]
    fn pvc_access_modes_in_the_apiservers_words() {
        let causes = on_create(
            &rt("persistentvolumeclaims"),
            &json!({"metadata": {"name": "a"}, "spec": {"accessModes": ["Nope"], "resources": {"requests": {"storage": "1Gi"}}}}),
        );
        assert_eq!(
            causes[0].message,
            r#"Unsupported value: "Nope": supported values: "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod""#
        );
        assert_eq!(causes[0].field, "spec.accessModes");
        let causes = on_create(&rt("persistentvolumeclaims"), &json!({"metadata": {"name": "a"}, "spec": {}}));
        assert_eq!(causes[0].message, "Required value: at least 1 access mode is required");
    }
}
