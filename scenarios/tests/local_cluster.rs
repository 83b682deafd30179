//! The local cluster end to end: up, a busybox pod on every node, exec and logs
//! through the API server to each kubelet, down, and nothing left behind.
//! Needs root, Debian's containerd/runc/etcd-server and the Kubernetes build:
//! `ci/cluster/build-tools.sh kubernetes` and `ci/cluster/images.sh`. One local
//! cluster per machine (they share 198.18.0.1, its ports and link names): not
//! while `scenarios cluster up` has one running.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, LogParams, PostParams};
use scenarios::cluster::{self, images::Images, Spec, Tools};
use tokio::io::AsyncReadExt;

fn kubernetes_bin() -> PathBuf {
    let cache =
        PathBuf::from(std::env::var("HCSI_TOOLS_CACHE").unwrap_or_else(|_| "/var/cache/harvester-csi-tools".into()));
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .expect("the tool cache (ci/cluster/build-tools.sh kubernetes)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("kubernetes-v"))
                && p.join(".complete").exists()
        })
        .collect();
    found.sort();
    found.pop().expect("a Kubernetes build (ci/cluster/build-tools.sh kubernetes)").join("bin")
}

async fn wait_running(api: &Api<Pod>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = api.get(name).await.expect("pod");
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            return;
        }
        assert!(Instant::now() < deadline, "pod {name} not Running: {:?}", p.status);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs root, containerd, etcd-server and the Kubernetes build (ci/cluster/build-tools.sh kubernetes; ci/cluster/images.sh)"]
async fn a_local_cluster_runs_pods_on_every_node_and_stops_clean() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let images = Images::from_paths(&[
        repo.join("target/cluster-images/pause.tar"),
        repo.join("target/cluster-images/busybox.tar"),
    ])
    .expect("pause and busybox archives (ci/cluster/images.sh)");
    let state = tempfile::tempdir().expect("state dir");
    let spec = Spec {
        state_dir: state.path().to_path_buf(),
        nodes: vec!["t-node-1".into(), "t-node-2".into()],
        tools: Tools { kubernetes: kubernetes_bin(), etcd: "/usr/bin/etcd".into(), containerd: "/usr/bin".into() },
        snapshots: None,
    };
    let spec = cluster::up(spec, &images).await.expect("cluster up");
    // Whatever the checks say, the cluster goes (its pid files are in the temp dir).
    let checked = tokio::spawn(check_pods(spec.clone())).await;
    cluster::down(&spec.state_dir).await.expect("cluster down");
    if let Err(e) = checked {
        std::panic::resume_unwind(e.into_panic());
    }
    for node in &spec.nodes {
        assert!(!std::path::Path::new("/run/netns").join(cluster::node::netns(node)).exists(), "netns of {node} left");
        assert!(!std::path::Path::new("/run/hcsi").join(node).exists(), "run dir of {node} left");
    }
    assert!(!std::path::Path::new("/sys/class/net").join(cluster::HOST_LINK).exists(), "host link left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&state.path().display().to_string()), "mounts left under the state dir");
}

async fn check_pods(spec: Spec) {
    let client = cluster::admin_client(&spec).await.expect("admin client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for node in &spec.nodes {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("smoke-{node}")},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": cluster::images::BUSYBOX, "imagePullPolicy": "Never",
                                     "command": ["sh", "-c", "echo hello from $(hostname); trap 'exit 0' TERM; while :; do sleep 1; done"]}]},
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("create pod");
    }
    for node in &spec.nodes {
        let name = format!("smoke-{node}");
        wait_running(&pods, &name).await;
        let p = pods.get(&name).await.expect("pod");
        assert_eq!(p.spec.and_then(|s| s.node_name).as_deref(), Some(node.as_str()));
        let mut exec = pods
            .exec(
                &name,
                vec!["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; ip -4 addr show eth0 | grep -c 'inet 127\\.'"],
                &AttachParams::default().container("app").stderr(false),
            )
            .await
            .expect("exec through the API server and the node's kubelet");
        let mut out = String::new();
        exec.stdout().expect("stdout").read_to_string(&mut out).await.expect("read");
        exec.join().await.expect("exec ends");
        assert!(out.contains("sh -c echo hello") && out.trim_end().ends_with('1'), "{out}");
        let logs = pods.logs(&name, &LogParams::default()).await.expect("logs through the kubelet");
        assert!(logs.contains("hello from smoke-"), "{logs}");
    }
}
