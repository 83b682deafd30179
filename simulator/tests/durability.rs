//! A write the simulator answered survives a kill -9 right after the answer,
//! as one the apiserver answered survives (etcd committed it first).

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::bounded;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use tokio::process::Child;

async fn serve(dir: &Path) -> Child {
    let args = ["serve", "--devices", "file", "--listen", "127.0.0.1:0", "--state-dir"];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).chain([dir.as_os_str()]).collect();
    common::spawn_sim(&args, &["address"]).await.0
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
