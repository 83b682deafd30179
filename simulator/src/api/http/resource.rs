//! A resource request up to its verb: which verb, injected faults, authorization,
//! the served type and the request options. The verbs themselves are in `verbs`.

use axum::response::Response;

use crate::api::error::{ApiError, ApiResult, Cause};
use crate::api::ops::WriteOptions;
use crate::api::rbac::Attributes;
use crate::api::request::ResourceRequest;
use crate::api::resources::{AUTHORIZATION_GROUP, KUBEVIRT_SUBRESOURCES_GROUP};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::table;

use super::authz::authorize;
use super::target::{FieldValidation, Target};
use super::{list, reviews, verbs, Incoming, ServerState};

fn verb_for(method: &http::Method, has_name: bool, watch: bool) -> ApiResult<&'static str> {
    Ok(match (method.as_str(), has_name) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed_here()),
    })
}

fn attributes(verb: &str, r: &ResourceRequest, path: &str, fields: &FieldSelector) -> Attributes {
    let mut attrs = Attributes {
        verb: verb.into(),
        api_group: r.group.clone(),
        resource: r.resource.clone(),
        subresource: r.subresource.clone().unwrap_or_default(),
        namespace: r.namespace.clone().unwrap_or_default(),
        name: r.name.clone().unwrap_or_default(),
        path: path.to_string(),
        resource_request: true,
    };
    if matches!(verb, "list" | "watch") {
        // Kubernetes authorizes single-object list/watch against resourceNames.
        if let Some(n) = fields.equality_value("metadata.name") {
            attrs.name = n.to_string();
        }
    }
    attrs
}

async fn inject_faults(st: &ServerState, verb: &str, r: &ResourceRequest) -> ApiResult<()> {
    let qualified = match &r.subresource {
        Some(s) => format!("{}/{s}", r.resource),
        None => r.resource.clone(),
    };
    let latency = st.faults.latency_for(verb, &r.group, &qualified);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match st.faults.error_for(verb, &r.group, &qualified) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(super) async fn handle(st: &ServerState, inc: &Incoming, r: ResourceRequest) -> ApiResult<Response> {
    let watch = inc.flag("watch");
    let verb = verb_for(&inc.method, r.name.is_some(), watch)?;
    let fields = FieldSelector::parse(inc.param("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let labels = LabelSelector::parse(inc.param("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    inject_faults(st, verb, &r).await?;
    authorize(st, &inc.user, &attributes(verb, &r, &inc.path, &fields))?;

    if r.group == AUTHORIZATION_GROUP {
        return match (verb, r.resource.as_str(), r.version.as_str()) {
            ("create", "selfsubjectaccessreviews", "v1") => reviews::self_subject_access_review(st, inc),
            ("create", "selfsubjectrulesreviews", "v1") => reviews::self_subject_rules_review(st, inc),
            _ => Err(ApiError::unknown_route(&inc.path)),
        };
    }
    if r.group == KUBEVIRT_SUBRESOURCES_GROUP {
        let handler = st.aggregated.read().unwrap_or_else(|p| p.into_inner()).get(KUBEVIRT_SUBRESOURCES_GROUP).cloned();
        return match handler {
            Some(h) if st.api.registry.kubevirt_subresources => h.handle(r, inc.method.clone(), inc.body.clone()).await,
            _ => Err(ApiError::unknown_route(&inc.path)),
        };
    }

    let target = target(st, inc, r, labels, fields)?;
    match verb {
        "get" => verbs::get(st, &target),
        "list" => list::list(st, inc, &target),
        "watch" => verbs::watch(st, inc, target),
        "create" => verbs::create(st, inc, &target),
        "update" => verbs::update(st, inc, &target),
        "patch" => verbs::patch(st, inc, &target),
        "delete" => verbs::delete(st, inc, &target),
        "deletecollection" => verbs::delete_collection(st, inc, &target),
        _ => Err(ApiError::method_not_allowed_here()),
    }
}

/// The options kind the apiserver validates a write's query against.
fn options_kind(method: &http::Method) -> Option<&'static str> {
    match method.as_str() {
        "POST" => Some("CreateOptions"),
        "PUT" => Some("UpdateOptions"),
        "PATCH" => Some("PatchOptions"),
        "DELETE" => Some("DeleteOptions"),
        _ => None,
    }
}

/// `fieldValidation`: absent means `Warn`, as the apiserver defaults it.
fn field_validation(inc: &Incoming) -> ApiResult<FieldValidation> {
    let value = inc.param("fieldValidation").unwrap_or("");
    Ok(match value {
        "" | "Warn" => FieldValidation::Warn,
        "Ignore" => FieldValidation::Ignore,
        "Strict" => FieldValidation::Strict,
        other => {
            let Some(options) = options_kind(&inc.method).filter(|o| *o != "DeleteOptions") else {
                return Ok(FieldValidation::Warn);
            };
            return Err(ApiError::invalid(
                "meta.k8s.io",
                options,
                "",
                vec![Cause::unsupported("fieldValidation", other, &["", "Ignore", "Strict", "Warn"])],
            ));
        }
    })
}

/// `dryRun`: only `All`, validated like the apiserver's Create/Update/Patch/DeleteOptions.
fn dry_run(inc: &Incoming) -> ApiResult<bool> {
    let values: Vec<&str> = inc.query.iter().filter(|(k, _)| k == "dryRun").map(|(_, v)| v.as_str()).collect();
    let Some(options) = options_kind(&inc.method) else { return Ok(false) };
    if values.iter().all(|v| *v == "All") {
        return Ok(!values.is_empty());
    }
    // Go prints the offending []string as a Go value.
    let listed = values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ");
    Err(ApiError::invalid(
        "meta.k8s.io",
        options,
        "",
        vec![Cause::unsupported_raw("dryRun", &format!("[]string{{{listed}}}"), &["All"])],
    ))
}

/// Resolves the served type and checks what the URL and query may ask of it.
fn target(
    st: &ServerState,
    inc: &Incoming,
    r: ResourceRequest,
    labels: LabelSelector,
    fields: FieldSelector,
) -> ApiResult<Target> {
    let rt = st
        .api
        .registry
        .lookup(&r.group, &r.version, &r.resource)
        .cloned()
        .ok_or_else(|| ApiError::unknown_route(&inc.path))?;
    if !rt.namespaced && r.namespace.is_some() {
        return Err(ApiError::unknown_route(&inc.path));
    }
    if rt.namespaced && r.namespace.is_none() && r.name.is_some() {
        return Err(ApiError::unknown_route(&inc.path));
    }
    let subresource = r.subresource.clone().unwrap_or_default();
    if !(subresource.is_empty() || subresource == "status" && rt.status_subresource) {
        return Err(ApiError::not_found(
            rt.group,
            &format!("{}/{subresource}", rt.plural),
            r.name.as_deref().unwrap_or(""),
        ));
    }
    for f in fields.fields() {
        if f != "metadata.name" && f != "metadata.namespace" && !rt.field_selectors.contains(&f) {
            // Built-in kinds answer from their field label conversion, CRDs from
            // their selectable fields; the wording differs.
            let message = if rt.builtin {
                format!("field label not supported: {f}")
            } else {
                format!("\"{f}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")
            };
            return Err(ApiError::bad_request(message));
        }
    }
    let dry_run = dry_run(inc)?;
    let field_validation = field_validation(inc)?;
    Ok(Target {
        namespace: r.namespace.clone().unwrap_or_default(),
        name: r.name.clone().unwrap_or_default(),
        subresource,
        rt,
        req: r,
        labels,
        fields,
        write: WriteOptions {
            dry_run,
            keep_status: false,
            field_manager: inc.param("fieldManager").map(String::from),
            force: inc.flag("force"),
        },
        as_table: table::wants_table(&inc.accept),
        include_object: inc.param("includeObject").unwrap_or("Metadata").to_string(),
        field_validation,
    })
}
