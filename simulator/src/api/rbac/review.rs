//! What a user may do in one namespace, as `SelfSubjectRulesReview` reports it
//! (`kubectl auth can-i --list`): the rules of every binding that applies to
//! the user, listed as stored and not evaluated, like the RBAC rule resolver's
//! `RulesFor`. Rules with resources become resource rules, rules with
//! non-resource URLs become non-resource rules.

use std::borrow::Borrow;

use serde_json::{json, Value};

use super::{
    basic_user_rule, lookup_rules, metadata_str, Binding, RbacObjects, Rule, UserInfo, AUTHENTICATED_GROUP,
    DISCOVERY_URLS, PUBLIC_INFO_URLS, SUPERUSER_GROUP, UNAUTHENTICATED_GROUP,
};

/// The `status` of a `SelfSubjectRulesReview`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RulesReview {
    pub resource_rules: Vec<Value>,
    pub non_resource_rules: Vec<Value>,
    /// A binding named a role that does not exist: the list may miss rules.
    pub incomplete: bool,
    pub evaluation_error: String,
}

impl RulesReview {
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "resourceRules": self.resource_rules,
            "nonResourceRules": self.non_resource_rules,
            "incomplete": self.incomplete,
        });
        if !self.evaluation_error.is_empty() {
            status["evaluationError"] = json!(self.evaluation_error);
        }
        status
    }

    fn add(&mut self, rule: &Rule<'_>) {
        if !rule.resources.is_empty() {
            let mut r = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources});
            if !rule.resource_names.is_empty() {
                r["resourceNames"] = json!(rule.resource_names);
            }
            self.resource_rules.push(r);
        }
        if !rule.non_resource_urls.is_empty() {
            self.non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }

    fn missing(&mut self, kind: &str, namespace: Option<&str>, name: &str) {
        self.incomplete = true;
        let what = format!("{kind}.rbac.authorization.k8s.io \"{name}\" not found");
        let what = match namespace {
            Some(ns) => format!("{what} in namespace {ns:?}"),
            None => what,
        };
        if !self.evaluation_error.is_empty() {
            self.evaluation_error.push_str(", ");
        }
        self.evaluation_error.push_str(&what);
    }
}

/// The rules `user` holds in `namespace` (cluster-wide ones included).
pub fn rules_for<V: Borrow<Value>>(user: &UserInfo, namespace: &str, objects: &RbacObjects<'_, V>) -> RulesReview {
    let mut review = RulesReview::default();
    if user.in_group(SUPERUSER_GROUP) {
        // The privileged-group authorizer answers for everything.
        review.resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        review.non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    let authenticated = user.in_group(AUTHENTICATED_GROUP);
    if authenticated {
        review.add(&basic_user_rule());
        review.add(&Rule { verbs: vec!["get"], non_resource_urls: DISCOVERY_URLS.to_vec(), ..Default::default() });
    }
    if authenticated || user.in_group(UNAUTHENTICATED_GROUP) {
        review.add(&Rule { verbs: vec!["get"], non_resource_urls: PUBLIC_INFO_URLS.to_vec(), ..Default::default() });
    }

    for object in objects.cluster_role_bindings {
        let Some(binding) = Binding::parse(object.borrow()) else { continue };
        if binding.role_kind != "ClusterRole" || !binding.applies_to(user, "") {
            continue;
        }
        match lookup_rules(objects.cluster_roles, None, binding.role_name) {
            Some(rules) => rules.iter().for_each(|r| review.add(r)),
            None => review.missing("clusterrole", None, binding.role_name),
        }
    }
    if namespace.is_empty() {
        return review;
    }
    for object in objects.role_bindings.iter().map(Borrow::borrow) {
        if metadata_str(object, "namespace") != Some(namespace) {
            continue;
        }
        let Some(binding) = Binding::parse(object) else { continue };
        if !binding.applies_to(user, namespace) {
            continue;
        }
        let rules = match binding.role_kind {
            "Role" => lookup_rules(objects.roles, Some(namespace), binding.role_name).ok_or(("role", Some(namespace))),
            "ClusterRole" => lookup_rules(objects.cluster_roles, None, binding.role_name).ok_or(("clusterrole", None)),
            _ => continue,
        };
        match rules {
            Ok(rules) => rules.iter().for_each(|r| review.add(r)),
            Err((kind, ns)) => review.missing(kind, ns, binding.role_name),
        }
    }
    review
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa() -> UserInfo {
        UserInfo::service_account("default", "guest")
    }

    fn objects() -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>) {
        let roles = vec![json!({"metadata": {"namespace": "default", "name": "pvcs"},
            "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["*"]}]})];
        let cluster_roles = vec![json!({"metadata": {"name": "sc"},
            "rules": [{"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list"]},
                      {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]})];
        let subject = json!([{"kind": "ServiceAccount", "name": "guest", "namespace": "default"}]);
        let role_bindings = vec![
            json!({"metadata": {"namespace": "default", "name": "a"},
                   "roleRef": {"kind": "Role", "name": "pvcs"}, "subjects": subject}),
            json!({"metadata": {"namespace": "other", "name": "b"},
                   "roleRef": {"kind": "Role", "name": "pvcs"}, "subjects": subject}),
        ];
        let cluster_role_bindings = vec![
            json!({"metadata": {"name": "c"}, "roleRef": {"kind": "ClusterRole", "name": "sc"}, "subjects": subject}),
            json!({"metadata": {"name": "d"}, "roleRef": {"kind": "ClusterRole", "name": "gone"}, "subjects": subject}),
        ];
        (roles, cluster_roles, role_bindings, cluster_role_bindings)
    }

    fn review(user: &UserInfo, namespace: &str) -> RulesReview {
        let (roles, cluster_roles, role_bindings, cluster_role_bindings) = objects();
        let objects = RbacObjects {
            roles: &roles,
            cluster_roles: &cluster_roles,
            role_bindings: &role_bindings,
            cluster_role_bindings: &cluster_role_bindings,
        };
        rules_for(user, namespace, &objects)
    }

    fn resources(r: &RulesReview) -> Vec<String> {
        r.resource_rules.iter().map(|r| r["resources"].to_string()).collect()
    }

    #[test]
    fn lists_the_rules_of_bindings_that_apply_in_the_namespace() {
        let r = review(&sa(), "default");
        assert_eq!(
            resources(&r),
            [
                r#"["selfsubjectaccessreviews","selfsubjectrulesreviews"]"#,
                r#"["storageclasses"]"#,
                r#"["persistentvolumeclaims"]"#
            ]
        );
        let urls: Vec<String> = r.non_resource_rules.iter().map(|r| r["nonResourceURLs"].to_string()).collect();
        assert!(urls.iter().any(|u| u.contains("/openapi/*")), "{urls:?}");
        assert!(urls.contains(&r#"["/metrics"]"#.to_string()), "{urls:?}");
    }

    #[test]
    fn role_bindings_of_other_namespaces_do_not_count() {
        let r = review(&sa(), "elsewhere");
        assert!(!resources(&r).iter().any(|r| r.contains("persistentvolumeclaims")));
        assert!(resources(&r).iter().any(|r| r.contains("storageclasses")));
    }

    #[test]
    fn a_missing_role_makes_the_review_incomplete() {
        let r = review(&sa(), "default");
        assert!(r.incomplete);
        assert_eq!(r.evaluation_error, "clusterrole.rbac.authorization.k8s.io \"gone\" not found");
        assert_eq!(r.to_status()["evaluationError"], r.evaluation_error);
    }

    #[test]
    fn superusers_may_do_everything_and_strangers_nothing() {
        let admin = UserInfo { username: "admin".into(), groups: vec![SUPERUSER_GROUP.into()] };
        assert_eq!(review(&admin, "default").resource_rules[0]["resources"], json!(["*"]));
        let stranger = UserInfo { username: "x".into(), groups: vec![] };
        let r = review(&stranger, "default");
        assert!(r.resource_rules.is_empty() && r.non_resource_rules.is_empty() && !r.incomplete);
    }
}
