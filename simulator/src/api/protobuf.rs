//! Kubernetes' protobuf encoding, for the bodies clients send in it unasked:
//! kubectl ≥ 1.32 creates objects through typed clients that encode protobuf
//! and do not fall back to JSON on a 415 (`kubectl auth can-i`, `kubectl
//! create namespace|configmap|secret|serviceaccount|role|clusterrole|
//! rolebinding|clusterrolebinding`).
//!
//! The wire form is the `k8s\0` magic followed by a `runtime.Unknown`
//! envelope (typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2,
//! contentEncoding = 3) whose `raw` field holds the object's own message.
//! Objects are turned into their JSON form by tables of the fields each kind
//! has, with the field numbers of the published `generated.proto` files;
//! fields not in a table are skipped, kinds without a table are refused.

use base64::Engine;
use serde_json::{json, Map, Value};

/// `application/vnd.kubernetes.protobuf`.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    NoMagic,
    #[error("decoding protobuf: {0}")]
    Decode(&'static str),
    #[error("{0} is not accepted as protobuf here")]
    Unsupported(String),
}

/// How one field is written on the wire and shown in JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    /// `metav1.Time`: seconds = 1, nanos = 2; RFC 3339 in JSON.
    Time,
    Msg(&'static [Field]),
    /// `map<string, string>`: entries with key = 1, value = 2.
    MapStr,
    /// `map<string, bytes>`: values base64 in JSON.
    MapBytes,
}

#[derive(Clone, Copy)]
struct Field {
    number: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn one(number: u64, name: &'static str, ty: Ty) -> Field {
    Field { number, name, ty, repeated: false }
}

const fn many(number: u64, name: &'static str, ty: Ty) -> Field {
    Field { number, name, ty, repeated: true }
}

// apimachinery meta/v1
const OWNER_REFERENCE: &[Field] = &[
    one(1, "kind", Ty::Str),
    one(3, "name", Ty::Str),
    one(4, "uid", Ty::Str),
    one(5, "apiVersion", Ty::Str),
    one(6, "controller", Ty::Bool),
    one(7, "blockOwnerDeletion", Ty::Bool),
];
const OBJECT_META: &[Field] = &[
    one(1, "name", Ty::Str),
    one(2, "generateName", Ty::Str),
    one(3, "namespace", Ty::Str),
    one(5, "uid", Ty::Str),
    one(6, "resourceVersion", Ty::Str),
    one(7, "generation", Ty::Int),
    one(8, "creationTimestamp", Ty::Time),
    one(9, "deletionTimestamp", Ty::Time),
    one(10, "deletionGracePeriodSeconds", Ty::Int),
    one(11, "labels", Ty::MapStr),
    one(12, "annotations", Ty::MapStr),
    many(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    many(14, "finalizers", Ty::Str),
];
const META: Field = one(1, "metadata", Ty::Msg(OBJECT_META));

// core/v1
const NAMESPACE: &[Field] = &[
    META,
    one(2, "spec", Ty::Msg(&[many(1, "finalizers", Ty::Str)])),
    one(3, "status", Ty::Msg(&[one(1, "phase", Ty::Str)])),
];
const CONFIG_MAP: &[Field] =
    &[META, one(2, "data", Ty::MapStr), one(3, "binaryData", Ty::MapBytes), one(4, "immutable", Ty::Bool)];
const SECRET: &[Field] = &[
    META,
    one(2, "data", Ty::MapBytes),
    one(3, "type", Ty::Str),
    one(4, "stringData", Ty::MapStr),
    one(5, "immutable", Ty::Bool),
];
const OBJECT_REFERENCE: &[Field] = &[
    one(1, "kind", Ty::Str),
    one(2, "namespace", Ty::Str),
    one(3, "name", Ty::Str),
    one(4, "uid", Ty::Str),
    one(5, "apiVersion", Ty::Str),
    one(6, "resourceVersion", Ty::Str),
    one(7, "fieldPath", Ty::Str),
];
const SERVICE_ACCOUNT: &[Field] = &[
    META,
    many(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    many(3, "imagePullSecrets", Ty::Msg(&[one(1, "name", Ty::Str)])),
    one(4, "automountServiceAccountToken", Ty::Bool),
];

// rbac/v1
const POLICY_RULE: &[Field] = &[
    many(1, "verbs", Ty::Str),
    many(2, "apiGroups", Ty::Str),
    many(3, "resources", Ty::Str),
    many(4, "resourceNames", Ty::Str),
    many(5, "nonResourceURLs", Ty::Str),
];
const ROLE: &[Field] = &[META, many(2, "rules", Ty::Msg(POLICY_RULE))];
const SUBJECT: &[Field] =
    &[one(1, "kind", Ty::Str), one(2, "apiGroup", Ty::Str), one(3, "name", Ty::Str), one(4, "namespace", Ty::Str)];
const ROLE_REF: &[Field] = &[one(1, "apiGroup", Ty::Str), one(2, "kind", Ty::Str), one(3, "name", Ty::Str)];
const ROLE_BINDING: &[Field] = &[META, many(2, "subjects", Ty::Msg(SUBJECT)), one(3, "roleRef", Ty::Msg(ROLE_REF))];

// authorization/v1
const RESOURCE_ATTRIBUTES: &[Field] = &[
    one(1, "namespace", Ty::Str),
    one(2, "verb", Ty::Str),
    one(3, "group", Ty::Str),
    one(4, "version", Ty::Str),
    one(5, "resource", Ty::Str),
    one(6, "subresource", Ty::Str),
    one(7, "name", Ty::Str),
];
const ACCESS_REVIEW: &[Field] = &[
    META,
    one(
        2,
        "spec",
        Ty::Msg(&[
            one(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            one(2, "nonResourceAttributes", Ty::Msg(&[one(1, "path", Ty::Str), one(2, "verb", Ty::Str)])),
        ]),
    ),
];
const RULES_REVIEW: &[Field] = &[META, one(2, "spec", Ty::Msg(&[one(1, "namespace", Ty::Str)]))];

/// The kinds accepted in protobuf, by apiVersion and kind.
fn table(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => ROLE_BINDING,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => RULES_REVIEW,
        _ => return None,
    })
}

/// A field as read off the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed 32/64-bit values: no table field uses them; skipped.
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(ProtobufError::Decode("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Decode("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if self.buf.len() < n {
            return Err(ProtobufError::Decode("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and value, `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ProtobufError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Decode("length overflow"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            _ => return Err(ProtobufError::Decode("unsupported wire type")),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn text(b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Decode("a string is not UTF-8"))
}

/// A map entry: key = 1, value = 2.
fn entry(b: &[u8]) -> Result<(String, &[u8]), ProtobufError> {
    let mut r = Reader { buf: b };
    let (mut key, mut value) = (String::new(), &b[..0]);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(k)) => key = text(k)?,
            (2, Wire::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

fn time(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut r = Reader { buf: b };
    let mut seconds = 0i64;
    while let Some((n, w)) = r.next()? {
        if let (1, Wire::Varint(s)) = (n, w) {
            seconds = s as i64;
        }
    }
    let t = jiff::Timestamp::from_second(seconds).map_err(|_| ProtobufError::Decode("a time out of range"))?;
    Ok(json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn value(ty: Ty, w: Wire<'_>) -> Result<Option<Value>, ProtobufError> {
    Ok(Some(match (ty, w) {
        (Ty::Str, Wire::Bytes(b)) => json!(text(b)?),
        (Ty::Bool, Wire::Varint(v)) => json!(v != 0),
        (Ty::Int, Wire::Varint(v)) => json!(v as i64),
        (Ty::Time, Wire::Bytes(b)) => time(b)?,
        (Ty::Msg(fields), Wire::Bytes(b)) => message(b, fields)?,
        _ => return Ok(None),
    }))
}

fn message(b: &[u8], fields: &[Field]) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((number, w)) = r.next()? {
        let Some(f) = fields.iter().find(|f| f.number == number) else { continue };
        match (f.ty, w) {
            (Ty::MapStr | Ty::MapBytes, Wire::Bytes(b)) => {
                let (k, v) = entry(b)?;
                let v = if matches!(f.ty, Ty::MapStr) {
                    json!(text(v)?)
                } else {
                    json!(base64::engine::general_purpose::STANDARD.encode(v))
                };
                if let Value::Object(m) = out.entry(f.name).or_insert_with(|| json!({})) {
                    m.insert(k, v);
                }
            }
            (ty, w) => {
                let Some(v) = value(ty, w)? else { continue };
                // Go's JSON form omits empty strings (omitempty), which proto2 still sends.
                if !f.repeated && v == json!("") {
                    continue;
                }
                if f.repeated {
                    if let Value::Array(a) = out.entry(f.name).or_insert_with(|| json!([])) {
                        a.push(v);
                    }
                } else {
                    out.insert(f.name.to_string(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// The JSON form of a protobuf-encoded object body.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let (mut api_version, mut kind, mut raw, mut encoding) =
        (String::new(), String::new(), &envelope[..0], String::new());
    let mut r = Reader { buf: envelope };
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader { buf: tm };
                while let Some((n, w)) = t.next()? {
                    match (n, w) {
                        (1, Wire::Bytes(v)) => api_version = text(v)?,
                        (2, Wire::Bytes(k)) => kind = text(k)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            (3, Wire::Bytes(e)) => encoding = text(e)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(ProtobufError::Unsupported("a content-encoded body".into()));
    }
    let fields =
        table(&api_version, &kind).ok_or_else(|| ProtobufError::Unsupported(format!("{api_version} {kind}")))?;
    let mut obj = message(raw, fields)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny encoder for the tests: (field number, bytes or varint).
    enum W {
        V(u64),
        B(Vec<u8>),
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn msg(fields: &[(u64, W)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, w) in fields {
            match w {
                W::V(v) => {
                    varint(n << 3, &mut out);
                    varint(*v, &mut out);
                }
                W::B(b) => {
                    varint((n << 3) | 2, &mut out);
                    varint(b.len() as u64, &mut out);
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }

    fn s(v: &str) -> W {
        W::B(v.as_bytes().to_vec())
    }

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let type_meta = msg(&[(1, s(api_version)), (2, s(kind))]);
        [MAGIC.to_vec(), msg(&[(1, W::B(type_meta)), (2, W::B(raw)), (3, s(""))])].concat()
    }

    #[test]
    fn secrets_keep_metadata_maps_and_bytes() {
        let meta = msg(&[
            (1, s("creds")),
            (3, s("default")),
            (11, W::B(msg(&[(1, s("app")), (2, s("x"))]))),
            (14, s("example.com/keep")),
        ]);
        let raw =
            msg(&[(1, W::B(meta)), (2, W::B(msg(&[(1, s("token")), (2, W::B(vec![0, 1, 2]))]))), (3, s("Opaque"))]);
        let v = decode(&envelope("v1", "Secret", raw)).expect("decodes");
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"token": "AAEC"},
                   "metadata": {"name": "creds", "namespace": "default", "labels": {"app": "x"}, "finalizers": ["example.com/keep"]}})
        );
    }

    #[test]
    fn reviews_and_role_bindings() {
        let attrs = msg(&[(1, s("default")), (2, s("list")), (5, s("pods"))]);
        let raw = msg(&[(2, W::B(msg(&[(1, W::B(attrs))])))]);
        let v = decode(&envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", raw)).expect("decodes");
        assert_eq!(
            v["spec"],
            json!({"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}})
        );

        let subject = msg(&[(1, s("ServiceAccount")), (3, s("sa")), (4, s("ns"))]);
        let role_ref = msg(&[(1, s("rbac.authorization.k8s.io")), (2, s("ClusterRole")), (3, s("view"))]);
        let raw = msg(&[(1, W::B(msg(&[(1, s("b"))]))), (2, W::B(subject)), (3, W::B(role_ref)), (9, W::V(1))]);
        let v = decode(&envelope("rbac.authorization.k8s.io/v1", "RoleBinding", raw)).expect("decodes");
        assert_eq!(v["subjects"], json!([{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]));
        assert_eq!(v["roleRef"]["name"], "view");
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        assert_eq!(decode(b"{}"), Err(ProtobufError::NoMagic));
        let e = decode(&envelope("v1", "Pod", vec![])).unwrap_err();
        assert_eq!(e, ProtobufError::Unsupported("v1 Pod".into()));
        assert!(matches!(decode(b"k8s\0\x0a\xff"), Err(ProtobufError::Decode(_))));
    }
}
