//! Shared fixture of the driver's integration tests: an in-process Harvester
//! simulator, the driver started in-process against it (`app::run`), and CSI
//! clients over the driver's Unix socket. Everything a test waits for is
//! bounded, so a hang fails the test instead of blocking CI.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use csi_proto::csi::v1 as csi;
use csi_proto::{ControllerClient, IdentityClient, NodeClient};
use harvester_csi_driver::config::Config;
use harvester_simulator::devices::DeviceMode;
use harvester_simulator::{SimConfig, Simulator};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const MIB: i64 = 1 << 20;

/// The guest cluster id the driver is started with (`--cluster-id`).
pub const CLUSTER_ID: &str = "test";

/// Latencies short enough for tests, long enough that phases are observable.
pub const FAST_TIMING: &str =
    "timing: {provisionMs: 50, hotplugMs: 200, unplugMs: 100, snapshotMs: 100, expandMs: 50, exportMs: 100}\n";

/// Runs a test body under a deadline, so a hang fails the test instead of blocking CI.
pub async fn bounded<F: Future>(secs: u64, body: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), body).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {secs} s"),
    }
}

/// Test logs (set `RUST_LOG=harvester_csi_driver=debug` to see the driver's).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Root and a usable `/dev/loop-control`: what real loop devices and mounts need.
pub fn have_root_and_loop() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control").is_ok()
}

/// Root-only tests are `#[ignore]`d; run explicitly without root, they fail with the reason.
pub fn require_root_and_loop() {
    assert!(have_root_and_loop(), "needs root and a usable /dev/loop-control for real loop devices and mounts");
}

#[derive(Debug, Clone)]
pub struct Options {
    pub profile: &'static str,
    pub devices: DeviceMode,
    /// VMs of the world (in namespace `default`).
    pub vms: Vec<&'static str>,
    /// Extra world-file lines (after timing and VMs).
    pub world_extra: String,
    /// Extra driver flags.
    pub args: Vec<String>,
    /// The VM whose root the node service reads (`--root`).
    pub node_vm: &'static str,
    /// Apply this release's guest RBAC before the driver starts (`POST /sim/rbac/<release>`).
    pub rbac: Option<&'static str>,
    /// Host faults in force while the driver starts, cleared after the duration.
    pub startup_faults: Option<(Value, Duration)>,
    /// Let the guest credentials read host nodes, as an operator grants for zone topology.
    pub host_node_reads: bool,
    /// Remove the node VM's firmware UUID from its root, so identity falls back to MACs.
    pub without_firmware_uuid: bool,
}

impl Options {
    pub fn profile(profile: &'static str) -> Self {
        Self {
            profile,
            devices: DeviceMode::File,
            vms: vec!["guest-1", "guest-2"],
            world_extra: String::new(),
            args: Vec::new(),
            node_vm: "guest-1",
            rbac: None,
            startup_faults: None,
            host_node_reads: false,
            without_firmware_uuid: false,
        }
    }

    pub fn without_firmware_uuid(mut self) -> Self {
        self.without_firmware_uuid = true;
        self
    }

    pub fn host_node_reads(mut self) -> Self {
        self.host_node_reads = true;
        self
    }

    pub fn startup_faults(mut self, faults: Value, lasting: Duration) -> Self {
        self.startup_faults = Some((faults, lasting));
        self
    }

    pub fn rbac(mut self, release: &'static str) -> Self {
        self.rbac = Some(release);
        self
    }

    pub fn loop_devices(mut self) -> Self {
        self.devices = DeviceMode::Loop;
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
}

/// Loop devices and mounts made under a directory outlive the simulator (a
/// restart must find them), so tests release them when done — also on panic.
pub struct HostCleanup(pub PathBuf);

impl Drop for HostCleanup {
    fn drop(&mut self) {
        release_host_resources(&self.0);
    }
}

/// Unmounts everything mounted below `dir` (innermost first) and detaches loop
/// devices backed by files below it. Only touches what lives under `dir`.
pub fn release_host_resources(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let targets: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
        for target in targets.into_iter().rev() {
            if Path::new(target).starts_with(&dir) {
                let _ = std::process::Command::new("umount").arg("--lazy").arg(target).status();
            }
        }
    }
    let Ok(out) = std::process::Command::new("losetup")
        .args(["--list", "--noheadings", "--raw", "-O", "NAME,BACK-FILE"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((dev, file)) = line.split_once(' ') else { continue };
        let file = file.trim().trim_end_matches(" (deleted)");
        if Path::new(file).starts_with(&dir) {
            let _ = std::process::Command::new("losetup").args(["--detach", dev]).status();
        }
    }
}

/// One simulator and one driver (all services) connected to it.
pub struct Env {
    pub sim: Option<Simulator>,
    pub admin: kube::Client,
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
    pub shutdown: CancellationToken,
    pub driver: Option<JoinHandle<Result<(), harvester_csi_driver::app::StartError>>>,
    /// The VM root given to the node service.
    pub root: PathBuf,
    /// Scratch space for staging and publish targets (under the temp dir).
    pub work: PathBuf,
    pub state_dir: PathBuf,
    _cleanup: HostCleanup,
    /// Kept last so the directory outlives everything else.
    pub dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("kubeconfig to config");
    kube::Client::try_from(cfg).expect("building kube client")
}

/// Connects to the driver's socket. The file appears at bind(), a moment before listen():
/// a connection in between is refused, so refusals are retried briefly.
pub async fn connect(socket: &Path) -> Channel {
    let started = std::time::Instant::now();
    loop {
        let path = socket.to_path_buf();
        let attempt = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await;
        match attempt {
            Ok(channel) => return channel,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                tracing::debug!(error = %e, "driver socket not accepting yet");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connecting to the driver socket: {e}"),
        }
    }
}

pub fn dynamic_api(
    client: &kube::Client,
    group: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let version = if group == "harvesterhci.io" { "v1beta1" } else { "v1" };
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// A ClusterRole to read nodes, bound to every authenticated client.
async fn grant_node_reads(admin: &kube::Client) {
    use kube::api::PostParams;
    let roles = dynamic_api(admin, "rbac.authorization.k8s.io", "ClusterRole", "clusterroles", None);
    let bindings = dynamic_api(admin, "rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings", None);
    let role: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "read-nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}],
    }))
    .expect("role");
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "read-nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "read-nodes"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
    }))
    .expect("binding");
    roles.create(&PostParams::default(), &role).await.expect("creating ClusterRole read-nodes");
    bindings.create(&PostParams::default(), &binding).await.expect("creating ClusterRoleBinding read-nodes");
}

impl Env {
    pub async fn start(opts: Options) -> Env {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let cleanup = HostCleanup(dir.path().to_path_buf());
        let world_path = dir.path().join("world.yaml");
        let vms: Vec<String> = opts.vms.iter().map(|v| format!("{{name: {v}}}")).collect();
        let world = format!("{FAST_TIMING}vms: [{}]\n{}", vms.join(", "), opts.world_extra);
        std::fs::write(&world_path, world).expect("writing world file");
        let state_dir = dir.path().join("state");
        let mut cfg = SimConfig::new(&state_dir);
        cfg.profile = opts.profile.into();
        cfg.devices = opts.devices;
        cfg.world = Some(world_path);
        let sim = Simulator::start(cfg).await.expect("starting the simulator");
        let admin = kube_client(&sim.admin_kubeconfig_path()).await;
        if let Some(release) = opts.rbac {
            let req = http::Request::post(format!("/sim/rbac/{release}")).body(Vec::new()).expect("request");
            admin.request_text(req).await.expect("applying another release's guest RBAC");
        }

        if opts.host_node_reads {
            grant_node_reads(&admin).await;
        }

        // The node service identifies its VM at start: wait until the VMs run and their roots exist.
        let root = sim.state_dir.join("vms").join(opts.node_vm).join("root");
        let vmis =
            dynamic_api(&admin, "kubevirt.io", "VirtualMachineInstance", "virtualmachineinstances", Some("default"));
        eventually("the VMs to run and their roots to exist", || {
            let (vmis, root, want) = (vmis.clone(), root.clone(), opts.vms.clone());
            async move {
                let list = vmis.list(&Default::default()).await.ok()?;
                let running = want.iter().all(|vm| {
                    list.items.iter().any(|i| {
                        i.metadata.name.as_deref() == Some(vm)
                            && i.data.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                    })
                });
                (running && root.join("sys/class/dmi/id/product_uuid").exists()).then_some(())
            }
        })
        .await;

        if opts.without_firmware_uuid {
            std::fs::remove_file(root.join("sys/class/dmi/id/product_uuid")).expect("removing product_uuid");
        }
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        let socket = dir.path().join("csi/csi.sock");
        let mut args: Vec<String> = [
            "harvester-csi-driver",
            "--endpoint",
            &format!("unix://{}", socket.display()),
            "--kubeconfig",
            &sim.cloud_config_path().display().to_string(),
            "--root",
            &root.display().to_string(),
            "--kubelet-root",
            &work.display().to_string(),
            "--cluster-id",
            CLUSTER_ID,
            "--mode",
            "all",
            "--no-guest-access",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(opts.args.iter().cloned());
        let config = Config::try_parse_from(&args).expect("driver flags");
        let put_faults = |faults: Value| {
            let req = http::Request::put("/sim/faults")
                .header("content-type", "application/json")
                .body(faults.to_string().into_bytes())
                .expect("request");
            let admin = admin.clone();
            async move { admin.request_text(req).await.expect("setting faults") }
        };
        if let Some((faults, lasting)) = opts.startup_faults.clone() {
            put_faults(faults).await;
            let clear = put_faults(json!({}));
            tokio::spawn(async move {
                tokio::time::sleep(lasting).await;
                clear.await
            });
        }
        let shutdown = CancellationToken::new();
        let driver = tokio::spawn(harvester_csi_driver::app::run(config, shutdown.clone()));

        let started = std::time::Instant::now();
        while !socket.exists() {
            if driver.is_finished() {
                let result = driver.await.expect("driver task");
                panic!("the driver stopped before serving: {result:?}");
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the driver socket did not appear within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let channel = connect(&socket).await;
        Env {
            state_dir: sim.state_dir.clone(),
            sim: Some(sim),
            admin,
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
            shutdown,
            driver: Some(driver),
            root,
            work,
            _cleanup: cleanup,
            dir,
        }
    }

    /// Stops the driver and the simulator.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(d) = self.driver.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), d).await;
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }

    /// Stops only the simulator (the host goes away under the driver).
    pub async fn stop_simulator(&mut self) {
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }

    // ---- the simulator's admin API ----

    pub async fn sim_request(&self, method: &str, path: &str, body: Option<Value>) -> String {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .expect("building admin request");
        self.admin.request_text(req).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn set_faults(&self, faults: Value) {
        self.sim_request("PUT", "/sim/faults", Some(faults)).await;
    }

    pub async fn clear_faults(&self) {
        self.set_faults(json!({})).await;
    }

    // ---- host objects, read with the admin identity ----

    pub fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.admin.clone(), "default")
    }

    pub async fn host_pvc(&self, name: &str) -> Option<PersistentVolumeClaim> {
        self.pvcs().get_opt(name).await.expect("reading host PVC")
    }

    pub async fn vm(&self, name: &str) -> Value {
        let api = dynamic_api(&self.admin, "kubevirt.io", "VirtualMachine", "virtualmachines", Some("default"));
        serde_json::to_value(api.get(name).await.expect("reading VM")).expect("VM json")
    }

    pub async fn vmi(&self, name: &str) -> Value {
        let api = dynamic_api(
            &self.admin,
            "kubevirt.io",
            "VirtualMachineInstance",
            "virtualmachineinstances",
            Some("default"),
        );
        serde_json::to_value(api.get(name).await.expect("reading VMI")).expect("VMI json")
    }

    pub async fn nfs(&self, pv: &str) -> Option<Value> {
        let api = dynamic_api(
            &self.admin,
            "harvesterhci.io",
            "NetworkFilesystem",
            "networkfilesystems",
            Some("harvester-system"),
        );
        api.get_opt(pv).await.expect("reading NetworkFilesystem").map(|o| serde_json::to_value(o).expect("json"))
    }

    /// Whether the VM template lists the volume.
    pub async fn vm_lists(&self, vm: &str, volume: &str) -> bool {
        let v = self.vm(vm).await;
        names_at(&v, "/spec/template/spec/volumes").iter().any(|n| n == volume)
    }

    /// Whether the VMI spec or its volumeStatus lists the volume.
    pub async fn vmi_lists(&self, vm: &str, volume: &str) -> bool {
        let v = self.vmi(vm).await;
        names_at(&v, "/spec/volumes").iter().any(|n| n == volume)
            || names_at(&v, "/status/volumeStatus").iter().any(|n| n == volume)
    }

    /// The VMI volumeStatus phase of a volume ("" when absent).
    pub async fn vmi_phase(&self, vm: &str, volume: &str) -> String {
        let v = self.vmi(vm).await;
        v.pointer("/status/volumeStatus")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(volume)))
            .and_then(|e| e.get("phase").and_then(Value::as_str))
            .unwrap_or("")
            .to_string()
    }

    // ---- driver shortcuts ----

    pub async fn create(&self, req: csi::CreateVolumeRequest) -> Result<csi::Volume, tonic::Status> {
        let mut c = self.controller.clone();
        c.create_volume(req).await.map(|r| r.into_inner().volume.expect("volume in the response"))
    }

    pub async fn publish(
        &self,
        volume: &str,
        node: &str,
        cap: csi::VolumeCapability,
        context: HashMap<String, String>,
    ) -> Result<HashMap<String, String>, tonic::Status> {
        let mut c = self.controller.clone();
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: volume.into(),
            node_id: node.into(),
            volume_capability: Some(cap),
            readonly: false,
            volume_context: context,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().publish_context)
    }

    pub async fn unpublish(&self, volume: &str, node: &str) -> Result<(), tonic::Status> {
        let mut c = self.controller.clone();
        c.controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            volume_id: volume.into(),
            node_id: node.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, volume: &str) -> Result<(), tonic::Status> {
        let mut c = self.controller.clone();
        c.delete_volume(csi::DeleteVolumeRequest { volume_id: volume.into(), ..Default::default() }).await.map(|_| ())
    }

    pub async fn expand(
        &self,
        volume: &str,
        bytes: i64,
        cap: Option<csi::VolumeCapability>,
    ) -> Result<csi::ControllerExpandVolumeResponse, tonic::Status> {
        let mut c = self.controller.clone();
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: volume.into(),
            capacity_range: Some(csi::CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
            volume_capability: cap,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
    }
}

/// The `name`s of the array at `pointer`.
pub fn names_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|e| e.get("name").and_then(Value::as_str).map(String::from)).collect())
        .unwrap_or_default()
}

/// Polls `check` every 50 ms until it yields a value (at most 30 s).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > Duration::from_secs(30) {
            panic!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- CSI request builders ----

pub use csi::volume_capability::access_mode::Mode;

pub fn mount_cap(mode: Mode, fs: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(csi::volume_capability::AccessType::Mount(csi::volume_capability::MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

pub fn block_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(csi::volume_capability::AccessType::Block(Default::default())),
    }
}

pub fn rwo_block() -> csi::VolumeCapability {
    block_cap(Mode::SingleNodeWriter)
}

pub fn rwo_mount(fs: &str) -> csi::VolumeCapability {
    mount_cap(Mode::SingleNodeWriter, fs)
}

pub fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn create_req(
    name: &str,
    bytes: i64,
    cap: csi::VolumeCapability,
    parameters: &[(&str, &str)],
) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![cap],
        parameters: params(parameters),
        ..Default::default()
    }
}

/// The code of a failed call, with its message in the panic when it succeeded.
pub fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (tonic::Code, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

pub fn label<'a>(pvc: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    pvc.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

pub fn annotation<'a>(pvc: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    pvc.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn pvc_request(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

pub fn pvc_status_capacity(pvc: &PersistentVolumeClaim) -> String {
    pvc.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}
