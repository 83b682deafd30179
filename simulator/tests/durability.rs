//! A write the simulator answered survives a kill -9 right after the answer,
//! as one the apiserver answered survives (etcd committed it first).

mod common;

use std::path::Path;
use std::process::Stdio;

use common::bounded;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use tokio::process::{Child, Command};

async fn serve(dir: &Path) -> Child {
    let _ = std::fs::remove_file(dir.join("endpoint"));
    let child = Command::new(env!("CARGO_BIN_EXE_harvester-sim"))
        .args(["serve", "--devices", "file", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting harvester-sim serve");
    common::eventually("the simulator to write its endpoint", || async {
        std::fs::read_to_string(dir.join("endpoint")).ok().filter(|e| e.trim().rsplit_once(':').is_some())
    })
    .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answered_before_a_kill_are_there_after_the_restart() {
    bounded(120, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sim = serve(dir.path()).await;
        let client = common::client(&dir.path().join("admin.kubeconfig")).await;
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let count = 30;
        for i in 0..count {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("answered-{i}")}, "data": {"i": i.to_string()}
            }))
            .expect("configmap");
            maps.create(&PostParams::default(), &cm).await.expect("create answered");
        }
        // At once after the last answer: no time for a save that runs later.
        sim.start_kill().expect("kill -9");
        sim.wait().await.expect("reaped");

        let _sim = serve(dir.path()).await;
        let client = common::client(&dir.path().join("admin.kubeconfig")).await;
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let names: Vec<String> = maps
            .list(&ListParams::default())
            .await
            .expect("list after restart")
            .items
            .into_iter()
            .filter_map(|m| m.metadata.name)
            .filter(|n| n.starts_with("answered-"))
            .collect();
        assert_eq!(names.len(), count, "every answered create is still there after kill -9: {names:?}");
    })
    .await;
}
