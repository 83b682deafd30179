//! `/openapi/v3`: an index of group-version documents, each an OpenAPI 3.0
//! document with that group-version's paths and the schemas they use.

use serde_json::{json, Map, Value};

use super::builtin::{DELETE_OPTIONS, PATCH, STATUS};
use super::definitions::{closure, Definitions};
use super::paths::{self, Operation, ParamType, PathItem, PRODUCES};

/// `api/v1`, `apis/kubevirt.io/v1`: the key of a group-version in the index.
pub(super) fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The group-versions served, in a stable order.
pub(super) fn group_versions(defs: &Definitions) -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&'static str, &'static str)> = Vec::new();
    for k in &defs.kinds {
        if !gvs.contains(&(k.group, k.version)) {
            gvs.push((k.group, k.version));
        }
    }
    gvs
}

/// References point at `#/components/schemas/` in OpenAPI 3, and a reference
/// with siblings (a field's own description) becomes `allOf: [{$ref}]`, as
/// the apiserver writes it: OpenAPI 3.0 ignores siblings of `$ref`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let target = match r.strip_prefix("#/definitions/") {
                    Some(name) => format!("#/components/schemas/{name}"),
                    None => r.clone(),
                };
                if m.len() == 1 {
                    m.insert("$ref".into(), json!(target));
                } else {
                    m.remove("$ref");
                    m.insert("allOf".into(), json!([{"$ref": target}]));
                }
                return;
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn schema_ref(definition: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{definition}")})
}

fn operation(op: &Operation) -> Value {
    let params: Vec<Value> = op
        .params
        .iter()
        .map(|p| {
            let ty = match p.ty {
                ParamType::String => "string",
                ParamType::Boolean => "boolean",
                ParamType::Integer => "integer",
            };
            let mut v = json!({"name": p.name, "in": p.location, "description": p.description,
                               "schema": {"type": ty, "uniqueItems": true}});
            if p.location == "path" {
                v["required"] = json!(true);
            }
            v
        })
        .collect();
    let content = |types: &[&str], definition: &str| -> Value {
        Value::Object(types.iter().map(|t| (t.to_string(), json!({"schema": schema_ref(definition)}))).collect())
    };
    let ok = json!({"description": "OK", "content": content(PRODUCES, &op.response)});
    let mut responses = json!({"200": ok, "401": {"description": "Unauthorized"}});
    if op.method == "post" {
        responses["201"] = json!({"description": "Created", "content": ok["content"]});
    }
    let mut out = json!({
        "tags": [op.tag],
        "description": op.description,
        "operationId": op.operation_id,
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    });
    if let Some(body) = &op.body {
        out["requestBody"] = json!({"content": content(&body.media_types, &body.definition), "required": true});
    }
    out
}

/// The document of one group-version, `None` when nothing is served there.
pub(super) fn group_version(defs: &Definitions, group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<_> = defs.kinds.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return None;
    }
    let items: Vec<PathItem> = kinds.iter().flat_map(|k| paths::for_kind(k)).collect();
    let mut paths = Map::new();
    for item in &items {
        let ops: Map<String, Value> = item.operations.iter().map(|op| (op.method.to_string(), operation(op))).collect();
        paths.insert(item.path.clone(), Value::Object(ops));
    }
    let roots = kinds.iter().map(|k| k.definition.as_str()).chain([STATUS, DELETE_OPTIONS, PATCH]);
    let mut schemas = Map::new();
    for name in closure(&defs.schemas, roots) {
        if let Some(schema) = defs.schemas.get(&name) {
            let mut schema = schema.clone();
            rewrite_refs(&mut schema);
            schemas.insert(name, schema);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "simulated"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
