//! The HTTP front of the API server: authentication, routing, fault injection,
//! authorization, then the verb handlers. Every error is a Kubernetes `Status`.
//!
//! This file only reads a request into an [`Incoming`] and routes it; each job
//! has its own file: the body and JSON helpers (`body`), authorization
//! (`authz`), the non-resource endpoints (`nonresource`), the access reviews
//! (`reviews`), resource requests up to the verb (`resource`), what a verb
//! acts on (`target`), the verbs (`verbs`) and paged lists (`list`).

mod authz;
mod body;
mod list;
mod nonresource;
mod resource;
mod reviews;
mod target;
mod verbs;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, Method};
use serde_json::Value;

pub use body::json_response;

use super::authn::Authenticator;
use super::error::{ApiError, ApiResult};
use super::openapi::Documents;
use super::ops::Api;
use super::rbac::UserInfo;
use super::request::{self, ResourceRequest, Route};
use super::resources::KUBEVIRT_SUBRESOURCES_GROUP;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An API served outside the generic registry (KubeVirt's virt-api subresources).
pub trait AggregatedApi: Send + Sync {
    fn handle(&self, req: ResourceRequest, method: Method, body: Bytes) -> BoxFuture<ApiResult<Response>>;
}

/// The simulator's own control endpoints under `/sim/` (admin token only).
pub trait AdminApi: Send + Sync {
    fn handle(&self, method: Method, path: String, body: Bytes) -> BoxFuture<ApiResult<Response>>;
}

/// Injected request faults, consulted after routing and before authorization.
/// The engine only asks; what to inject is decided outside it (the simulator's
/// `faults` module implements this from its fault spec).
pub trait RequestFaults: Send + Sync {
    /// Extra latency for this request (zero for none).
    fn latency_for(&self, verb: &str, group: &str, resource: &str) -> Duration;
    /// An error to answer instead of serving the request.
    fn error_for(&self, verb: &str, group: &str, resource: &str) -> Option<ApiError>;
}

pub struct ServerState {
    pub api: Arc<Api>,
    pub authn: Arc<Authenticator>,
    pub faults: Arc<dyn RequestFaults>,
    pub version: Value,
    pub server_address: RwLock<String>,
    /// Bumped to end every open watch (fault: "drop all watches").
    pub watch_epoch: tokio::sync::watch::Sender<u64>,
    pub aggregated: RwLock<HashMap<String, Arc<dyn AggregatedApi>>>,
    pub admin: RwLock<Option<Arc<dyn AdminApi>>>,
    pub max_body_bytes: usize,
    pub openapi: Documents,
}

impl ServerState {
    pub fn new(api: Arc<Api>, authn: Arc<Authenticator>, faults: Arc<dyn RequestFaults>, version: Value) -> Self {
        let (watch_epoch, _) = tokio::sync::watch::channel(0u64);
        let git_version = version.get("gitVersion").and_then(Value::as_str).unwrap_or("unknown").to_string();
        Self {
            openapi: Documents::new(api.registry.clone(), &git_version),
            api,
            authn,
            faults,
            version,
            server_address: RwLock::new(String::new()),
            watch_epoch,
            aggregated: RwLock::new(HashMap::new()),
            admin: RwLock::new(None),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }
}

/// Requests bodies above this get 413 (the apiserver's default is 3 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn router(state: Arc<ServerState>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

/// How long a write waits for the save that holds it before it is answered anyway.
const DURABLE_WITHIN: Duration = Duration::from_secs(10);

async fn dispatch(State(st): State<Arc<ServerState>>, req: Request) -> Response {
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let response = match handle(st.clone(), req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if writes && response.status().is_success() {
        // Answered once saved, as the apiserver answers once etcd committed: a
        // kill -9 right after must not lose what the client was told happened.
        let store = &st.api.store;
        let rv = store.current_rv();
        if !store.wait_durable(rv, DURABLE_WITHIN).await {
            tracing::error!(rv, "a write is answered before any save holds it (saving is failing or stuck)");
        }
    }
    response
}

type Query = Vec<(String, String)>;

/// One request, read and authenticated: what every handler works from.
struct Incoming {
    method: Method,
    path: String,
    query: Query,
    accept: String,
    content_type: String,
    user: UserInfo,
    body: Bytes,
}

impl Incoming {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// The health and version endpoints answer anonymous requests, as the
/// apiserver's `system:public-info-viewer` binding allows.
fn authenticate(st: &ServerState, path: &str, authorization: Option<&str>) -> ApiResult<UserInfo> {
    match st.authn.authenticate(authorization) {
        Some(u) => Ok(u),
        None if authorization.is_none() && matches!(path, "/healthz" | "/livez" | "/readyz" | "/version") => {
            Ok(UserInfo { username: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()] })
        }
        None => Err(ApiError::unauthorized()),
    }
}

/// Objects are served as JSON (YAML accepted as a request), so anything else is
/// 406; the OpenAPI endpoints negotiate their own formats.
fn check_acceptable(path: &str, accept: &str) -> ApiResult<()> {
    if accept.is_empty()
        || path.starts_with("/openapi")
        || accept.split(',').any(|a| a.contains("json") || a.contains("*/*") || a.contains("yaml"))
    {
        return Ok(());
    }
    tracing::debug!(accept, "not acceptable");
    Err(ApiError::not_acceptable("only the following media types are accepted: application/json, application/yaml"))
}

async fn handle(st: Arc<ServerState>, req: Request) -> ApiResult<Response> {
    let (parts, raw_body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: Query = serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let user = authenticate(&st, &path, parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?;
    let accept = header_str(&parts.headers, header::ACCEPT);
    check_acceptable(&path, &accept)?;
    let body = body::read(raw_body, &parts.headers, st.max_body_bytes).await?;
    let inc = Incoming {
        method: parts.method,
        content_type: header_str(&parts.headers, header::CONTENT_TYPE),
        path,
        query,
        accept,
        user,
        body,
    };

    if let Some(admin_path) = inc.path.strip_prefix("/sim/") {
        return admin(&st, &inc, admin_path.to_string()).await;
    }
    let registry = &st.api.registry;
    let route = request::parse(&inc.path, |g, v, p| {
        registry.lookup(g, v, p).is_some_and(|t| t.namespaced)
            || (g == KUBEVIRT_SUBRESOURCES_GROUP && matches!(p, "virtualmachines" | "virtualmachineinstances"))
    })?;
    match route {
        Route::Resource(r) => resource::handle(&st, &inc, r).await,
        other => nonresource::handle(&st, &inc, other),
    }
}

async fn admin(st: &ServerState, inc: &Incoming, admin_path: String) -> ApiResult<Response> {
    if !authz::is_master(&inc.user) {
        return Err(ApiError::forbidden(
            "",
            "",
            "",
            format!("forbidden: User \"{}\" cannot use the simulator admin API", inc.user.username),
        ));
    }
    let admin = st.admin.read().unwrap_or_else(|p| p.into_inner()).clone();
    match admin {
        Some(a) => a.handle(inc.method.clone(), admin_path, inc.body.clone()).await,
        None => Err(ApiError::unknown_route(&inc.path)),
    }
}
