//! Kubernetes' protobuf encoding, for the only bodies a client sends in it
//! unasked: kubectl ≥ 1.32 creates its `SelfSubjectAccessReview` and
//! `SelfSubjectRulesReview` (`kubectl auth can-i`) through typed clients that
//! encode protobuf and do not fall back to JSON on a 415.
//!
//! The wire form is the `k8s\0` magic followed by a `runtime.Unknown`
//! envelope whose `raw` field holds the object's own message. Only the fields
//! the reviews carry are declared; prost skips the rest (object metadata).

use prost::Message;
use serde_json::{json, Value};

/// `application/vnd.kubernetes.protobuf`.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// `runtime.Unknown`.
#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct AccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

/// `SelfSubjectAccessReview` (metadata, field 1, is skipped).
#[derive(Clone, PartialEq, Message)]
struct AccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<AccessReviewSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct RulesReviewSpec {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
}

/// `SelfSubjectRulesReview` (metadata, field 1, is skipped).
#[derive(Clone, PartialEq, Message)]
struct RulesReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<RulesReviewSpec>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    NoMagic,
    #[error("decoding protobuf: {0}")]
    Decode(String),
    #[error("{0} is not accepted as protobuf here")]
    Unsupported(String),
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, ProtobufError> {
    M::decode(bytes).map_err(|e| ProtobufError::Decode(e.to_string()))
}

/// Drops absent fields, as Go's JSON encoding of these types omits them.
fn strings(pairs: &[(&str, &Option<String>)]) -> Value {
    Value::Object(pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), json!(v)))).collect())
}

/// The JSON form of a protobuf-encoded review body.
pub fn decode_review(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let unknown: Unknown = decode(envelope)?;
    if unknown.content_encoding.as_deref().is_some_and(|e| !e.is_empty()) {
        return Err(ProtobufError::Unsupported("a content-encoded body".into()));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let spec = match (api_version.as_str(), kind.as_str()) {
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let spec = decode::<AccessReview>(&raw)?.spec.unwrap_or_default();
            let mut out = json!({});
            if let Some(r) = spec.resource_attributes {
                out["resourceAttributes"] = strings(&[
                    ("namespace", &r.namespace),
                    ("verb", &r.verb),
                    ("group", &r.group),
                    ("version", &r.version),
                    ("resource", &r.resource),
                    ("subresource", &r.subresource),
                    ("name", &r.name),
                ]);
            }
            if let Some(n) = spec.non_resource_attributes {
                out["nonResourceAttributes"] = strings(&[("path", &n.path), ("verb", &n.verb)]);
            }
            out
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let spec = decode::<RulesReview>(&raw)?.spec.unwrap_or_default();
            strings(&[("namespace", &spec.namespace)])
        }
        _ => return Err(ProtobufError::Unsupported(format!("{api_version} {kind}"))),
    };
    Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": {}, "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some("authorization.k8s.io/v1".into()), kind: Some(kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
        };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    #[test]
    fn access_review_with_resource_attributes() {
        let review = AccessReview {
            spec: Some(AccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some("default".into()),
                    verb: Some("list".into()),
                    resource: Some("pods".into()),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let v = decode_review(&envelope("SelfSubjectAccessReview", review.encode_to_vec())).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            v["spec"],
            json!({"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}})
        );
    }

    #[test]
    fn rules_review_namespace() {
        let review = RulesReview { spec: Some(RulesReviewSpec { namespace: Some("ns".into()) }) };
        let v = decode_review(&envelope("SelfSubjectRulesReview", review.encode_to_vec())).unwrap();
        assert_eq!(v["spec"], json!({"namespace": "ns"}));
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        assert_eq!(decode_review(b"{}"), Err(ProtobufError::NoMagic));
        let e = decode_review(&envelope("SubjectAccessReview", vec![])).unwrap_err();
        assert_eq!(e, ProtobufError::Unsupported("authorization.k8s.io/v1 SubjectAccessReview".into()));
        assert!(matches!(decode_review(b"k8s\0\xff\xff"), Err(ProtobufError::Decode(_))));
    }
}
