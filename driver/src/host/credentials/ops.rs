//! The host calls of the cloud-config generator: read what exists, ask the host
//! what the operator may do, create what is missing, wait for the token.

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use super::{
    check_cluster_role_binding, check_role_binding, check_service_account, check_token_secret, cluster_role_binding,
    needed_permissions, permission_error, role_binding, service_account, token_secret, GuestIdentity, Inspection, Kind,
    Mismatch, Permission, State, CLOUDPROVIDER_ROLE, CSI_DRIVER_ROLE,
};
use crate::error::{Error, Result};

/// What a run did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Unchanged,
}

/// The token Secret's contents. Debug never shows the token.
pub struct IssuedToken {
    pub token: String,
    /// The cluster CA the token controller put in `ca.crt` (PEM), if any.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("token", &"<redacted>").field("ca_pem", &self.ca_pem.is_some()).finish()
    }
}

fn ns_api<K>(client: &kube::Client, ns: &str) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::namespaced(client.clone(), ns)
}

/// GETs an object: `Ok(None)` when absent, `Err(None)` when the credentials may not read it.
async fn read<K>(api: &Api<K>, name: &str, what: &str) -> Result<Option<K>, Option<Error>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(v) => Ok(v),
        Err(e) => {
            let err = Error::host(format!("reading {what}"), e);
            Err(if err.is_forbidden() { None } else { Some(err) })
        }
    }
}

/// Judges one object; a mismatch is collected, not returned at once, so all are reported.
fn judge<K>(
    got: Result<Option<K>, Option<Error>>,
    check: impl FnOnce(&K) -> std::result::Result<(), Mismatch>,
    describe: String,
    mismatches: &mut Vec<String>,
) -> Result<State> {
    match got {
        Ok(None) => Ok(State::Absent),
        Ok(Some(obj)) => {
            if let Err(why) = check(&obj) {
                mismatches.push(format!("{describe} {why}"));
            }
            Ok(State::Present)
        }
        Err(None) => Ok(State::Unreadable),
        Err(Some(e)) => Err(e),
    }
}

/// Reads the four objects. Objects that exist with another shape are an error
/// naming each difference: they are never changed.
pub async fn inspect(client: &kube::Client, id: &GuestIdentity) -> Result<Inspection> {
    let ns = &id.namespace;
    let mut mismatches = Vec::new();
    let mut inspection = Inspection { id: id.clone(), states: Default::default(), missing_roles: Vec::new() };

    let sa = read(&ns_api::<ServiceAccount>(client, ns), &id.service_account, "the ServiceAccount").await;
    let sa_uid = match &sa {
        Ok(Some(a)) => a.metadata.uid.clone(),
        _ => None,
    };
    let state = judge(sa, check_service_account, Kind::ServiceAccount.describe(id), &mut mismatches)?;
    inspection.states.insert(Kind::ServiceAccount, state);

    let rb = read(&ns_api::<RoleBinding>(client, ns), &id.binding_name(), "the RoleBinding").await;
    let state = judge(rb, |b| check_role_binding(b, id), Kind::RoleBinding.describe(id), &mut mismatches)?;
    inspection.states.insert(Kind::RoleBinding, state);

    let crb = read(&Api::<ClusterRoleBinding>::all(client.clone()), &id.binding_name(), "the ClusterRoleBinding").await;
    let state =
        judge(crb, |b| check_cluster_role_binding(b, id), Kind::ClusterRoleBinding.describe(id), &mut mismatches)?;
    inspection.states.insert(Kind::ClusterRoleBinding, state);

    let secret = read(&ns_api::<Secret>(client, ns), &id.token_secret_name(), "the token Secret").await;
    let state = judge(
        secret,
        |s| check_token_secret(s, id, sa_uid.as_deref()),
        Kind::TokenSecret.describe(id),
        &mut mismatches,
    )?;
    inspection.states.insert(Kind::TokenSecret, state);

    if !mismatches.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "existing host objects are not what this command makes, and it never changes them: {}",
            mismatches.join("; ")
        )));
    }

    // Harvester < v1.3 has no csi-driver role: bound anyway (upstream does), with a warning.
    let roles = Api::<ClusterRole>::all(client.clone());
    for role in [CLOUDPROVIDER_ROLE, CSI_DRIVER_ROLE] {
        if let Ok(None) = roles.get_opt(role).await {
            inspection.missing_roles.push(role);
        }
    }
    Ok(inspection)
}

/// Asks the host (SelfSubjectAccessReview) which needed permissions the
/// credentials lack. `None` when the host cannot answer that question: then the
/// creates themselves tell.
pub async fn missing_permissions(client: &kube::Client, inspection: &Inspection) -> Result<Option<Vec<Permission>>> {
    let reviews = Api::<SelfSubjectAccessReview>::all(client.clone());
    let mut missing = Vec::new();
    for p in needed_permissions(inspection) {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(p.verb.into()),
                    group: Some(p.group.into()),
                    resource: Some(p.resource.into()),
                    namespace: p.namespace.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match reviews.create(&PostParams::default(), &review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => missing.push(p),
            Err(e) => {
                tracing::debug!(error = %e, "the host cannot review access; relying on the creates to tell");
                return Ok(None);
            }
        }
    }
    Ok(Some(missing))
}

/// Creates what `inspection` found absent (in order: account, bindings, Secret).
pub async fn apply(client: &kube::Client, inspection: &Inspection) -> Result<Vec<(Kind, Outcome)>> {
    let id = &inspection.id;
    let ns = &id.namespace;
    let mut out = Vec::new();
    for kind in super::Kind::ALL {
        if inspection.state(kind) == &State::Present {
            out.push((kind, Outcome::Unchanged));
            continue;
        }
        let pp = PostParams::default();
        let created = match kind {
            Kind::ServiceAccount => {
                ns_api::<ServiceAccount>(client, ns).create(&pp, &service_account(id)).await.map(|_| ())
            }
            Kind::RoleBinding => ns_api::<RoleBinding>(client, ns).create(&pp, &role_binding(id)).await.map(|_| ()),
            Kind::ClusterRoleBinding => {
                Api::<ClusterRoleBinding>::all(client.clone()).create(&pp, &cluster_role_binding(id)).await.map(|_| ())
            }
            Kind::TokenSecret => ns_api::<Secret>(client, ns).create(&pp, &token_secret(id)).await.map(|_| ()),
        };
        match created {
            Ok(()) => out.push((kind, Outcome::Created)),
            Err(e) => {
                let err = Error::host(format!("creating {}", kind.describe(id)), e);
                if err.is_forbidden() {
                    let (group, resource) = kind.resource();
                    let p = Permission {
                        verb: "create",
                        group,
                        resource,
                        namespace: kind.namespaced().then(|| ns.clone()),
                    };
                    let said = err.api_response().map(|r| r.message.clone());
                    return Err(permission_error(&[p], said.as_deref()));
                }
                if err.api_response().is_some_and(|r| r.reason == "AlreadyExists") {
                    // Made by someone else since the inspection: judge it like any existing object.
                    let again = inspect(client, id).await?;
                    if again.state(kind) == &State::Present {
                        out.push((kind, Outcome::Unchanged));
                        continue;
                    }
                }
                if err.is_not_found() && kind == Kind::ServiceAccount {
                    return Err(Error::NotFound(format!(
                        "namespace {ns} does not exist on the host: it must be the namespace of the guest cluster's VMs ({err})"
                    )));
                }
                return Err(err);
            }
        }
    }
    Ok(out)
}

fn secret_token(s: &Secret) -> Option<String> {
    let data = s.data.as_ref()?;
    let token = String::from_utf8(data.get("token")?.0.clone()).ok()?;
    (!token.is_empty()).then_some(token)
}

/// Watches the token Secret until the token controller has filled it (bounded).
pub async fn wait_for_token(client: &kube::Client, id: &GuestIdentity, deadline: Instant) -> Result<IssuedToken> {
    let name = id.token_secret_name();
    let what = format!("the token controller to issue a token in Secret {}/{name}", id.namespace);
    let api = ns_api::<Secret>(client, &id.namespace);
    let secret = super::super::wait_for(api, &name, deadline, &what, |s| s.is_none_or(|s| secret_token(s).is_some()))
        .await?
        .ok_or_else(|| {
            Error::Aborted(format!(
                "Secret {}/{name} was deleted while waiting for its token (the token controller deletes token \
                 Secrets whose ServiceAccount is gone or was re-created); run again",
                id.namespace
            ))
        })?;
    let token = secret_token(&secret)
        .ok_or_else(|| Error::Internal(format!("Secret {}/{name} has no token after the wait", id.namespace)))?;
    let ca_pem = secret.data.as_ref().and_then(|d| d.get("ca.crt")).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    Ok(IssuedToken { token, ca_pem })
}
