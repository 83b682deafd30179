//! Kubeconfig files the simulator writes: the guest's cloud-config (a
//! ServiceAccount in the VM namespace) and an admin config.

use base64::Engine;
use serde_json::json;

/// A kubeconfig with one cluster, one user (bearer token) and one context.
pub fn render(server: &str, ca_pem: &str, user: &str, token: &str, namespace: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "harvester", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "harvester", "context": {"cluster": "harvester", "user": user, "namespace": namespace}}],
        "current-context": "harvester",
        "preferences": {},
    });
    // JSON is valid YAML; every kubeconfig reader accepts it.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}
