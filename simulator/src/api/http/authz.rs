//! Authorization of one request against the stored RBAC objects.

use crate::api::error::{ApiError, ApiResult};
use crate::api::rbac::{self, Attributes, Decision, RbacObjects, UserInfo};

use super::ServerState;

pub(super) fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
}

pub(super) fn authorize(st: &ServerState, user: &UserInfo, attrs: &Attributes) -> ApiResult<()> {
    match decide(st, user, attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny => {
            let message = rbac::forbidden_message(user, attrs);
            tracing::info!(user = %user.username, verb = %attrs.verb, resource = %attrs.resource, subresource = %attrs.subresource, namespace = %attrs.namespace, name = %attrs.name, "forbidden");
            Err(ApiError::forbidden(&attrs.api_group, &attrs.resource, &attrs.name, message))
        }
    }
}

/// The store's current RBAC objects (shared values: nothing is copied).
pub(super) fn with_rbac_objects<T>(
    st: &ServerState,
    f: impl FnOnce(&RbacObjects<'_, std::sync::Arc<serde_json::Value>>) -> T,
) -> T {
    let api = &st.api;
    let roles = api.list("rbac.authorization.k8s.io", "roles", None);
    let cluster_roles = api.list("rbac.authorization.k8s.io", "clusterroles", None);
    let role_bindings = api.list("rbac.authorization.k8s.io", "rolebindings", None);
    let cluster_role_bindings = api.list("rbac.authorization.k8s.io", "clusterrolebindings", None);
    f(&RbacObjects {
        roles: &roles,
        cluster_roles: &cluster_roles,
        role_bindings: &role_bindings,
        cluster_role_bindings: &cluster_role_bindings,
    })
}

pub(super) fn decide(st: &ServerState, user: &UserInfo, attrs: &Attributes) -> Decision {
    if is_master(user) {
        return Decision::Allow;
    }
    with_rbac_objects(st, |objects| rbac::authorize(user, attrs, objects))
}
