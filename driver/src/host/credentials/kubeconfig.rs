//! The operator's kubeconfig (where the host is, which CA it has) and the
//! guest's cloud-config this command writes: one cluster, one token user, one
//! context in the VMs' namespace, selected as current.

use std::path::Path;

use base64::Engine;
use kube::config::Kubeconfig;
use serde::Serialize;

use super::GuestIdentity;
use crate::error::{Error, Result};

/// Where the host API is and the CA it presents, from the operator's kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    pub server: String,
    /// PEM; `None` when the kubeconfig names no CA (e.g. a publicly trusted certificate).
    pub ca_pem: Option<Vec<u8>>,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("host kubeconfig {}: {why}", path.display()))
}

/// The current context's cluster of `kubeconfig` (read from `path`).
pub fn host_endpoint(kubeconfig: &Kubeconfig, path: &Path) -> Result<HostEndpoint> {
    let context_name = kubeconfig.current_context.as_deref().ok_or_else(|| invalid(path, "no current-context"))?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| invalid(path, format!("current-context {context_name:?} is not defined")))?;
    let cluster =
        kubeconfig.clusters.iter().find(|c| c.name == context.cluster).and_then(|c| c.cluster.as_ref()).ok_or_else(
            || invalid(path, format!("cluster {:?} of context {context_name:?} is not defined", context.cluster)),
        )?;
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(path, format!("cluster {:?} has no server", context.cluster)))?;
    let ca_pem = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(data), _) if !data.is_empty() => Some(
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| invalid(path, format!("certificate-authority-data is not base64: {e}")))?,
        ),
        (_, Some(file)) if !file.is_empty() => {
            Some(std::fs::read(file).map_err(|e| invalid(path, format!("reading certificate-authority {file}: {e}")))?)
        }
        _ => None,
    };
    Ok(HostEndpoint { server, ca_pem })
}

/// A server URL for the cloud-config: https only (the token must not travel in clear).
pub fn check_server(server: &str) -> Result<()> {
    let uri: http::Uri =
        server.parse().map_err(|e| Error::InvalidArgument(format!("server {server:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return Err(Error::InvalidArgument(format!(
            "server {server:?} must be an https:// URL with a host (the cloud-config carries a bearer token)"
        )));
    }
    Ok(())
}

/// Whether the URL goes through Rancher's proxy (`…/k8s/clusters/<id>`), which a
/// host ServiceAccount token does not authenticate against.
pub fn is_rancher_proxy(server: &str) -> bool {
    server.contains("/k8s/clusters/")
}

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [NamedCluster<'a>; 1],
    users: [NamedUser<'a>; 1],
    contexts: [NamedContext<'a>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
}

#[derive(Serialize)]
struct NamedCluster<'a> {
    name: &'a str,
    cluster: Cluster<'a>,
}

#[derive(Serialize)]
struct Cluster<'a> {
    server: &'a str,
    #[serde(rename = "certificate-authority-data", skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
}

#[derive(Serialize)]
struct NamedUser<'a> {
    name: &'a str,
    user: User<'a>,
}

#[derive(Serialize)]
struct User<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct NamedContext<'a> {
    name: &'a str,
    context: Context<'a>,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
    namespace: &'a str,
}

const CLUSTER_NAME: &str = "harvester";

/// The guest's cloud-config: the driver takes the host namespace from its context.
pub fn render_cloud_config(server: &str, ca_pem: Option<&[u8]>, token: &str, id: &GuestIdentity) -> Result<String> {
    let user = format!("{}-{}", id.namespace, id.service_account);
    let context = format!("{user}@{CLUSTER_NAME}");
    let doc = Doc {
        api_version: "v1",
        kind: "Config",
        clusters: [NamedCluster {
            name: CLUSTER_NAME,
            cluster: Cluster {
                server,
                certificate_authority_data: ca_pem.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
            },
        }],
        users: [NamedUser { name: &user, user: User { token } }],
        contexts: [NamedContext {
            name: &context,
            context: Context { cluster: CLUSTER_NAME, user: &user, namespace: &id.namespace },
        }],
        current_context: &context,
    };
    // The error names the serializer's problem, never the document (it holds the token).
    serde_saphyr::to_string_with_options(&doc, super::yaml_options())
        .map_err(|e| Error::Internal(format!("rendering the cloud-config: {e}")))
}
