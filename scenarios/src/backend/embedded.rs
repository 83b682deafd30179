//! The embedded backend: `harvester-sim` as a process, a guest API in process,
//! the real driver as processes (one controller, one node plugin per VM with
//! its VM root), and the runner playing the Kubernetes components.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harvester_simulator::guest::GuestCluster;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::simulator::{self, client, spawn, wait_for, Simulator};
use super::{Backend, Cluster, DataTarget};
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

pub struct EmbeddedCluster {
    work: PathBuf,
    driver_bin: PathBuf,
    sim: Simulator,
    controller: Proc,
    nodes: BTreeMap<String, Proc>,
    guest: Option<GuestCluster>,
    env: Arc<Env>,
    stop: CancellationToken,
}

impl EmbeddedCluster {
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
        // Port 0: the simulator binds a free port itself, race-free when scenarios run side by side.
        let mut sim = Simulator::start(&self.sim_bin, scenario, work, "127.0.0.1:0").await?;
        let sim_dir = sim.dir.clone();
        let cloud_config = sim.cloud_config();
        let admin = sim.admin_kubeconfig();
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
        // A node plugin runs in a booted guest: wait for the simulator's VM controller
        // to have written each VM's identity (its SMBIOS UUID), as a guest boots before
        // its kubelet starts the plugin. Worlds of many VMs take a moment to get there.
        for vm in &vms {
            let identity = sim_dir.join("vms").join(vm).join("root/sys/class/dmi/id/product_uuid");
            let what = format!("VM {vm} to boot (its identity in {})", identity.display());
            sim.wait_for(&what, Duration::from_secs(30), || identity.exists()).await?;
        }
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
        let stop = CancellationToken::new();
        let guest_changes = components::count_changes(guest.api.store.subscribe(), stop.clone());
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
            guest_changes: Some(guest_changes),
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
        tokio::spawn(components::provisioner::run(env.clone(), stop.clone()));
        tokio::spawn(components::attacher::run(env.clone(), stop.clone()));
        tokio::spawn(components::kubelet::run(env.clone(), stop.clone()));
        tokio::spawn(components::resizer::run(env.clone(), stop.clone()));
        tokio::spawn(components::snapshotter::run(env.clone(), stop.clone()));
        tokio::spawn(components::node_lifecycle::run(env.clone(), stop.clone()));
        Ok(EmbeddedCluster {
            work: work.to_path_buf(),
            driver_bin: self.driver_bin.clone(),
            sim,
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
        simulator::admin(&self.env, method, path, body).await
    }

    async fn kill_and_restart(&mut self, what: &str) -> Result<(), Failure> {
        if what == "simulator" {
            return self.sim.kill_and_restart().await;
        }
        let proc_ = match what {
            "controller" => &mut self.controller,
            other => match other.strip_prefix("node:") {
                Some(vm) => self.nodes.get_mut(vm).ok_or_else(|| fail(format!("no node plugin on {vm}")))?,
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
        proc_.child = spawn(&self.driver_bin, &proc_.args, &proc_.log).await?;
        match sock {
            Some(s) => {
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
            None => Ok(()),
        }
    }

    async fn stop_vm(&mut self, vm: &str) -> Result<(), Failure> {
        // The runner's node lifecycle (components::node_lifecycle) sees it down.
        simulator::vm_power(&self.env, vm, "stop").await
    }

    async fn start_vm(&mut self, vm: &str) -> Result<(), Failure> {
        simulator::vm_power(&self.env, vm, "start").await
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
        self.sim.volume_file(host_pv)
    }

    async fn loop_devices_of(&self, host_pv: &str) -> Result<usize, Failure> {
        self.sim.loop_devices_of(host_pv).await
    }

    async fn orphan_report(&self) -> Result<Vec<Value>, Failure> {
        let cluster_id =
            self.controller.args.iter().find_map(|a| a.strip_prefix("--cluster-id=")).unwrap_or_default().to_string();
        self.sim.orphan_report(&self.driver_bin, &cluster_id).await
    }

    fn watch_double_attach(&mut self) {
        simulator::watch_double_attach(self.env.clone(), self.stop.clone());
    }

    fn adapt_pod(&self, pod: &mut Value) {
        // The runner is the kubelet here: its finalizer holds the pod until unmounted.
        pod["metadata"]["finalizers"] = json!([components::kubelet::FINALIZER]);
        pod["spec"]["containers"][0]["image"] = json!("busybox");
    }

    async fn write_data(&self, target: &DataTarget, len: u64) -> Result<String, Failure> {
        super::local_data::write(&self.env, target, len).await
    }

    async fn read_data(&self, target: &DataTarget, len: u64) -> Result<String, Failure> {
        super::local_data::read(&self.env, target, len).await
    }

    async fn filesystem_size(&self, target: &DataTarget) -> Result<u64, Failure> {
        super::local_data::filesystem_size(&self.env, target).await
    }

    async fn in_flight(&self, phase: &str, node: &str) -> Result<bool, Failure> {
        Ok(self.env.is_in_flight(phase, node))
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
        self.sim.stop(&self.work).await;
        if let Some(g) = self.guest.take() {
            g.shutdown().await;
        }
    }
}
