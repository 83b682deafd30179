//! `harvester-sim guest`: the guest-cluster API as a process of its own.

mod common;

use std::process::Stdio;

use common::bounded;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_mode_serves_a_plain_kubernetes_api_with_an_admin_kubeconfig() {
    bounded(60, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_harvester-sim"))
            .args(["guest", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting harvester-sim guest");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut address = String::new();
        let mut kubeconfig = String::new();
        while address.is_empty() || kubeconfig.is_empty() {
            let line = lines.next_line().await.expect("reading output").expect("harvester-sim guest exited");
            if let Some(a) = line.strip_prefix("address: ") {
                address = a.to_string();
            } else if let Some(k) = line.strip_prefix("kubeconfig: ") {
                kubeconfig = k.to_string();
            }
        }
        assert!(address.starts_with("https://127.0.0.1:"), "{address}");
        assert_eq!(kubeconfig, dir.path().join("guest.kubeconfig").display().to_string());

        let client = common::client(std::path::Path::new(&kubeconfig)).await;
        let version = client.apiserver_version().await.expect("/version");
        assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        assert!(namespaces.get_opt("kube-system").await.expect("get namespace").is_some());

        // The kinds a CSI driver writes in a guest cluster.
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        let pv = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-1"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "csi": {"driver": "driver.harvesterhci.io", "volumeHandle": "pvc-1"}}}))
        .expect("a PV");
        pvs.create(&PostParams::default(), &pv).await.expect("creating a PV");
        let vas: Api<VolumeAttachment> = Api::all(client.clone());
        let va = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "csi-1"},
            "spec": {"attacher": "driver.harvesterhci.io", "nodeName": "guest-1",
                     "source": {"persistentVolumeName": "pvc-1"}}}))
        .expect("a VolumeAttachment");
        vas.create(&PostParams::default(), &va).await.expect("creating a VolumeAttachment");

        // No Harvester, KubeVirt or Longhorn kinds.
        let groups = client.list_api_groups().await.expect("/apis");
        let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
        assert!(names.contains(&"storage.k8s.io") && names.contains(&"snapshot.storage.k8s.io"), "{names:?}");
        for absent in ["kubevirt.io", "longhorn.io", "harvesterhci.io"] {
            assert!(!names.contains(&absent), "{absent} in {names:?}");
        }

        child.start_kill().expect("stopping harvester-sim guest");
        let _ = child.wait().await;
    })
    .await
}
