//! The out-of-service taint controller (`guest::node_health::run`) against a
//! plain guest Kubernetes API (`harvester_simulator::guest::GuestCluster`) and
//! the in-process Harvester simulator as the host: a guest node whose VM is
//! down is tainted, only the driver's own disks are freed from the dead VM (its
//! serial, or for a volume the upstream driver attached without one, a guest PV of
//! this driver naming it),
//! the taint goes once the node is back, and a taint someone else added is
//! never touched.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use harvester_csi_driver::config::Config;
use harvester_csi_driver::host::{Host, HotplugMode};
use harvester_csi_driver::metrics::Metrics;
use harvester_csi_driver::names;
use harvester_simulator::guest::GuestCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Taint};
use kube::api::{Api, Patch, PatchParams, PostParams};
use rstest::rstest;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TAINT: &str = "node.kubernetes.io/out-of-service";
const ADDED_BY_US: &str = "csi.harvesterhci.io/out-of-service-taint";
const NODE_ID: &str = "csi.volume.kubernetes.io/nodeid";
const LEASE: &str = "harvester-csi-node-monitor";
const IDENTITY: &str = "node-health-under-test";
/// The controller reconciles every 5 s: two ticks and some slack.
const PHASE_SECS: u64 = 12;

/// Polls `check` every 250 ms until it yields a value, at most `secs` seconds.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(secs), "gave up after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default()
}

fn out_of_service(node: &Node) -> Vec<Taint> {
    taints(node).into_iter().filter(|t| t.key == TAINT).collect()
}

fn marked_ours(node: &Node) -> bool {
    node.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ADDED_BY_US))
}

/// A guest Node with the given annotations and taints, NotReady.
async fn create_node(nodes: &Api<Node>, name: &str, annotations: Value, taints: Value) {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"taints": taints},
    }))
    .expect("node object");
    nodes.create(&PostParams::default(), &node).await.unwrap_or_else(|e| panic!("creating guest node {name}: {e}"));
    set_ready(nodes, name, false).await;
}

/// What the kubelet (or the node lifecycle controller) reports.
async fn set_ready(nodes: &Api<Node>, name: &str, ready: bool) {
    let (status, reason) = if ready { ("True", "KubeletReady") } else { ("Unknown", "NodeStatusUnknown") };
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": reason}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("setting guest node {name} Ready={ready}: {e}"));
}

/// The disk of `volume` in the VM template, if listed.
fn disk_of(vm: &Value, volume: &str) -> Option<Value> {
    vm.pointer("/spec/template/spec/domain/devices/disks")
        .and_then(Value::as_array)
        .and_then(|d| d.iter().find(|x| x.get("name").and_then(Value::as_str) == Some(volume)))
        .cloned()
}

async fn wait_vm_status(env: &Env, vm: &str, printable: &str) {
    wait_for(&format!("VM {vm} to be {printable}"), 20, || async {
        let v = env.vm(vm).await;
        let ready = v.pointer("/status/ready") == Some(&json!(true));
        (v.pointer("/status/printableStatus") == Some(&json!(printable)) && ready == (printable == "Running"))
            .then_some(())
    })
    .await;
}

/// The host as the driver sees it: its own client from the cloud-config, features probed.
async fn driver_host(env: &Env, profile: &str) -> Host {
    let cloud_config = env.sim.as_ref().expect("simulator running").cloud_config_path();
    let config = Config::try_parse_from([
        "harvester-csi-driver",
        "--kubeconfig",
        &cloud_config.display().to_string(),
        "--no-guest-access",
    ])
    .expect("driver flags");
    let harvester_csi_driver::app::HostConnection { client, namespace, .. } =
        harvester_csi_driver::app::host_client(&config).await.expect("host client");
    let host = Host::new(client, namespace, Arc::new(Metrics::default()));
    let report = host.probe_features().await;
    let want = if profile == "v1.8" { HotplugMode::Declarative } else { HotplugMode::Legacy };
    assert_eq!(report.hotplug, want, "hotplug form on {profile}");
    host
}

/// Hot-plugs host PVC `volume` into guest-1 the way a human (with a serial that is
/// not the driver's) or the upstream driver (no serial) would on this release.
async fn hotplug_by_hand(env: &Env, profile: &str, volume: &str, serial: Option<&str>) {
    let mut disk = json!({"name": volume, "disk": {"bus": "scsi"}});
    if let Some(s) = serial {
        disk["serial"] = json!(s);
    }
    if profile == "v1.8" {
        let vm = env.vm("guest-1").await;
        let rv = vm.pointer("/metadata/resourceVersion").cloned().expect("resourceVersion");
        let volume_entry =
            json!({"name": volume, "persistentVolumeClaim": {"claimName": volume, "hotpluggable": true}});
        let patch = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/spec/template/spec/volumes/-", "value": volume_entry},
            {"op": "add", "path": "/spec/template/spec/domain/devices/disks/-", "value": disk},
        ]);
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("JSON patch");
        dynamic_api(&env.admin, "kubevirt.io", "VirtualMachine", "virtualmachines", Some("default"))
            .patch("guest-1", &PatchParams::default(), &Patch::<Value>::Json(patch))
            .await
            .expect("patching the human's volume into guest-1");
    } else {
        let mut options = json!({
            "name": volume,
            "disk": {"disk": {"bus": "scsi"}},
            "volumeSource": {"persistentVolumeClaim": {"claimName": volume}},
        });
        if let Some(s) = serial {
            options["disk"]["serial"] = json!(s);
        }
        env.sim_request(
            "PUT",
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/guest-1/addvolume",
            Some(options),
        )
        .await;
    }
}

async fn assert_lease(leases: &Api<Lease>) {
    let lease = leases.get(LEASE).await.expect("the node-health Lease exists");
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(IDENTITY), "{spec:?}");
    assert!(spec.renew_time.is_some(), "the lease is renewed: {spec:?}");
}

/// v1.5 unplugs through the legacy subresources, v1.8 by patching the VM spec.
#[rstest]
#[case::legacy_hotplug("v1.5")]
#[case::declarative_hotplug("v1.8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_service_taint_lifecycle(#[case] profile: &'static str) {
    bounded(60, async {
        let env = Env::start(Options::profile(profile)).await;
        let guest = GuestCluster::start(&env.dir.path().join("guest")).await.expect("starting the guest cluster");
        let guest_client = kube_client(&guest.kubeconfig).await;
        let nodes: Api<Node> = Api::all(guest_client.clone());
        let leases: Api<Lease> = Api::namespaced(guest_client.clone(), "kube-system");

        // The driver's volumes: one on guest-1 (to be freed), one on guest-2 (healthy, left alone).
        for (id, vm) in [("pvc-ours", "guest-1"), ("pvc-guest2", "guest-2")] {
            let vol = env.create(create_req(id, 16 * MIB, rwo_block(), &[])).await.expect("CreateVolume");
            env.publish(id, vm, rwo_block(), vol.volume_context).await.expect("ControllerPublish");
        }
        let vm1 = env.vm("guest-1").await;
        let ours = disk_of(&vm1, "pvc-ours").expect("the driver's disk in the VM template");
        assert_eq!(ours.get("serial"), Some(&json!(names::disk_serial("pvc-ours"))), "{ours}");

        // A volume a human hot-plugged into guest-1, with their own serial.
        let human = "human-data";
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": human, "namespace": "default"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Block",
                "resources": {"requests": {"storage": "16Mi"}},
            },
        }))
        .expect("PVC object");
        env.pvcs().create(&PostParams::default(), &pvc).await.expect("creating the human's host PVC");
        hotplug_by_hand(&env, profile, human, Some("human-disk")).await;
        wait_for("the human's volume to be in the VM template", 10, || async {
            env.vm_lists("guest-1", human).await.then_some(())
        })
        .await;

        // Volumes the upstream driver attached before the switch (no serial): one this
        // guest cluster has a PV of this driver for, one it has not (another cluster's).
        let (upstream, others) = ("pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8de1", "pvc-0b1c8a3e-51f2-4bd4-9a3c-6a1f0c0e8de2");
        for name in [upstream, others] {
            let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Block", "resources": {"requests": {"storage": "16Mi"}}},
            }))
            .expect("PVC object");
            env.pvcs().create(&PostParams::default(), &pvc).await.expect("creating an upstream host PVC");
            hotplug_by_hand(&env, profile, name, None).await;
            wait_for("upstream's volume to be in the VM template", 10, || async {
                env.vm_lists("guest-1", name).await.then_some(())
            })
            .await;
        }
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": upstream},
            "spec": {"capacity": {"storage": "16Mi"}, "accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                     "csi": {"driver": names::DRIVER_NAME, "volumeHandle": upstream}},
        }))
        .expect("PV object");
        Api::<PersistentVolume>::all(guest_client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .expect("creating the guest PV of upstream's volume");
        let disk = disk_of(&env.vm("guest-1").await, human).expect("the human's disk");
        assert_eq!(disk.get("serial"), Some(&json!("human-disk")), "{disk}");

        // Guest nodes: guest-1 registered by the driver; guest-2 tainted by someone else; a node without a VM.
        let nodeid = |vm: &str| json!({NODE_ID: json!({names::DRIVER_NAME: vm}).to_string()});
        create_node(&nodes, "guest-1", nodeid("guest-1"), json!([])).await;
        let foreign = json!({"key": TAINT, "value": "operator", "effect": "NoExecute"});
        create_node(&nodes, "guest-2", nodeid("guest-2"), json!([foreign.clone()])).await;
        create_node(&nodes, "ghost", json!({}), json!([])).await;
        let foreign: Taint = serde_json::from_value(foreign).expect("taint");

        // guest-1's VM goes down; only then does the controller start (its first tick is immediate).
        env.sim_request("POST", "/sim/vms/default/guest-1/stop", None).await;
        wait_vm_status(&env, "guest-1", "Stopped").await;
        let guest2_before = env.vm("guest-2").await.pointer("/spec").cloned().expect("guest-2 spec");

        let host = driver_host(&env, profile).await;
        let shutdown = CancellationToken::new();
        let controller = tokio::spawn(harvester_csi_driver::guest::node_health::run(
            guest_client.clone(),
            host,
            IDENTITY.into(),
            shutdown.clone(),
        ));

        // NotReady + VM down: tainted out-of-service, marked as ours.
        let tainted = wait_for("guest-1 to be tainted out-of-service", PHASE_SECS, || async {
            let n = nodes.get("guest-1").await.expect("guest-1");
            (!out_of_service(&n).is_empty() && marked_ours(&n)).then_some(n)
        })
        .await;
        let t = out_of_service(&tainted);
        assert_eq!(t.len(), 1, "one out-of-service taint: {t:?}");
        assert_eq!(t[0].effect, "NoExecute", "{t:?}");

        // Then the driver's disk is freed from the dead VM; the human's stays.
        wait_for("the driver's volume to leave the stopped VM", PHASE_SECS, || async {
            (!env.vm_lists("guest-1", "pvc-ours").await).then_some(())
        })
        .await;
        wait_for("upstream's volume of this cluster to leave the stopped VM", PHASE_SECS, || async {
            (!env.vm_lists("guest-1", upstream).await).then_some(())
        })
        .await;
        let vm1 = env.vm("guest-1").await;
        assert!(env.vm_lists("guest-1", human).await, "the human's volume stays: {vm1}");
        assert!(env.vm_lists("guest-1", others).await, "a serial-less disk no guest PV names stays: {vm1}");
        assert_eq!(disk_of(&vm1, human).and_then(|d| d.get("serial").cloned()), Some(json!("human-disk")));
        assert!(disk_of(&vm1, "pvc-ours").is_none(), "the driver's disk is gone too: {vm1}");

        // guest-2: someone else's taint untouched, no mark; its healthy VM untouched.
        let g2 = nodes.get("guest-2").await.expect("guest-2");
        assert_eq!(taints(&g2), vec![foreign.clone()], "someone else's taint is left as it was");
        assert!(!marked_ours(&g2), "guest-2 is not marked as ours");
        assert_eq!(env.vm("guest-2").await.pointer("/spec"), Some(&guest2_before), "guest-2's VM is not touched");
        assert!(env.vm_lists("guest-2", "pvc-guest2").await);
        // A node without a VM is never tainted.
        let ghost = nodes.get("ghost").await.expect("ghost");
        assert!(taints(&ghost).is_empty() && !marked_ours(&ghost), "{ghost:?}");

        assert_lease(&leases).await;

        // guest-1 comes back. guest-2 turns Ready first: every tick that sees guest-1 Ready sees guest-2 Ready too.
        env.sim_request("POST", "/sim/vms/default/guest-1/start", None).await;
        wait_vm_status(&env, "guest-1", "Running").await;
        set_ready(&nodes, "guest-2", true).await;
        set_ready(&nodes, "guest-1", true).await;
        let back = wait_for("guest-1's out-of-service taint to be removed", PHASE_SECS, || async {
            let n = nodes.get("guest-1").await.expect("guest-1");
            (out_of_service(&n).is_empty() && !marked_ours(&n)).then_some(n)
        })
        .await;
        assert!(taints(&back).is_empty(), "only the taint this driver added was there: {:?}", taints(&back));

        // Someone else's taint stays even on a Ready node with a healthy VM.
        let g2 = nodes.get("guest-2").await.expect("guest-2");
        assert_eq!(taints(&g2), vec![foreign], "someone else's taint is never removed");
        assert!(!marked_ours(&g2));
        assert!(env.vm_lists("guest-1", human).await, "the human's volume is still in guest-1");
        assert!(env.vm_lists("guest-2", "pvc-guest2").await, "guest-2 keeps the driver's volume");

        assert_lease(&leases).await;

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), controller)
            .await
            .expect("the controller stops on shutdown")
            .expect("controller task");
        guest.shutdown().await;
        env.stop().await;
    })
    .await;
}
