//! Shared fixture of the simulator integration tests: a simulator in a temporary
//! directory, kube clients for its admin and guest kubeconfigs, raw requests,
//! polling helpers, and a timeout around every test body.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harvester_simulator::devices::DeviceMode;
use harvester_simulator::{SimConfig, Simulator};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};

/// Latencies short enough for tests, long enough that phases are observable.
pub const FAST_TIMING: &str =
    "timing: {hotplugMs: 200, unplugMs: 100, provisionMs: 50, snapshotMs: 50, expandMs: 50, exportMs: 50}\n";

/// Runs a test body under a deadline, so a hang fails the test instead of blocking CI.
pub async fn bounded<F: Future>(secs: u64, body: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), body).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {secs} s"),
    }
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
        && std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control").is_ok()
}

/// First line of every test marked `#[ignore = "needs root: ..."]`: run anyway
/// (`--ignored`) without root, it fails saying so instead of passing without
/// having tested anything.
pub fn require_root() {
    assert!(is_root(), "this test needs root and /dev/loop-control for real loop devices; run it as root");
}

#[derive(Debug, Clone)]
pub struct Options {
    pub profile: &'static str,
    pub devices: DeviceMode,
    /// World file contents (always written; FAST_TIMING by default).
    pub world: String,
}

impl Default for Options {
    fn default() -> Self {
        Self { profile: "v1.5", devices: DeviceMode::File, world: FAST_TIMING.to_string() }
    }
}

impl Options {
    pub fn profile(profile: &'static str) -> Self {
        Self { profile, ..Self::default() }
    }

    pub fn loop_devices(mut self) -> Self {
        self.devices = DeviceMode::Loop;
        self
    }
}

pub struct Sim {
    pub sim: Simulator,
    pub admin: kube::Client,
    pub guest: kube::Client,
    /// Releases loop devices and mounts under `dir`, also when a test panics.
    pub cleanup: HostCleanup,
    /// Kept last so the directory outlives the simulator.
    pub dir: tempfile::TempDir,
}

/// Loop devices and mounts a simulator made under a directory outlive it (a
/// restart must find them), so tests release them when done.
pub struct HostCleanup(pub PathBuf);

impl Drop for HostCleanup {
    fn drop(&mut self) {
        release_host_resources(&self.0);
    }
}

/// Unmounts everything mounted below `dir` and detaches loop devices backed by
/// files below it. Only touches what lives under `dir`.
pub fn release_host_resources(dir: &Path) {
    for failure in harvester_simulator::devices::release_host_resources(dir) {
        eprintln!("cleanup: {failure}");
    }
}

impl Sim {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub async fn shutdown(self) {
        let Sim { sim, cleanup, dir, .. } = self;
        sim.shutdown().await;
        drop(cleanup);
        drop(dir);
    }
}

/// Starts a simulator in `dir` (which may hold the state of an earlier run).
pub async fn start_in(dir: &Path, opts: &Options) -> (Simulator, kube::Client, kube::Client) {
    let world = dir.join("world.yaml");
    std::fs::write(&world, &opts.world).expect("writing world file");
    let mut config = SimConfig::new(dir.join("state"));
    config.profile = opts.profile.to_string();
    config.devices = opts.devices;
    config.world = Some(world);
    let sim = Simulator::start(config).await.expect("starting simulator");
    let admin = client(&sim.admin_kubeconfig_path()).await;
    let guest = client(&sim.cloud_config_path()).await;
    (sim, admin, guest)
}

pub async fn start(opts: Options) -> Sim {
    let dir = tempfile::tempdir().expect("tempdir");
    let cleanup = HostCleanup(dir.path().to_path_buf());
    let (sim, admin, guest) = start_in(dir.path(), &opts).await;
    Sim { sim, admin, guest, cleanup, dir }
}

pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("kubeconfig to config");
    kube::Client::try_from(cfg).expect("building client")
}

/// The state directory of a simulator started by [`start`] / [`start_in`].
pub fn state_dir(base: &Path) -> PathBuf {
    base.join("state")
}

/// A raw request; returns the status and the body (JSON if it parses, else a string).
pub async fn raw(client: &kube::Client, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    raw_bytes(client, method, path, "application/json", body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .await
}

pub async fn raw_bytes(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(body))
        .expect("building request");
    let resp = client.send(req).await.expect("sending request");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("reading body").to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Polls `check` every 50 ms until it yields a value (the caller's timeout bounds it).
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

pub fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A dynamic API for a CRD or any kind, namespaced or not.
pub fn dynamic(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

pub fn vmis(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    dynamic(client, "kubevirt.io", "v1", "VirtualMachineInstance", "virtualmachineinstances", Some(ns))
}

pub fn vms(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    dynamic(client, "kubevirt.io", "v1", "VirtualMachine", "virtualmachines", Some(ns))
}

pub fn longhorn_volumes(client: &kube::Client) -> Api<DynamicObject> {
    dynamic(client, "longhorn.io", "v1beta2", "Volume", "volumes", Some("longhorn-system"))
}

pub fn settings(client: &kube::Client) -> Api<DynamicObject> {
    dynamic(client, "harvesterhci.io", "v1beta1", "Setting", "settings", None)
}

pub fn pvc_json(name: &str, mode: &str, size: &str, class: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"], "volumeMode": mode, "storageClassName": class,
            "resources": {"requests": {"storage": size}},
        },
    })
}

/// Creates a PVC and waits until it is Bound; returns it.
pub async fn bound_pvc(
    client: &kube::Client,
    ns: &str,
    name: &str,
    mode: &str,
    size: &str,
) -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(pvc_json(name, mode, size, "harvester-longhorn")).expect("pvc json");
    pvcs.create(&PostParams::default(), &pvc).await.expect("creating pvc");
    eventually(&format!("pvc {ns}/{name} Bound"), || {
        let pvcs = pvcs.clone();
        async move {
            let p = pvcs.get(name).await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(p)
        }
    })
    .await
}

/// `PUT …/virtualmachines/<vm>/addvolume` (or VMI/removevolume) as the given client.
pub async fn volume_subresource(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    let path = format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{kind}/{name}/{action}");
    raw(client, Method::PUT, &path, Some(body)).await
}

pub fn add_volume_body(volume: &str, claim: &str) -> Value {
    json!({"name": volume, "disk": {"disk": {"bus": "scsi"}},
           "volumeSource": {"persistentVolumeClaim": {"claimName": claim}}})
}

/// The VMI `status.volumeStatus` entry of a volume, if present.
pub fn volume_status(vmi: &DynamicObject, volume: &str) -> Option<Value> {
    vmi.data
        .pointer("/status/volumeStatus")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(volume))
        .cloned()
}

/// Runs a command, returning trimmed stdout (panics on failure).
pub fn command_output(program: &str, args: &[&str]) -> String {
    let out =
        std::process::Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `harvester-sim` binary as a process (`serve`, `guest`), for tests of the
/// command line itself. Returns once it has printed every `key: value` line named
/// in `wait_for` (`address`, `kubeconfig`), with their values; its stdout keeps
/// being drained so it never blocks on a full pipe.
pub async fn spawn_sim(
    args: &[&std::ffi::OsStr],
    wait_for: &[&str],
) -> (tokio::process::Child, std::collections::HashMap<String, String>) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_harvester-sim"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting harvester-sim");
    let stdout = child.stdout.take().expect("harvester-sim stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut printed = std::collections::HashMap::new();
    while !wait_for.iter().all(|key| printed.contains_key(*key)) {
        let line = lines.next_line().await.expect("reading harvester-sim output").expect("harvester-sim exited");
        if let Some((key, value)) = line.split_once(": ") {
            printed.insert(key.to_string(), value.trim().to_string());
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, printed)
}
