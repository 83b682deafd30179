//! Kubernetes `Status` errors. Clients (kube-rs in particular) decide what happened
//! from the `reason` string alone, so every error path goes through this type and
//! carries the canonical reason and code.

use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use serde_json::{json, Value};

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn required(field: &str) -> Self {
        Self { reason: "FieldValueRequired", message: "Required value".into(), field: field.into() }
    }
    pub fn required_because(field: &str, why: &str) -> Self {
        Self { reason: "FieldValueRequired", message: format!("Required value: {why}"), field: field.into() }
    }
    /// A string value, quoted as Go's `%q` does.
    pub fn invalid(field: &str, value: &str, why: &str) -> Self {
        Self::invalid_raw(field, &go_quote(value), why)
    }
    /// A value printed as is (numbers, Go values).
    pub fn invalid_raw(field: &str, value: &str, why: &str) -> Self {
        Self { reason: "FieldValueInvalid", message: format!("Invalid value: {value}: {why}"), field: field.into() }
    }
    pub fn forbidden(field: &str, why: &str) -> Self {
        Self { reason: "FieldValueForbidden", message: format!("Forbidden: {why}"), field: field.into() }
    }
    pub fn unsupported(field: &str, value: &str, allowed: &[&str]) -> Self {
        Self::unsupported_raw(field, &go_quote(value), allowed)
    }
    pub fn unsupported_raw(field: &str, value: &str, allowed: &[&str]) -> Self {
        let allowed = allowed.iter().map(|a| go_quote(a)).collect::<Vec<_>>().join(", ");
        Self {
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {value}: supported values: {allowed}"),
            field: field.into(),
        }
    }
}

/// Go's `%q` for the ASCII text names and values are made of.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An API error rendered as a Kubernetes `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// How a resource is named in messages: `pods` for core, `volumes.longhorn.io` otherwise.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut d = serde_json::Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        if !group.is_empty() {
            d.insert("group".into(), json!(group));
        }
        if !kind.is_empty() {
            d.insert("kind".into(), json!(kind));
        }
        self.details = Some(Value::Object(d));
        self
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(group, resource)))
            .with_details(group, resource, name)
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(group, resource)))
            .with_details(group, resource, name)
    }

    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summary = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", ");
        let shown = if causes.len() > 1 { format!("[{summary}]") } else { summary };
        let mut err = Self::new(422, "Invalid", format!("{} \"{name}\" is invalid: {shown}", qualified(group, kind)))
            .with_details(group, kind, name);
        if let Some(Value::Object(d)) = err.details.as_mut() {
            d.insert(
                "causes".into(),
                Value::Array(
                    causes
                        .iter()
                        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                        .collect(),
                ),
            );
        }
        err
    }

    /// A webhook or admission rejection: 422 with a free-form message.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// What the apiserver answers for an inapplicable JSON patch (failed `test`, missing path).
    pub fn patch_rejected() -> Self {
        let mut e = Self::new(422, "Invalid", "the server rejected our request due to an error in our request");
        e.details = Some(json!({}));
        e
    }

    pub fn forbidden(group: &str, resource: &str, name: &str, message: String) -> Self {
        Self::new(403, "Forbidden", message).with_details(group, resource, name)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// A body in a format the server does not decode; `accepted` in the
    /// apiserver's order (its wording names no offending type).
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The apiserver's answer for a path nothing serves (it names no path).
    pub fn unknown_route(path: &str) -> Self {
        tracing::debug!(path, "no route");
        Self::new(404, "NotFound", "the server could not find the requested resource").with_details("", "", "")
    }

    /// A method the addressed resource or subresource does not take.
    pub fn method_not_allowed_here() -> Self {
        Self::method_not_allowed("the server does not allow this method on the requested resource")
    }

    /// The `Status` object a client sees.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_wording_matches_apiserver() {
        assert_eq!(ApiError::not_found("", "pods", "x").message, "pods \"x\" not found");
        assert_eq!(ApiError::not_found("longhorn.io", "volumes", "v").message, "volumes.longhorn.io \"v\" not found");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid("", "PersistentVolumeClaim", "c", vec![Cause::required("spec.accessModes")]);
        let s = e.to_status();
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "spec.accessModes");
        assert_eq!(e.message, "PersistentVolumeClaim \"c\" is invalid: spec.accessModes: Required value");
    }
}
