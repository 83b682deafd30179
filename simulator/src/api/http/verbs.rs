//! The verbs on one resource type: get, watch, create, update, patch, delete
//! and deletecollection (list is in `list`).

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::api::error::{ApiError, ApiResult};
use crate::api::meta;
use crate::api::ops::{DeleteOptions, PatchType};
use crate::api::resources::ResourceType;
use crate::api::{table, watch};

use super::body::{decode_object, json_response, parse_json};
use super::target::{FieldValidation, Target};
use super::{Incoming, ServerState};

/// An object as the client asked for it: a one-row Table or the object in the requested version.
fn render(t: &Target, obj: &Value) -> Value {
    if t.as_table {
        return table::table(&t.rt, &[obj], meta::str_at(obj, "/metadata/resourceVersion"), &t.include_object);
    }
    t.rt.as_served(obj, &t.req.version).into_owned()
}

pub(super) fn get(st: &ServerState, t: &Target) -> ApiResult<Response> {
    let obj = st.api.get(&t.rt, &t.namespace, &t.name)?;
    Ok(json_response(StatusCode::OK, &render(t, &obj)))
}

pub(super) fn watch(st: &ServerState, inc: &Incoming, t: Target) -> ApiResult<Response> {
    let timeout = inc
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let wr = watch::WatchRequest {
        rt: t.rt,
        version: t.req.version,
        namespace: t.req.namespace,
        labels: t.labels,
        fields: t.fields,
        resource_version: inc.param("resourceVersion").map(String::from),
        bookmarks: inc.flag("allowWatchBookmarks"),
        send_initial_events: inc.flag("sendInitialEvents"),
        timeout,
        as_table: t.as_table,
        include_object: t.include_object,
    };
    let rx = watch::start(st.api.store.clone(), wr, st.watch_epoch.subscribe());
    let stream = ReceiverStream::new(rx).map(Ok::<Bytes, std::convert::Infallible>);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building watch response").into_response()))
}

/// Server-side field validation of a body (`fieldValidation`: `Strict`
/// refuses unknown fields with the apiserver's strict decoding error, `Warn`,
/// the default, answers with a warning per field, `Ignore` says nothing).
/// Returns the warnings to send.
fn validate_fields(st: &ServerState, t: &Target, body: &Value, decoding: bool) -> ApiResult<Vec<String>> {
    if t.field_validation == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let unknown = st.openapi.unknown_fields(t.rt.group, &t.req.version, t.rt.kind, body)?;
    let unknown: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
    if unknown.is_empty() || t.field_validation == FieldValidation::Warn {
        return Ok(unknown);
    }
    let strict = format!("strict decoding error: {}", unknown.join(", "));
    // Decoding a whole object (create, update) names the kind, as the apiserver's transformDecodeError does.
    Err(ApiError::bad_request(if decoding {
        format!("{} in version {:?} cannot be handled as a {}: {strict}", t.rt.kind, t.req.version, t.rt.kind)
    } else {
        strict
    }))
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        // RFC 7234 warn-code 299, agent "-", the text quoted.
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {w:?}")) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

pub(super) fn create(st: &ServerState, inc: &Incoming, t: &Target) -> ApiResult<Response> {
    if !t.subresource.is_empty() {
        return Err(ApiError::method_not_allowed_here());
    }
    let obj = decode_object(inc)?;
    check_type(&t.rt, &t.req.version, &obj)?;
    let warnings = validate_fields(st, t, &obj, true)?;
    let created = st.api.create(&t.rt, &t.namespace, obj, &t.write)?;
    Ok(with_warnings(json_response(StatusCode::CREATED, &render(t, &created)), &warnings))
}

pub(super) fn update(st: &ServerState, inc: &Incoming, t: &Target) -> ApiResult<Response> {
    let obj = decode_object(inc)?;
    check_type(&t.rt, &t.req.version, &obj)?;
    let warnings = validate_fields(st, t, &obj, true)?;
    let updated = st.api.replace(&t.rt, &t.namespace, &t.name, &t.subresource, obj, &t.write)?;
    Ok(with_warnings(json_response(StatusCode::OK, &render(t, &updated)), &warnings))
}

pub(super) fn patch(st: &ServerState, inc: &Incoming, t: &Target) -> ApiResult<Response> {
    let ct = inc.content_type.as_str();
    let patch_type = PatchType::from_content_type(ct)
        .ok_or_else(|| ApiError::unsupported_media_type(PatchType::accepted(t.rt.builtin)))?;
    let patch_body: Value = if patch_type == PatchType::Apply {
        let text = std::str::from_utf8(&inc.body).map_err(|_| ApiError::bad_request("apply patch is not UTF-8"))?;
        serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        parse_json(&inc.body)?
    };
    // Merge and strategic patches are partial objects; JSON patches and apply
    // configurations are not checked here.
    let warnings = match patch_type {
        PatchType::Merge | PatchType::Strategic => validate_fields(st, t, &patch_body, false)?,
        PatchType::Json | PatchType::Apply => Vec::new(),
    };
    let patched = st.api.patch(&t.rt, &t.namespace, &t.name, &t.subresource, patch_type, &patch_body, &t.write)?;
    Ok(with_warnings(json_response(StatusCode::OK, &render(t, &patched)), &warnings))
}

pub(super) fn delete(st: &ServerState, inc: &Incoming, t: &Target) -> ApiResult<Response> {
    let opts = delete_options(&inc.body, t.write.dry_run)?;
    let before_finalizers =
        st.api.get(&t.rt, &t.namespace, &t.name).map(|o| !meta::finalizers(&o).is_empty()).unwrap_or(false);
    let obj = st.api.delete(&t.rt, &t.namespace, &t.name, &opts)?;
    let code = if before_finalizers { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok(json_response(code, &render(t, &obj)))
}

pub(super) fn delete_collection(st: &ServerState, inc: &Incoming, t: &Target) -> ApiResult<Response> {
    let opts = delete_options(&inc.body, t.write.dry_run)?;
    let (items, _) = st.api.store.list(&t.rt.key(), t.req.namespace.as_deref());
    let mut deleted = Vec::new();
    for obj in items.iter().filter(|o| t.labels.matches(meta::labels(o)) && t.fields.matches(o)) {
        match st.api.delete(&t.rt, meta::namespace(obj), meta::name(obj), &opts) {
            Ok(d) => deleted.push((*d).clone()),
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version_for(&t.req.version),
                "metadata": {}, "items": deleted}),
    ))
}

fn check_type(rt: &ResourceType, version: &str, obj: &Value) -> ApiResult<()> {
    let api_version = meta::str_at(obj, "/apiVersion");
    let kind = meta::str_at(obj, "/kind");
    let expected = rt.api_version_for(version);
    if !api_version.is_empty()
        && api_version != expected
        && !rt.versions.iter().any(|v| rt.api_version_for(v) == api_version)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected})"
        )));
    }
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

fn delete_options(body: &Bytes, dry_run: bool) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions { dry_run, ..Default::default() };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(opts);
    }
    let v = parse_json(body)?;
    opts.precondition_uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
    opts.precondition_rv = v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from);
    if v.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All")) {
        opts.dry_run = true;
    }
    Ok(opts)
}
