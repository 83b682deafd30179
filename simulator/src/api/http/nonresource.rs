//! Non-resource endpoints: health, `/version`, discovery and OpenAPI.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::api::discovery;
use crate::api::error::{ApiError, ApiResult};
use crate::api::rbac::Attributes;
use crate::api::request::Route;

use super::authz::authorize;
use super::body::json_response;
use super::{Incoming, ServerState};

pub(super) fn handle(st: &ServerState, inc: &Incoming, route: Route) -> ApiResult<Response> {
    if route == Route::Health {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    let attrs =
        Attributes { verb: "get".into(), path: inc.path.clone(), resource_request: false, ..Default::default() };
    authorize(st, &inc.user, &attrs)?;
    let registry = &st.api.registry;
    let not_found = || ApiError::unknown_route(&inc.path);
    let doc = match route {
        Route::Version => st.version.clone(),
        Route::CoreVersions => {
            let addr = st.server_address.read().unwrap_or_else(|p| p.into_inner()).clone();
            discovery::core_versions(&addr)
        }
        Route::Groups => discovery::groups(registry),
        Route::Group(g) => discovery::group(registry, &g).ok_or_else(not_found)?,
        Route::GroupVersion { group, version } => registry.resource_list(&group, &version).ok_or_else(not_found)?,
        Route::OpenApi => return st.openapi.serve(&inc.path, &inc.accept).unwrap_or_else(|| Err(not_found())),
        Route::Health | Route::Resource(_) => return Err(not_found()),
    };
    Ok(json_response(StatusCode::OK, &doc))
}
