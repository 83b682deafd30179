//! networkfs-manager: an export enabled again while it is still being disabled
//! (the guest's last user left and a new one came at once, as an RWX pod moving
//! between VMs does) ends Enabled and Ready, not stuck Disabling.

mod common;

use common::{bounded, dynamic, Options};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

async fn state(nfs: &Api<DynamicObject>, name: &str) -> (String, String) {
    let o = nfs.get(name).await.expect("the NetworkFilesystem");
    let at = |p: &str| o.data.pointer(p).and_then(|v| v.as_str()).unwrap_or("").to_string();
    (at("/status/state"), at("/status/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_enabled_again_while_disabling_ends_enabled() {
    bounded(120, async {
        // The share-manager takes exportMs to stop: the export is Disabling that long.
        let world = common::FAST_TIMING.replace("exportMs: 50", "exportMs: 400");
        let s = common::start(Options { world, ..Options::default() }).await;
        let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(s.admin.clone(), "default");
        let rwx = serde_json::from_value(json!({
            "metadata": {"name": "shared"},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem", "storageClassName": "longhorn-rwx",
                     "resources": {"requests": {"storage": "64Mi"}}},
        }))
        .expect("pvc json");
        pvcs.create(&PostParams::default(), &rwx).await.expect("creating the claim");
        let pv = common::eventually("the claim bound", || {
            let pvcs = pvcs.clone();
            async move { pvcs.get("shared").await.ok()?.spec?.volume_name }
        })
        .await;
        let nfs = dynamic(
            &s.admin,
            "harvesterhci.io",
            "v1beta1",
            "NetworkFilesystem",
            "networkfilesystems",
            Some("harvester-system"),
        );
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "NetworkFilesystem",
            "metadata": {"name": pv},
            "spec": {"networkFSName": pv, "desiredState": "Enabled", "provisioner": "Longhorn"},
        }))
        .expect("nfs json");
        nfs.create(&PostParams::default(), &obj).await.expect("creating the export");
        let desired = |d: &str| Patch::Merge(json!({"spec": {"desiredState": d}}));
        let state_of =
            |o: &DynamicObject| o.data.pointer("/status/state").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let mut caught_disabling = 0;
        for round in 0..10 {
            common::eventually(&format!("round {round}: Enabled and Ready"), || {
                let (nfs, pv) = (nfs.clone(), pv.clone());
                async move { (state(&nfs, &pv).await == ("Enabled".into(), "Ready".into())).then_some(()) }
            })
            .await;
            // Watched from before the disable, so a short Disabling is seen however long
            // the disable's own answer takes (it waits for the simulator's save).
            let from = nfs.get(&pv).await.expect("the export").metadata.resource_version.unwrap_or_default();
            let params = WatchParams::default().fields(&format!("metadata.name={pv}"));
            let mut events = nfs.watch(&params, &from).await.expect("watching the export").boxed();
            nfs.patch(&pv, &PatchParams::default(), &desired("Disabled")).await.expect("disable");
            while let Some(event) = events.next().await {
                match event.expect("watch event") {
                    WatchEvent::Modified(o) if matches!(state_of(&o).as_str(), "Disabling" | "Disabled") => break,
                    _ => {}
                }
            }
            // Enable again at once: the answer shows the state the patch met.
            let met = nfs.patch(&pv, &PatchParams::default(), &desired("Enabled")).await.expect("enable");
            caught_disabling += usize::from(state_of(&met) == "Disabling");
        }
        common::eventually("finally Enabled and Ready", || {
            let (nfs, pv) = (nfs.clone(), pv.clone());
            async move { (state(&nfs, &pv).await == ("Enabled".into(), "Ready".into())).then_some(()) }
        })
        .await;
        assert!(caught_disabling > 0, "no round enabled the export while it was Disabling: the test proved nothing");
        s.shutdown().await;
    })
    .await
}
