//! The simulator's ServiceAccount token controller: token Secrets are filled as
//! Kubernetes fills them, the token authenticates as its ServiceAccount with that
//! account's RBAC, and it goes away with the account.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn decoded(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secrets_are_filled_and_authenticate_as_their_account() {
    bounded(60, async {
        let sim = start(Options::default()).await;
        let admin = sim.admin.clone();
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "robot", "namespace": "default"}})).expect("account");
        let uid = accounts.create(&PostParams::default(), &account).await.expect("creating account").metadata.uid;
        // Only what a user writes: the controller adds everything else.
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "robot-token", "namespace": "default",
                         "annotations": {"kubernetes.io/service-account.name": "robot"}},
            "type": "kubernetes.io/service-account-token",
        }))
        .expect("secret");
        secrets.create(&PostParams::default(), &secret).await.expect("creating token secret");

        let filled = eventually("the token controller to fill the Secret", || {
            let secrets = secrets.clone();
            async move { secrets.get("robot-token").await.ok().filter(|s| decoded(s, "token").is_some()) }
        })
        .await;
        let ca = std::fs::read_to_string(state_dir(sim.path()).join("ca.crt")).expect("simulator CA");
        assert_eq!(decoded(&filled, "ca.crt").as_deref(), Some(ca.as_str()));
        assert_eq!(decoded(&filled, "namespace").as_deref(), Some("default"));
        let annotations = filled.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get("kubernetes.io/service-account.uid"), uid.as_ref());

        // The token is the account: what its bindings grant, nothing more.
        let token = decoded(&filled, "token").expect("token");
        let kubeconfig = sim.path().join("robot.kubeconfig");
        std::fs::write(&kubeconfig, harvester_simulator::kubeconfig::render(&sim.sim.url, &ca, "robot", &token, "default"))
            .expect("writing kubeconfig");
        let robot = client(&kubeconfig).await;
        let robot_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(robot.clone(), "default");
        let denied = api_error(robot_pvcs.list(&ListParams::default()).await.expect_err("no binding yet"));
        assert_eq!(denied.code, 403, "{denied:?}");
        assert!(denied.message.contains("system:serviceaccount:default:robot"), "{}", denied.message);
        let (status, body) = raw(
            &admin,
            http::Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "robot", "namespace": "default"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "harvesterhci.io:cloudprovider"},
                "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}],
            })),
        )
        .await;
        assert!(status.is_success(), "{status} {body}");
        robot_pvcs.list(&ListParams::default()).await.expect("the binding grants PVC reads");
        let robot_secrets: Api<Secret> = Api::namespaced(robot.clone(), "default");
        let denied = api_error(robot_secrets.list(&ListParams::default()).await.expect_err("not granted"));
        assert_eq!(denied.code, 403);

        // The account goes: its token Secret goes, and the token no longer authenticates.
        accounts.delete("robot", &DeleteParams::default()).await.expect("deleting account");
        eventually("the token Secret to be deleted with its account", || {
            let secrets = secrets.clone();
            async move { matches!(secrets.get_opt("robot-token").await, Ok(None)).then_some(()) }
        })
        .await;
        let rejected = api_error(robot_pvcs.list(&ListParams::default()).await.expect_err("token revoked"));
        assert_eq!(rejected.code, 401, "{rejected:?}");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_guest_credentials_keep_their_token_and_get_the_rest() {
    bounded(60, async {
        let sim = start(Options::default()).await;
        let secrets: Api<Secret> = Api::namespaced(sim.admin.clone(), "default");
        let seeded = eventually("the seeded token Secret to carry ca.crt", || {
            let secrets = secrets.clone();
            async move { secrets.get("guest-cluster-token").await.ok().filter(|s| decoded(s, "ca.crt").is_some()) }
        })
        .await;
        let token = decoded(&seeded, "token").expect("seeded token");
        let cloud_config = std::fs::read_to_string(sim.sim.cloud_config_path()).expect("cloud-config");
        assert!(cloud_config.contains(&token), "the cloud-config's token is the one kept in the Secret");
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(sim.guest.clone(), "default");
        pvcs.list(&ListParams::default()).await.expect("the guest credentials still authenticate");
        // A token Secret naming an account that does not exist is deleted, as Kubernetes does.
        let orphan: Secret = serde_json::from_value(json!({
            "metadata": {"name": "nobody-token", "namespace": "default",
                         "annotations": {"kubernetes.io/service-account.name": "nobody"}},
            "type": "kubernetes.io/service-account-token",
        }))
        .expect("secret");
        secrets.create(&PostParams::default(), &orphan).await.expect("creating");
        eventually("the token Secret of a missing account to be deleted", || {
            let secrets = secrets.clone();
            async move { matches!(secrets.get_opt("nobody-token").await, Ok(None)).then_some(()) }
        })
        .await;
        sim.shutdown().await;
    })
    .await;
}
