//! Kubernetes RBAC authorization over stored Role / ClusterRole / RoleBinding /
//! ClusterRoleBinding objects, plus the apiserver's wording of a 403.
//!
//! The goal is to decide exactly as a real kube-apiserver running
//! `--authorization-mode=RBAC` would, so that clients tested against the
//! simulator neither gain nor lose permissions when pointed at a real cluster.
//! Where the simulator cannot know what a real cluster knows, the choice made
//! leans towards denying.
//!
//! Deliberate gaps:
//! * `aggregationRule` on a ClusterRole is ignored: a real cluster relies on a
//!   controller to copy the aggregated rules into `rules`, and only `rules`
//!   is evaluated here, so aggregation works only if whoever stores the
//!   ClusterRole fills `rules` in as that controller would.
//! * Of the bootstrap policy only the grants every authenticated client relies
//!   on are built in (`system:discovery`, `system:public-info-viewer`,
//!   `system:basic-user`), because a simulator seldom stores them as objects.
//!   Other bootstrap roles (`cluster-admin`, ...) only take effect when
//!   present among the given objects.
//! * `roleRef.apiGroup` and `subjects[].apiGroup` are not compared: the real
//!   authorizer relies on admission-time validation for those, and does not
//!   look at them when deciding.
//! * The 403 message never carries the authorizer's optional `: RBAC: ...`
//!   reason suffix (e.g. a binding naming a missing role), since
//!   [`forbidden_message`] is not given the objects.

mod review;

use std::borrow::{Borrow, Cow};

use serde_json::Value;

pub use review::{rules_for, RulesReview};

const SUPERUSER_GROUP: &str = "system:masters";
const AUTHENTICATED_GROUP: &str = "system:authenticated";
const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// Bootstrap ClusterRole `system:discovery`, bound to `system:authenticated`.
const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];

/// Bootstrap ClusterRole `system:public-info-viewer`, bound to both
/// `system:authenticated` and `system:unauthenticated`.
const PUBLIC_INFO_URLS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Bootstrap ClusterRole `system:basic-user`, bound to `system:authenticated`:
/// everyone may ask what they themselves may do. (Kubernetes 1.28 added
/// `authentication.k8s.io` `selfsubjectreviews`, a group not served here.)
const BASIC_USER_GROUP: &str = "authorization.k8s.io";
const BASIC_USER_RESOURCES: &[&str] = &["selfsubjectaccessreviews", "selfsubjectrulesreviews"];

fn basic_user_rule() -> Rule<'static> {
    Rule {
        verbs: vec!["create"],
        api_groups: vec![BASIC_USER_GROUP],
        resources: BASIC_USER_RESOURCES.to_vec(),
        ..Default::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The identity Kubernetes gives a ServiceAccount token: username
    /// `system:serviceaccount:<ns>:<name>`, groups `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>`, `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            username: format!("{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}"),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.to_string(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
                AUTHENTICATED_GROUP.to_string(),
            ],
        }
    }

    /// `(namespace, name)` when the username has the ServiceAccount form.
    pub fn is_service_account(&self) -> Option<(&str, &str)> {
        let rest = self.username.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?;
        let (namespace, name) = rest.split_once(':')?;
        // Kubernetes requires exactly two non-empty segments; anything else is
        // an ordinary user that merely looks similar.
        if namespace.is_empty() || name.is_empty() || name.contains(':') {
            return None;
        }
        Some((namespace, name))
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get list watch create update patch delete deletecollection (+ any custom
    /// verb); for non-resource requests the lower-cased HTTP method.
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    /// Plural, e.g. `virtualmachines`.
    pub resource: String,
    /// `""` or e.g. `addvolume`, `status`.
    pub subresource: String,
    /// `""` = cluster scope (or an all-namespaces list).
    pub namespace: String,
    /// `""` for list/create/collection requests.
    pub name: String,
    /// Request path, used for non-resource requests.
    pub path: String,
    /// `false` for `/version`, `/api`, `/apis`, `/openapi/...`, `/healthz`.
    pub resource_request: bool,
}

/// The stored RBAC objects, as plain values or shared ones (`Arc<Value>`, which
/// the store hands out, so a request need not copy them).
pub struct RbacObjects<'a, V: Borrow<Value> = Value> {
    pub roles: &'a [V],
    pub cluster_roles: &'a [V],
    pub role_bindings: &'a [V],
    pub cluster_role_bindings: &'a [V],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// Decides a request the way the apiserver's `Privileged groups, RBAC` chain does.
pub fn authorize<V: Borrow<Value>>(user: &UserInfo, attrs: &Attributes, objects: &RbacObjects<'_, V>) -> Decision {
    if user.in_group(SUPERUSER_GROUP) {
        return Decision::Allow;
    }

    // The apiserver lower-cases the HTTP method before authorizing a
    // non-resource request; doing it here too spares callers a subtle mismatch.
    let verb: Cow<'_, str> =
        if attrs.resource_request { Cow::Borrowed(&attrs.verb) } else { Cow::Owned(attrs.verb.to_ascii_lowercase()) };

    if !attrs.resource_request && bootstrap_discovery_allows(user, &verb, &attrs.path) {
        return Decision::Allow;
    }
    if attrs.resource_request && user.in_group(AUTHENTICATED_GROUP) && basic_user_rule().allows(attrs, &verb) {
        return Decision::Allow;
    }

    let grants = |rules: &[Rule<'_>]| rules.iter().any(|rule| rule.allows(attrs, &verb));

    for object in objects.cluster_role_bindings {
        let Some(binding) = Binding::parse(object.borrow()) else {
            continue;
        };
        // A ClusterRoleBinding has no namespace to default a ServiceAccount
        // subject into, and cannot reference a (namespaced) Role.
        if binding.role_kind != "ClusterRole" || !binding.applies_to(user, "") {
            continue;
        }
        if let Some(rules) = lookup_rules(objects.cluster_roles, None, binding.role_name) {
            if grants(&rules) {
                return Decision::Allow;
            }
        }
    }

    // RoleBindings only ever grant inside their own namespace, so cluster-scoped
    // and non-resource requests can stop here.
    if !attrs.resource_request || attrs.namespace.is_empty() {
        return Decision::Deny;
    }

    for object in objects.role_bindings.iter().map(Borrow::borrow) {
        match metadata_str(object, "namespace") {
            Some(ns) if ns == attrs.namespace => {}
            _ => continue,
        }
        let Some(binding) = Binding::parse(object) else {
            continue;
        };
        if !binding.applies_to(user, &attrs.namespace) {
            continue;
        }
        let rules = match binding.role_kind {
            "Role" => lookup_rules(objects.roles, Some(&attrs.namespace), binding.role_name),
            "ClusterRole" => lookup_rules(objects.cluster_roles, None, binding.role_name),
            _ => None,
        };
        if rules.is_some_and(|rules| grants(&rules)) {
            return Decision::Allow;
        }
    }

    Decision::Deny
}

/// The exact text Kubernetes puts in the 403 Status `message`.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    // Only the authorizer's half of the message goes through the apiserver's
    // HTML sanitizer; the `<resource> "<name>" is forbidden` prefix is added
    // afterwards by the Status builder and is left as is.
    if !attrs.resource_request {
        let detail = format!(
            "User {} cannot {} path {}",
            go_quote(&user.username),
            attrs.verb.to_ascii_lowercase(),
            go_quote(&attrs.path),
        );
        return format!("forbidden: {}", sanitize_html(&detail));
    }

    let requested = if attrs.subresource.is_empty() {
        Cow::Borrowed(attrs.resource.as_str())
    } else {
        Cow::Owned(format!("{}/{}", attrs.resource, attrs.subresource))
    };
    let scope = if attrs.namespace.is_empty() {
        " at the cluster scope".to_string()
    } else {
        format!(" in the namespace {}", go_quote(&attrs.namespace))
    };
    let detail = format!(
        "User {} cannot {} resource {} in API group {}{}",
        go_quote(&user.username),
        attrs.verb,
        go_quote(&requested),
        go_quote(&attrs.api_group),
        scope,
    );
    let detail = sanitize_html(&detail);

    // Mirrors apimachinery's NewForbidden, which drops the resource prefix when
    // both group and resource are empty.
    if attrs.api_group.is_empty() && attrs.resource.is_empty() {
        return format!("forbidden: {detail}");
    }
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {detail}")
    } else {
        format!("{qualified} {} is forbidden: {detail}", go_quote(&attrs.name))
    }
}

fn bootstrap_discovery_allows(user: &UserInfo, verb: &str, path: &str) -> bool {
    if verb != "get" {
        return false;
    }
    let matches = |urls: &[&str]| urls.iter().any(|url| non_resource_url_matches(url, path));
    let authenticated = user.in_group(AUTHENTICATED_GROUP);
    (authenticated && matches(DISCOVERY_URLS))
        || ((authenticated || user.in_group(UNAUTHENTICATED_GROUP)) && matches(PUBLIC_INFO_URLS))
}

/// One `rules[]` entry, borrowed from the stored JSON.
#[derive(Debug, Default)]
struct Rule<'a> {
    verbs: Vec<&'a str>,
    api_groups: Vec<&'a str>,
    resources: Vec<&'a str>,
    resource_names: Vec<&'a str>,
    non_resource_urls: Vec<&'a str>,
}

impl<'a> Rule<'a> {
    fn parse(value: &'a Value) -> Option<Self> {
        match value {
            // Go decodes a null list element into the zero value, a rule that
            // matches nothing, rather than rejecting the object.
            Value::Null => Some(Self::default()),
            Value::Object(_) => Some(Self {
                verbs: string_list(value.get("verbs"))?,
                api_groups: string_list(value.get("apiGroups"))?,
                resources: string_list(value.get("resources"))?,
                resource_names: string_list(value.get("resourceNames"))?,
                non_resource_urls: string_list(value.get("nonResourceURLs"))?,
            }),
            _ => None,
        }
    }

    fn allows(&self, attrs: &Attributes, verb: &str) -> bool {
        if !matches_or_wildcard(&self.verbs, verb) {
            return false;
        }
        if !attrs.resource_request {
            return self.non_resource_urls.iter().any(|url| non_resource_url_matches(url, &attrs.path));
        }
        matches_or_wildcard(&self.api_groups, &attrs.api_group)
            && self
                .resources
                .iter()
                .any(|r| resource_matches(r, &attrs.resource, &attrs.subresource))
            // An empty name (list, create, watch, deletecollection) can never
            // satisfy a rule restricted to named objects.
            && (self.resource_names.is_empty() || self.resource_names.contains(&attrs.name.as_str()))
    }
}

fn matches_or_wildcard(allowed: &[&str], requested: &str) -> bool {
    allowed.iter().any(|a| *a == "*" || *a == requested)
}

/// Kubernetes understands exactly three forms: `*`, the literal
/// `resource[/subresource]`, and `*/subresource`. In particular `res/*` is
/// not a wildcard there (it only matches a subresource literally named `*`),
/// so it is not one here either.
fn resource_matches(rule: &str, resource: &str, subresource: &str) -> bool {
    if rule == "*" {
        return true;
    }
    if subresource.is_empty() {
        return rule == resource;
    }
    let combined_matches = rule.strip_prefix(resource).and_then(|rest| rest.strip_prefix('/')) == Some(subresource);
    combined_matches || rule.strip_prefix("*/") == Some(subresource)
}

fn non_resource_url_matches(rule: &str, path: &str) -> bool {
    rule == "*" || rule == path || (rule.ends_with('*') && path.starts_with(rule.trim_end_matches('*')))
}

#[derive(Debug)]
struct Subject<'a> {
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
}

impl<'a> Subject<'a> {
    fn parse(value: &'a Value) -> Option<Self> {
        if !value.is_object() {
            return None;
        }
        string_field(value.get("apiGroup"))?;
        Some(Self {
            kind: string_field(value.get("kind"))?,
            name: string_field(value.get("name"))?,
            namespace: string_field(value.get("namespace"))?,
        })
    }

    fn applies_to(&self, user: &UserInfo, binding_namespace: &str) -> bool {
        if self.name.is_empty() {
            return false;
        }
        match self.kind {
            "User" => user.username == self.name,
            "Group" => user.in_group(self.name),
            "ServiceAccount" => {
                let namespace = if self.namespace.is_empty() { binding_namespace } else { self.namespace };
                // Kubernetes compares the token's username, not its groups, so a
                // hand-built UserInfo with the right username still matches.
                !namespace.is_empty() && user.is_service_account() == Some((namespace, self.name))
            }
            _ => false,
        }
    }
}

/// The parts of a RoleBinding or ClusterRoleBinding that decide anything.
#[derive(Debug)]
struct Binding<'a> {
    role_kind: &'a str,
    role_name: &'a str,
    subjects: Vec<Subject<'a>>,
}

impl<'a> Binding<'a> {
    fn parse(value: &'a Value) -> Option<Self> {
        let role_ref = value.get("roleRef")?;
        if !role_ref.is_object() {
            return None;
        }
        string_field(role_ref.get("apiGroup"))?;
        let role_name = string_field(role_ref.get("name"))?;
        if role_name.is_empty() {
            return None;
        }
        let subjects = match value.get("subjects") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(Subject::parse).collect::<Option<Vec<_>>>()?,
            Some(_) => return None,
        };
        Some(Self { role_kind: string_field(role_ref.get("kind"))?, role_name, subjects })
    }

    fn applies_to(&self, user: &UserInfo, binding_namespace: &str) -> bool {
        self.subjects.iter().any(|s| s.applies_to(user, binding_namespace))
    }
}

/// Rules of the first Role (`namespace` given) or ClusterRole (`None`) with that
/// name. A role whose JSON a real apiserver could not have decoded is treated
/// as absent, which is what the authorizer does with a dangling roleRef.
fn lookup_rules<'a, V: Borrow<Value>>(objects: &'a [V], namespace: Option<&str>, name: &str) -> Option<Vec<Rule<'a>>> {
    let object = objects.iter().map(Borrow::borrow).find(|object| {
        metadata_str(object, "name") == Some(name)
            && namespace.is_none_or(|ns| metadata_str(object, "namespace") == Some(ns))
    })?;
    match object.get("rules") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(rules)) => rules.iter().map(Rule::parse).collect(),
        Some(_) => None,
    }
}

fn metadata_str<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    let metadata = object.get("metadata")?;
    if !metadata.is_object() {
        return None;
    }
    string_field(metadata.get(key))
}

/// A string field as Go's JSON decoder sees it: absent or null is `""`, any
/// other non-string type is undecodable (`None`).
fn string_field(value: Option<&Value>) -> Option<&str> {
    match value {
        None | Some(Value::Null) => Some(""),
        Some(Value::String(s)) => Some(s),
        Some(_) => None,
    }
}

/// A `[]string` field as Go's JSON decoder sees it (see [`string_field`]).
fn string_list(value: Option<&Value>) -> Option<Vec<&str>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|item| string_field(Some(item))).collect(),
        Some(_) => None,
    }
}

/// Go's `%q` (strconv.Quote), which the apiserver uses for every quoted value
/// in the message. Go escapes every rune that is not "printable" by its own
/// Unicode tables; std has no category data, so controls, non-space
/// whitespace and the common invisible format characters stand in for that.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c.is_whitespace() || is_invisible_format(c) => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

/// The apiserver's guard against the message being rendered as HTML.
fn sanitize_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    const KUBEVIRT: &str = "kubevirt.io";
    const SUBRESOURCES: &str = "subresources.kubevirt.io";

    fn role(namespace: &str, name: &str, rules: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"namespace": namespace, "name": name},
            "rules": rules,
        })
    }

    fn cluster_role(name: &str, rules: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        })
    }

    fn role_binding(namespace: &str, role_kind: &str, role_name: &str, subjects: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"namespace": namespace, "name": format!("rb-{role_name}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
            "subjects": subjects,
        })
    }

    fn cluster_role_binding(role_name: &str, subjects: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("crb-{role_name}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": subjects,
        })
    }

    fn sa_subject(namespace: &str, name: &str) -> Value {
        json!([{"kind": "ServiceAccount", "name": name, "namespace": namespace}])
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { username: name.to_string(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    fn request(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            verb: verb.to_string(),
            api_group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            path: String::new(),
            resource_request: true,
        }
    }

    fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes { verb: verb.to_string(), path: path.to_string(), resource_request: false, ..Attributes::default() }
    }

    #[derive(Default)]
    struct Store {
        roles: Vec<Value>,
        cluster_roles: Vec<Value>,
        role_bindings: Vec<Value>,
        cluster_role_bindings: Vec<Value>,
    }

    impl Store {
        fn check(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
            authorize(
                user,
                attrs,
                &RbacObjects {
                    roles: &self.roles,
                    cluster_roles: &self.cluster_roles,
                    role_bindings: &self.role_bindings,
                    cluster_role_bindings: &self.cluster_role_bindings,
                },
            )
        }
    }

    /// A store granting `rules` to `subjects` cluster-wide.
    fn cluster_grant(rules: Value, subjects: Value) -> Store {
        Store {
            cluster_roles: vec![cluster_role("granted", rules)],
            cluster_role_bindings: vec![cluster_role_binding("granted", subjects)],
            ..Store::default()
        }
    }

    fn alice() -> UserInfo {
        user("alice", &[AUTHENTICATED_GROUP])
    }

    fn alice_subject() -> Value {
        json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}])
    }

    use Decision::{Allow, Deny};

    #[rstest]
    #[case::own_namespace_get("get", "harvester-system", "vm1", Allow)]
    #[case::own_namespace_list("list", "harvester-system", "", Allow)]
    #[case::verb_not_in_role("delete", "harvester-system", "vm1", Deny)]
    #[case::other_namespace("get", "default", "vm1", Deny)]
    #[case::all_namespaces_list("list", "", "", Deny)]
    fn service_account_role_binding_to_cluster_role_is_namespaced(
        #[case] verb: &str,
        #[case] namespace: &str,
        #[case] name: &str,
        #[case] expected: Decision,
    ) {
        let store = Store {
            cluster_roles: vec![cluster_role(
                "vm-viewer",
                json!([{"apiGroups": [KUBEVIRT], "resources": ["virtualmachines"], "verbs": ["get", "list", "watch"]}]),
            )],
            role_bindings: vec![role_binding(
                "harvester-system",
                "ClusterRole",
                "vm-viewer",
                sa_subject("harvester-system", "csi"),
            )],
            ..Store::default()
        };
        let sa = UserInfo::service_account("harvester-system", "csi");
        let attrs = request(verb, KUBEVIRT, "virtualmachines", namespace, name);
        assert_eq!(store.check(&sa, &attrs), expected);
    }

    #[rstest]
    #[case::same_namespace("tenant", Allow)]
    #[case::other_namespace("default", Deny)]
    fn role_binding_to_role(#[case] namespace: &str, #[case] expected: Decision) {
        let store = Store {
            roles: vec![role(
                "tenant",
                "pod-reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            )],
            role_bindings: vec![role_binding("tenant", "Role", "pod-reader", alice_subject())],
            ..Store::default()
        };
        assert_eq!(store.check(&alice(), &request("get", "", "pods", namespace, "p")), expected);
    }

    #[test]
    fn role_binding_never_uses_a_role_from_another_namespace() {
        let store = Store {
            roles: vec![role(
                "other",
                "pod-reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            )],
            role_bindings: vec![role_binding("tenant", "Role", "pod-reader", alice_subject())],
            ..Store::default()
        };
        assert_eq!(store.check(&alice(), &request("get", "", "pods", "tenant", "p")), Deny);
    }

    #[rstest]
    #[case::named_in_namespace("get", "default", "vm1")]
    #[case::other_namespace("get", "kube-system", "vm1")]
    #[case::all_namespaces("list", "", "")]
    #[case::watch_everywhere("watch", "", "")]
    fn cluster_role_binding_grants_cluster_wide(#[case] verb: &str, #[case] namespace: &str, #[case] name: &str) {
        let store = cluster_grant(
            json!([{"apiGroups": [KUBEVIRT], "resources": ["virtualmachines"], "verbs": ["get", "list", "watch"]}]),
            sa_subject("harvester-system", "csi"),
        );
        let sa = UserInfo::service_account("harvester-system", "csi");
        let attrs = request(verb, KUBEVIRT, "virtualmachines", namespace, name);
        assert_eq!(store.check(&sa, &attrs), Allow);
    }

    #[rstest]
    #[case::cluster_scoped_get("get", "", "n1", Deny)]
    #[case::cluster_scoped_list("list", "", "", Deny)]
    #[case::namespaced("get", "tenant", "n1", Allow)]
    fn role_binding_never_grants_cluster_scope(
        #[case] verb: &str,
        #[case] namespace: &str,
        #[case] name: &str,
        #[case] expected: Decision,
    ) {
        let store = Store {
            cluster_roles: vec![cluster_role("all", json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]))],
            role_bindings: vec![role_binding("tenant", "ClusterRole", "all", alice_subject())],
            ..Store::default()
        };
        assert_eq!(store.check(&alice(), &request(verb, "", "nodes", namespace, name)), expected);
    }

    #[rstest]
    #[case::subresource_rule_allows_subresource("virtualmachines/addvolume", "virtualmachines/addvolume", Allow)]
    #[case::subresource_rule_denies_parent("virtualmachines/addvolume", "virtualmachines", Deny)]
    #[case::subresource_rule_denies_sibling("virtualmachines/addvolume", "virtualmachines/removevolume", Deny)]
    #[case::parent_rule_allows_parent("virtualmachines", "virtualmachines", Allow)]
    #[case::parent_rule_denies_subresource("virtualmachines", "virtualmachines/addvolume", Deny)]
    #[case::star_slash_sub_any_resource("*/status", "pods/status", Allow)]
    #[case::star_slash_sub_other_resource("*/status", "virtualmachines/status", Allow)]
    #[case::star_slash_sub_denies_parent("*/status", "pods", Deny)]
    #[case::star_slash_sub_denies_other_sub("*/status", "pods/log", Deny)]
    #[case::star_slash_sub_no_partial_suffix("*/status", "pods/xstatus", Deny)]
    #[case::star_any_resource("*", "virtualmachines", Allow)]
    #[case::star_any_subresource("*", "virtualmachines/addvolume", Allow)]
    // Kubernetes has no `res/*` wildcard; the rule only matches literally.
    #[case::res_slash_star_not_a_wildcard("virtualmachines/*", "virtualmachines/addvolume", Deny)]
    #[case::res_slash_star_not_parent("virtualmachines/*", "virtualmachines", Deny)]
    #[case::prefix_is_not_resource("virtualmachine", "virtualmachines", Deny)]
    fn resource_and_subresource_matching(
        #[case] rule_resource: &str,
        #[case] requested: &str,
        #[case] expected: Decision,
    ) {
        let store = cluster_grant(
            json!([{"apiGroups": ["*"], "resources": [rule_resource], "verbs": ["update"]}]),
            alice_subject(),
        );
        let attrs = request("update", SUBRESOURCES, requested, "default", "vm1");
        assert_eq!(store.check(&alice(), &attrs), expected);
    }

    #[rstest]
    #[case::listed_verb_and_group("update", SUBRESOURCES, Allow)]
    #[case::wrong_group("update", KUBEVIRT, Deny)]
    #[case::wrong_verb("patch", SUBRESOURCES, Deny)]
    fn verbs_and_groups_must_both_match(#[case] verb: &str, #[case] group: &str, #[case] expected: Decision) {
        let store = cluster_grant(
            json!([{"apiGroups": [SUBRESOURCES], "resources": ["virtualmachines/addvolume"], "verbs": ["update"]}]),
            alice_subject(),
        );
        let attrs = request(verb, group, "virtualmachines/addvolume", "default", "vm1");
        assert_eq!(store.check(&alice(), &attrs), expected);
    }

    #[rstest]
    #[case::any_verb_any_group("deletecollection", "anything.example.com", Allow)]
    #[case::custom_verb("escalate", "rbac.authorization.k8s.io", Allow)]
    fn wildcard_verbs_and_groups(#[case] verb: &str, #[case] group: &str, #[case] expected: Decision) {
        let store =
            cluster_grant(json!([{"apiGroups": ["*"], "resources": ["widgets"], "verbs": ["*"]}]), alice_subject());
        assert_eq!(store.check(&alice(), &request(verb, group, "widgets", "ns", "")), expected);
    }

    #[rstest]
    #[case::get_listed_name("get", "csi-driver-config", Allow)]
    #[case::update_listed_name("update", "csi-driver-config", Allow)]
    #[case::get_other_name("get", "other-config", Deny)]
    #[case::list_has_no_name("list", "", Deny)]
    #[case::watch_without_name("watch", "", Deny)]
    #[case::create_has_no_name("create", "", Deny)]
    #[case::deletecollection_has_no_name("deletecollection", "", Deny)]
    fn resource_names_restrict_to_named_requests(#[case] verb: &str, #[case] name: &str, #[case] expected: Decision) {
        let store = Store {
            roles: vec![role(
                "harvester-system",
                "csi-config-reader",
                json!([{
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["csi-driver-config"],
                    "verbs": ["get", "list", "watch", "create", "update", "deletecollection"],
                }]),
            )],
            role_bindings: vec![role_binding(
                "harvester-system",
                "Role",
                "csi-config-reader",
                sa_subject("harvester-system", "csi"),
            )],
            ..Store::default()
        };
        let sa = UserInfo::service_account("harvester-system", "csi");
        let attrs = request(verb, "", "configmaps", "harvester-system", name);
        assert_eq!(store.check(&sa, &attrs), expected);
    }

    #[rstest]
    #[case::member(&["developers", AUTHENTICATED_GROUP], Allow)]
    #[case::not_member(&[AUTHENTICATED_GROUP], Deny)]
    #[case::group_name_is_not_username(&[], Deny)]
    fn group_subjects_match_membership(#[case] groups: &[&str], #[case] expected: Decision) {
        let store = cluster_grant(
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
            json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "developers"}]),
        );
        let who = user(if groups.is_empty() { "developers" } else { "bob" }, groups);
        assert_eq!(store.check(&who, &request("list", "", "pods", "", "")), expected);
    }

    #[rstest]
    #[case::service_accounts_of_namespace(
        json!([{"kind": "Group", "name": "system:serviceaccounts:harvester-system"}]),
        Allow
    )]
    #[case::all_service_accounts(json!([{"kind": "Group", "name": "system:serviceaccounts"}]), Allow)]
    #[case::other_namespace_group(json!([{"kind": "Group", "name": "system:serviceaccounts:default"}]), Deny)]
    #[case::user_by_sa_username(
        json!([{"kind": "User", "name": "system:serviceaccount:harvester-system:csi"}]),
        Allow
    )]
    #[case::wrong_sa_name(sa_subject("harvester-system", "other"), Deny)]
    #[case::wrong_sa_namespace(sa_subject("default", "csi"), Deny)]
    // A ClusterRoleBinding has no namespace to default the subject's into.
    #[case::sa_without_namespace(json!([{"kind": "ServiceAccount", "name": "csi"}]), Deny)]
    #[case::unknown_kind(json!([{"kind": "Robot", "name": "csi"}]), Deny)]
    #[case::kind_is_case_sensitive(json!([{"kind": "user", "name": "system:serviceaccount:harvester-system:csi"}]), Deny)]
    #[case::no_subjects(json!([]), Deny)]
    fn service_account_subject_forms(#[case] subjects: Value, #[case] expected: Decision) {
        let store = cluster_grant(json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]), subjects);
        let sa = UserInfo::service_account("harvester-system", "csi");
        assert_eq!(store.check(&sa, &request("get", "", "secrets", "x", "s")), expected);
    }

    #[rstest]
    #[case::defaults_to_binding_namespace(json!([{"kind": "ServiceAccount", "name": "csi"}]), "harvester-system", Allow)]
    #[case::explicit_other_namespace(sa_subject("default", "csi"), "harvester-system", Deny)]
    #[case::cross_namespace_subject(sa_subject("default", "csi"), "default", Allow)]
    fn role_binding_service_account_subject_namespace(
        #[case] subjects: Value,
        #[case] sa_namespace: &str,
        #[case] expected: Decision,
    ) {
        let store = Store {
            cluster_roles: vec![cluster_role(
                "reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            )],
            role_bindings: vec![role_binding("harvester-system", "ClusterRole", "reader", subjects)],
            ..Store::default()
        };
        let sa = UserInfo::service_account(sa_namespace, "csi");
        let attrs = request("get", "", "pods", "harvester-system", "p");
        assert_eq!(store.check(&sa, &attrs), expected);
    }

    #[rstest]
    #[case::resource(request("delete", "", "nodes", "", "node1"))]
    #[case::subresource(request("update", SUBRESOURCES, "virtualmachines/addvolume", "default", "vm1"))]
    #[case::non_resource(non_resource("post", "/anything"))]
    fn system_masters_is_superuser(#[case] attrs: Attributes) {
        let admin = user("kubernetes-admin", &[SUPERUSER_GROUP, AUTHENTICATED_GROUP]);
        assert_eq!(Store::default().check(&admin, &attrs), Allow);
        assert_eq!(Store::default().check(&alice(), &attrs), Deny);
    }

    #[rstest]
    #[case::api("get", "/api", Allow)]
    #[case::api_version("get", "/api/v1", Allow)]
    #[case::apis("get", "/apis", Allow)]
    #[case::apis_group("get", "/apis/kubevirt.io/v1", Allow)]
    #[case::version("get", "/version", Allow)]
    #[case::version_slash("get", "/version/", Allow)]
    #[case::openapi("get", "/openapi", Allow)]
    #[case::openapi_v2("get", "/openapi/v2", Allow)]
    #[case::openapi_v3("get", "/openapi/v3/apis/kubevirt.io/v1", Allow)]
    #[case::healthz("get", "/healthz", Allow)]
    #[case::livez("get", "/livez", Allow)]
    #[case::readyz("get", "/readyz", Allow)]
    #[case::upper_case_method("GET", "/api", Allow)]
    #[case::post_is_not_get("post", "/api", Deny)]
    #[case::healthz_subpath_not_listed("get", "/healthz/etcd", Deny)]
    #[case::version_subpath_not_listed("get", "/version/extra", Deny)]
    #[case::prefix_without_slash("get", "/apisx", Deny)]
    #[case::metrics("get", "/metrics", Deny)]
    fn discovery_paths_for_authenticated_users(#[case] verb: &str, #[case] path: &str, #[case] expected: Decision) {
        assert_eq!(Store::default().check(&alice(), &non_resource(verb, path)), expected);
    }

    #[rstest]
    #[case::anonymous_healthz(&[UNAUTHENTICATED_GROUP], "/healthz", Allow)]
    #[case::anonymous_version(&[UNAUTHENTICATED_GROUP], "/version", Allow)]
    #[case::anonymous_api(&[UNAUTHENTICATED_GROUP], "/api", Deny)]
    #[case::groupless_healthz(&[], "/healthz", Deny)]
    #[case::groupless_api(&[], "/api", Deny)]
    fn discovery_paths_need_the_right_group(#[case] groups: &[&str], #[case] path: &str, #[case] expected: Decision) {
        let who = user("system:anonymous", groups);
        assert_eq!(Store::default().check(&who, &non_resource("get", path)), expected);
    }

    #[rstest]
    #[case::exact("/metrics", "get", "/metrics", Allow)]
    #[case::exact_other("/metrics", "get", "/metrics/cadvisor", Deny)]
    #[case::trailing_star("/logs/*", "get", "/logs/kube-apiserver.log", Allow)]
    #[case::trailing_star_bare_prefix("/logs/*", "get", "/logs/", Allow)]
    #[case::trailing_star_needs_prefix("/logs/*", "get", "/logs", Deny)]
    #[case::star_everything("*", "get", "/anything/at/all", Allow)]
    #[case::verb_must_match("/metrics", "post", "/metrics", Deny)]
    fn non_resource_urls_via_cluster_role_binding(
        #[case] url: &str,
        #[case] verb: &str,
        #[case] path: &str,
        #[case] expected: Decision,
    ) {
        let store = cluster_grant(json!([{"nonResourceURLs": [url], "verbs": ["get"]}]), alice_subject());
        assert_eq!(store.check(&alice(), &non_resource(verb, path)), expected);
    }

    #[test]
    fn non_resource_urls_are_not_granted_by_role_bindings() {
        let store = Store {
            cluster_roles: vec![cluster_role("metrics", json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]))],
            role_bindings: vec![role_binding("default", "ClusterRole", "metrics", alice_subject())],
            ..Store::default()
        };
        let mut attrs = non_resource("get", "/metrics");
        assert_eq!(store.check(&alice(), &attrs), Deny);
        attrs.namespace = "default".to_string();
        assert_eq!(store.check(&alice(), &attrs), Deny);
    }

    #[test]
    fn resource_rules_do_not_grant_non_resource_paths_and_vice_versa() {
        let store = cluster_grant(
            json!([
                {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["*"]},
                {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
            ]),
            alice_subject(),
        );
        assert_eq!(store.check(&alice(), &non_resource("get", "/metrics")), Allow);
        assert_eq!(store.check(&alice(), &non_resource("get", "/pods")), Deny);
        let mut attrs = request("get", "", "pods", "", "");
        assert_eq!(store.check(&alice(), &attrs), Allow);
        attrs.resource = String::new();
        attrs.path = "/metrics".to_string();
        assert_eq!(store.check(&alice(), &attrs), Deny);
    }

    #[test]
    fn cluster_role_binding_cannot_reference_a_role() {
        let store = Store {
            roles: vec![role("", "all", json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]))],
            cluster_role_bindings: vec![json!({
                "metadata": {"name": "bad"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "all"},
                "subjects": alice_subject(),
            })],
            ..Store::default()
        };
        assert_eq!(store.check(&alice(), &request("get", "", "pods", "", "")), Deny);
    }

    #[test]
    fn null_rules_and_missing_optional_fields_are_tolerated() {
        let store = Store {
            cluster_roles: vec![
                json!({"metadata": {"name": "empty", "namespace": null}, "rules": null}),
                cluster_role(
                    "reader",
                    json!([null, {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": null}]),
                ),
            ],
            cluster_role_bindings: vec![
                cluster_role_binding("empty", alice_subject()),
                json!({"roleRef": {"kind": "ClusterRole", "name": "reader"}, "subjects": [{"kind": "User", "name": "alice"}]}),
            ],
            ..Store::default()
        };
        assert_eq!(store.check(&alice(), &request("get", "", "pods", "a", "p")), Allow);
    }

    /// Each case is a store that would grant `get pods` to alice in namespace
    /// `tenant` if the broken piece were read leniently.
    #[rstest]
    #[case::rules_not_array(Store {
        cluster_roles: vec![json!({"metadata": {"name": "r"}, "rules": {"verbs": ["*"]}})],
        role_bindings: vec![role_binding("tenant", "ClusterRole", "r", alice_subject())],
        ..Store::default()
    })]
    #[case::verbs_is_string(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": "get"}]))],
        role_bindings: vec![role_binding("tenant", "ClusterRole", "r", alice_subject())],
        ..Store::default()
    })]
    #[case::verb_is_number(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", 7]}]))],
        role_bindings: vec![role_binding("tenant", "ClusterRole", "r", alice_subject())],
        ..Store::default()
    })]
    #[case::rule_is_string(Store {
        cluster_roles: vec![cluster_role("r", json!(["get pods", {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![role_binding("tenant", "ClusterRole", "r", alice_subject())],
        ..Store::default()
    })]
    #[case::role_without_metadata(Store {
        roles: vec![json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})],
        role_bindings: vec![role_binding("tenant", "Role", "", alice_subject())],
        ..Store::default()
    })]
    #[case::role_namespace_is_number(Store {
        roles: vec![json!({"metadata": {"name": "r", "namespace": 1}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})],
        role_bindings: vec![role_binding("tenant", "Role", "r", alice_subject())],
        ..Store::default()
    })]
    #[case::binding_without_role_ref(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![json!({"metadata": {"namespace": "tenant"}, "subjects": alice_subject()})],
        ..Store::default()
    })]
    #[case::role_ref_is_string(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![json!({"metadata": {"namespace": "tenant"}, "roleRef": "ClusterRole/r", "subjects": alice_subject()})],
        ..Store::default()
    })]
    #[case::role_ref_name_is_array(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![json!({"metadata": {"namespace": "tenant"}, "roleRef": {"kind": "ClusterRole", "name": ["r"]}, "subjects": alice_subject()})],
        ..Store::default()
    })]
    #[case::role_ref_kind_unknown(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![role_binding("tenant", "Clusterrole", "r", alice_subject())],
        ..Store::default()
    })]
    #[case::subjects_is_object(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![role_binding("tenant", "ClusterRole", "r", json!({"kind": "User", "name": "alice"}))],
        ..Store::default()
    })]
    #[case::subject_name_is_number(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![role_binding("tenant", "ClusterRole", "r", json!([{"kind": "User", "name": 5}, {"kind": "User", "name": "alice"}]))],
        ..Store::default()
    })]
    #[case::binding_namespace_missing(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![json!({"roleRef": {"kind": "ClusterRole", "name": "r"}, "subjects": alice_subject()})],
        ..Store::default()
    })]
    #[case::binding_is_array(Store {
        cluster_roles: vec![cluster_role("r", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))],
        role_bindings: vec![json!([{"roleRef": {"kind": "ClusterRole", "name": "r"}}])],
        ..Store::default()
    })]
    #[case::metadata_is_string(Store {
        cluster_roles: vec![json!({"metadata": "r", "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})],
        role_bindings: vec![role_binding("tenant", "ClusterRole", "r", alice_subject())],
        ..Store::default()
    })]
    #[case::dangling_role_ref(Store {
        role_bindings: vec![role_binding("tenant", "ClusterRole", "missing", alice_subject())],
        ..Store::default()
    })]
    fn malformed_objects_are_ignored(#[case] mut store: Store) {
        let attrs = request("get", "", "pods", "tenant", "p");
        assert_eq!(store.check(&alice(), &attrs), Deny);

        // A valid grant next to the broken objects still works.
        store
            .cluster_roles
            .push(cluster_role("valid", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])));
        store.role_bindings.push(role_binding("tenant", "ClusterRole", "valid", alice_subject()));
        assert_eq!(store.check(&alice(), &attrs), Allow);
    }

    #[test]
    fn arbitrary_json_in_every_slot_never_panics() {
        let junk = [
            json!(null),
            json!(true),
            json!(3.5),
            json!("text"),
            json!([]),
            json!([null, 1, "x", {}]),
            json!({}),
            json!({"metadata": null, "rules": [[]], "roleRef": null, "subjects": [null]}),
            json!({"metadata": {"name": {}, "namespace": []}, "rules": [{"verbs": {}}]}),
            json!({"roleRef": {"kind": 1, "name": null}, "subjects": [{"kind": null}]}),
            json!({"metadata": {"name": "r", "namespace": "ns"}, "rules": [{"resources": ["*/"], "verbs": ["*"], "apiGroups": ["*"]}]}),
            json!({"metadata": {"namespace": "ns"}, "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "a"}]}),
        ];
        let users = [
            user("", &[]),
            user("system:serviceaccount:", &[]),
            user("system:serviceaccount:ns:a:b", &[AUTHENTICATED_GROUP]),
            UserInfo::service_account("ns", "a"),
        ];
        let requests = [
            request("get", "", "pods", "ns", "p"),
            request("", "", "", "", ""),
            request("get", "", "pods/", "ns", ""),
            non_resource("", ""),
            non_resource("get", "*"),
        ];
        for u in &users {
            for a in &requests {
                let objects = RbacObjects {
                    roles: &junk,
                    cluster_roles: &junk,
                    role_bindings: &junk,
                    cluster_role_bindings: &junk,
                };
                let _ = authorize(u, a, &objects);
                let _ = forbidden_message(u, a);
            }
        }
    }

    #[rstest]
    #[case::ordinary("system:serviceaccount:harvester-system:csi", Some(("harvester-system", "csi")))]
    #[case::plain_user("alice", None)]
    #[case::missing_name("system:serviceaccount:ns:", None)]
    #[case::missing_namespace("system:serviceaccount::csi", None)]
    #[case::too_many_segments("system:serviceaccount:ns:a:b", None)]
    #[case::prefix_only("system:serviceaccount:", None)]
    #[case::group_not_user("system:serviceaccounts:ns", None)]
    fn parses_service_account_usernames(#[case] username: &str, #[case] expected: Option<(&str, &str)>) {
        assert_eq!(user(username, &[]).is_service_account(), expected);
    }

    #[test]
    fn service_account_identity_matches_kubernetes() {
        let sa = UserInfo::service_account("harvester-system", "csi");
        assert_eq!(sa.username, "system:serviceaccount:harvester-system:csi");
        assert_eq!(
            sa.groups,
            ["system:serviceaccounts", "system:serviceaccounts:harvester-system", "system:authenticated"]
        );
        assert_eq!(sa.is_service_account(), Some(("harvester-system", "csi")));
    }

    #[rstest]
    #[case::named_core_namespaced(
        request("get", "", "pods", "default", "web-0"),
        r#"pods "web-0" is forbidden: User "system:serviceaccount:harvester-system:csi" cannot get resource "pods" in API group "" in the namespace "default""#
    )]
    #[case::named_group_subresource(
        request("update", SUBRESOURCES, "virtualmachines/addvolume", "default", "vm1"),
        r#"virtualmachines.subresources.kubevirt.io "vm1" is forbidden: User "system:serviceaccount:harvester-system:csi" cannot update resource "virtualmachines/addvolume" in API group "subresources.kubevirt.io" in the namespace "default""#
    )]
    #[case::unnamed_group_namespaced(
        request("list", KUBEVIRT, "virtualmachines", "default", ""),
        r#"virtualmachines.kubevirt.io is forbidden: User "system:serviceaccount:harvester-system:csi" cannot list resource "virtualmachines" in API group "kubevirt.io" in the namespace "default""#
    )]
    #[case::unnamed_core_cluster_scope(
        request("list", "", "nodes", "", ""),
        r#"nodes is forbidden: User "system:serviceaccount:harvester-system:csi" cannot list resource "nodes" in API group "" at the cluster scope"#
    )]
    #[case::named_group_cluster_scope(
        request("get", "storage.k8s.io", "storageclasses", "", "longhorn"),
        r#"storageclasses.storage.k8s.io "longhorn" is forbidden: User "system:serviceaccount:harvester-system:csi" cannot get resource "storageclasses" in API group "storage.k8s.io" at the cluster scope"#
    )]
    #[case::all_namespaces_watch(
        request("watch", KUBEVIRT, "virtualmachineinstances", "", ""),
        r#"virtualmachineinstances.kubevirt.io is forbidden: User "system:serviceaccount:harvester-system:csi" cannot watch resource "virtualmachineinstances" in API group "kubevirt.io" at the cluster scope"#
    )]
    #[case::non_resource(
        non_resource("get", "/metrics"),
        r#"forbidden: User "system:serviceaccount:harvester-system:csi" cannot get path "/metrics""#
    )]
    #[case::non_resource_method_lower_cased(
        non_resource("POST", "/apis"),
        r#"forbidden: User "system:serviceaccount:harvester-system:csi" cannot post path "/apis""#
    )]
    fn forbidden_message_wording(#[case] attrs: Attributes, #[case] expected: &str) {
        let sa = UserInfo::service_account("harvester-system", "csi");
        assert_eq!(forbidden_message(&sa, &attrs), expected);
    }

    #[rstest]
    #[case::quotes_and_backslashes(
        r#"e"v\il"#,
        request("get", "", "pods", "default", r#"a"b"#),
        r#"pods "a\"b" is forbidden: User "e\"v\\il" cannot get resource "pods" in API group "" in the namespace "default""#
    )]
    // The HTML guard covers only the authorizer's half of the message.
    #[case::html_in_detail_only(
        "<b>&",
        request("get", "", "pods", "default", "<x>"),
        r#"pods "<x>" is forbidden: User "&lt;b&gt;&amp;" cannot get resource "pods" in API group "" in the namespace "default""#
    )]
    #[case::control_characters(
        "a\nb\u{1}\u{7f}",
        non_resource("get", "/p\tq\u{a0}"),
        r#"forbidden: User "a\nb\x01\x7f" cannot get path "/p\tq\u00a0""#
    )]
    #[case::printable_unicode_kept(
        "ユーザー",
        non_resource("get", "/é"),
        r#"forbidden: User "ユーザー" cannot get path "/é""#
    )]
    fn forbidden_message_quotes_like_go(#[case] username: &str, #[case] attrs: Attributes, #[case] expected: &str) {
        assert_eq!(forbidden_message(&user(username, &[]), &attrs), expected);
    }
}
