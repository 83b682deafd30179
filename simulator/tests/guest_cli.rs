//! `harvester-sim guest`: the guest-cluster API as a process of its own.

mod common;

use common::bounded;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_mode_serves_a_plain_kubernetes_api_with_an_admin_kubeconfig() {
    bounded(60, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = ["guest", "--listen", "127.0.0.1:0", "--state-dir"].map(std::ffi::OsStr::new);
        let args: Vec<&std::ffi::OsStr> = args.into_iter().chain([dir.path().as_os_str()]).collect();
        let (mut child, printed) = common::spawn_sim(&args, &["address", "kubeconfig"]).await;
        let (address, kubeconfig) = (printed["address"].clone(), printed["kubeconfig"].clone());
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
