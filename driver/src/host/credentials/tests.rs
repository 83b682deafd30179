use super::kubeconfig::{check_server, host_endpoint, is_rancher_proxy, render_cloud_config, HostEndpoint};
use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rstest::rstest;

fn id() -> GuestIdentity {
    GuestIdentity::new("default", "prod-csi").expect("valid identity")
}

fn sa_subject(ns: &str, name: &str) -> Subject {
    Subject { api_group: None, kind: "ServiceAccount".into(), name: name.into(), namespace: Some(ns.into()) }
}

#[rstest]
#[case("default", "prod-csi", true)]
#[case("vms-1", "a.b", true)]
#[case("Default", "prod", false)]
#[case("", "prod", false)]
#[case("default", "", false)]
#[case("default", "Prod", false)]
#[case("default", "a/b", false)]
#[case(&"n".repeat(64), "prod", false)]
#[case("default", &"s".repeat(248), false)]
#[case("default", &"s".repeat(63), true)]
fn identities_are_validated(#[case] ns: &str, #[case] sa: &str, #[case] ok: bool) {
    assert_eq!(GuestIdentity::new(ns, sa).is_ok(), ok, "{ns}/{sa}");
}

#[rstest]
#[case(Kind::ServiceAccount, "", "serviceaccounts", "prod-csi", true)]
#[case(Kind::RoleBinding, "rbac.authorization.k8s.io", "rolebindings", "default-prod-csi", true)]
#[case(Kind::ClusterRoleBinding, "rbac.authorization.k8s.io", "clusterrolebindings", "default-prod-csi", false)]
#[case(Kind::TokenSecret, "", "secrets", "prod-csi-token", true)]
fn objects_have_upstreams_names(
    #[case] kind: Kind,
    #[case] group: &str,
    #[case] resource: &str,
    #[case] name: &str,
    #[case] namespaced: bool,
) {
    let id = id();
    assert_eq!(kind.resource(), (group, resource));
    assert_eq!(kind.name(&id), name);
    assert_eq!(kind.namespaced(), namespaced);
    let obj = kind.object(&id);
    assert_eq!(obj.pointer("/metadata/name").and_then(|v| v.as_str()), Some(name));
    let ns = obj.pointer("/metadata/namespace").and_then(|v| v.as_str());
    assert_eq!(ns, namespaced.then_some("default"));
}

#[rstest]
#[case(Kind::RoleBinding, "RoleBinding", "harvesterhci.io:cloudprovider")]
#[case(Kind::ClusterRoleBinding, "ClusterRoleBinding", "harvesterhci.io:csi-driver")]
fn bindings_bind_the_service_account_to_harvesters_roles(
    #[case] kind: Kind,
    #[case] k8s_kind: &str,
    #[case] role: &str,
) {
    let obj = kind.object(&id());
    assert_eq!(obj["kind"], k8s_kind);
    assert_eq!(obj["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert_eq!(
        obj["roleRef"],
        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role})
    );
    assert_eq!(
        obj["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "prod-csi", "namespace": "default"}])
    );
}

#[test]
fn the_token_secret_names_only_its_service_account() {
    let obj = Kind::TokenSecret.object(&id());
    assert_eq!(obj["type"], "kubernetes.io/service-account-token");
    assert_eq!(obj["metadata"]["annotations"], serde_json::json!({"kubernetes.io/service-account.name": "prod-csi"}));
    assert!(obj.get("data").is_none() && obj.get("stringData").is_none(), "the token controller fills it: {obj}");
}

#[test]
fn what_this_command_makes_passes_its_own_checks() {
    let id = id();
    assert_eq!(check_service_account(&service_account(&id)), Ok(()));
    assert_eq!(check_role_binding(&role_binding(&id), &id), Ok(()));
    assert_eq!(check_cluster_role_binding(&cluster_role_binding(&id), &id), Ok(()));
    assert_eq!(check_token_secret(&token_secret(&id), &id, Some("uid-1")), Ok(()));
}

enum Change {
    None,
    Role(&'static str, &'static str),
    Subjects(Vec<Subject>),
    Deleting,
    EmptySubjectGroup,
}

#[rstest]
#[case::same(Change::None, None)]
#[case::explicit_empty_api_group(Change::EmptySubjectGroup, None)]
#[case::other_role(Change::Role("ClusterRole", "cluster-admin"), Some("not ClusterRole"))]
#[case::namespaced_role(Change::Role("Role", "harvesterhci.io:cloudprovider"), Some("binds Role"))]
#[case::other_account(Change::Subjects(vec![sa_subject("default", "other")]), Some("ServiceAccount default/other instead"))]
#[case::same_name_other_namespace(Change::Subjects(vec![sa_subject("vms", "prod-csi")]), Some("instead of"))]
#[case::nobody(Change::Subjects(vec![]), Some("binds nobody"))]
#[case::shared(Change::Subjects(vec![sa_subject("default", "prod-csi"), sa_subject("default", "other")]), Some("also binds ServiceAccount default/other"))]
#[case::deleting(Change::Deleting, Some("being deleted"))]
fn existing_role_bindings_are_judged(#[case] change: Change, #[case] problem: Option<&str>) {
    let id = id();
    let mut rb = role_binding(&id);
    match change {
        Change::None => {}
        Change::Role(kind, name) => {
            rb.role_ref.kind = kind.into();
            rb.role_ref.name = name.into();
        }
        Change::Subjects(s) => rb.subjects = Some(s),
        Change::Deleting => rb.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH)),
        Change::EmptySubjectGroup => {
            rb.subjects = Some(vec![Subject { api_group: Some(String::new()), ..id.subject() }])
        }
    }
    match (check_role_binding(&rb, &id), problem) {
        (Ok(()), None) => {}
        (Err(why), Some(want)) => assert!(why.contains(want), "{why:?} should mention {want:?}"),
        (got, want) => panic!("got {got:?}, wanted a problem mentioning {want:?}"),
    }
}

#[test]
fn a_cluster_role_binding_to_the_cloudprovider_role_is_not_the_csi_binding() {
    let id = id();
    let mut crb = cluster_role_binding(&id);
    crb.role_ref.name = CLOUDPROVIDER_ROLE.into();
    let why = check_cluster_role_binding(&crb, &id).expect_err("another role");
    assert!(why.contains("harvesterhci.io:csi-driver"), "{why}");
}

#[rstest]
#[case::fresh(None, None, Some("uid-1"), None)]
#[case::filled_for_this_account(None, Some("uid-1"), Some("uid-1"), None)]
#[case::account_not_readable(None, Some("uid-0"), None, None)]
#[case::earlier_account(None, Some("uid-0"), Some("uid-1"), Some("earlier ServiceAccount"))]
#[case::opaque(Some("Opaque"), None, Some("uid-1"), Some("has type Opaque"))]
fn existing_token_secrets_are_judged(
    #[case] ty: Option<&str>,
    #[case] uid: Option<&str>,
    #[case] sa_uid: Option<&str>,
    #[case] problem: Option<&str>,
) {
    let id = id();
    let mut s = token_secret(&id);
    if let Some(t) = ty {
        s.type_ = Some(t.into());
    }
    if let Some(u) = uid {
        s.metadata.annotations.get_or_insert_default().insert(SA_UID_ANNOTATION.into(), u.into());
    }
    match (check_token_secret(&s, &id, sa_uid), problem) {
        (Ok(()), None) => {}
        (Err(why), Some(want)) => assert!(why.contains(want), "{why:?} should mention {want:?}"),
        (got, want) => panic!("got {got:?}, wanted a problem mentioning {want:?}"),
    }
}

#[rstest]
#[case::other_account(Some("other"), "ServiceAccount \"other\"")]
#[case::no_annotation(None, "no kubernetes.io/service-account.name")]
fn token_secrets_of_other_accounts_are_refused(#[case] owner: Option<&str>, #[case] problem: &str) {
    let id = id();
    let mut s = token_secret(&id);
    s.metadata.annotations = owner.map(|o| BTreeMap::from([(SA_NAME_ANNOTATION.to_string(), o.to_string())]));
    let why = check_token_secret(&s, &id, None).expect_err("another account's Secret");
    assert!(why.contains(problem), "{why}");
}

fn inspection(present: &[Kind], missing_roles: Vec<&'static str>) -> Inspection {
    let states =
        Kind::ALL.into_iter().map(|k| (k, if present.contains(&k) { State::Present } else { State::Absent })).collect();
    Inspection { id: id(), states, missing_roles }
}

#[rstest]
#[case::nothing_there(&[], 10)]
#[case::account_there(&[Kind::ServiceAccount], 9)]
#[case::everything_there(&Kind::ALL, 6)]
fn permissions_cover_reads_missing_creates_and_the_watch(#[case] present: &[Kind], #[case] count: usize) {
    let perms = needed_permissions(&inspection(present, vec![]));
    assert_eq!(perms.len(), count, "{perms:?}");
    for kind in Kind::ALL {
        let creates = perms.iter().any(|p| p.verb == "create" && p.resource == kind.resource().1);
        assert_eq!(creates, !present.contains(&kind), "{kind:?}");
    }
    assert!(perms.iter().any(|p| p.verb == "watch" && p.resource == "secrets"));
}

#[rstest]
#[case(Kind::RoleBinding, "create rolebindings.rbac.authorization.k8s.io in namespace default")]
#[case(Kind::ClusterRoleBinding, "create clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)")]
#[case(Kind::TokenSecret, "create secrets in namespace default")]
fn permissions_read_like_rbac(#[case] kind: Kind, #[case] text: &str) {
    let perms = needed_permissions(&inspection(&[], vec![]));
    let p = perms.iter().find(|p| p.verb == "create" && p.resource == kind.resource().1).expect("a create");
    assert_eq!(p.to_string(), text);
}

#[test]
fn the_permission_error_names_what_is_missing_and_who_can_run_it() {
    let perms = needed_permissions(&inspection(&[], vec![]));
    let missing: Vec<Permission> = perms.into_iter().filter(|p| p.resource == "clusterrolebindings").collect();
    let e = permission_error(&missing, Some("forbidden"));
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let msg = e.to_string();
    assert!(msg.contains("create clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)"), "{msg}");
    assert!(msg.contains("Harvester admin") && msg.contains("the host said: forbidden"), "{msg}");
}

#[test]
fn dry_run_of_a_new_guest_cluster() {
    insta::assert_snapshot!(render_dry_run(&inspection(&[], vec![]), "cloud-provider-config"));
}

#[test]
fn dry_run_when_some_objects_exist_and_a_role_is_missing() {
    let i = inspection(&[Kind::ServiceAccount, Kind::RoleBinding], vec![CSI_DRIVER_ROLE]);
    insta::assert_snapshot!(render_dry_run(&i, "/tmp/out/cloud-config"));
}

#[test]
fn dry_run_output_is_yaml_an_admin_can_apply() {
    let text = render_dry_run(&inspection(&[], vec![]), "cloud-provider-config");
    let docs: Vec<serde_json::Value> =
        text.split("\n---\n").skip(1).map(|d| serde_saphyr::from_str(d).expect("each document is YAML")).collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ServiceAccount", "RoleBinding", "ClusterRoleBinding", "Secret"]);
    assert_eq!(docs[3], Kind::TokenSecret.object(&id()));
}

const FAKE_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.fake-token-for-tests.c2lnbmF0dXJl";

#[test]
fn the_cloud_config_with_its_token_redacted() {
    let ca = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
    let text = render_cloud_config("https://10.0.0.10:6443", Some(ca), FAKE_TOKEN, &id()).expect("renders");
    assert_eq!(text.matches(FAKE_TOKEN).count(), 1, "the token appears once, as the user's token");
    insta::assert_snapshot!(text.replace(FAKE_TOKEN, "[redacted]"));
}

#[test]
fn the_cloud_config_is_a_kubeconfig_kube_reads() {
    let text = render_cloud_config("https://10.0.0.10:6443", None, FAKE_TOKEN, &id()).expect("renders");
    let kc = kube::config::Kubeconfig::from_yaml(&text).expect("a kubeconfig");
    let current = kc.current_context.clone().expect("current-context");
    let ctx = kc.contexts.iter().find(|c| c.name == current).and_then(|c| c.context.clone()).expect("context");
    assert_eq!(ctx.namespace.as_deref(), Some("default"));
    let endpoint = host_endpoint(&kc, std::path::Path::new("x")).expect("endpoint");
    assert_eq!(endpoint, HostEndpoint { server: "https://10.0.0.10:6443".into(), ca_pem: None });
}

fn host_kubeconfig(cluster: &str, current: Option<&str>) -> kube::config::Kubeconfig {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: h\n  cluster:\n{cluster}\ncontexts:\n- name: admin\n  context: {{cluster: h, user: admin}}\n{}users:\n- name: admin\n  user: {{token: t}}\n",
        current.map(|c| format!("current-context: {c}\n")).unwrap_or_default()
    );
    kube::config::Kubeconfig::from_yaml(&text).expect("test kubeconfig")
}

#[rstest]
#[case::ca_data("    server: https://h:6443\n    certificate-authority-data: UEVN", Some("admin"), Ok(Some("PEM")))]
#[case::no_ca("    server: https://h:6443", Some("admin"), Ok(None))]
#[case::bad_base64("    server: https://h:6443\n    certificate-authority-data: '!!'", Some("admin"), Err("base64"))]
#[case::no_server("    insecure-skip-tls-verify: true", Some("admin"), Err("no server"))]
#[case::no_current_context("    server: https://h:6443", None, Err("no current-context"))]
#[case::unknown_context("    server: https://h:6443", Some("other"), Err("\"other\" is not defined"))]
fn host_endpoints(
    #[case] cluster: &str,
    #[case] current: Option<&str>,
    #[case] want: std::result::Result<Option<&str>, &str>,
) {
    let kc = host_kubeconfig(cluster, current);
    match (host_endpoint(&kc, std::path::Path::new("/k")), want) {
        (Ok(e), Ok(ca)) => {
            assert_eq!(e.server, "https://h:6443");
            assert_eq!(e.ca_pem.as_deref(), ca.map(str::as_bytes));
        }
        (Err(e), Err(want)) => assert!(e.to_string().contains(want) && e.to_string().contains("/k"), "{e}"),
        (got, want) => panic!("got {got:?}, wanted {want:?}"),
    }
}

#[test]
fn a_ca_file_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "PEM FROM FILE").expect("writing CA");
    let kc = host_kubeconfig(
        &format!("    server: https://h:6443\n    certificate-authority: {}", ca.display()),
        Some("admin"),
    );
    let e = host_endpoint(&kc, std::path::Path::new("/k")).expect("endpoint");
    assert_eq!(e.ca_pem.as_deref(), Some(b"PEM FROM FILE".as_slice()));
}

#[rstest]
#[case("https://10.0.0.10:6443", true)]
#[case("https://harvester.example.com", true)]
#[case("http://10.0.0.10:6443", false)]
#[case("10.0.0.10:6443", false)]
#[case("https://", false)]
#[case("not a url", false)]
fn servers_must_be_https(#[case] server: &str, #[case] ok: bool) {
    assert_eq!(check_server(server).is_ok(), ok, "{server}");
}

#[rstest]
#[case("https://rancher.example.com/k8s/clusters/local", true)]
#[case("https://10.0.0.10:6443", false)]
fn rancher_proxy_urls_are_recognised(#[case] server: &str, #[case] proxy: bool) {
    assert_eq!(is_rancher_proxy(server), proxy);
}
