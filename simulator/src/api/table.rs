//! `meta.k8s.io/v1` Table rendering, which `kubectl get` asks for
//! (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`).

use serde_json::{json, Value};

use super::meta;
use super::resources::ResourceType;

pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

fn age(obj: &Value) -> String {
    let Some(created) = meta::parse_time(meta::str_at(obj, "/metadata/creationTimestamp")) else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now().duration_since(created).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn cell(obj: &Value, path: &str) -> Value {
    let pointer = format!("/{}", path.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => json!(s),
        Some(Value::Bool(b)) => json!(b.to_string()),
        Some(Value::Number(n)) => json!(n.to_string()),
        _ => json!("<none>"),
    }
}

fn row(rt: &ResourceType, obj: &Value, include_object: &str) -> Value {
    let mut cells = vec![json!(meta::name(obj))];
    cells.extend(rt.columns.iter().map(|(_, path)| cell(obj, path)));
    cells.push(json!(age(obj)));
    let object = match include_object {
        "Object" => obj.clone(),
        "None" => Value::Null,
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    };
    json!({"cells": cells, "object": object})
}

pub fn table(rt: &ResourceType, objects: &[&Value], resource_version: &str, include_object: &str) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    columns.extend(
        rt.columns.iter().map(
            |(header, _)| json!({"name": header, "type": "string", "format": "", "description": "", "priority": 0}),
        ),
    );
    columns.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}),
    );
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": objects.iter().map(|o| row(rt, o, include_object)).collect::<Vec<_>>(),
    })
}
