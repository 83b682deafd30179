//! The HTTP front of the API server: authentication, routing, fault injection,
//! authorization, then the verb handlers. Every error is a Kubernetes `Status`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::discovery;
use super::error::{ApiError, ApiResult};
use super::meta;
use super::ops::{Api, DeleteOptions, PatchType, WriteOptions};
use super::rbac::{self, Attributes, Decision, RbacObjects, UserInfo};
use super::request::{self, ResourceRequest, Route};
use super::resources::{ResourceType, KUBEVIRT_SUBRESOURCES_GROUP};
use super::selector::{FieldSelector, LabelSelector};
use super::table;
use super::watch;
use crate::auth::Authenticator;
use crate::faults::Faults;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An API served outside the generic registry (KubeVirt's virt-api subresources).
pub trait AggregatedApi: Send + Sync {
    fn handle(&self, req: ResourceRequest, method: Method, body: Bytes) -> BoxFuture<ApiResult<Response>>;
}

/// The simulator's own control endpoints under `/sim/` (admin token only).
pub trait AdminApi: Send + Sync {
    fn handle(&self, method: Method, path: String, body: Bytes) -> BoxFuture<ApiResult<Response>>;
}

pub struct ServerState {
    pub api: Arc<Api>,
    pub authn: Arc<Authenticator>,
    pub faults: Arc<Faults>,
    pub version: Value,
    pub server_address: RwLock<String>,
    /// Bumped to end every open watch (fault: "drop all watches").
    pub watch_epoch: tokio::sync::watch::Sender<u64>,
    pub aggregated: RwLock<HashMap<String, Arc<dyn AggregatedApi>>>,
    pub admin: RwLock<Option<Arc<dyn AdminApi>>>,
    pub max_body_bytes: usize,
}

impl ServerState {
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }
}

/// Requests bodies above this get 413 (the apiserver's default is 3 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn router(state: Arc<ServerState>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(st): State<Arc<ServerState>>, req: Request) -> Response {
    match handle(st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

type Query = Vec<(String, String)>;

fn param<'a>(q: &'a Query, key: &str) -> Option<&'a str> {
    q.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn flag(q: &Query, key: &str) -> bool {
    matches!(param(q, key), Some("true" | "1"))
}

/// How much of an oversized body is read (and discarded) before answering 413:
/// a client still writing its body would otherwise see a broken pipe instead
/// of the 413 (kube-rs does), as Go's server avoids by draining too.
const MAX_DRAIN_BYTES: usize = 32 * 1024 * 1024;

async fn read_body(mut body: Body, headers: &HeaderMap, limit: usize) -> ApiResult<Bytes> {
    let too_large = || ApiError::too_large(format!("the request body is larger than the {limit}-byte limit"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let mut oversized = declared.is_some_and(|len| len > limit);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) if oversized => break,
            Err(e) => return Err(ApiError::bad_request(format!("reading request body: {e}"))),
        };
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            oversized = true;
        }
        if oversized {
            if seen > MAX_DRAIN_BYTES {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if oversized {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

fn parse_json(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode the request body as JSON: {e}")))
}

fn verb_for(method: &Method, has_name: bool, watch: bool) -> ApiResult<&'static str> {
    Ok(match (method.as_str(), has_name) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m})"
            )))
        }
    })
}

fn authorize(st: &ServerState, user: &UserInfo, attrs: &Attributes) -> ApiResult<()> {
    match decide(st, user, attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny => {
            let message = rbac::forbidden_message(user, attrs);
            tracing::info!(user = %user.username, verb = %attrs.verb, resource = %attrs.resource, subresource = %attrs.subresource, namespace = %attrs.namespace, name = %attrs.name, "forbidden");
            Err(ApiError::forbidden(&attrs.api_group, &attrs.resource, &attrs.name, message))
        }
    }
}

fn decide(st: &ServerState, user: &UserInfo, attrs: &Attributes) -> Decision {
    if is_master(user) {
        return Decision::Allow;
    }
    // The store's shared values: nothing is copied per request.
    let api = &st.api;
    let roles = api.list("rbac.authorization.k8s.io", "roles", None);
    let cluster_roles = api.list("rbac.authorization.k8s.io", "clusterroles", None);
    let role_bindings = api.list("rbac.authorization.k8s.io", "rolebindings", None);
    let cluster_role_bindings = api.list("rbac.authorization.k8s.io", "clusterrolebindings", None);
    let objects = RbacObjects {
        roles: &roles,
        cluster_roles: &cluster_roles,
        role_bindings: &role_bindings,
        cluster_role_bindings: &cluster_role_bindings,
    };
    rbac::authorize(user, attrs, &objects)
}

/// `SelfSubjectAccessReview` (what `kubectl auth can-i` asks): every
/// authenticated user may ask what they themselves may do.
fn self_subject_access_review(st: &ServerState, user: &UserInfo, body: &Bytes) -> ApiResult<Response> {
    let mut review = parse_json(body)?;
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
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "",
            vec![super::error::Cause::required("spec.resourceAttributes")],
        ));
    };
    let allowed = decide(st, user, &attrs) == Decision::Allow;
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["status"] =
        if allowed { json!({"allowed": true, "reason": "RBAC: allowed"}) } else { json!({"allowed": false}) };
    Ok(json_response(StatusCode::CREATED, &review))
}

fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
}

async fn handle(st: Arc<ServerState>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query: Query = serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let user = match st.authn.authenticate(authorization) {
        Some(u) => u,
        None if authorization.is_none() && matches!(path.as_str(), "/healthz" | "/livez" | "/readyz" | "/version") => {
            UserInfo { username: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()] }
        }
        None => return Err(ApiError::unauthorized()),
    };
    if !accept.is_empty()
        && !path.starts_with("/openapi")
        && !accept.split(',').any(|a| a.contains("json") || a.contains("*/*") || a.contains("yaml"))
    {
        return Err(ApiError::not_acceptable(format!(
            "only the following media types are accepted: application/json (asked for {accept})"
        )));
    }
    let body = read_body(body, &parts.headers, st.max_body_bytes).await?;

    if let Some(admin_path) = path.strip_prefix("/sim/") {
        if !is_master(&user) {
            return Err(ApiError::forbidden(
                "",
                "",
                "",
                format!("forbidden: User \"{}\" cannot use the simulator admin API", user.username),
            ));
        }
        let admin = st.admin.read().unwrap_or_else(|p| p.into_inner()).clone();
        return match admin {
            Some(a) => a.handle(method, admin_path.to_string(), body).await,
            None => Err(ApiError::unknown_route(&path)),
        };
    }

    let registry = &st.api.registry;
    let route = request::parse(&path, |g, v, p| {
        registry.lookup(g, v, p).is_some_and(|t| t.namespaced)
            || (g == KUBEVIRT_SUBRESOURCES_GROUP && matches!(p, "virtualmachines" | "virtualmachineinstances"))
    })?;
    let non_resource = |verb: &str| Attributes {
        verb: verb.into(),
        path: path.clone(),
        resource_request: false,
        ..Default::default()
    };
    let r = match route {
        Route::Health => return Ok((StatusCode::OK, "ok").into_response()),
        Route::Version => {
            authorize(&st, &user, &non_resource("get"))?;
            return Ok(json_response(StatusCode::OK, &st.version));
        }
        Route::CoreVersions => {
            authorize(&st, &user, &non_resource("get"))?;
            let addr = st.server_address.read().unwrap_or_else(|p| p.into_inner()).clone();
            return Ok(json_response(StatusCode::OK, &discovery::core_versions(&addr)));
        }
        Route::Groups => {
            authorize(&st, &user, &non_resource("get"))?;
            return Ok(json_response(StatusCode::OK, &discovery::groups(registry)));
        }
        Route::Group(g) => {
            authorize(&st, &user, &non_resource("get"))?;
            return discovery::group(registry, &g)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::unknown_route(&path));
        }
        Route::GroupVersion { group, version } => {
            authorize(&st, &user, &non_resource("get"))?;
            return registry
                .resource_list(&group, &version)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::unknown_route(&path));
        }
        Route::OpenApi => {
            authorize(&st, &user, &non_resource("get"))?;
            let doc = match path.trim_end_matches('/').strip_prefix("/openapi/v3") {
                Some("") => Some(super::openapi::root(registry)),
                Some(rest) => {
                    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
                    match parts.as_slice() {
                        ["api", v] => super::openapi::group_version(registry, "", v),
                        ["apis", g, v] => super::openapi::group_version(registry, g, v),
                        _ => None,
                    }
                }
                None => None,
            };
            return doc.map(|d| json_response(StatusCode::OK, &d)).ok_or_else(|| ApiError::unknown_route(&path));
        }
        Route::Resource(r) => r,
    };

    if r.group == super::resources::AUTHORIZATION_GROUP {
        return match (method.as_str(), r.resource.as_str(), r.name.is_none()) {
            ("POST", "selfsubjectaccessreviews", true) => self_subject_access_review(&st, &user, &body),
            _ => Err(ApiError::unknown_route(&path)),
        };
    }

    let watch = flag(&query, "watch");
    let verb = verb_for(&method, r.name.is_some(), watch)?;
    let fields = FieldSelector::parse(param(&query, "fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let labels = LabelSelector::parse(param(&query, "labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let qualified_resource = match &r.subresource {
        Some(s) => format!("{}/{s}", r.resource),
        None => r.resource.clone(),
    };

    let latency = st.faults.latency_for(verb, &r.group, &qualified_resource);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(e) = st.faults.error_for(verb, &r.group, &qualified_resource) {
        return Err(e);
    }

    let mut attrs = Attributes {
        verb: verb.into(),
        api_group: r.group.clone(),
        resource: r.resource.clone(),
        subresource: r.subresource.clone().unwrap_or_default(),
        namespace: r.namespace.clone().unwrap_or_default(),
        name: r.name.clone().unwrap_or_default(),
        path: path.clone(),
        resource_request: true,
    };
    if matches!(verb, "list" | "watch") {
        // Kubernetes authorizes single-object list/watch against resourceNames.
        if let Some(n) = fields.equality_value("metadata.name") {
            attrs.name = n.to_string();
        }
    }
    authorize(&st, &user, &attrs)?;

    if r.group == KUBEVIRT_SUBRESOURCES_GROUP {
        let handler = st.aggregated.read().unwrap_or_else(|p| p.into_inner()).get(KUBEVIRT_SUBRESOURCES_GROUP).cloned();
        return match handler {
            Some(h) if registry.kubevirt_subresources => h.handle(r, method, body).await,
            _ => Err(ApiError::unknown_route(&path)),
        };
    }

    let rt =
        registry.lookup(&r.group, &r.version, &r.resource).cloned().ok_or_else(|| ApiError::unknown_route(&path))?;
    if !rt.namespaced && r.namespace.is_some() {
        return Err(ApiError::unknown_route(&path));
    }
    if rt.namespaced && r.namespace.is_none() && r.name.is_some() {
        return Err(ApiError::unknown_route(&path));
    }
    let sub = r.subresource.clone().unwrap_or_default();
    if !(sub.is_empty() || sub == "status" && rt.status_subresource) {
        return Err(ApiError::not_found(rt.group, &format!("{}/{sub}", rt.plural), r.name.as_deref().unwrap_or("")));
    }
    for f in fields.fields() {
        if f != "metadata.name" && f != "metadata.namespace" && !rt.field_selectors.contains(&f) {
            return Err(ApiError::bad_request(format!("field label not supported: {f}")));
        }
    }
    let ns = r.namespace.clone().unwrap_or_default();
    let name = r.name.clone().unwrap_or_default();
    let dry_run = match param(&query, "dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )))
        }
    };
    let wopts = WriteOptions {
        dry_run,
        keep_status: false,
        field_manager: param(&query, "fieldManager").map(String::from),
        force: flag(&query, "force"),
    };
    let as_table = table::wants_table(&accept);
    let include_object = param(&query, "includeObject").unwrap_or("Metadata").to_string();
    let render = |obj: &Value| -> Value {
        if as_table {
            return table::table(&rt, &[obj], meta::str_at(obj, "/metadata/resourceVersion"), &include_object);
        }
        rt.as_served(obj, &r.version).into_owned()
    };

    match verb {
        "get" => {
            let obj = st.api.get(&rt, &ns, &name)?;
            Ok(json_response(StatusCode::OK, &render(&obj)))
        }
        "list" => list(&st, &rt, &r, &query, &labels, &fields, as_table, &include_object),
        "watch" => {
            let timeout = param(&query, "timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(1800));
            let wr = watch::WatchRequest {
                rt: rt.clone(),
                version: r.version.clone(),
                namespace: r.namespace.clone(),
                labels,
                fields,
                resource_version: param(&query, "resourceVersion").map(String::from),
                bookmarks: flag(&query, "allowWatchBookmarks"),
                send_initial_events: flag(&query, "sendInitialEvents"),
                timeout,
                as_table,
                include_object,
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
        "create" => {
            if !sub.is_empty() {
                return Err(ApiError::method_not_allowed("create is not supported on this subresource"));
            }
            let obj = parse_json(&body)?;
            check_type(&rt, &r.version, &obj)?;
            let created = st.api.create(&rt, &ns, obj, &wopts)?;
            Ok(json_response(StatusCode::CREATED, &render(&created)))
        }
        "update" => {
            let obj = parse_json(&body)?;
            check_type(&rt, &r.version, &obj)?;
            let updated = st.api.replace(&rt, &ns, &name, &sub, obj, &wopts)?;
            Ok(json_response(StatusCode::OK, &render(&updated)))
        }
        "patch" => {
            let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let patch_type = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let patch_body: Value = if patch_type == PatchType::Apply {
                let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("apply patch is not UTF-8"))?;
                serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                parse_json(&body)?
            };
            let patched = st.api.patch(&rt, &ns, &name, &sub, patch_type, &patch_body, &wopts)?;
            Ok(json_response(StatusCode::OK, &render(&patched)))
        }
        "delete" => {
            let opts = delete_options(&body, dry_run)?;
            let before_finalizers =
                st.api.get(&rt, &ns, &name).map(|o| !meta::finalizers(&o).is_empty()).unwrap_or(false);
            let obj = st.api.delete(&rt, &ns, &name, &opts)?;
            let code = if before_finalizers { StatusCode::ACCEPTED } else { StatusCode::OK };
            Ok(json_response(code, &render(&obj)))
        }
        "deletecollection" => {
            let opts = delete_options(&body, dry_run)?;
            let (items, _) = st.api.store.list(&rt.key(), r.namespace.as_deref());
            let mut deleted = Vec::new();
            for obj in items.iter().filter(|o| labels.matches(meta::labels(o)) && fields.matches(o)) {
                match st.api.delete(&rt, meta::namespace(obj), meta::name(obj), &opts) {
                    Ok(d) => deleted.push((*d).clone()),
                    Err(e) if e.reason == "NotFound" => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version_for(&r.version), "metadata": {}, "items": deleted}),
            ))
        }
        other => Err(ApiError::method_not_allowed(format!("verb {other} is not supported"))),
    }
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

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

#[allow(clippy::too_many_arguments)]
fn list(
    st: &ServerState,
    rt: &ResourceType,
    r: &ResourceRequest,
    query: &Query,
    labels: &LabelSelector,
    fields: &FieldSelector,
    as_table: bool,
    include_object: &str,
) -> ApiResult<Response> {
    let limit = match param(query, "limit") {
        None | Some("") => 0usize,
        Some(l) => l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?.max(0) as usize,
    };
    let (items, list_rv) = st.api.store.list(&rt.key(), r.namespace.as_deref());
    let mut rv = list_rv;
    let mut start_after: Option<String> = None;
    if let Some(token) = param(query, "continue").filter(|t| !t.is_empty()) {
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
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
        .filter(|o| labels.matches(meta::labels(o)) && fields.matches(o))
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
    if as_table {
        let mut t = table::table(rt, &selected, &rv_text, include_object);
        if let Some(c) = &continue_token {
            t["metadata"]["continue"] = json!(c);
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    let api_version = rt.api_version_for(&r.version);
    let mut metadata = json!({"resourceVersion": rv_text});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
        metadata["remainingItemCount"] = json!(remaining);
    }
    // Serialised by hand so thousands of items are not cloned into one Value.
    let mut out = Vec::with_capacity(selected.len() * 1024 + 256);
    out.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut out, &format!("{}List", rt.kind)).map_err(|e| ApiError::internal(e.to_string()))?;
    out.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut out, &api_version).map_err(|e| ApiError::internal(e.to_string()))?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, &metadata).map_err(|e| ApiError::internal(e.to_string()))?;
    out.extend_from_slice(b",\"items\":[");
    for (i, obj) in selected.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &*rt.as_served(obj, &r.version))
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    out.extend_from_slice(b"]}");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], out).into_response())
}
