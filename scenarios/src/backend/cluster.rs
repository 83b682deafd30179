//! The cluster backend: the same scenario files against a real Kubernetes. The
//! driver is installed per scenario by the Helm chart (registrar mode `driver`,
//! each node plugin's `--root` at its VM's root in this scenario's simulator),
//! and the real provisioner, attacher, resizer, snapshotter, snapshot-controller,
//! attach/detach controller and kubelet do the work. Pods are busybox; data goes
//! through `exec`; a kill is a SIGKILL of the container's process, found through
//! the node's containerd (local cluster).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass, VolumeAttachment};
use kube::api::{Api, AttachParams, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

pub use super::driver_pods::NAMESPACE;
use super::driver_pods::{all_ready, driver_pods, pod_on, ready_except};
use super::pod_diagnosis;
use super::simulator::{self, Simulator};
use super::{Backend, Cluster, DataTarget};
use crate::cluster::images::BUSYBOX;
use crate::env::{Env, Phase, DRIVER};
use crate::model::Scenario;
use crate::{csi::Csi, Failure};

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
}

/// The release the chart is installed as, per scenario (in [`NAMESPACE`]).
const RELEASE: &str = "hcsi";
const CLOUD_CONFIG_SECRET: &str = "harvester-cloud-config";
/// The Secret's key, the chart's `cloudConfig.fileName` (default).
const CLOUD_CONFIG_KEY: &str = "cloud-provider-config";
/// What the driver's node-health controller marks a node with when it adds the
/// out-of-service taint (driver/src/guest/node_health.rs).
const DRIVER_TAINT_MARK: &str = "csi.harvesterhci.io/out-of-service-taint";
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Set on every driver pod when the host address changes: the kubelet syncs the
/// pod, which refreshes its Secret volume.
const HOST_ADDRESS_ANNOTATION: &str = "scenarios.harvesterhci.io/host-address";
/// Nodes that run this scenario's node plugins carry this label.
const NODE_PLUGIN_LABEL: &str = "scenarios.harvesterhci.io/node-plugin";
const DRIVER_CONTAINER: &str = "harvester-csi-driver";
const NODE_METRICS_PORT: u16 = 9809;
const CONTROLLER_METRICS_PORT: u16 = 9808;

pub struct ClusterBackend {
    pub kubeconfig: PathBuf,
    /// The local cluster (for its containerd sockets); None with `--kubeconfig`.
    pub local: Option<crate::cluster::Spec>,
    pub sim_bin: PathBuf,
    pub driver_bin: PathBuf,
    pub helm: PathBuf,
    pub chart: PathBuf,
    /// Helm values files applied before the scenario's own (image names, …).
    pub values: Vec<PathBuf>,
    /// Where the simulator listens; the driver pods must reach it.
    pub sim_listen: String,
}

pub struct ClusterRun {
    work: PathBuf,
    sim: Simulator,
    env: Arc<Env>,
    stop: CancellationToken,
    local: Option<crate::cluster::Spec>,
    driver_bin: PathBuf,
    helm: PathBuf,
    kubeconfig: PathBuf,
    cluster_id: String,
    plugin_nodes: Vec<String>,
    /// Nodes whose VM this scenario halted (kubelet and containerd stopped).
    halted: std::collections::BTreeSet<String>,
    /// Where the simulator listens (the address the nodes reach it at).
    sim_listen: String,
    /// The simulator is reachable at this loopback address from every node.
    forwarding: Option<std::net::IpAddr>,
    /// Ends the forwarders, after the cleanup: the driver pods that read the
    /// new address still need the simulator to detach and delete volumes.
    forwarders: CancellationToken,
}

/// The nodes (VMs) that run a node plugin in this scenario.
pub fn plugin_nodes(scenario: &Scenario) -> Vec<String> {
    match &scenario.world.node_plugins {
        Some(list) => list.clone(),
        None if !scenario.world.vms.is_empty() => scenario.world.vms.iter().map(|v| v.name().to_string()).collect(),
        None => vec!["guest-1".into(), "guest-2".into(), "guest-3".into()],
    }
}

/// The NFS seam on this machine (no kernel NFS client): the simulator's export is
/// an ext4 loop mount on the host; mounting its loop device again in the node's
/// own mount namespace gives the same filesystem (one superblock) without the
/// host's mount being visible to the node's kubelet, whose unstage would
/// otherwise count it as a reference and never finish (local-cluster.md).
fn write_nfs_helper(work: &Path, sim_dir: &Path) -> Result<PathBuf, Failure> {
    let path = work.join("tools/nfs-mount-helper");
    let script = format!(
        r#"#!/bin/sh
# cluster runs: <server>:<export> <target> <options> -> the export's loop device, mounted here
set -eu
volume="${{1#*:}}"
volume="${{volume#/}}"
file="{sim}/volumes/$volume.img"
devices=$(losetup -j "$file" -n -O NAME)
count=$(printf '%s\n' "$devices" | grep -c . || true)
if [ "$count" != 1 ]; then
  echo "export $volume: want one loop device behind $file, found $count" >&2
  exit 1
fi
mount -t ext4 "$devices" "$2"
"#,
        sim = sim_dir.display()
    );
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| fail(e.to_string()))?;
    }
    std::fs::write(&path, script).map_err(|e| fail(e.to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(|e| fail(e.to_string()))?;
    Ok(path)
}

/// The scenario's chart values (on top of the image values files).
fn values(scenario: &Scenario, sim_dir: &Path, work: &Path, helper: &Path, cluster_id: &str) -> Value {
    let mut controller_args: Vec<String> = vec!["--operation-timeout=60s".into()];
    if scenario.world.no_guest_access {
        controller_args.push("--no-guest-access".into());
    }
    controller_args.extend(scenario.world.controller_args.iter().cloned());
    let work_mount = |name: &str| json!({"name": name, "mountPath": work.display().to_string()});
    let mut v = json!({
        "replicasCount": 1,
        "logLevel": "info,harvester_csi_driver=debug",
        "cloudConfig": {"secretName": CLOUD_CONFIG_SECRET},
        // The scenarios bring their own classes.
        "storageClass": {"create": false},
        "volumeSnapshotClasses": {"create": "never"},
        "controller": {
            // The simulator is on the host network only.
            "hostNetwork": true,
            "clusterId": cluster_id,
            "podDisruptionBudget": {"enabled": false},
            "extraArgs": controller_args,
            "sidecarExtraArgs": {
                // The sidecars' retries, compressed as the embedded runner's are, so
                // fault scenarios converge in seconds rather than minutes.
                "provisioner": ["--retry-interval-start=500ms", "--retry-interval-max=5s"],
                "attacher": ["--retry-interval-start=500ms", "--retry-interval-max=5s"],
                "resizer": [],
                "snapshotter": [],
            },
        },
        "node": {
            "root": format!("{}/vms/$(NODE_NAME)/root", sim_dir.display()),
            "registrar": {"mode": "driver"},
            "nfsMountHelper": helper.display().to_string(),
            "nodeSelector": {NODE_PLUGIN_LABEL: "true"},
            "extraArgs": ["--operation-timeout=60s"],
            // The simulator's state (VM roots, exports, volumes) and the NFS helper.
            "extraVolumes": [{"name": "scenario", "hostPath": {"path": work.display().to_string(), "type": "Directory"}}],
            "extraVolumeMounts": [work_mount("scenario")],
        },
    });
    // The controller runs on a node whose VM the scenario never halts, as on a
    // control-plane node: Kubernetes would move it off a dead node only after
    // its 5-minute not-ready toleration, and its node-health controller is what
    // fences the dead node in the first place.
    let halted = halted_vms(scenario);
    if !halted.is_empty() {
        v["controller"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": halted}
            ]}]
        }}});
    }
    v
}

/// The VMs a scenario's `stopVm` faults halt.
fn halted_vms(scenario: &Scenario) -> Vec<String> {
    let mut vms: Vec<String> = scenario
        .steps
        .iter()
        .filter_map(|s| match s {
            crate::model::Step::Fault(f) => f.stop_vm.clone(),
            _ => None,
        })
        .collect();
    vms.sort();
    vms.dedup();
    vms
}

async fn run_helm(helm: &Path, kubeconfig: &Path, args: &[String]) -> Result<String, Failure> {
    let out = tokio::process::Command::new(helm)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .output()
        .await
        .map_err(|e| fail(format!("running {}: {e}", helm.display())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "helm {}: {}",
            args.first().map(String::as_str).unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The local cluster's poll, with its refusal as a scenario failure.
async fn eventually<F, Fut>(what: &str, within: Duration, check: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    crate::cluster::wait_until(what, within, check).await.map_err(|e| fail(e.to_string()))
}

fn container_ready(pod: &Pod, container: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == container && c.ready))
}

/// Whether the scenario takes, restores or lists snapshots (a snapshot step, or a
/// VolumeSnapshot or snapshot data source in what it applies).
fn uses_snapshots(scenario: &Scenario) -> bool {
    let mentions = |v: &Value| v.to_string().contains("VolumeSnapshot");
    scenario.guest.iter().any(mentions)
        || scenario.steps.iter().any(|s| match s {
            crate::model::Step::Snapshot(_) => true,
            crate::model::Step::Apply(objects) => objects.iter().any(mentions),
            _ => false,
        })
}

/// Registered with the kubelet: the node's CSINode lists the driver.
async fn registered(guest: &kube::Client, node: &str) -> bool {
    let api: Api<CSINode> = Api::all(guest.clone());
    api.get_opt(node).await.ok().flatten().is_some_and(|n| n.spec.drivers.iter().any(|d| d.name == DRIVER))
}

async fn label_nodes(guest: &kube::Client, plugin_nodes: &[String]) -> Result<(), Failure> {
    let api: Api<Node> = Api::all(guest.clone());
    let nodes = api.list(&Default::default()).await.map_err(|e| fail(format!("listing nodes: {e}")))?;
    let names: Vec<String> = nodes.items.iter().filter_map(|n| n.metadata.name.clone()).collect();
    for want in plugin_nodes {
        if !names.contains(want) {
            return Err(fail(format!(
                "the scenario runs a node plugin on VM {want}, but the cluster has no node of that name (nodes: {})",
                names.join(", ")
            )));
        }
    }
    for n in &names {
        let value = if plugin_nodes.contains(n) { json!("true") } else { Value::Null };
        api.patch(
            n,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {NODE_PLUGIN_LABEL: value}}})),
        )
        .await
        .map_err(|e| fail(format!("labelling node {n}: {e}")))?;
    }
    Ok(())
}

impl Backend for ClusterBackend {
    type Cluster = ClusterRun;

    async fn start(&self, scenario: &Scenario, work: &Path) -> Result<ClusterRun, Failure> {
        std::fs::create_dir_all(work).map_err(|e| fail(format!("{}: {e}", work.display())))?;
        let guest = simulator::client(&self.kubeconfig).await?;
        let plugin_nodes = plugin_nodes(scenario);
        label_nodes(&guest, &plugin_nodes).await?;
        let sim = Simulator::start(&self.sim_bin, scenario, work, &self.sim_listen).await?;
        let host = simulator::client(&sim.admin_kubeconfig()).await?;
        let cluster_id = format!("scenario-{}", scenario.name);
        let helper = write_nfs_helper(work, &sim.dir)?;

        let namespaces: Api<Namespace> = Api::all(guest.clone());
        match namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).map_err(|e| fail(e.to_string()))?,
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(fail(format!("creating namespace {NAMESPACE}: {e}"))),
        }
        let cloud_config =
            std::fs::read_to_string(sim.cloud_config()).map_err(|e| fail(format!("cloud-config: {e}")))?;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": CLOUD_CONFIG_SECRET, "namespace": NAMESPACE},
            "stringData": {CLOUD_CONFIG_KEY: cloud_config},
        }))
        .map_err(|e| fail(e.to_string()))?;
        let secrets: Api<Secret> = Api::namespaced(guest.clone(), NAMESPACE);
        let _ = secrets.delete(CLOUD_CONFIG_SECRET, &DeleteParams::default()).await;
        secrets.create(&PostParams::default(), &secret).await.map_err(|e| fail(format!("cloud-config Secret: {e}")))?;

        let values_file = work.join("values.json");
        std::fs::write(&values_file, values(scenario, &sim.dir, work, &helper, &cluster_id).to_string())
            .map_err(|e| fail(e.to_string()))?;
        let mut args: Vec<String> = vec![
            "upgrade".into(),
            "--install".into(),
            RELEASE.into(),
            self.chart.display().to_string(),
            "--namespace".into(),
            NAMESPACE.into(),
        ];
        for v in self.values.iter().chain(std::iter::once(&values_file)) {
            args.push("--values".into());
            args.push(v.display().to_string());
        }
        run_helm(&self.helm, &self.kubeconfig, &args).await?;

        let env = Arc::new(Env {
            guest: guest.clone(),
            host,
            host_namespace: "default".into(),
            // The real sidecars and kubelet call the driver here: the runner has no
            // CSI connection of its own (these lazy channels are never dialled).
            csi: Csi::new(&work.join("no-csi-here.sock")),
            nodes: BTreeMap::new(),
            kubelet_root: PathBuf::from("/var/lib/kubelet"),
            kubelet: Default::default(),
            checksums: Default::default(),
            started: Instant::now(),
            timeline: Default::default(),
            in_flight: Default::default(),
            double_attached: Mutex::new(Vec::new()),
            plugged_while_down: Mutex::new(Vec::new()),
            guest_changes: None,
        });
        let run = ClusterRun {
            work: work.to_path_buf(),
            sim,
            env,
            stop: CancellationToken::new(),
            local: self.local.clone(),
            driver_bin: self.driver_bin.clone(),
            helm: self.helm.clone(),
            kubeconfig: self.kubeconfig.clone(),
            cluster_id,
            plugin_nodes,
            halted: Default::default(),
            sim_listen: self.sim_listen.clone(),
            forwarding: None,
            forwarders: CancellationToken::new(),
        };

        let g = guest;
        let nodes = run.plugin_nodes.clone();
        // The driver advertises snapshots only where the host can take them (its
        // version and the cloud-config's RBAC); elsewhere the real csi-snapshotter
        // exits at start ("does not support ControllerCreateSnapshot") and the
        // kubelet restarts it in a loop, as it would in such a deployment. A
        // scenario that takes no snapshots does not wait for it.
        let not_waited: &[&str] = if uses_snapshots(scenario) { &[] } else { &["csi-snapshotter"] };
        let local_state = run.local.as_ref().map(|l| l.state_dir.clone());
        let ready = eventually(
            "the driver (controller and node plugins ready, registered with each kubelet)",
            Duration::from_secs(120),
            || {
                let (g, nodes) = (g.clone(), nodes.clone());
                async move {
                    let controllers = driver_pods(&g, "controller").await;
                    if !controllers.iter().any(|p| ready_except(p, not_waited)) {
                        return Some("controller pod not ready".into());
                    }
                    let node_pods = driver_pods(&g, "node").await;
                    for n in &nodes {
                        if !pod_on(&node_pods, n).is_some_and(all_ready) {
                            return Some(format!("node plugin on {n} not ready"));
                        }
                        if !registered(&g, n).await {
                            return Some(format!("node plugin on {n} not registered with the kubelet"));
                        }
                    }
                    None
                }
            },
        )
        .await;
        if let Err(mut e) = ready {
            // Why, said once the wait is over (CI output is often all there is).
            e.0.push_str(
                &pod_diagnosis::driver_not_ready(&run.env.guest, &run.plugin_nodes, not_waited, local_state.as_deref())
                    .await,
            );
            // What the scenario installed goes (and the driver's logs are saved):
            // a release left behind would turn the next scenario's install into
            // an upgrade of this one.
            run.shutdown().await;
            return Err(e);
        }
        Ok(run)
    }
}

/// `sh -c` in the pod's `app` container; stdout, or the failure with stderr.
async fn exec(guest: &kube::Client, ns: &str, pod: &str, script: &str) -> Result<String, Failure> {
    let api: Api<Pod> = Api::namespaced(guest.clone(), ns);
    let params = AttachParams::default().container("app").stdin(false).stdout(true).stderr(true);
    let mut p =
        api.exec(pod, vec!["sh", "-c", script], &params).await.map_err(|e| fail(format!("exec in pod {pod}: {e}")))?;
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = p.stdout().ok_or_else(|| fail("exec: no stdout"))?;
    let mut stderr = p.stderr().ok_or_else(|| fail("exec: no stderr"))?;
    let status = p.take_status();
    let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
    a.map_err(|e| fail(format!("exec stdout: {e}")))?;
    b.map_err(|e| fail(format!("exec stderr: {e}")))?;
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let _ = p.join().await;
    match status {
        Some(s) if s.status.as_deref() == Some("Success") => Ok(out),
        Some(s) => Err(fail(format!("in pod {pod}: {} {}", s.message.unwrap_or_default(), err.trim()))),
        None => Err(fail(format!("in pod {pod}: no exit status ({})", err.trim()))),
    }
}

/// dd block size for a range: the largest power of two (≤ 1 MiB) dividing both ends.
fn block_size(offset: u64, len: u64) -> u64 {
    let tz = (offset | len).trailing_zeros().min(20);
    1u64 << tz
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Per-method sums of the driver's RPC latency histogram: (method, count, seconds).
fn rpc_totals(metrics: &str) -> Vec<(String, u64, f64)> {
    let mut count: BTreeMap<String, u64> = BTreeMap::new();
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("harvester_csi_csi_operation_duration_seconds_") else { continue };
        let Some(m) = rest.split("method=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let v = line.rsplit(' ').next().unwrap_or("0");
        if rest.starts_with("count") {
            count.insert(m.into(), v.parse().unwrap_or(0));
        } else if rest.starts_with("sum") {
            sum.insert(m.into(), v.parse().unwrap_or(0.0));
        }
    }
    count
        .into_iter()
        .map(|(m, c)| {
            let s = sum.get(&m).copied().unwrap_or(0.0);
            (m, c, s)
        })
        .collect()
}

/// The driver's call counts by method and gRPC code: (method, code, count).
fn rpc_codes(metrics: &str) -> Vec<(String, String, u64)> {
    let label = |line: &str, name: &str| {
        line.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_string)
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("harvester_csi_csi_operations_total{"))
        .filter_map(|l| {
            let count = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((label(l, "method")?, label(l, "code")?, count))
        })
        .collect()
}

fn phase_of(method: &str) -> &'static str {
    match method {
        "CreateVolume" => "provision",
        "DeleteVolume" => "delete",
        "ControllerPublishVolume" => "attach",
        "ControllerUnpublishVolume" => "detach",
        "NodeStageVolume" => "stage",
        "NodeUnstageVolume" => "unstage",
        "NodePublishVolume" => "publish",
        "NodeUnpublishVolume" => "unpublish",
        "ControllerExpandVolume" | "NodeExpandVolume" => "expand",
        "CreateSnapshot" | "DeleteSnapshot" => "snapshot",
        _ => "other",
    }
}

impl ClusterRun {
    fn guest(&self) -> &kube::Client {
        &self.env.guest
    }

    /// The local cluster, for what needs its nodes' processes and namespaces.
    fn local_cluster(&self, what: &str) -> Result<&crate::cluster::Spec, Failure> {
        self.local.as_ref().ok_or_else(|| {
            fail(format!(
                "{what} needs the local cluster (its nodes' kubelets and namespaces): not available with --kubeconfig"
            ))
        })
    }

    async fn node_address(&self, node: &str) -> Result<String, Failure> {
        let n =
            Api::<Node>::all(self.guest().clone()).get(node).await.map_err(|e| fail(format!("node {node}: {e}")))?;
        n.status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .ok_or_else(|| fail(format!("node {node} has no InternalIP")))
    }

    async fn metrics(&self, node: &str, port: u16) -> Result<String, Failure> {
        use tokio::io::AsyncWriteExt;
        let addr = self.node_address(node).await?;
        let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((addr.as_str(), port)))
            .await
            .map_err(|_| fail(format!("metrics of {node}:{port}: timeout")))?
            .map_err(|e| fail(format!("metrics of {node}:{port}: {e}")))?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
            .await
            .map_err(|_| fail("metrics: timeout"))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(body)
    }

    /// The driver container of the controller, or of the node plugin on `vm`.
    async fn driver_pod(&self, what: &str) -> Result<Pod, Failure> {
        let (component, node) = match what {
            "controller" => ("controller", None),
            other => match other.strip_prefix("node:") {
                Some(vm) => ("node", Some(vm)),
                None => {
                    return Err(fail(format!("killAndRestart: {other:?} is not controller, node:<vm> or simulator")))
                }
            },
        };
        driver_pods(self.guest(), component)
            .await
            .into_iter()
            .find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && node.is_none_or(|n| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n))
            })
            .ok_or_else(|| fail(format!("no {what} pod")))
    }

    /// SIGKILL of the driver container's process, found through the node's containerd.
    async fn kill_container(&self, pod: &Pod) -> Result<(), Failure> {
        let status = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == DRIVER_CONTAINER))
            .ok_or_else(|| fail("driver container has no status"))?;
        let id = status
            .container_id
            .as_deref()
            .and_then(|i| i.strip_prefix("containerd://"))
            .ok_or_else(|| fail("driver container has no containerd id"))?;
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let Some(spec) = &self.local else {
            // An existing cluster: its containerd is out of reach; the nearest thing
            // is an immediate pod deletion (the controller makes a new pod).
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.guest().clone(), NAMESPACE);
            api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
                .await
                .map_err(|e| fail(format!("deleting {name}: {e}")))?;
            return Ok(());
        };
        let ctr = spec.tools.containerd.join("ctr").display().to_string();
        let sock = crate::cluster::node::containerd_socket(&node).display().to_string();
        let tasks = crate::cluster::run(&ctr, &["--address", &sock, "--namespace", "k8s.io", "tasks", "ls"])
            .await
            .map_err(|e| fail(e.to_string()))?;
        let pid: u32 = tasks
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next().and_then(|p| p.parse().ok())).flatten()
            })
            .ok_or_else(|| fail(format!("no running task {id} in {node}'s containerd")))?;
        crate::cluster::process::kill_now(pid);
        Ok(())
    }

    /// Deletes what the scenario made in the guest cluster and uninstalls the chart,
    /// forcing what does not go by itself; returns what had to be forced.
    async fn clean_guest(&self) -> Vec<String> {
        let g = self.guest().clone();
        let mut forced = Vec::new();
        let ns = "default";
        let pods: Api<Pod> = Api::namespaced(g.clone(), ns);
        let _ = pods.delete_collection(&DeleteParams::default(), &Default::default()).await;
        if eventually("pods to go", Duration::from_secs(60), || {
            let pods = pods.clone();
            async move {
                let l = pods.list(&Default::default()).await.ok()?;
                (!l.items.is_empty()).then(|| format!("{} left", l.items.len()))
            }
        })
        .await
        .is_err()
        {
            forced.push("pods".to_string());
            let _ = pods
                .delete_collection(
                    &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
                    &Default::default(),
                )
                .await;
        }
        let snaps = crate::components::snapshotter::snapshots(&self.env, ns);
        let _ = snaps.delete_collection(&DeleteParams::default(), &Default::default()).await;
        let _ = eventually("snapshots to go", Duration::from_secs(30), || {
            let s = snaps.clone();
            async move {
                let l = s.list(&Default::default()).await.ok()?;
                (!l.items.is_empty()).then(|| format!("{} left", l.items.len()))
            }
        })
        .await;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(g.clone(), ns);
        let _ = pvcs.delete_collection(&DeleteParams::default(), &Default::default()).await;
        let pvs: Api<PersistentVolume> = Api::all(g.clone());
        let ours =
            |pv: &PersistentVolume| pv.spec.as_ref().and_then(|s| s.csi.as_ref()).is_some_and(|c| c.driver == DRIVER);
        if eventually("volumes to go", Duration::from_secs(60), || {
            let (pvs, pvcs) = (pvs.clone(), pvcs.clone());
            async move {
                let left = pvs.list(&Default::default()).await.ok()?.items.into_iter().filter(ours).count()
                    + pvcs.list(&Default::default()).await.ok()?.items.len();
                (left > 0).then(|| format!("{left} left"))
            }
        })
        .await
        .is_err()
        {
            forced.push("volumes".to_string());
        }
        // Whatever is left is stuck behind a finalizer the driver can no longer lift.
        let unfinalize = json!({"metadata": {"finalizers": null}});
        for p in pvcs.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
            let _ = pvcs
                .patch(p.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&unfinalize))
                .await;
        }
        for p in pvs.list(&Default::default()).await.map(|l| l.items).unwrap_or_default().into_iter().filter(ours) {
            let name = p.metadata.name.clone().unwrap_or_default();
            let _ = pvs.patch(&name, &PatchParams::default(), &Patch::Merge(&unfinalize)).await;
            let _ = pvs.delete(&name, &DeleteParams::default()).await;
        }
        for s in snaps.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
            let _ = snaps
                .patch(s.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&unfinalize))
                .await;
        }
        let content_ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
            "volumesnapshotcontents",
        );
        let contents: Api<DynamicObject> = Api::all_with(g.clone(), &content_ar);
        for c in contents.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
            let name = c.metadata.name.clone().unwrap_or_default();
            let _ = contents.patch(&name, &PatchParams::default(), &Patch::Merge(&unfinalize)).await;
            let _ = contents.delete(&name, &DeleteParams::default()).await;
        }
        let vas: Api<VolumeAttachment> = Api::all(g.clone());
        if eventually("attachments to go", Duration::from_secs(30), || {
            let vas = vas.clone();
            async move {
                let left = vas
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter(|v| v.spec.attacher == DRIVER)
                    .count();
                (left > 0).then(|| format!("{left} left"))
            }
        })
        .await
        .is_err()
        {
            forced.push("volume attachments".to_string());
            for v in vas
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v.spec.attacher == DRIVER)
            {
                let name = v.metadata.name.clone().unwrap_or_default();
                let _ = vas.patch(&name, &PatchParams::default(), &Patch::Merge(&unfinalize)).await;
                let _ = vas.delete(&name, &DeleteParams::default()).await;
            }
        }
        let classes: Api<StorageClass> = Api::all(g.clone());
        for c in classes
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.provisioner == DRIVER)
        {
            let _ = classes.delete(c.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
        }
        let vsc_ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass"),
            "volumesnapshotclasses",
        );
        let vscs: Api<DynamicObject> = Api::all_with(g.clone(), &vsc_ar);
        for c in vscs
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.data.get("driver") == Some(&json!(DRIVER)))
        {
            let _ = vscs.delete(c.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
        }
        // Events name objects by name only: the next scenario reuses the names.
        let events: Api<Event> = Api::namespaced(g.clone(), ns);
        let _ = events.delete_collection(&DeleteParams::default(), &Default::default()).await;
        if let Err(e) = run_helm(
            &self.helm,
            &self.kubeconfig,
            &[
                "uninstall".into(),
                RELEASE.into(),
                "--namespace".into(),
                NAMESPACE.into(),
                "--wait".into(),
                "--timeout=60s".into(),
            ],
        )
        .await
        {
            forced.push(format!("helm uninstall ({})", e.0));
        }
        let gg = g.clone();
        if eventually("driver pods to go", Duration::from_secs(60), || {
            let gg = gg.clone();
            async move {
                let left = Api::<Pod>::namespaced(gg, NAMESPACE).list(&Default::default()).await.ok()?.items.len();
                (left > 0).then(|| format!("{left} left"))
            }
        })
        .await
        .is_err()
        {
            forced.push("driver pods".to_string());
            let api: Api<Pod> = Api::namespaced(g.clone(), NAMESPACE);
            let _ = api
                .delete_collection(
                    &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
                    &Default::default(),
                )
                .await;
        }
        // The next scenario's driver reports its own topology; the kubelet refuses
        // a value that differs from a label already on the node.
        let nodes: Api<Node> = Api::all(g.clone());
        for n in nodes.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
            let name = n.metadata.name.clone().unwrap_or_default();
            // An out-of-service taint the (now uninstalled) driver added and could
            // not lift: the node would refuse the next scenario's pods.
            let ours = n.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DRIVER_TAINT_MARK));
            if ours {
                let taints: Vec<_> = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t.key != OUT_OF_SERVICE)
                    .collect();
                forced.push(format!("the out-of-service taint on {name}"));
                let _ = nodes
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"metadata": {"annotations": {DRIVER_TAINT_MARK: null}}, "spec": {"taints": taints}}),
                        ),
                    )
                    .await;
            }
            let mut labels = serde_json::Map::new();
            for k in n.metadata.labels.unwrap_or_default().keys() {
                if k.starts_with("topology.kubernetes.io/")
                    || k.starts_with("topology.harvesterhci.io/")
                    || k == NODE_PLUGIN_LABEL
                {
                    labels.insert(k.clone(), Value::Null);
                }
            }
            if !labels.is_empty() {
                let _ = nodes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": labels}})))
                    .await;
            }
        }
        if let Some(spec) = &self.local {
            if let Err(e) = crate::cluster::node::wait_ready(&g, &spec.nodes, Duration::from_secs(90)).await {
                forced.push(format!("nodes not Ready again: {e}"));
            }
        }
        forced
    }

    /// Every driver and sidecar container's log, into the work directory (kept
    /// for a failed scenario), before the chart goes.
    async fn save_logs(&self) {
        let api: Api<Pod> = Api::namespaced(self.guest().clone(), NAMESPACE);
        let dir = self.work.join("logs");
        let _ = std::fs::create_dir_all(&dir);
        for p in api.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
            let name = p.metadata.name.clone().unwrap_or_default();
            for c in p.spec.map(|s| s.containers).unwrap_or_default() {
                for previous in [false, true] {
                    let params =
                        kube::api::LogParams { container: Some(c.name.clone()), previous, ..Default::default() };
                    if let Ok(text) = api.logs(&name, &params).await {
                        let suffix = if previous { ".previous" } else { "" };
                        let _ = std::fs::write(dir.join(format!("{name}-{}{suffix}.log", c.name)), text);
                    }
                }
            }
        }
    }

    /// Where the driver serves metrics: (who, node, port) of the controller and
    /// of each node plugin (host network: the node's address).
    async fn metric_sources(&self) -> Vec<(String, String, u16)> {
        let mut sources = Vec::new();
        for p in driver_pods(self.guest(), "controller").await {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(n) = p.spec.and_then(|s| s.node_name) {
                sources.push(("controller".to_string(), n, CONTROLLER_METRICS_PORT));
            }
        }
        sources.extend(
            self.plugin_nodes
                .iter()
                .filter(|n| !self.halted.contains(*n))
                .map(|n| (format!("node {n}"), n.clone(), NODE_METRICS_PORT)),
        );
        sources
    }

    /// The timeline from the driver's own RPC metrics (controller and node plugins).
    async fn collect_timeline(&self) {
        let mut phases = Vec::new();
        for (who, node, port) in self.metric_sources().await {
            let Ok(text) = self.metrics(&node, port).await else { continue };
            for (method, count, seconds) in rpc_totals(&text) {
                let name = phase_of(&method);
                if name == "other" {
                    continue;
                }
                phases.push(Phase {
                    name: name.into(),
                    subject: format!("{method} ×{count} ({who})"),
                    start_ms: 0,
                    duration_ms: (seconds * 1000.0) as u128,
                    ok: true,
                });
            }
        }
        self.env.timeline.lock().unwrap_or_else(|p| p.into_inner()).extend(phases);
    }
}

impl Cluster for ClusterRun {
    fn env(&self) -> &Arc<Env> {
        &self.env
    }

    async fn host_admin(&self, method: &str, path: &str, body: Option<Value>) -> Result<String, Failure> {
        simulator::admin(&self.env, method, path, body).await
    }

    async fn kill_and_restart(&mut self, what: &str) -> Result<(), Failure> {
        if what == "simulator" {
            return self.sim.kill_and_restart().await;
        }
        let pod = self.driver_pod(what).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let restarts = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == DRIVER_CONTAINER))
                .map_or(0, |c| c.restart_count)
        };
        let before = restarts(&pod);
        self.kill_container(&pod).await?;
        // Kubernetes restarts it: the same pod's container again (or, for an existing
        // cluster, a new pod).
        let api: Api<Pod> = Api::namespaced(self.guest().clone(), NAMESPACE);
        let this = &*self;
        eventually(&format!("the restarted {what}"), Duration::from_secs(90), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                if this.local.is_some() {
                    let p = api.get(&name).await.ok()?;
                    return (!(restarts(&p) > before && container_ready(&p, DRIVER_CONTAINER)))
                        .then(|| "not restarted yet".into());
                }
                let p = this.driver_pod(what).await.ok()?;
                (!(p.metadata.name.as_deref() != Some(&name) && container_ready(&p, DRIVER_CONTAINER)))
                    .then(|| "no new pod yet".into())
            }
        })
        .await
    }

    async fn loop_devices_of(&self, host_pv: &str) -> Result<usize, Failure> {
        self.sim.loop_devices_of(host_pv).await
    }

    async fn orphan_report(&self) -> Result<Vec<Value>, Failure> {
        self.sim.orphan_report(&self.driver_bin, &self.cluster_id).await
    }

    fn watch_double_attach(&mut self) {
        simulator::watch_double_attach(self.env.clone(), self.stop.clone());
    }

    fn adapt_pod(&self, pod: &mut Value) {
        // Scheduled onto the VM's node, not bound to it by name: a pod bound by
        // name reaches the kubelet before its claim is bound, and the kubelet's
        // pod worker then retries only after its fixed 10-15 s back-off; the
        // scheduler holds the pod until the binder is done, as for any user.
        let node = pod["spec"]["nodeName"].take();
        if let Some(spec) = pod["spec"].as_object_mut() {
            spec.remove("nodeName");
        }
        pod["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        pod["spec"]["terminationGracePeriodSeconds"] = json!(5);
        let c = &mut pod["spec"]["containers"][0];
        c["image"] = json!(BUSYBOX);
        c["imagePullPolicy"] = json!("IfNotPresent");
        // sh as PID 1 ignores SIGTERM unless it traps it.
        c["command"] = json!(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]);
    }

    async fn write_data(&self, t: &DataTarget, len: u64) -> Result<String, Failure> {
        let bs = block_size(t.offset, len);
        let path = quote(&t.path);
        let script = format!(
            "set -e; f=/tmp/hcsi-data; head -c {len} /dev/urandom > $f; sha256sum $f | cut -d' ' -f1
if [ -b {path} ]; then dd if=$f of={path} bs={bs} seek={seek} conv=notrunc,fsync 2>/dev/null
else dd if=$f of={path} bs=1048576 conv=fsync 2>/dev/null; fi
rm -f $f",
            seek = t.offset / bs
        );
        let out = exec(self.guest(), &t.namespace, &t.pod, &script)
            .await
            .map_err(|e| fail(format!("writing {}: {}", t.path, e.0)))?;
        let sum = out.trim().to_string();
        if sum.len() != 64 {
            return Err(fail(format!("writing {} in pod {}: unexpected output {out:?}", t.path, t.pod)));
        }
        Ok(sum)
    }

    async fn read_data(&self, t: &DataTarget, len: u64) -> Result<String, Failure> {
        let bs = block_size(t.offset, len);
        let path = quote(&t.path);
        let script = format!(
            "set -e; if [ -b {path} ]; then dd if={path} bs={bs} skip={skip} count={count} 2>/dev/null | sha256sum | cut -d' ' -f1
else sha256sum {path} | cut -d' ' -f1; fi",
            skip = t.offset / bs,
            count = len / bs
        );
        let out = exec(self.guest(), &t.namespace, &t.pod, &script)
            .await
            .map_err(|e| fail(format!("reading {}: {}", t.path, e.0)))?;
        Ok(out.trim().to_string())
    }

    fn host_volume_file(&self, host_pv: &str) -> Result<PathBuf, Failure> {
        self.sim.volume_file(host_pv)
    }

    async fn stop_vm(&mut self, vm: &str) -> Result<(), Failure> {
        let spec = self.local_cluster("stopVm")?.clone();
        simulator::vm_power(&self.env, vm, "stop").await?;
        crate::cluster::node::halt(&spec, vm).await.map_err(|e| fail(format!("halting node {vm}: {e}")))?;
        self.halted.insert(vm.to_string());
        Ok(())
    }

    async fn start_vm(&mut self, vm: &str) -> Result<(), Failure> {
        simulator::vm_power(&self.env, vm, "start").await?;
        if self.halted.remove(vm) {
            let spec = self.local_cluster("startVm")?.clone();
            crate::cluster::node::resume(&spec, vm).await.map_err(|e| fail(format!("booting node {vm}: {e}")))?;
        }
        Ok(())
    }

    /// The simulator under another address from every node: `localhost` (or
    /// 127.0.0.1) inside each node's network namespace forwards to it, which
    /// host-network driver pods use; the cloud-config Secret is rewritten, and
    /// every driver pod's copy is refreshed before this returns, so the next
    /// (re)start of a driver container reads the new address, as a restart after
    /// an operator's change would.
    async fn change_host_address(&mut self, address: &str) -> Result<(), Failure> {
        let spec = self.local_cluster("changeHostAddress")?.clone();
        let ip: std::net::IpAddr = match address {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            other => match other.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_loopback() => ip,
                _ => {
                    return Err(fail(format!(
                        "changeHostAddress {other:?}: the cluster backend can give the simulator a loopback address in every node (localhost, 127.0.0.1), nothing else"
                    )))
                }
            },
        };
        let sim: std::net::SocketAddr =
            self.sim_listen.parse().map_err(|e| fail(format!("simulator address {}: {e}", self.sim_listen)))?;
        if self.forwarding != Some(ip) {
            for node in &spec.nodes {
                crate::cluster::forward::start(
                    &crate::cluster::node::netns_path(node),
                    std::net::SocketAddr::new(ip, sim.port()),
                    sim,
                    self.forwarders.clone(),
                )
                .map_err(|e| fail(format!("the simulator at {address} in node {node}: {e}")))?;
            }
            self.forwarding = Some(ip);
        }

        let secrets: Api<Secret> = Api::namespaced(self.guest().clone(), NAMESPACE);
        let mut kubeconfig = kube::config::Kubeconfig::read_from(self.sim.cloud_config())
            .map_err(|e| fail(format!("cloud-config: {e}")))?;
        for cluster in kubeconfig.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
            cluster.server = Some(format!("https://{address}:{}", sim.port()));
        }
        let text = serde_json::to_string_pretty(&kubeconfig).map_err(|e| fail(e.to_string()))?;
        secrets
            .patch(
                CLOUD_CONFIG_SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {CLOUD_CONFIG_KEY: text}})),
            )
            .await
            .map_err(|e| fail(format!("cloud-config Secret: {e}")))?;

        // The kubelet refreshes a Secret volume when it syncs the pod: on its
        // period (a minute), or at once on a change to the pod.
        let pods: Vec<Pod> = [driver_pods(self.guest(), "controller").await, driver_pods(self.guest(), "node").await]
            .concat()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let api: Api<Pod> = Api::namespaced(self.guest().clone(), NAMESPACE);
        for p in &pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {HOST_ADDRESS_ANNOTATION: address}}})),
            )
            .await
            .map_err(|e| fail(format!("annotating {name}: {e}")))?;
        }
        eventually("every driver pod's cloud-config to name the new address", Duration::from_secs(60), || {
            let (spec, pods, text) = (&spec, &pods, &text);
            async move {
                for p in pods {
                    let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    let file = std::path::PathBuf::from(format!(
                        "/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~secret/cloud-config/{CLOUD_CONFIG_KEY}"
                    ));
                    match crate::cluster::node::read_in_node(spec, &node, &file) {
                        Ok(t) if t == *text => {}
                        Ok(_) => {
                            return Some(format!("{} still has the old one", p.metadata.name.as_deref().unwrap_or("")))
                        }
                        Err(e) => return Some(e.to_string()),
                    }
                }
                None
            }
        })
        .await
    }

    async fn filesystem_size(&self, t: &DataTarget) -> Result<u64, Failure> {
        let script = format!("stat -f -c '%S %b' {}", quote(&t.path));
        let out = exec(self.guest(), &t.namespace, &t.pod, &script)
            .await
            .map_err(|e| fail(format!("statfs of {}: {}", t.path, e.0)))?;
        let mut nums = out.split_whitespace().map(str::parse::<u64>);
        match (nums.next(), nums.next()) {
            (Some(Ok(block_size)), Some(Ok(blocks))) => Ok(block_size.saturating_mul(blocks)),
            _ => Err(fail(format!("statfs of {} in pod {}: unexpected output {out:?}", t.path, t.pod))),
        }
    }

    /// From the driver's own call counts by gRPC code (controller and every node
    /// plugin): the real sidecars and kubelet made the calls. Counts start with
    /// each driver process, so a killed one's failures are not counted.
    async fn failed_calls(&self, phase: &str) -> Result<Vec<String>, Failure> {
        let mut failed = Vec::new();
        for (who, node, port) in self.metric_sources().await {
            let text = self.metrics(&node, port).await.map_err(|e| fail(format!("{who}: {}", e.0)))?;
            for (method, code, count) in rpc_codes(&text) {
                if code != "Ok" && count > 0 && phase_of(&method) == phase {
                    failed.push(format!("{method} {code} ×{count} ({who})"));
                }
            }
        }
        Ok(failed)
    }

    async fn in_flight(&self, phase: &str, node: &str) -> Result<bool, Failure> {
        let method = match phase {
            "stage" => "NodeStageVolume",
            other => return Err(fail(format!("inFlight: phase {other:?} is not watched"))),
        };
        let text = self.metrics(node, NODE_METRICS_PORT).await?;
        Ok(text.lines().any(|l| {
            l.starts_with("harvester_csi_csi_method_operations_in_flight{")
                && l.contains(&format!("method=\"{method}\""))
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
        }))
    }

    async fn shutdown(mut self) {
        self.stop.cancel();
        self.collect_timeline().await;
        self.save_logs().await;
        // A VM the scenario left halted boots again: the next scenario needs its node.
        let mut forced = Vec::new();
        for vm in self.halted.clone() {
            if let Err(e) = self.start_vm(&vm).await {
                forced.push(format!("booting {vm} again failed: {}", e.0));
            }
        }
        forced.extend(self.clean_guest().await);
        if !forced.is_empty() {
            tracing::warn!(forced = ?forced, "cleanup had to force");
            let _ = std::fs::write(self.work.join("cleanup-forced.txt"), forced.join("\n"));
        }
        self.forwarders.cancel();
        self.sim.stop(&self.work).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_divide_offset_and_length() {
        assert_eq!(block_size(0, 1 << 20), 1 << 20);
        assert_eq!(block_size(33554432, 2 << 20), 1 << 20);
        assert_eq!(block_size(4096, 1 << 20), 4096);
        assert_eq!(block_size(0, 1000), 8);
    }

    #[rstest::rstest]
    #[case("snapshot-restore-clone", true)]
    #[case("restore-into-larger-claim", true)]
    #[case("rwx-shared-export", false)]
    #[case("skew-7249-rwx-after-rbac-fix", false)]
    fn scenarios_that_take_snapshots_wait_for_the_snapshotter(#[case] name: &str, #[case] uses: bool) {
        let path = format!("{}/cases/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("the case file");
        let scenario = crate::model::load(&text, &path).expect("a valid case");
        assert_eq!(uses_snapshots(&scenario), uses);
    }

    #[test]
    fn rpc_codes_read_the_drivers_counts() {
        let text = "# TYPE harvester_csi_csi_operations counter\n\
                    harvester_csi_csi_operations_total{method=\"ControllerPublishVolume\",code=\"Ok\"} 3\n\
                    harvester_csi_csi_operations_total{method=\"ControllerPublishVolume\",code=\"Aborted\"} 1\n\
                    harvester_csi_csi_operation_duration_seconds_count{method=\"NodeStageVolume\"} 3\n";
        assert_eq!(
            rpc_codes(text),
            vec![
                ("ControllerPublishVolume".to_string(), "Ok".to_string(), 3),
                ("ControllerPublishVolume".to_string(), "Aborted".to_string(), 1)
            ]
        );
    }

    #[test]
    fn rpc_totals_read_the_drivers_histogram() {
        let text = "harvester_csi_csi_operation_duration_seconds_sum{method=\"NodeStageVolume\"} 1.5\n\
                    harvester_csi_csi_operation_duration_seconds_count{method=\"NodeStageVolume\"} 3\n\
                    harvester_csi_csi_operation_duration_seconds_bucket{method=\"NodeStageVolume\",le=\"0.002\"} 0\n";
        assert_eq!(rpc_totals(text), vec![("NodeStageVolume".to_string(), 3, 1.5)]);
    }
}
