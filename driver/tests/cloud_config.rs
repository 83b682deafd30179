//! `harvester-csi-driver cloud-config` against the in-process simulator: the
//! admin generates a guest cluster's identity and cloud-config, the generated file
//! drives a driver, a second run changes nothing, an existing object of another
//! shape is refused, and a weak identity gets a clear permission error.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use common::*;
use csi_proto::ControllerClient;
use harvester_csi_driver::cloud_config::execute;
use harvester_csi_driver::config::CloudConfigArgs;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;
use tonic::Code;

fn args(host_kubeconfig: &Path, sa: &str, output: PathBuf) -> CloudConfigArgs {
    CloudConfigArgs {
        host_kubeconfig: host_kubeconfig.to_path_buf(),
        namespace: "default".into(),
        service_account: sa.into(),
        output,
        dry_run: false,
        server: None,
        timeout: Duration::from_secs(20),
    }
}

/// Runs the command; returns what it printed, or its error (with what it printed).
async fn run(args: &CloudConfigArgs) -> (String, Result<(), harvester_csi_driver::error::Error>) {
    let mut out = Vec::new();
    let result = execute(args, &mut out).await;
    (String::from_utf8(out).expect("utf-8 output"), result)
}

fn admin_kubeconfig(env: &Env) -> PathBuf {
    env.sim.as_ref().expect("simulator").admin_kubeconfig_path()
}

async fn token_of(env: &Env, sa: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), "default");
    let s = secrets.get(&format!("{sa}-token")).await.expect("token Secret");
    String::from_utf8(s.data.expect("data")["token"].0.clone()).expect("utf-8 token")
}

async fn versions(env: &Env, sa: &str) -> Vec<Option<String>> {
    let name = format!("default-{sa}");
    vec![
        Api::<ServiceAccount>::namespaced(env.admin.clone(), "default")
            .get(sa)
            .await
            .expect("SA")
            .metadata
            .resource_version,
        Api::<RoleBinding>::namespaced(env.admin.clone(), "default")
            .get(&name)
            .await
            .expect("RB")
            .metadata
            .resource_version,
        Api::<ClusterRoleBinding>::all(env.admin.clone()).get(&name).await.expect("CRB").metadata.resource_version,
        Api::<Secret>::namespaced(env.admin.clone(), "default")
            .get(&format!("{sa}-token"))
            .await
            .expect("Secret")
            .metadata
            .resource_version,
    ]
}

async fn exists<K>(api: Api<K>, name: &str) -> bool
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("reading").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_cloud_config_drives_the_driver() {
    bounded(120, async {
        let env = Env::start(Options::profile("v1.8")).await;
        let output = env.dir.path().join("out/cloud-provider-config");
        std::fs::create_dir_all(output.parent().expect("parent")).expect("output dir");
        let mut a = args(&admin_kubeconfig(&env), "prod-csi", output.clone());

        // Dry run: says what it would make, makes nothing, writes nothing.
        a.dry_run = true;
        let (printed, result) = run(&a).await;
        result.expect("dry run");
        assert_eq!(printed.matches(": would be created").count(), 4, "{printed}");
        assert_eq!(printed.matches("\n---\n").count(), 4, "four objects: {printed}");
        assert!(!exists(Api::<ServiceAccount>::namespaced(env.admin.clone(), "default"), "prod-csi").await);
        assert!(!output.exists(), "a dry run writes no file");
        a.dry_run = false;

        // The run: four objects, then the file.
        let (printed, result) = run(&a).await;
        result.unwrap_or_else(|e| panic!("cloud-config: {e}\n{printed}"));
        assert_eq!(printed.matches(": created").count(), 4, "{printed}");
        let token = token_of(&env, "prod-csi").await;
        assert!(!printed.contains(&token), "the token is never printed");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&output).expect("output written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let written = std::fs::read_to_string(&output).expect("reading output");
        let kc = kube::config::Kubeconfig::from_yaml(&written).expect("a kubeconfig");
        let current = kc.current_context.clone().expect("current-context");
        let ctx = kc.contexts.iter().find(|c| c.name == current).and_then(|c| c.context.clone()).expect("context");
        assert_eq!(ctx.namespace.as_deref(), Some("default"));
        let sim = env.sim.as_ref().expect("simulator");
        let cluster = kc.clusters[0].cluster.clone().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some(sim.url.as_str()));
        let ca = std::fs::read(sim.state_dir.join("ca.crt")).expect("simulator CA");
        let ca_data = cluster.certificate_authority_data.expect("CA embedded");
        assert_eq!(base64_decode(&ca_data), ca, "the CA is the token Secret's ca.crt");
        let doc: serde_json::Value = serde_saphyr::from_str(&written).expect("YAML");
        assert!(
            doc.pointer("/users/0/user/token").and_then(|t| t.as_str()) == Some(token.as_str()),
            "the Secret's token"
        );

        // A second run changes nothing and writes the same file.
        let before = versions(&env, "prod-csi").await;
        let (printed, result) = run(&a).await;
        result.expect("second run");
        assert_eq!(printed.matches(": exists, left as is").count(), 4, "{printed}");
        assert!(printed.contains("nothing changed"), "{printed}");
        assert_eq!(versions(&env, "prod-csi").await, before, "no host object was written");
        assert_eq!(std::fs::read_to_string(&output).expect("output"), written);

        // The generated file drives a driver: create and attach a volume with it.
        let socket = env.dir.path().join("gen/csi.sock");
        let config = harvester_csi_driver::config::Config::try_parse_from([
            "harvester-csi-driver",
            "--endpoint",
            &format!("unix://{}", socket.display()),
            "--kubeconfig",
            &output.display().to_string(),
            "--mode",
            "controller",
            "--no-guest-access",
            "--cluster-id",
            CLUSTER_ID,
        ])
        .expect("driver flags");
        let stop = tokio_util::sync::CancellationToken::new();
        let driver = tokio::spawn(harvester_csi_driver::app::run(config, stop.clone()));
        eventually("the second driver's socket", || {
            let s = socket.clone();
            async move { s.exists().then_some(()) }
        })
        .await;
        let mut controller = ControllerClient::new(connect(&socket).await);
        let vol = controller
            .create_volume(create_req("pvc-generated", 16 * MIB, rwo_block(), &[]))
            .await
            .expect("CreateVolume with the generated cloud-config")
            .into_inner()
            .volume
            .expect("volume");
        controller
            .controller_publish_volume(csi_proto::csi::v1::ControllerPublishVolumeRequest {
                volume_id: vol.volume_id.clone(),
                node_id: "guest-1".into(),
                volume_capability: Some(rwo_block()),
                ..Default::default()
            })
            .await
            .expect("ControllerPublish with the generated cloud-config");
        assert!(env.vm_lists("guest-1", "pvc-generated").await, "hot-plugged by the generated identity");
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_another_shape_are_refused_never_rebound() {
    bounded(60, async {
        let env = Env::start(Options::profile("v1.5")).await;
        // Someone's RoleBinding under the name this command would use, to another role.
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "default-other", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "other", "namespace": "default"}],
        }))
        .expect("binding");
        let rbs: Api<RoleBinding> = Api::namespaced(env.admin.clone(), "default");
        rbs.create(&PostParams::default(), &rb).await.expect("creating the existing binding");
        let output = env.dir.path().join("other-config");
        let (_, result) = run(&args(&admin_kubeconfig(&env), "other", output.clone())).await;
        let e = result.expect_err("a binding of another shape");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("RoleBinding default/default-other") && msg.contains("cluster-admin"), "{msg}");
        assert!(
            !exists(Api::<ServiceAccount>::namespaced(env.admin.clone(), "default"), "other").await,
            "nothing made"
        );
        let kept = rbs.get("default-other").await.expect("binding");
        assert_eq!(kept.role_ref.name, "cluster-admin", "the existing binding is left alone");
        assert!(!output.exists());
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_identity_is_told_which_permissions_it_lacks() {
    bounded(60, async {
        let env = Env::start(Options::profile("v1.5")).await;
        // The guest's own cloud-config: it may not make identities.
        let weak = env.sim.as_ref().expect("simulator").cloud_config_path();
        let output = env.dir.path().join("weak-config");
        let mut a = args(&weak, "weak", output.clone());
        let (_, result) = run(&a).await;
        let e = result.expect_err("the guest identity cannot create bindings");
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        let msg = e.to_string();
        for needed in [
            "create serviceaccounts in namespace default",
            "create rolebindings.rbac.authorization.k8s.io in namespace default",
            "create clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)",
            "Harvester admin",
        ] {
            assert!(msg.contains(needed), "{needed:?} missing from: {msg}");
        }
        assert!(!exists(Api::<ServiceAccount>::namespaced(env.admin.clone(), "default"), "weak").await, "nothing made");
        assert!(!output.exists());

        // A dry run still shows the objects (for an admin to apply), and fails the same way.
        a.dry_run = true;
        let (printed, result) = run(&a).await;
        assert_eq!(result.expect_err("dry run").code(), Code::PermissionDenied);
        assert!(printed.contains("kind: ClusterRoleBinding"), "{printed}");
        env.stop().await;
    })
    .await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}
