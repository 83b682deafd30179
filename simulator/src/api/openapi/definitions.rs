//! The schema definitions of everything a registry serves: built-in kinds
//! from k8s-openapi, custom resources from `crds`, each top-level kind tagged
//! with `x-kubernetes-group-version-kind` so clients can map kinds to schemas.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::builtin::Builtins;
use crate::api::crds;
use crate::api::resources::{Registry, ResourceType, AUTHORIZATION_GROUP};

/// One served kind in one version, and the definition that describes it.
#[derive(Debug, Clone)]
pub(super) struct ServedKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub definition: String,
    /// `None` for the create-only review kinds, which have no stored objects.
    pub rt: Option<ResourceType>,
}

impl ServedKind {
    pub fn gvk(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

pub(super) struct Definitions {
    /// Name → schema, with `#/definitions/` references.
    pub schemas: BTreeMap<String, Value>,
    pub kinds: Vec<ServedKind>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DefinitionError {
    #[error("no schema for the served kind {group}/{version} {kind}")]
    NoSchema { group: String, version: String, kind: String },
}

/// A custom resource's definition name, as the apiextensions apiserver forms
/// it: the group reversed, then version and kind (`io.kubevirt.v1.VirtualMachine`).
pub(super) fn crd_definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

const REVIEWS: &[&str] = &["SelfSubjectAccessReview", "SelfSubjectRulesReview"];

pub(super) fn build(registry: &Registry) -> Result<Definitions, DefinitionError> {
    let mut builtins = Builtins::new();
    let mut schemas = BTreeMap::new();
    let mut kinds = Vec::new();
    let missing = |rt: &ResourceType, version: &str| DefinitionError::NoSchema {
        group: rt.group.into(),
        version: version.into(),
        kind: rt.kind.into(),
    };
    for rt in registry.types() {
        for version in rt.versions {
            let definition = if rt.builtin {
                builtins.kind(rt.group, rt.kind).ok_or_else(|| missing(rt, version))?
            } else {
                let name = crd_definition_name(rt.group, version, rt.kind);
                schemas.insert(name.clone(), crds::schema(rt.group, rt.kind).ok_or_else(|| missing(rt, version))?);
                name
            };
            kinds.push(ServedKind { group: rt.group, version, kind: rt.kind, definition, rt: Some(rt.clone()) });
        }
    }
    for kind in REVIEWS {
        let definition = builtins.kind(AUTHORIZATION_GROUP, kind).ok_or_else(|| DefinitionError::NoSchema {
            group: AUTHORIZATION_GROUP.into(),
            version: "v1".into(),
            kind: kind.to_string(),
        })?;
        kinds.push(ServedKind { group: AUTHORIZATION_GROUP, version: "v1", kind, definition, rt: None });
    }
    schemas.extend(builtins.into_definitions());
    for k in &kinds {
        let Some(schema) = schemas.get_mut(&k.definition) else { continue };
        let Some(obj) = schema.as_object_mut() else { continue };
        let gvks = obj.entry("x-kubernetes-group-version-kind").or_insert_with(|| json!([]));
        if let Some(list) = gvks.as_array_mut() {
            list.push(k.gvk());
        }
        // k8s-openapi lists `metadata` as required because its Rust field is not
        // optional; the apiserver's definitions do not require it.
        if let Some(Value::Array(required)) = obj.get_mut("required") {
            required.retain(|r| r != "metadata");
            if required.is_empty() {
                obj.remove("required");
            }
        }
    }
    Ok(Definitions { schemas, kinds })
}

/// Names of the definitions `roots` refer to, directly or not, roots included.
pub(super) fn closure<'a>(schemas: &BTreeMap<String, Value>, roots: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut todo: Vec<String> = roots.into_iter().map(String::from).collect();
    while let Some(name) = todo.pop() {
        if seen.contains(&name) {
            continue;
        }
        if let Some(schema) = schemas.get(&name) {
            collect_refs(schema, &mut todo);
        }
        seen.push(name);
    }
    seen.sort();
    seen
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix("#/definitions/") {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::all_types;

    fn everything() -> Definitions {
        build(&Registry::new(|_| true, true)).expect("every served kind has a schema")
    }

    #[test]
    fn crd_names_reverse_the_group() {
        assert_eq!(crd_definition_name("kubevirt.io", "v1", "VirtualMachine"), "io.kubevirt.v1.VirtualMachine");
        assert_eq!(
            crd_definition_name("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
            "io.k8s.storage.snapshot.v1.VolumeSnapshot"
        );
    }

    #[test]
    fn every_kind_of_every_version_is_tagged_with_its_gvk() {
        let d = everything();
        let versions: usize = all_types().iter().map(|t| t.versions.len()).sum();
        assert_eq!(d.kinds.len(), versions + REVIEWS.len());
        for k in &d.kinds {
            let gvks = &d.schemas[&k.definition]["x-kubernetes-group-version-kind"];
            assert!(gvks.as_array().is_some_and(|l| l.contains(&k.gvk())), "{}: {gvks}", k.definition);
        }
        let pvc = &d.schemas["io.k8s.api.core.v1.PersistentVolumeClaim"];
        assert!(pvc.get("required").is_none(), "metadata is not required: {pvc}");
        assert_eq!(
            d.schemas["io.kubevirt.v1alpha3.VirtualMachine"]["x-kubernetes-group-version-kind"][0]["version"],
            "v1alpha3"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let d = everything();
        let names = closure(&d.schemas, d.kinds.iter().map(|k| k.definition.as_str()));
        for name in &names {
            assert!(d.schemas.contains_key(name), "dangling reference to {name}");
        }
        assert!(names.iter().any(|n| n == "io.k8s.api.core.v1.PodSpec"));
        assert!(names.iter().any(|n| n == crds::OBJECT_META));
    }
}
