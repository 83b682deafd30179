//! LIST with selectors and paging (`limit` / `continue`), as a list or a Table.

use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{header, StatusCode};
use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::{meta, table};

use super::body::json_response;
use super::target::Target;
use super::{Incoming, ServerState};

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

pub(super) fn list(st: &ServerState, inc: &Incoming, t: &Target) -> ApiResult<Response> {
    let limit = match inc.param("limit") {
        None | Some("") => 0usize,
        Some(l) => l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?.max(0) as usize,
    };
    let (items, list_rv) = st.api.store.list(&t.rt.key(), t.req.namespace.as_deref());
    let mut rv = list_rv;
    let mut start_after: Option<String> = None;
    if let Some(token) = inc.param("continue").filter(|t| !t.is_empty()) {
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token: continue key is not valid"))?;
        if decoded.rv < st.api.store.oldest_watchable() {
            return Err(ApiError::new(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."));
        }
        rv = decoded.rv;
        start_after = Some(decoded.start);
    }
    let key_of = |o: &Value| format!("{}/{}", meta::namespace(o), meta::name(o));
    let mut selected: Vec<&Value> = items
        .iter()
        .map(|a| a.as_ref())
        .filter(|o| start_after.as_ref().is_none_or(|s| key_of(o) > *s))
        .filter(|o| t.labels.matches(meta::labels(o)) && t.fields.matches(o))
        .collect();
    let mut continue_token = None;
    let mut remaining = 0usize;
    if limit > 0 && selected.len() > limit {
        remaining = selected.len() - limit;
        selected.truncate(limit);
        if let Some(last) = selected.last() {
            let token = ContinueToken { rv, start: key_of(last) };
            continue_token = Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default()),
            );
        }
    }
    let rv_text = rv.to_string();
    if t.as_table {
        let mut table = table::table(&t.rt, &selected, &rv_text, &t.include_object);
        if let Some(c) = &continue_token {
            table["metadata"]["continue"] = json!(c);
        }
        return Ok(json_response(StatusCode::OK, &table));
    }
    let mut metadata = json!({"resourceVersion": rv_text});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
        metadata["remainingItemCount"] = json!(remaining);
    }
    let body = serialize(t, &metadata, &selected)?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Serialised by hand so thousands of items are not cloned into one Value.
fn serialize(t: &Target, metadata: &Value, items: &[&Value]) -> ApiResult<Vec<u8>> {
    let internal = |e: serde_json::Error| ApiError::internal(e.to_string());
    let mut out = Vec::with_capacity(items.len() * 1024 + 256);
    out.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut out, &format!("{}List", t.rt.kind)).map_err(internal)?;
    out.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut out, &t.rt.api_version_for(&t.req.version)).map_err(internal)?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, metadata).map_err(internal)?;
    out.extend_from_slice(b",\"items\":[");
    for (i, obj) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &*t.rt.as_served(obj, &t.req.version)).map_err(internal)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}
