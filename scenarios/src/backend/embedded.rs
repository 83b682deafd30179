//! The embedded backend: `harvester-sim` as a process, a guest API in process,
//! the real driver as processes (one controller, one node plugin per VM with
//! its VM root), and the runner playing the Kubernetes components.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harvester_simulator::guest::GuestCluster;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{Backend, Cluster};
use crate::env::Env;
use crate::model::Scenario;
use crate::{components, csi::Csi, Failure};

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
}

pub struct Embedded {
    pub sim_bin: PathBuf,
    pub driver_bin: PathBuf,
}

struct Proc {
    args: Vec<String>,
    log: PathBuf,
    child: Child,
}

async fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Child, Failure> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| fail(format!("{}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| fail(e.to_string()))?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("starting {}: {e}", bin.display())))
}

async fn client(path: &Path) -> Result<kube::Client, Failure> {
    let kc = Kubeconfig::read_from(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| fail(e.to_string()))
}

/// Waits until `ok`, failing early (with the last line it logged) if the process exits.
async fn wait_for(
    what: &str,
    within: Duration,
    child: &mut Child,
    log: &Path,
    mut ok: impl FnMut() -> bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + within;
    while !ok() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("{what} exited ({status}) before it came up: {}", last_line(log))));
        }
        if Instant::now() > deadline {
            return Err(fail(format!("{what} did not come up within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The last line a process logged (the driver and simulator write plain text to files).
fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing logged)").to_string()
}

fn free_port() -> Result<u16, Failure> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail(e.to_string()))?;
    Ok(l.local_addr().map_err(|e| fail(e.to_string()))?.port())
}

pub struct EmbeddedCluster {
    work: PathBuf,
    sim_bin: PathBuf,
    driver_bin: PathBuf,
    sim: Proc,
    controller: Proc,
    nodes: BTreeMap<String, Proc>,
    guest: Option<GuestCluster>,
    env: Arc<Env>,
    stop: CancellationToken,
}

impl EmbeddedCluster {
    fn sim_dir(&self) -> PathBuf {
        self.work.join("host")
    }

    /// (role, pid) of the driver processes, for resource measurements.
    pub fn driver_pids(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> =
            self.controller.child.id().map(|p| ("controller".to_string(), p)).into_iter().collect();
        out.extend(self.nodes.iter().filter_map(|(vm, p)| p.child.id().map(|id| (format!("node:{vm}"), id))));
        out
    }
}

/// The NFS seam for this machine (no kernel NFS client): bind-mount the
/// export directory the simulator's share-manager keeps for the volume.
fn write_nfs_helper(work: &Path, sim_dir: &Path) -> Result<PathBuf, Failure> {
    let path = work.join("nfs-mount-helper");
    let script = format!(
        "#!/bin/sh\n# embedded runs: <server>:<export> <target> <options> -> bind mount of the simulator's export\nset -e\nexport_path=\"${{1#*:}}\"\nmount --bind \"{}/exports/${{export_path#/}}\" \"$2\"\n",
        sim_dir.display()
    );
    std::fs::write(&path, script).map_err(|e| fail(e.to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(|e| fail(e.to_string()))?;
    Ok(path)
}

impl Backend for Embedded {
    type Cluster = EmbeddedCluster;

    async fn start(&self, scenario: &Scenario, work: &Path) -> Result<EmbeddedCluster, Failure> {
        std::fs::create_dir_all(work).map_err(|e| fail(format!("{}: {e}", work.display())))?;
        let sim_dir = work.join("host");
        let mut world = scenario.world.simulator_world();
        world.entry("timing").or_insert(json!({"provisionMs": 100, "hotplugMs": 400, "unplugMs": 200, "snapshotMs": 200, "expandMs": 100, "exportMs": 200}));
        let world_path = work.join("world.yaml");
        std::fs::write(&world_path, serde_json::to_string_pretty(&Value::Object(world)).unwrap_or_default())
            .map_err(|e| fail(e.to_string()))?;
        let port = free_port()?;
        let sim_args: Vec<String> = vec![
            "serve".into(),
            "--state-dir".into(),
            sim_dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--profile".into(),
            scenario.world.profile.clone(),
            "--world".into(),
            world_path.display().to_string(),
        ];
        let sim_log = work.join("simulator.log");
        let mut sim_child = spawn(&self.sim_bin, &sim_args, &sim_log).await?;
        let cloud_config = sim_dir.join("cloud-config");
        let admin = sim_dir.join("admin.kubeconfig");
        wait_for("the simulator", Duration::from_secs(20), &mut sim_child, &sim_log, || {
            sim_dir.join("endpoint").exists() && admin.exists()
        })
        .await?;
        let host = client(&admin).await?;
        let guest = GuestCluster::start(&work.join("guest")).await.map_err(|e| fail(format!("guest API: {e}")))?;
        let guest_client = client(&guest.kubeconfig).await?;

        let mut controller_args: Vec<String> = vec![
            "--mode=controller".into(),
            format!("--endpoint=unix://{}", work.join("controller.sock").display()),
            format!("--kubeconfig={}", cloud_config.display()),
            format!("--cluster-id=scenario-{}", scenario.name),
            "--operation-timeout=60s".into(),
        ];
        if scenario.world.no_guest_access {
            controller_args.push("--no-guest-access".into());
        } else {
            controller_args.push(format!("--guest-kubeconfig={}", guest.kubeconfig.display()));
        }
        controller_args.extend(scenario.world.controller_args.iter().cloned());
        let controller_log = work.join("controller.log");
        let mut controller = Proc {
            child: spawn(&self.driver_bin, &controller_args, &controller_log).await?,
            args: controller_args,
            log: controller_log,
        };

        let vms: Vec<String> = match &scenario.world.node_plugins {
            Some(list) => list.clone(),
            None if !scenario.world.vms.is_empty() => scenario.world.vms.iter().map(|v| v.name().to_string()).collect(),
            None => vec!["guest-1".into(), "guest-2".into(), "guest-3".into()],
        };
        let helper = write_nfs_helper(work, &sim_dir)?;
        let mut nodes = BTreeMap::new();
        for vm in &vms {
            let args: Vec<String> = vec![
                "--mode=node".into(),
                format!("--endpoint=unix://{}", work.join(format!("node-{vm}.sock")).display()),
                format!("--kubeconfig={}", cloud_config.display()),
                format!("--root={}", sim_dir.join("vms").join(vm).join("root").display()),
                format!("--kubelet-root={}", work.join("kubelet").join(vm).display()),
                "--no-guest-access".into(),
                format!("--nfs-mount-helper={}", helper.display()),
                "--operation-timeout=60s".into(),
            ];
            let log = work.join(format!("node-{vm}.log"));
            nodes.insert(vm.clone(), Proc { child: spawn(&self.driver_bin, &args, &log).await?, args, log });
        }
        let controller_sock = work.join("controller.sock");
        let c = &mut controller;
        wait_for("the driver controller", Duration::from_secs(30), &mut c.child, &c.log, || controller_sock.exists())
            .await?;
        for (vm, p) in nodes.iter_mut() {
            let sock = work.join(format!("node-{vm}.sock"));
            wait_for(&format!("the node plugin on {vm}"), Duration::from_secs(30), &mut p.child, &p.log, || {
                sock.exists()
            })
            .await?;
        }
        let mut node_clients = BTreeMap::new();
        for vm in &vms {
            node_clients.insert(vm.clone(), crate::csi::node_client(&work.join(format!("node-{vm}.sock"))));
        }
        let env = Arc::new(Env {
            guest: guest_client,
            host,
            host_namespace: "default".into(),
            csi: Csi::new(&controller_sock),
            nodes: node_clients,
            kubelet_root: work.join("kubelet"),
            kubelet: Default::default(),
            checksums: Default::default(),
            started: Instant::now(),
            timeline: Default::default(),
            in_flight: Default::default(),
            double_attached: Mutex::new(Vec::new()),
            plugged_while_down: Mutex::new(Vec::new()),
        });
        let driver_object: k8s_openapi::api::storage::v1::CSIDriver =
            serde_json::from_value(crate::deployment::csi_driver()).map_err(|e| fail(e.to_string()))?;
        Api::<k8s_openapi::api::storage::v1::CSIDriver>::all(env.guest.clone())
            .create(&PostParams::default(), &driver_object)
            .await
            .map_err(|e| fail(format!("creating the CSIDriver: {e}")))?;
        for vm in env.nodes.keys() {
            components::registrar::register(&env, vm).await.map_err(fail)?;
        }
        let stop = CancellationToken::new();
        tokio::spawn(components::provisioner::run(env.clone(), stop.clone()));
        tokio::spawn(components::attacher::run(env.clone(), stop.clone()));
        tokio::spawn(components::kubelet::run(env.clone(), stop.clone()));
        tokio::spawn(components::resizer::run(env.clone(), stop.clone()));
        tokio::spawn(components::snapshotter::run(env.clone(), stop.clone()));
        tokio::spawn(components::node_lifecycle::run(env.clone(), stop.clone()));
        Ok(EmbeddedCluster {
            work: work.to_path_buf(),
            sim_bin: self.sim_bin.clone(),
            driver_bin: self.driver_bin.clone(),
            sim: Proc { child: sim_child, args: sim_args, log: sim_log },
            controller,
            nodes,
            guest: Some(guest),
            env,
            stop,
        })
    }
}

async fn kill(p: &mut Proc) {
    let _ = p.child.start_kill();
    let _ = p.child.wait().await;
}

impl Cluster for EmbeddedCluster {
    fn env(&self) -> &Arc<Env> {
        &self.env
    }

    async fn host_admin(&self, method: &str, path: &str, body: Option<Value>) -> Result<String, Failure> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("/sim/{path}"))
            .header("content-type", "application/json")
            .body(body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default())
            .map_err(|e| fail(e.to_string()))?;
        self.env.host.request_text(req).await.map_err(|e| fail(format!("simulator {method} /sim/{path}: {e}")))
    }

    async fn kill_and_restart(&mut self, what: &str) -> Result<(), Failure> {
        let sim_endpoint = self.sim_dir().join("endpoint");
        let (bin, proc_) = match what {
            "controller" => (self.driver_bin.clone(), &mut self.controller),
            "simulator" => (self.sim_bin.clone(), &mut self.sim),
            other => match other.strip_prefix("node:") {
                Some(vm) => (
                    self.driver_bin.clone(),
                    self.nodes.get_mut(vm).ok_or_else(|| fail(format!("no node plugin on {vm}")))?,
                ),
                None => {
                    return Err(fail(format!("killAndRestart: {other:?} is not controller, node:<vm> or simulator")))
                }
            },
        };
        kill(proc_).await;
        if let Some(vm) = what.strip_prefix("node:") {
            // Its registration socket is gone: the kubelet takes the driver off the node.
            components::registrar::deregister(&self.env, vm).await.map_err(fail)?;
        }
        let sock = proc_.args.iter().find_map(|a| a.strip_prefix("--endpoint=unix://")).map(PathBuf::from);
        if let Some(s) = &sock {
            let _ = std::fs::remove_file(s);
        }
        if what == "simulator" {
            let _ = std::fs::remove_file(&sim_endpoint);
        }
        proc_.child = spawn(&bin, &proc_.args, &proc_.log).await?;
        match (what, sock) {
            ("simulator", _) => {
                wait_for("the restarted simulator", Duration::from_secs(30), &mut proc_.child, &proc_.log, || {
                    sim_endpoint.exists()
                })
                .await
            }
            (_, Some(s)) => {
                let label = format!("the restarted {what}");
                wait_for(&label, Duration::from_secs(30), &mut proc_.child, &proc_.log, || s.exists()).await?;
                if let Some(vm) = what.strip_prefix("node:") {
                    // The registrar sees the new socket: the kubelet registers the plugin again.
                    // A refusal is the scenario's to observe (attaches then fail), not a step error.
                    if let Err(e) = components::registrar::register(&self.env, vm).await {
                        tracing::warn!(node = %vm, error = %e, "node plugin registration refused");
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn change_host_address(&mut self, address: &str) -> Result<(), Failure> {
        let current = self
            .controller
            .args
            .iter()
            .find_map(|a| a.strip_prefix("--kubeconfig="))
            .map(PathBuf::from)
            .ok_or_else(|| fail("the controller has no --kubeconfig"))?;
        let mut kubeconfig =
            Kubeconfig::read_from(&current).map_err(|e| fail(format!("{}: {e}", current.display())))?;
        for cluster in kubeconfig.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
            let server = cluster.server.clone().unwrap_or_default();
            let port = server.rsplit_once(':').map(|(_, p)| p.trim_end_matches('/')).unwrap_or("443");
            cluster.server = Some(format!("https://{address}:{port}"));
        }
        let path = self.work.join(format!("cloud-config-{address}"));
        let text = serde_json::to_string_pretty(&kubeconfig).map_err(|e| fail(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let flag = format!("--kubeconfig={}", path.display());
        for p in std::iter::once(&mut self.controller).chain(self.nodes.values_mut()) {
            for a in p.args.iter_mut().filter(|a| a.starts_with("--kubeconfig=")) {
                a.clone_from(&flag);
            }
        }
        Ok(())
    }

    fn host_volume_file(&self, host_pv: &str) -> Result<PathBuf, Failure> {
        let file = self.sim_dir().join("volumes").join(format!("{host_pv}.img"));
        if file.is_file() {
            Ok(file)
        } else {
            Err(fail(format!("host volume {host_pv} has no backing file at {}", file.display())))
        }
    }

    async fn loop_devices_of(&self, host_pv: &str) -> Result<usize, Failure> {
        let file = self.sim_dir().join("volumes").join(format!("{host_pv}.img"));
        let out =
            Command::new("losetup").arg("-j").arg(&file).output().await.map_err(|e| fail(format!("losetup: {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count())
    }

    async fn orphan_report(&self) -> Result<Vec<Value>, Failure> {
        let cluster_id =
            self.controller.args.iter().find_map(|a| a.strip_prefix("--cluster-id=")).unwrap_or_default().to_string();
        let out = Command::new(&self.driver_bin)
            .arg(format!("--kubeconfig={}", self.sim_dir().join("cloud-config").display()))
            .arg(format!("--cluster-id={cluster_id}"))
            .arg("--no-guest-access")
            .args(["orphans", "--json"])
            .output()
            .await
            .map_err(|e| fail(format!("running the orphan report: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!("orphan report failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("orphan report output: {e}")))
    }

    fn watch_double_attach(&mut self) {
        let env = self.env.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let ar = kube::api::ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
                "virtualmachineinstances",
            );
            let vmis: Api<kube::api::DynamicObject> = Api::namespaced_with(env.host.clone(), &env.host_namespace, &ar);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                let Ok(list) = vmis.list(&Default::default()).await else { continue };
                let mut seen: BTreeMap<String, String> = BTreeMap::new();
                for vmi in &list.items {
                    let vm = vmi.metadata.name.clone().unwrap_or_default();
                    for s in vmi.data.pointer("/status/volumeStatus").and_then(Value::as_array).into_iter().flatten() {
                        // A device present in the guest: attached.
                        if s.get("hotplugVolume").is_none()
                            || s.pointer("/target").and_then(Value::as_str).unwrap_or("").is_empty()
                        {
                            continue;
                        }
                        let claim = s
                            .pointer("/persistentVolumeClaimInfo/claimName")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        if let Some(other) = seen.insert(claim.clone(), vm.clone()) {
                            env.double_attached
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{claim} in {other} and {vm}"));
                        }
                    }
                }
            }
        });
    }

    async fn shutdown(mut self) {
        self.stop.cancel();
        for p in self.nodes.values_mut() {
            kill(p).await;
        }
        kill(&mut self.controller).await;
        // Unmount what the kubelet left (a failed scenario), then let the simulator go.
        if let Ok(out) = Command::new("findmnt").args(["-rn", "-o", "TARGET"]).output().await {
            let mut targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(&self.work.display().to_string()))
                .map(String::from)
                .collect();
            targets.sort();
            for t in targets.iter().rev() {
                let _ = Command::new("umount").args(["-l", t]).output().await;
            }
        }
        let _ = self.sim.child.start_kill();
        let _ = self.sim.child.wait().await;
        if let Ok(out) = Command::new("losetup").arg("-a").output().await {
            let work = self.work.display().to_string();
            for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&work)) {
                if let Some(dev) = line.split(':').next() {
                    let _ = Command::new("losetup").args(["-d", dev]).output().await;
                }
            }
        }
        if let Some(g) = self.guest.take() {
            g.shutdown().await;
        }
    }
}
