//! OpenAPI documents, as kubectl reads them: `/openapi/v2` (JSON, or gnostic
//! protobuf, which kubectl ≤ 1.28 needs before it creates or applies
//! anything) and `/openapi/v3` with one document per group-version (kubectl
//! explain, validation and client-side apply in newer releases). Both carry
//! the schemas of every served kind: built-in kinds from k8s-openapi, custom
//! resources from `crds`.
//!
//! The documents depend only on the registry, so each server builds them
//! once, on first use.

mod builtin;
mod definitions;
mod gnostic;
mod paths;
mod unknown;
mod v2;
mod v3;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::resources::Registry;

pub use definitions::DefinitionError;
pub use gnostic::{ConvertError, CONTENT_TYPE as V2_PROTOBUF_CONTENT_TYPE, MEDIA_TYPE as V2_PROTOBUF};

/// The rendered documents, as served, and the definitions they came from.
struct Rendered {
    definitions: definitions::Definitions,
    v2_json: Vec<u8>,
    v2_protobuf: Vec<u8>,
    v3_root: Vec<u8>,
    /// `api/v1`, `apis/<group>/<version>` → document.
    v3: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error(transparent)]
    Definitions(#[from] DefinitionError),
    #[error("encoding /openapi/v2 as protobuf: {0}")]
    Protobuf(#[from] ConvertError),
}

/// The OpenAPI documents of one registry.
pub struct Documents {
    registry: Registry,
    /// Reported as `info.version` (the server's Kubernetes version).
    version: String,
    rendered: OnceLock<Result<Rendered, String>>,
}

fn hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02X}")).collect()
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Documents {
    pub fn new(registry: Registry, version: &str) -> Self {
        Self { registry, version: version.to_string(), rendered: OnceLock::new() }
    }

    fn render(&self) -> Result<Rendered, OpenApiError> {
        let defs = definitions::build(&self.registry)?;
        let v2_doc = v2::document(&defs, &self.version);
        let v2_protobuf = gnostic::encode(&v2_doc)?;
        let mut v3 = BTreeMap::new();
        let mut index = serde_json::Map::new();
        for (group, version) in v3::group_versions(&defs) {
            let Some(mut doc) = v3::group_version(&defs, group, version) else { continue };
            doc["info"]["version"] = json!(self.version);
            let bytes = to_vec(&doc);
            let key = v3::gv_key(group, version);
            // The hash changes with the content, so clients that cache by URL
            // (kubectl does) never read another profile's document.
            index.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(&bytes))}));
            v3.insert(key, bytes);
        }
        Ok(Rendered {
            v2_json: to_vec(&v2_doc),
            v2_protobuf,
            v3_root: to_vec(&json!({"paths": index})),
            v3,
            definitions: defs,
        })
    }

    fn rendered(&self) -> Result<&Rendered, ApiError> {
        self.rendered
            .get_or_init(|| self.render().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ApiError::internal(format!("building the OpenAPI documents: {e}")))
    }

    /// The fields of `obj` (an object of the kind, or a merge patch of one) that
    /// the kind's schema does not declare, as paths (`spec.foo`).
    pub fn unknown_fields(&self, group: &str, version: &str, kind: &str, obj: &Value) -> Result<Vec<String>, ApiError> {
        let r = self.rendered()?;
        let defs = &r.definitions;
        // Every served kind has a definition (building the documents fails otherwise).
        let schema = defs
            .kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
            .and_then(|k| defs.schemas.get(&k.definition))
            .ok_or_else(|| ApiError::internal(format!("no schema for {group}/{version} {kind}")))?;
        Ok(unknown::unknown_fields(obj, schema, &defs.schemas))
    }

    /// The response for an `/openapi/...` path; `None` for paths that do not exist.
    pub fn serve(&self, path: &str, accept: &str) -> Option<Result<Response, ApiError>> {
        let path = path.trim_end_matches('/');
        let (body, content_type) = match path {
            "/openapi/v2" => {
                let r = match self.rendered() {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                if accept.contains(V2_PROTOBUF)
                    || accept.contains("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
                {
                    (r.v2_protobuf.clone(), V2_PROTOBUF_CONTENT_TYPE)
                } else {
                    (r.v2_json.clone(), "application/json")
                }
            }
            "/openapi/v3" => match self.rendered() {
                Ok(r) => (r.v3_root.clone(), "application/json"),
                Err(e) => return Some(Err(e)),
            },
            other => {
                let key = other.strip_prefix("/openapi/v3/")?;
                match self.rendered() {
                    Ok(r) => (r.v3.get(key)?.clone(), "application/json"),
                    Err(e) => return Some(Err(e)),
                }
            }
        };
        Some(Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response) -> (String, Vec<u8>) {
        let ct = r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = r.into_body().collect().await.expect("body").to_bytes().to_vec();
        (ct, bytes)
    }

    fn docs() -> Documents {
        Documents::new(Registry::new(|_| true, true), "v1.33.0")
    }

    #[tokio::test]
    async fn v2_is_served_as_json_or_protobuf_as_asked() {
        let d = docs();
        let (ct, json_bytes) = body(d.serve("/openapi/v2", "application/json").expect("path").expect("ok")).await;
        assert_eq!(ct, "application/json");
        let doc: Value = serde_json::from_slice(&json_bytes).expect("JSON");
        assert_eq!(doc["swagger"], "2.0");
        assert!(doc["definitions"]["io.kubevirt.v1.VirtualMachine"].is_object());
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"]["patch"];
        assert!(patch["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "fieldValidation")));

        let accept = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        let (ct, proto) = body(d.serve("/openapi/v2", accept).expect("path").expect("ok")).await;
        assert_eq!(ct, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
        let decoded = <gnostic::Document as prost::Message>::decode(proto.as_slice()).expect("gnostic Document");
        assert_eq!(decoded.swagger, "2.0");
        assert_eq!(
            decoded.definitions.map(|d| d.additional_properties.len()),
            doc["definitions"].as_object().map(|m| m.len())
        );
    }

    #[tokio::test]
    async fn v3_index_points_at_group_version_documents_with_schemas() {
        let d = docs();
        let (_, root) = body(d.serve("/openapi/v3", "").expect("path").expect("ok")).await;
        let root: Value = serde_json::from_slice(&root).expect("JSON");
        let url = root["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"].as_str().expect("kubevirt.io/v1 listed");
        assert!(url.starts_with("/openapi/v3/apis/kubevirt.io/v1?hash="), "{url}");
        let (_, gv) = body(d.serve("/openapi/v3/apis/kubevirt.io/v1", "").expect("path").expect("ok")).await;
        let gv: Value = serde_json::from_slice(&gv).expect("JSON");
        let vm = &gv["components"]["schemas"]["io.kubevirt.v1.VirtualMachine"];
        assert_eq!(vm["x-kubernetes-group-version-kind"][0]["kind"], "VirtualMachine");
        assert_eq!(
            vm["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_eq!(vm["properties"]["metadata"]["description"], "Standard object's metadata.");
        assert!(gv["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
        assert!(!gv.to_string().contains("#/definitions/"), "every reference is rewritten");
        let (_, core) = body(d.serve("/openapi/v3/api/v1", "").expect("path").expect("ok")).await;
        let core: Value = serde_json::from_slice(&core).expect("JSON");
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"].is_object());
        assert!(d.serve("/openapi/v3/apis/nope/v1", "").is_none());
        assert!(d.serve("/openapi/v4", "").is_none());
    }
}
