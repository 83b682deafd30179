//! What both backends do with the simulated Harvester: run `harvester-sim` as a
//! process (so it can be killed and restarted), drive its admin API, count the
//! loop devices behind a volume, run the driver's orphan report against it, and
//! watch for a volume in two VMs at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::env::Env;
use crate::model::Scenario;
use crate::Failure;

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
}

pub async fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Child, Failure> {
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

pub async fn client(path: &Path) -> Result<kube::Client, Failure> {
    let kc = Kubeconfig::read_from(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| fail(e.to_string()))
}

/// The last line a process logged (the driver and simulator write plain text to files).
pub fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing logged)").to_string()
}

/// Waits until `ok`, failing early (with the last line it logged) if the process exits.
pub async fn wait_for(
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

pub struct Simulator {
    bin: PathBuf,
    /// Its state directory (`<work>/host`).
    pub dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Child,
}

impl Simulator {
    /// The file backing host volume `host_pv` (the simulator's Longhorn volume).
    pub fn volume_file(&self, host_pv: &str) -> Result<PathBuf, Failure> {
        let file = self.dir.join("volumes").join(format!("{host_pv}.img"));
        if file.is_file() {
            Ok(file)
        } else {
            Err(Failure(format!("host volume {host_pv} has no backing file at {}", file.display())))
        }
    }

    /// Starts `harvester-sim serve` with the scenario's world, listening on `listen`.
    pub async fn start(bin: &Path, scenario: &Scenario, work: &Path, listen: &str) -> Result<Self, Failure> {
        let dir = work.join("host");
        let mut world = scenario.world.simulator_world();
        world.entry("timing").or_insert(json!({"provisionMs": 100, "hotplugMs": 400, "unplugMs": 200, "snapshotMs": 200, "expandMs": 100, "exportMs": 200}));
        let world_path = work.join("world.yaml");
        std::fs::write(&world_path, serde_json::to_string_pretty(&Value::Object(world)).unwrap_or_default())
            .map_err(|e| fail(e.to_string()))?;
        let args: Vec<String> = vec![
            "serve".into(),
            "--state-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            listen.into(),
            "--profile".into(),
            scenario.world.profile.clone(),
            "--world".into(),
            world_path.display().to_string(),
        ];
        let log = work.join("simulator.log");
        let mut child = spawn(bin, &args, &log).await?;
        let (endpoint, admin) = (dir.join("endpoint"), dir.join("admin.kubeconfig"));
        // The endpoint file is written last, and read only once it is whole (it names a port).
        let written = |p: &Path| std::fs::read_to_string(p).ok().and_then(|u| port_of(u.trim())).is_some();
        wait_for("the simulator", Duration::from_secs(20), &mut child, &log, || written(&endpoint) && admin.exists())
            .await?;
        let mut sim = Self { bin: bin.to_path_buf(), dir, args, log, child };
        sim.pin_port(listen)?;
        Ok(sim)
    }

    /// With port 0 the simulator picks a free port itself (no race between
    /// scenarios running side by side); a restart must come back on the same
    /// one, since the driver's cloud-config names it, so it is written into the
    /// arguments the restart uses.
    fn pin_port(&mut self, listen: &str) -> Result<(), Failure> {
        let Some(host) = listen.strip_suffix(":0") else { return Ok(()) };
        let url =
            std::fs::read_to_string(self.dir.join("endpoint")).map_err(|e| fail(format!("simulator endpoint: {e}")))?;
        let port =
            port_of(url.trim()).ok_or_else(|| fail(format!("simulator endpoint {:?} names no port", url.trim())))?;
        for a in self.args.iter_mut().filter(|a| a.as_str() == listen) {
            *a = format!("{host}:{port}");
        }
        Ok(())
    }

    pub fn cloud_config(&self) -> PathBuf {
        self.dir.join("cloud-config")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// Waits for something the simulator makes (a file it writes), failing at once
    /// with its last log line if it exits meanwhile.
    pub async fn wait_for(&mut self, what: &str, within: Duration, ok: impl FnMut() -> bool) -> Result<(), Failure> {
        wait_for(what, within, &mut self.child, &self.log, ok).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// kill -9, then the same command again (its state directory persists).
    pub async fn kill_and_restart(&mut self) -> Result<(), Failure> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let endpoint = self.dir.join("endpoint");
        let _ = std::fs::remove_file(&endpoint);
        self.child = spawn(&self.bin, &self.args, &self.log).await?;
        wait_for("the restarted simulator", Duration::from_secs(30), &mut self.child, &self.log, || endpoint.exists())
            .await
    }

    /// Stops the simulator and releases the loop devices it left behind the
    /// work directory (a failed scenario).
    pub async fn stop(mut self, work: &Path) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Ok(out) = Command::new("losetup").arg("-a").output().await {
            let work = work.display().to_string();
            for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&work)) {
                if let Some(dev) = line.split(':').next() {
                    let _ = Command::new("losetup").args(["-d", dev]).output().await;
                }
            }
        }
    }

    /// How many loop devices back a host volume (0 once detached everywhere).
    pub async fn loop_devices_of(&self, host_pv: &str) -> Result<usize, Failure> {
        let file = self.dir.join("volumes").join(format!("{host_pv}.img"));
        let out =
            Command::new("losetup").arg("-j").arg(&file).output().await.map_err(|e| fail(format!("losetup: {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count())
    }

    /// The driver's orphan report for `cluster_id`, run without guest access.
    pub async fn orphan_report(&self, driver_bin: &Path, cluster_id: &str) -> Result<Vec<Value>, Failure> {
        let out = Command::new(driver_bin)
            .arg(format!("--kubeconfig={}", self.cloud_config().display()))
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
}

/// The port of an `https://host:port[/]` URL.
fn port_of(url: &str) -> Option<u16> {
    url.trim_end_matches('/').rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// The simulator's admin API (`/sim/<path>`), for faults.
pub async fn admin(env: &Env, method: &str, path: &str, body: Option<Value>) -> Result<String, Failure> {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("/sim/{path}"))
        .header("content-type", "application/json")
        .body(body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default())
        .map_err(|e| fail(e.to_string()))?;
    env.host.request_text(req).await.map_err(|e| fail(format!("simulator {method} /sim/{path}: {e}")))
}

/// Halts (`stop`) or starts (`start`) a VM in the simulator.
pub async fn vm_power(env: &Env, vm: &str, action: &str) -> Result<(), Failure> {
    admin(env, "POST", &format!("vms/{}/{vm}/{action}", env.host_namespace), None).await.map(drop)
}

/// Records every volume seen hot-plugged (with a target) in two VMs at once.
pub fn watch_double_attach(env: Arc<Env>, stop: CancellationToken) {
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

#[cfg(test)]
mod tests {
    use super::port_of;

    #[test]
    fn the_port_comes_from_the_endpoint_url() {
        assert_eq!(port_of("https://127.0.0.1:40123"), Some(40123));
        assert_eq!(port_of("https://127.0.0.1:40123/"), Some(40123));
        assert_eq!(port_of("https://localhost"), None);
    }
}
