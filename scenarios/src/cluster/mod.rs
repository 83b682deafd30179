//! A local Kubernetes cluster from the real components, started and stopped by
//! the project's own tooling (`scenarios cluster up|down|status`, and the
//! cluster backend): etcd (Debian's etcd-server), kube-apiserver,
//! kube-controller-manager and kube-scheduler on the host, and per simulated VM
//! one node: a network namespace `hcsi-<vm>` with a veth link to the host, a
//! private mount namespace (its own `/var/lib/kubelet`, so the chart's defaults
//! work and RWX mounts of different nodes never share a mount namespace), a
//! containerd and a kubelet. Facts behind each choice:
//! ../shared/reference/local-cluster.md.
//!
//! Addresses are in 198.18.0.0/15 (RFC 2544, benchmarking; neither private nor
//! public). The host gets 198.18.0.1 on a link of its own: the API server
//! listens there on 443, and since it is also the first address of the service
//! range it is the `kubernetes` Service's ClusterIP, so in-cluster clients reach
//! the API server without a kube-proxy. Node `i` gets 198.18.1.(4i+2)/30, its
//! host end .(4i+1), and one route: 198.18.0.1 via the host end (no default
//! route). The simulator listens on 198.18.0.1 too, so host-network driver
//! pods reach it.
//!
//! Every process is started in its own process group with its pid in
//! `<state>/pids/`, so the cluster outlives the command that started it and
//! `down` stops exactly what `up` started.

pub mod addons;
pub mod cni;
pub mod control_plane;
pub mod etcd;
pub mod images;
pub mod node;
pub mod pki;
pub mod process;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The host's address for the nodes: API server, simulator.
pub const API_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const API_PORT: u16 = 443;
/// Includes API_ADDRESS as its first address: the `kubernetes` Service IP.
pub const SERVICE_RANGE: &str = "198.18.0.0/24";
/// The (portless bridge) link holding API_ADDRESS.
pub const HOST_LINK: &str = "hcsi0";
/// Short paths for Unix sockets (the state directory may be deep).
pub const RUN_DIR: &str = "/run/hcsi";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("certificates: {0}")]
    Pki(String),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Invalid(String),
}

impl ClusterError {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io { op, path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, ClusterError>;

pub fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ClusterError::io("creating", parent, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| ClusterError::io("creating", path, e))?;
    f.write_all(content.as_bytes()).map_err(|e| ClusterError::io("writing", path, e))
}

/// Runs a command to completion; its stderr is the error.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out =
        tokio::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).output().await.map_err(
            |e| ClusterError::Command { command: format!("{program} {}", args.join(" ")), detail: e.to_string() },
        )?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` until it says ready (None) or `within` passes.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let Some(why) = check().await else { return Ok(()) };
        if Instant::now() > deadline {
            return Err(ClusterError::NotReady(format!("{what} not ready within {within:?}: {why}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the binaries come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tools {
    /// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet.
    pub kubernetes: PathBuf,
    /// etcd (Debian's etcd-server puts it in /usr/bin).
    pub etcd: PathBuf,
    /// containerd, containerd-shim-runc-v2, runc, ctr.
    pub containerd: PathBuf,
}

/// What `up` was asked for and made; written to `<state>/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub state_dir: PathBuf,
    pub nodes: Vec<String>,
    pub tools: Tools,
    /// The VolumeSnapshot CRDs and snapshot-controller, when given.
    #[serde(default)]
    pub snapshots: Option<addons::Snapshots>,
}

impl Spec {
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.state_dir.join("pki/admin.kubeconfig")
    }
    fn spec_file(state_dir: &Path) -> PathBuf {
        state_dir.join("cluster.json")
    }
    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::spec_file(state_dir);
        let text = std::fs::read_to_string(&path).map_err(|e| ClusterError::io("reading", &path, e))?;
        serde_json::from_str(&text).map_err(|e| ClusterError::Invalid(format!("{}: {e}", path.display())))
    }
    fn save(&self) -> Result<()> {
        write_file(&Self::spec_file(&self.state_dir), &serde_json::to_string_pretty(self).unwrap_or_default(), 0o644)
    }
    pub fn node_index(&self, node: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == node)
    }
}

/// Node names become interface, namespace and cgroup names: keep them simple.
pub fn check_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Invalid(format!("node name {name:?}: use at most 40 of a-z, 0-9 and -")))
    }
}

/// Brings the whole cluster up and waits until every node is Ready. Anything
/// already running from an earlier `up` of this state directory is stopped first.
pub async fn up(spec: Spec, images: &images::Images) -> Result<Spec> {
    if spec.nodes.is_empty() {
        return Err(ClusterError::Invalid("a cluster needs at least one node".into()));
    }
    for n in &spec.nodes {
        check_node_name(n)?;
    }
    if spec.nodes.len() > 60 {
        return Err(ClusterError::Invalid("at most 60 nodes (one /30 each in 198.18.1.0/24)".into()));
    }
    if Spec::spec_file(&spec.state_dir).exists() {
        down(&spec.state_dir).await?;
    }
    std::fs::create_dir_all(&spec.state_dir).map_err(|e| ClusterError::io("creating", &spec.state_dir, e))?;
    spec.save()?;
    match bring_up(&spec, images).await {
        Ok(()) => Ok(spec),
        Err(e) => {
            // Leave nothing half up: what started is in the pid files.
            if let Err(d) = down(&spec.state_dir).await {
                tracing::warn!(error = %d, "stopping the half-started cluster");
            }
            Err(e)
        }
    }
}

async fn bring_up(spec: &Spec, images: &images::Images) -> Result<()> {
    let started = Instant::now();
    let pki = pki::Pki::create(&spec.state_dir.join("pki"))?;
    pki.apiserver()?;
    pki.kubeconfig("admin", "hcsi-admin", Some("system:masters"))?;
    pki.kubeconfig("controller-manager", "system:kube-controller-manager", None)?;
    pki.kubeconfig("scheduler", "system:kube-scheduler", None)?;
    for n in &spec.nodes {
        pki.kubeconfig(&format!("node-{n}"), &format!("system:node:{n}"), Some("system:nodes"))?;
    }
    node::host_link_up().await?;
    let etcd = etcd::start(spec).await?;
    control_plane::start(spec, &etcd).await?;
    if let Some(s) = &spec.snapshots {
        addons::start(spec, s).await?;
    }
    tracing::info!(took = ?started.elapsed(), "control plane ready");
    cni::install(&spec.state_dir)?;
    let nodes = futures::future::join_all(spec.nodes.iter().map(|n| node::start(spec, n, images))).await;
    for r in nodes {
        r?;
    }
    let client = admin_client(spec).await?;
    node::wait_ready(&client, &spec.nodes, Duration::from_secs(120)).await?;
    // Pods are refused until the controller-manager made the namespace's ServiceAccount.
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(client.clone(), "default");
    wait_until("the default ServiceAccount", Duration::from_secs(60), || {
        let accounts = accounts.clone();
        async move { (!matches!(accounts.get_opt("default").await, Ok(Some(_)))).then(|| "not made yet".into()) }
    })
    .await?;
    tracing::info!(took = ?started.elapsed(), "cluster ready");
    Ok(())
}

/// Stops everything `up` started from this state directory and removes what it
/// made outside it (namespaces, links, cgroups, mounts). Safe to repeat.
pub async fn down(state_dir: &Path) -> Result<()> {
    let spec = match Spec::load(state_dir) {
        Ok(s) => s,
        Err(ClusterError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut errors = Vec::new();
    for n in &spec.nodes {
        if let Err(e) = node::stop(&spec, n).await {
            errors.push(e.to_string());
        }
    }
    for name in ["snapshot-controller", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"] {
        process::stop(&spec.state_dir, name).await;
    }
    if let Err(e) = node::host_link_down().await {
        errors.push(e.to_string());
    }
    let _ = std::fs::remove_file(Spec::spec_file(state_dir));
    // Only if empty: another node's directory there is not ours to judge.
    let _ = std::fs::remove_dir(RUN_DIR);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::NotReady(format!("stopping the cluster left: {}", errors.join("; "))))
    }
}

/// One line per component: running or not, and each node's Ready condition.
pub async fn status(state_dir: &Path) -> Result<Vec<(String, String)>> {
    let spec = Spec::load(state_dir)?;
    let mut out = Vec::new();
    for name in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "snapshot-controller"] {
        out.push((name.to_string(), process::describe(&spec.state_dir, name)));
    }
    let ready = match admin_client(&spec).await {
        Ok(c) => node::ready_conditions(&c).await.unwrap_or_default(),
        Err(_) => Default::default(),
    };
    for n in &spec.nodes {
        for p in ["containerd", "kubelet"] {
            out.push((format!("{n}/{p}"), process::describe(&spec.state_dir, &format!("{n}-{p}"))));
        }
        out.push((format!("{n}/Ready"), ready.get(n).cloned().unwrap_or_else(|| "unknown".into())));
    }
    Ok(out)
}

pub async fn admin_client(spec: &Spec) -> Result<kube::Client> {
    kube_client(&spec.admin_kubeconfig()).await
}

pub async fn kube_client(path: &Path) -> Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kc = Kubeconfig::read_from(path).map_err(|e| ClusterError::Invalid(format!("{}: {e}", path.display())))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| ClusterError::Invalid(format!("{}: {e}", path.display())))?;
    kube::Client::try_from(cfg).map_err(|e| ClusterError::Invalid(e.to_string()))
}
