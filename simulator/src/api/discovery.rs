//! Discovery documents: `/version`, `/api`, `/apis`, and per group/version lists.

use serde_json::{json, Value};

use super::resources::{Registry, KUBEVIRT_SUBRESOURCES_GROUP, KUBEVIRT_SUBRESOURCES_VERSIONS};

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub fn groups(registry: &Registry) -> Value {
    let mut groups: Vec<Value> = registry.groups().iter().map(|(g, vs)| group_doc(g, vs)).collect();
    if registry.kubevirt_subresources {
        groups.push(group_doc(KUBEVIRT_SUBRESOURCES_GROUP, KUBEVIRT_SUBRESOURCES_VERSIONS));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(registry: &Registry, name: &str) -> Option<Value> {
    let versions = registry.group_versions(name)?;
    let mut doc = group_doc(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}
