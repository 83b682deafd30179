//! The structural schemas of the custom resources the registry serves
//! (KubeVirt, Longhorn, Harvester, CSI snapshots), as their CRDs publish them
//! to OpenAPI: written from the projects' published CRDs and API types, for
//! the fields the CSI driver, the simulator's controllers and users touch.
//! Objects whose content the simulator never looks into keep
//! `x-kubernetes-preserve-unknown-fields`, as a CRD would for a free-form
//! field; objects the real CRD gives more fields than written here keep it
//! next to their known properties ([`open`]). Either way strict field
//! validation never refuses a manifest the real CRD accepts.
//!
//! Schemas use `#/definitions/…` references (OpenAPI v2 form) for the one
//! built-in type they name, `ObjectMeta`; the v3 documents rewrite them.

mod harvester;
mod kubevirt;
mod longhorn;
mod snapshots;

use serde_json::{json, Map, Value};

pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The schema of `kind` in `group` (any served version), if the kind is a CRD this module knows.
pub fn schema(group: &str, kind: &str) -> Option<Value> {
    let (spec_status, description) = match (group, kind) {
        ("kubevirt.io", "VirtualMachine") => kubevirt::virtual_machine(),
        ("kubevirt.io", "VirtualMachineInstance") => kubevirt::virtual_machine_instance(),
        ("longhorn.io", "Volume") => longhorn::volume(),
        ("longhorn.io", "VolumeAttachment") => longhorn::volume_attachment(),
        ("longhorn.io", "ShareManager") => longhorn::share_manager(),
        ("harvesterhci.io", "Setting") => harvester::setting(),
        ("harvesterhci.io", "NetworkFilesystem") => harvester::network_filesystem(),
        ("harvesterhci.io", "VolumeRemoteBackup") => harvester::volume_remote_backup(),
        ("harvesterhci.io", "VolumeRemoteRestore") => harvester::volume_remote_restore(),
        ("snapshot.storage.k8s.io", "VolumeSnapshot") => snapshots::volume_snapshot(),
        ("snapshot.storage.k8s.io", "VolumeSnapshotContent") => snapshots::volume_snapshot_content(),
        ("snapshot.storage.k8s.io", "VolumeSnapshotClass") => snapshots::volume_snapshot_class(),
        _ => return None,
    };
    Some(kind_schema(description, spec_status))
}

/// Top-level fields: a CRD's own properties (`spec`, `status`, or top-level
/// fields like a Setting's `value`) and what it requires, plus the
/// `apiVersion`/`kind`/`metadata` every object has.
pub(crate) struct Fields {
    pub properties: Vec<(&'static str, Value)>,
    pub required: Vec<&'static str>,
}

fn kind_schema(description: &str, fields: Fields) -> Value {
    let mut properties = vec![
        (
            "apiVersion",
            string("APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values."),
        ),
        (
            "kind",
            string("Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase."),
        ),
        ("metadata", json!({"$ref": format!("#/definitions/{OBJECT_META}"), "description": "Standard object's metadata."})),
    ];
    properties.extend(fields.properties);
    let mut schema = object(description, properties);
    if !fields.required.is_empty() {
        schema["required"] = json!(fields.required);
    }
    schema
}

// Builders for the schema shapes CRDs use. Descriptions are this project's own
// wording of what the upstream types document.

pub(crate) fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

pub(crate) fn enumeration(description: &str, values: &[&str]) -> Value {
    json!({"type": "string", "description": description, "enum": values})
}

pub(crate) fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

pub(crate) fn integer(description: &str) -> Value {
    json!({"type": "integer", "format": "int32", "description": description})
}

pub(crate) fn int64(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "description": description})
}

pub(crate) fn date_time(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "description": description})
}

/// An integer or a string, as `resource.Quantity` and `IntOrString` are published.
pub(crate) fn int_or_string(description: &str) -> Value {
    json!({"x-kubernetes-int-or-string": true, "description": description})
}

pub(crate) fn array(description: &str, items: Value) -> Value {
    json!({"type": "array", "description": description, "items": items})
}

pub(crate) fn strings(description: &str) -> Value {
    array(description, json!({"type": "string"}))
}

pub(crate) fn map_of(description: &str, values: Value) -> Value {
    json!({"type": "object", "description": description, "additionalProperties": values})
}

pub(crate) fn object(description: &str, properties: Vec<(&str, Value)>) -> Value {
    let props: Map<String, Value> = properties.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    json!({"type": "object", "description": description, "properties": props})
}

pub(crate) fn object_req(description: &str, properties: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let mut o = object(description, properties);
    o["required"] = json!(required);
    o
}

/// An object whose real CRD has more fields than written here: unknown ones are kept.
pub(crate) fn open(mut schema: Value) -> Value {
    schema["x-kubernetes-preserve-unknown-fields"] = json!(true);
    schema
}

/// A free-form object the simulator does not look into.
pub(crate) fn free_form(description: &str) -> Value {
    json!({"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": true})
}

/// `metav1.Condition`-like entries several of these kinds report.
pub(crate) fn conditions(description: &str) -> Value {
    array(
        description,
        object_req(
            "A condition of the object.",
            vec![
                ("type", string("Type of the condition.")),
                (
                    "status",
                    enumeration("Status of the condition: True, False or Unknown.", &["True", "False", "Unknown"]),
                ),
                ("reason", string("Machine-readable reason for the last transition.")),
                ("message", string("Human-readable details of the last transition.")),
                ("lastProbeTime", date_time("When the condition was last probed.")),
                ("lastTransitionTime", date_time("When the condition last changed status.")),
            ],
            &["type", "status"],
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[(&str, &str)] = &[
        ("kubevirt.io", "VirtualMachine"),
        ("kubevirt.io", "VirtualMachineInstance"),
        ("longhorn.io", "Volume"),
        ("longhorn.io", "VolumeAttachment"),
        ("longhorn.io", "ShareManager"),
        ("harvesterhci.io", "Setting"),
        ("harvesterhci.io", "NetworkFilesystem"),
        ("harvesterhci.io", "VolumeRemoteBackup"),
        ("harvesterhci.io", "VolumeRemoteRestore"),
        ("snapshot.storage.k8s.io", "VolumeSnapshot"),
        ("snapshot.storage.k8s.io", "VolumeSnapshotContent"),
        ("snapshot.storage.k8s.io", "VolumeSnapshotClass"),
    ];

    /// Every schema node must be one OpenAPI v2 can carry and kubectl's
    /// model parser accepts: one type, arrays with exactly one item schema,
    /// references only to ObjectMeta, every field described (what `kubectl
    /// explain` shows).
    fn check(path: &str, s: &Value, field: bool) {
        let o = s.as_object().unwrap_or_else(|| panic!("{path}: not an object"));
        if let Some(r) = o.get("$ref") {
            assert_eq!(r, &json!(format!("#/definitions/{OBJECT_META}")), "{path}");
            return;
        }
        let described = o.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty());
        assert!(described || !field, "{path}: no description");
        for k in o.keys() {
            assert!(
                matches!(
                    k.as_str(),
                    "type"
                        | "format"
                        | "description"
                        | "enum"
                        | "properties"
                        | "required"
                        | "items"
                        | "additionalProperties"
                        | "x-kubernetes-preserve-unknown-fields"
                        | "x-kubernetes-int-or-string"
                ),
                "{path}: {k}"
            );
        }
        match o.get("type").and_then(Value::as_str) {
            Some("array") => check(&format!("{path}[]"), &o["items"], false),
            Some("object") => {
                for (k, v) in o.get("properties").and_then(Value::as_object).into_iter().flatten() {
                    check(&format!("{path}.{k}"), v, true);
                }
                if let Some(a) = o.get("additionalProperties") {
                    check(&format!("{path}{{}}"), a, false);
                }
                for r in o.get("required").and_then(Value::as_array).into_iter().flatten() {
                    let r = r.as_str().unwrap_or_default();
                    assert!(o["properties"].get(r).is_some(), "{path}: required {r} is not a property");
                }
            }
            Some("string" | "integer" | "boolean" | "number") => {}
            None => assert!(o.contains_key("x-kubernetes-int-or-string"), "{path}: no type"),
            Some(other) => panic!("{path}: type {other}"),
        }
    }

    #[test]
    fn every_known_kind_has_a_well_formed_schema() {
        for (group, kind) in KNOWN {
            let s = schema(group, kind).unwrap_or_else(|| panic!("{group} {kind}"));
            check(kind, &s, true);
            assert!(s["properties"]["metadata"]["$ref"].is_string(), "{kind}");
        }
        assert!(schema("", "Pod").is_none());
    }

    #[test]
    fn vm_template_volumes_carry_the_hotplug_sources() {
        let s = schema("kubevirt.io", "VirtualMachine").expect("VM schema");
        let volume =
            &s["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]["volumes"]["items"];
        assert_eq!(volume["required"], json!(["name"]));
        let pvc = &volume["properties"]["persistentVolumeClaim"];
        assert_eq!(pvc["required"], json!(["claimName"]));
        assert_eq!(pvc["properties"]["hotpluggable"]["type"], "boolean");
        let vmi = schema("kubevirt.io", "VirtualMachineInstance").expect("VMI schema");
        let status = &vmi["properties"]["status"]["properties"]["volumeStatus"]["items"]["properties"];
        assert!(status["hotplugVolume"]["properties"]["attachPodUID"].is_object());
        assert!(status["phase"]["enum"].as_array().is_some_and(|p| p.contains(&json!("Ready"))));
    }
}
