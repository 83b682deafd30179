//! Rendered manifests as JSON values: parsing a multi-document YAML stream,
//! a stable order, and lookups the chart tests share.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("rendered manifests are not YAML: {0}")]
pub struct ParseError(String);

/// Every non-empty document of a YAML stream, in a stable order (kind,
/// namespace, name) so a snapshot does not depend on helm's output order.
pub fn parse(yaml: &str) -> Result<Vec<Value>, ParseError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| ParseError(e.to_string()))?;
    let mut docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    docs.sort_by_key(key);
    Ok(docs)
}

fn text(doc: &Value, pointer: &str) -> String {
    doc.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// (kind, namespace, name) of an object.
pub fn key(doc: &Value) -> (String, String, String) {
    (text(doc, "/kind"), text(doc, "/metadata/namespace"), text(doc, "/metadata/name"))
}

/// All objects of a kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind)).collect()
}

/// The one object of a kind whose name ends with `suffix` (names carry the release prefix).
pub fn named<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> Option<&'a Value> {
    let mut found = of_kind(docs, kind).into_iter().filter(|d| text(d, "/metadata/name").ends_with(suffix));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The containers of a workload's pod template.
pub fn containers(workload: &Value) -> Vec<&Value> {
    workload.pointer("/spec/template/spec/containers").and_then(Value::as_array).into_iter().flatten().collect()
}

/// A container of a workload by name.
pub fn container<'a>(workload: &'a Value, name: &str) -> Option<&'a Value> {
    containers(workload).into_iter().find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// A container's args as strings.
pub fn args(container: &Value) -> Vec<String> {
    container
        .get("args")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

/// Container images of every workload, sorted and deduplicated.
pub fn images(docs: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = docs
        .iter()
        .flat_map(containers)
        .filter_map(|c| c.get("image").and_then(Value::as_str).map(String::from))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_parsed_sorted_and_empty_ones_dropped() {
        let yaml = "---\n# Source: b\nkind: Role\nmetadata: {name: b, namespace: ns}\n---\n# Source: empty\n---\nkind: Deployment\nmetadata: {name: a, namespace: ns}\nspec:\n  template:\n    spec:\n      containers:\n        - {name: c, image: 'x:1', args: [--a, --b]}\n";
        let docs = parse(yaml).expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(key(&docs[0]).0, "Deployment");
        let d = named(&docs, "Deployment", "a").expect("found");
        assert_eq!(args(container(d, "c").expect("container")), ["--a", "--b"]);
        assert_eq!(images(&docs), ["x:1"]);
    }

    #[test]
    fn bad_yaml_is_an_error() {
        assert!(parse("kind: [unclosed").is_err());
    }
}
