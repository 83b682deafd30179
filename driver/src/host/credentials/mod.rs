//! A guest cluster's identity on the Harvester host, as upstream's
//! `deploy/generate_addon_csi.sh` makes it with kubectl: a ServiceAccount in the
//! VMs' namespace, a RoleBinding there to `harvesterhci.io:cloudprovider`, a
//! ClusterRoleBinding to `harvesterhci.io:csi-driver` (both named `<ns>-<sa>`),
//! and a long-lived `kubernetes.io/service-account-token` Secret `<sa>-token`
//! that the host's token controller fills. This file holds the object shapes and
//! how an existing object is judged; `ops` makes the calls; `kubeconfig` reads the
//! operator's kubeconfig and writes the guest's cloud-config.

pub mod kubeconfig;
pub mod ops;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{Error, Result};
use crate::names::{is_dns_label, is_dns_subdomain};

/// Harvester's ClusterRole for the cloud provider and the driver's namespaced
/// needs (VMs, hotplug, PVCs); bound per namespace.
pub const CLOUDPROVIDER_ROLE: &str = "harvesterhci.io:cloudprovider";
/// Harvester's ClusterRole for the driver's cluster-wide needs (storage classes,
/// NetworkFilesystems, snapshots, settings); bound cluster-wide.
pub const CSI_DRIVER_ROLE: &str = "harvesterhci.io:csi-driver";
pub const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Who the guest cluster is on the host: a ServiceAccount in the VMs' namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestIdentity {
    pub namespace: String,
    pub service_account: String,
}

impl GuestIdentity {
    pub fn new(namespace: &str, service_account: &str) -> Result<Self> {
        if !is_dns_label(namespace) {
            return Err(Error::InvalidArgument(format!(
                "namespace {namespace:?} is not a valid namespace name (a lowercase RFC 1123 label)"
            )));
        }
        // The token Secret is `<sa>-token`, which must still be a valid object name.
        if !is_dns_subdomain(service_account) || service_account.len() > 253 - "-token".len() {
            return Err(Error::InvalidArgument(format!(
                "service account {service_account:?} is not a valid name (a lowercase RFC 1123 subdomain of at most 247 characters)"
            )));
        }
        Ok(Self { namespace: namespace.into(), service_account: service_account.into() })
    }

    /// Upstream's name for both bindings.
    pub fn binding_name(&self) -> String {
        format!("{}-{}", self.namespace, self.service_account)
    }

    pub fn token_secret_name(&self) -> String {
        format!("{}-token", self.service_account)
    }

    fn subject(&self) -> Subject {
        Subject {
            api_group: None,
            kind: "ServiceAccount".into(),
            name: self.service_account.clone(),
            namespace: Some(self.namespace.clone()),
        }
    }

    fn meta(&self, name: String, namespaced: bool) -> ObjectMeta {
        ObjectMeta { name: Some(name), namespace: namespaced.then(|| self.namespace.clone()), ..Default::default() }
    }
}

/// The four host objects, in the order they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ServiceAccount,
    RoleBinding,
    ClusterRoleBinding,
    TokenSecret,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::ServiceAccount, Kind::RoleBinding, Kind::ClusterRoleBinding, Kind::TokenSecret];

    /// API group and resource (for permissions and messages).
    pub fn resource(self) -> (&'static str, &'static str) {
        match self {
            Kind::ServiceAccount => ("", "serviceaccounts"),
            Kind::RoleBinding => (RBAC_GROUP, "rolebindings"),
            Kind::ClusterRoleBinding => (RBAC_GROUP, "clusterrolebindings"),
            Kind::TokenSecret => ("", "secrets"),
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::ClusterRoleBinding
    }

    pub fn name(self, id: &GuestIdentity) -> String {
        match self {
            Kind::ServiceAccount => id.service_account.clone(),
            Kind::RoleBinding | Kind::ClusterRoleBinding => id.binding_name(),
            Kind::TokenSecret => id.token_secret_name(),
        }
    }

    /// `RoleBinding default/default-guest → ClusterRole harvesterhci.io:cloudprovider`.
    pub fn describe(self, id: &GuestIdentity) -> String {
        let name = self.name(id);
        match self {
            Kind::ServiceAccount => format!("ServiceAccount {}/{name}", id.namespace),
            Kind::RoleBinding => format!("RoleBinding {}/{name} → ClusterRole {CLOUDPROVIDER_ROLE}", id.namespace),
            Kind::ClusterRoleBinding => format!("ClusterRoleBinding {name} → ClusterRole {CSI_DRIVER_ROLE}"),
            Kind::TokenSecret => format!("Secret {}/{name} ({SA_TOKEN_TYPE})", id.namespace),
        }
    }

    /// The object this command makes, as JSON (for creating and for `--dry-run`).
    pub fn object(self, id: &GuestIdentity) -> serde_json::Value {
        let value = match self {
            Kind::ServiceAccount => serde_json::to_value(service_account(id)),
            Kind::RoleBinding => serde_json::to_value(role_binding(id)),
            Kind::ClusterRoleBinding => serde_json::to_value(cluster_role_binding(id)),
            Kind::TokenSecret => serde_json::to_value(token_secret(id)),
        };
        // k8s-openapi types always serialize; a failure here would be a bug in them.
        value.unwrap_or_default()
    }
}

pub fn service_account(id: &GuestIdentity) -> ServiceAccount {
    ServiceAccount { metadata: id.meta(id.service_account.clone(), true), ..Default::default() }
}

fn cluster_role_ref(name: &str) -> RoleRef {
    RoleRef { api_group: RBAC_GROUP.into(), kind: "ClusterRole".into(), name: name.into() }
}

pub fn role_binding(id: &GuestIdentity) -> RoleBinding {
    RoleBinding {
        metadata: id.meta(id.binding_name(), true),
        role_ref: cluster_role_ref(CLOUDPROVIDER_ROLE),
        subjects: Some(vec![id.subject()]),
    }
}

pub fn cluster_role_binding(id: &GuestIdentity) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: id.meta(id.binding_name(), false),
        role_ref: cluster_role_ref(CSI_DRIVER_ROLE),
        subjects: Some(vec![id.subject()]),
    }
}

/// Only the ServiceAccount's name: the token controller adds the uid annotation,
/// the token, `ca.crt` and `namespace`, and deletes the Secret with its account.
pub fn token_secret(id: &GuestIdentity) -> Secret {
    let mut meta = id.meta(id.token_secret_name(), true);
    meta.annotations = Some(BTreeMap::from([(SA_NAME_ANNOTATION.to_string(), id.service_account.clone())]));
    Secret { metadata: meta, type_: Some(SA_TOKEN_TYPE.into()), ..Default::default() }
}

/// Why an existing host object is not the one this command would make. It is
/// never changed: rebinding it could take permissions from someone else.
pub type Mismatch = String;

fn being_deleted(meta: &ObjectMeta) -> Option<Mismatch> {
    meta.deletion_timestamp.is_some().then(|| "is being deleted; run again once it is gone".to_string())
}

fn is_our_subject(s: &Subject, id: &GuestIdentity) -> bool {
    s.kind == "ServiceAccount"
        && s.api_group.as_deref().unwrap_or("").is_empty()
        && s.name == id.service_account
        && s.namespace.as_deref() == Some(id.namespace.as_str())
}

fn check_binding(
    meta: &ObjectMeta,
    role_ref: &RoleRef,
    subjects: Option<&Vec<Subject>>,
    want_role: &str,
    id: &GuestIdentity,
) -> std::result::Result<(), Mismatch> {
    if let Some(m) = being_deleted(meta) {
        return Err(m);
    }
    if role_ref.kind != "ClusterRole" || role_ref.name != want_role || role_ref.api_group != RBAC_GROUP {
        return Err(format!(
            "binds {} {:?}, not ClusterRole {want_role:?}",
            if role_ref.kind.is_empty() { "role" } else { &role_ref.kind },
            role_ref.name
        ));
    }
    let subjects = subjects.map(Vec::as_slice).unwrap_or_default();
    let ours = subjects.iter().filter(|s| is_our_subject(s, id)).count();
    if ours == 0 {
        let names: Vec<String> = subjects.iter().map(describe_subject).collect();
        return Err(format!(
            "binds {} instead of ServiceAccount {}/{}",
            if names.is_empty() { "nobody".to_string() } else { names.join(", ") },
            id.namespace,
            id.service_account
        ));
    }
    if subjects.len() > ours {
        let others: Vec<String> = subjects.iter().filter(|s| !is_our_subject(s, id)).map(describe_subject).collect();
        return Err(format!("also binds {}", others.join(", ")));
    }
    Ok(())
}

fn describe_subject(s: &Subject) -> String {
    match &s.namespace {
        Some(ns) if !ns.is_empty() => format!("{} {ns}/{}", s.kind, s.name),
        _ => format!("{} {}", s.kind, s.name),
    }
}

pub fn check_service_account(existing: &ServiceAccount) -> std::result::Result<(), Mismatch> {
    being_deleted(&existing.metadata).map_or(Ok(()), Err)
}

pub fn check_role_binding(existing: &RoleBinding, id: &GuestIdentity) -> std::result::Result<(), Mismatch> {
    check_binding(&existing.metadata, &existing.role_ref, existing.subjects.as_ref(), CLOUDPROVIDER_ROLE, id)
}

pub fn check_cluster_role_binding(
    existing: &ClusterRoleBinding,
    id: &GuestIdentity,
) -> std::result::Result<(), Mismatch> {
    check_binding(&existing.metadata, &existing.role_ref, existing.subjects.as_ref(), CSI_DRIVER_ROLE, id)
}

/// `sa_uid`: the ServiceAccount's uid when it exists (a token Secret of an earlier
/// account of the same name carries another uid and no longer authenticates).
pub fn check_token_secret(
    existing: &Secret,
    id: &GuestIdentity,
    sa_uid: Option<&str>,
) -> std::result::Result<(), Mismatch> {
    if let Some(m) = being_deleted(&existing.metadata) {
        return Err(m);
    }
    let ty = existing.type_.as_deref().unwrap_or("Opaque");
    if ty != SA_TOKEN_TYPE {
        return Err(format!("has type {ty}, not {SA_TOKEN_TYPE}"));
    }
    let annotations = existing.metadata.annotations.clone().unwrap_or_default();
    match annotations.get(SA_NAME_ANNOTATION) {
        Some(sa) if *sa == id.service_account => {}
        Some(sa) => return Err(format!("holds the token of ServiceAccount {sa:?}, not {:?}", id.service_account)),
        None => return Err(format!("has no {SA_NAME_ANNOTATION} annotation")),
    }
    match (annotations.get(SA_UID_ANNOTATION), sa_uid) {
        (Some(have), Some(want)) if have != want => Err(format!(
            "belongs to an earlier ServiceAccount of that name (uid {have}, the account's is {want}); delete the Secret"
        )),
        _ => Ok(()),
    }
}

/// What the host holds for one of the four objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Absent,
    /// Present with the shape this command makes: left alone.
    Present,
    /// The operator's credentials may not read it (see the permission check).
    Unreadable,
}

/// The host's answer for each object, before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub id: GuestIdentity,
    pub states: BTreeMap<Kind, State>,
    /// ClusterRoles the bindings refer to that the host does not have (bound anyway,
    /// as upstream does: the binding grants nothing until the role exists).
    pub missing_roles: Vec<&'static str>,
}

impl Inspection {
    pub fn state(&self, kind: Kind) -> &State {
        self.states.get(&kind).unwrap_or(&State::Absent)
    }
}

/// One permission the operator's credentials need.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource =
            if self.group.is_empty() { self.resource.to_string() } else { format!("{}.{}", self.resource, self.group) };
        match &self.namespace {
            Some(ns) => write!(f, "{} {resource} in namespace {ns}", self.verb),
            None => write!(f, "{} {resource} (cluster-wide)", self.verb),
        }
    }
}

/// Every permission the command uses for `inspection`: reads of all four
/// objects, creates of the missing ones, and the watch for the token.
pub fn needed_permissions(inspection: &Inspection) -> Vec<Permission> {
    let id = &inspection.id;
    let perm = |verb: &'static str, kind: Kind| {
        let (group, resource) = kind.resource();
        Permission { verb, group, resource, namespace: kind.namespaced().then(|| id.namespace.clone()) }
    };
    let mut out = Vec::new();
    for kind in Kind::ALL {
        out.push(perm("get", kind));
        if inspection.state(kind) != &State::Present {
            out.push(perm("create", kind));
        }
    }
    out.push(perm("list", Kind::TokenSecret));
    out.push(perm("watch", Kind::TokenSecret));
    out
}

/// The error for permissions the operator's credentials lack.
pub fn permission_error(missing: &[Permission], host_message: Option<&str>) -> Error {
    let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
    let mut msg = format!(
        "the host credentials may not {}. Creating a guest cluster's identity needs a Harvester admin: \
         run this command with an admin's kubeconfig (--host-kubeconfig)",
        list.join(", ")
    );
    if let Some(m) = host_message {
        msg.push_str(&format!(" (the host said: {m})"));
    }
    Error::PermissionDenied(msg)
}

/// The `--dry-run` output: a status line per object as YAML comments, then the
/// objects that would be created, as a multi-document stream an admin can apply.
pub fn render_dry_run(inspection: &Inspection, output: &str) -> String {
    let id = &inspection.id;
    let mut out = String::from("# harvester-csi-driver cloud-config --dry-run: nothing was changed on the host.\n");
    let mut docs = Vec::new();
    for kind in Kind::ALL {
        let status = match inspection.state(kind) {
            State::Absent => "would be created",
            State::Present => "exists with this shape; left as is",
            State::Unreadable => "cannot be read with these credentials; would be created if absent",
        };
        out.push_str(&format!("# {}: {status}\n", kind.describe(id)));
        if inspection.state(kind) != &State::Present {
            docs.push(kind.object(id));
        }
    }
    for role in &inspection.missing_roles {
        out.push_str(&format!(
            "# warning: ClusterRole {role} does not exist on this host; its binding grants nothing until it does\n"
        ));
    }
    out.push_str(&format!(
        "# then: wait for the token controller to fill Secret {}/{} and write {output}\n",
        id.namespace,
        id.token_secret_name()
    ));
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&to_yaml(&doc));
    }
    out
}

/// Plain scalars only: kubeconfig and manifest readers all take those, and long
/// values (base64 data, tokens) stay on one line.
pub(crate) fn yaml_options() -> serde_saphyr::SerializerOptions {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    options
}

fn to_yaml(v: &serde_json::Value) -> String {
    // A JSON value of plain maps and strings always has a YAML form.
    let mut text = serde_saphyr::to_string_with_options(v, yaml_options()).unwrap_or_default();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests;
