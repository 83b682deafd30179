//! `/openapi/v2`: one Swagger 2.0 document with every path and definition.

use serde_json::{json, Map, Value};

use super::definitions::Definitions;
use super::paths::{self, Operation, ParamType, PathItem, PRODUCES};

fn param_type(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "string",
        ParamType::Boolean => "boolean",
        ParamType::Integer => "integer",
    }
}

fn operation(op: &Operation) -> Value {
    let mut params: Vec<Value> = op
        .params
        .iter()
        .map(|p| {
            let mut v = json!({"name": p.name, "in": p.location, "description": p.description,
                               "type": param_type(p.ty), "uniqueItems": true});
            if p.location == "path" {
                v["required"] = json!(true);
            }
            v
        })
        .collect();
    let mut consumes = json!(["*/*"]);
    if let Some(body) = &op.body {
        params.push(json!({"name": "body", "in": "body", "required": true,
                           "schema": {"$ref": format!("#/definitions/{}", body.definition)}}));
        consumes = json!(body.media_types);
    }
    let ok = json!({"description": "OK", "schema": {"$ref": format!("#/definitions/{}", op.response)}});
    let mut responses = json!({"200": ok, "401": {"description": "Unauthorized"}});
    if op.method == "post" {
        responses["201"] = json!({"description": "Created", "schema": ok["schema"]});
    }
    json!({
        "description": op.description,
        "consumes": consumes,
        "produces": PRODUCES,
        "schemes": ["https"],
        "tags": [op.tag],
        "operationId": op.operation_id,
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    })
}

pub(super) fn path_items(items: &[PathItem]) -> Map<String, Value> {
    let mut out = Map::new();
    for item in items {
        let mut ops = Map::new();
        for op in &item.operations {
            ops.insert(op.method.to_string(), operation(op));
        }
        out.insert(item.path.clone(), Value::Object(ops));
    }
    out
}

pub(super) fn document(defs: &Definitions, version: &str) -> Value {
    let items: Vec<PathItem> = defs.kinds.iter().flat_map(paths::for_kind).collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": path_items(&items),
        "definitions": defs.schemas,
    })
}
