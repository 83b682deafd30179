//! Fields an object has that its schema does not declare: what the apiserver's
//! strict decoding reports (`unknown field "spec.foo"`), found by walking the
//! object along the same definitions the OpenAPI documents publish.

use std::collections::BTreeMap;

use serde_json::Value;

/// How deep a schema may nest (Kubernetes' own types recurse through JSONSchemaProps).
const MAX_DEPTH: usize = 64;

/// Paths of the undeclared fields of `obj`, in document order. Keys starting
/// with `$` are strategic-merge-patch directives, not fields.
pub fn unknown_fields(obj: &Value, schema: &Value, definitions: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    walk(obj, schema, definitions, "", &mut out, 0);
    out
}

fn resolve<'a>(schema: &'a Value, definitions: &'a BTreeMap<String, Value>) -> &'a Value {
    let mut s = schema;
    for _ in 0..MAX_DEPTH {
        match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/definitions/")) {
            Some(name) => match definitions.get(name) {
                Some(target) => s = target,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(
    v: &Value,
    schema: &Value,
    definitions: &BTreeMap<String, Value>,
    path: &str,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let schema = resolve(schema, definitions);
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    match v {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if properties.is_none() && additional.is_none() {
                // A free-form object (RawExtension, FieldsV1, preserved fields).
                return;
            }
            for (key, value) in fields {
                if key.starts_with('$') {
                    continue;
                }
                let child = join(path, key);
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(value, s, definitions, &child, out, depth + 1),
                    (None, None) if preserve => {}
                    (None, None) => out.push(child),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, item_schema, definitions, &format!("{path}[{i}]"), out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> BTreeMap<String, Value> {
        let mut d = BTreeMap::new();
        d.insert(
            "Meta".into(),
            json!({"type": "object", "properties": {"name": {"type": "string"},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}),
        );
        d.insert(
            "Kind".into(),
            json!({"type": "object", "properties": {
                "metadata": {"$ref": "#/definitions/Meta", "description": "d"},
                "spec": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                    "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"n": {"type": "object", "properties": {}}}},
                    "raw": {"type": "object"}}}}}),
        );
        d
    }

    #[test]
    fn names_undeclared_fields_with_their_paths() {
        let d = defs();
        let obj = json!({"metadata": {"name": "a", "labels": {"x": "y"}, "nam": "typo"},
                         "spec": {"items": [{"name": "a"}, {"nme": "b"}], "open": {"anything": 1, "n": {"bad": 1}},
                                  "raw": {"free": true}, "extra": 1},
                         "top": 1});
        assert_eq!(
            unknown_fields(&obj, &d["Kind"], &d),
            ["metadata.nam", "spec.extra", "spec.items[1].nme", "spec.open.n.bad", "top"]
        );
    }

    #[test]
    fn patch_directives_are_not_fields() {
        let d = defs();
        let patch =
            json!({"spec": {"$setElementOrder/items": [{"name": "a"}], "items": [{"name": "a", "$patch": "delete"}]}});
        assert!(unknown_fields(&patch, &d["Kind"], &d).is_empty());
    }
}
