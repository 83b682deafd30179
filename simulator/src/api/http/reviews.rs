//! `authorization.k8s.io`: the self-subject reviews (no stored objects).
//! `SelfSubjectAccessReview` answers `kubectl auth can-i VERB RESOURCE`,
//! `SelfSubjectRulesReview` answers `kubectl auth can-i --list`.

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult, Cause};
use crate::api::rbac::{self, Attributes, Decision};

use super::authz::{decide, with_rbac_objects};
use super::body::{decode_object, json_response};
use super::{Incoming, ServerState};

const GROUP: &str = "authorization.k8s.io";

pub(super) fn self_subject_access_review(st: &ServerState, inc: &Incoming) -> ApiResult<Response> {
    let user = &inc.user;
    let mut review = decode_object(inc)?;
    let attrs = if let Some(r) = review.pointer("/spec/resourceAttributes") {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Attributes {
            verb: s("verb"),
            api_group: s("group"),
            resource: s("resource"),
            subresource: s("subresource"),
            namespace: s("namespace"),
            name: s("name"),
            path: String::new(),
            resource_request: true,
        }
    } else if let Some(n) = review.pointer("/spec/nonResourceAttributes") {
        let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Attributes { verb: s("verb"), path: s("path"), resource_request: false, ..Default::default() }
    } else {
        // The apiserver's wording (ValidateSelfSubjectAccessReviewSpec).
        return Err(ApiError::invalid(
            GROUP,
            "SelfSubjectAccessReview",
            "",
            vec![Cause::invalid(
                "spec.resourceAttributes",
                "null",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        ));
    };
    let allowed = decide(st, user, &attrs) == Decision::Allow;
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["status"] =
        if allowed { json!({"allowed": true, "reason": "RBAC: allowed"}) } else { json!({"allowed": false}) };
    Ok(json_response(StatusCode::CREATED, &review))
}

pub(super) fn self_subject_rules_review(st: &ServerState, inc: &Incoming) -> ApiResult<Response> {
    let user = &inc.user;
    let mut review = decode_object(inc)?;
    let namespace = review.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or("").to_string();
    if namespace.is_empty() {
        // As the apiserver's selfsubjectrulesreview REST storage answers.
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let rules = with_rbac_objects(st, |objects| rbac::rules_for(user, &namespace, objects));
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectRulesReview");
    if review.get("metadata").is_none_or(|m| !m.is_object()) {
        review["metadata"] = json!({});
    }
    review["status"] = rules.to_status();
    Ok(json_response(StatusCode::CREATED, &review))
}
