//! One node per simulated VM: a network namespace with a veth link to the host,
//! a private mount namespace (held by a `sleep` process) in which containerd and
//! the kubelet run with their own `/var/lib/kubelet`, and a cgroup root of its
//! own in every hierarchy (two kubelets must never share one).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::{
    cni, images, process, run, wait_until, write_file, ClusterError, Result, Spec, API_ADDRESS, HOST_LINK, RUN_DIR,
};

pub fn netns(node: &str) -> String {
    format!("hcsi-{node}")
}

/// (host end, node end) of node `i`'s /30 in 198.18.1.0/24.
pub fn addresses(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let base = (4 * i) as u8;
    (Ipv4Addr::new(198, 18, 1, base + 1), Ipv4Addr::new(198, 18, 1, base + 2))
}

fn host_veth(i: usize) -> String {
    format!("hcsi-h{i}")
}

pub fn node_dir(spec: &Spec, node: &str) -> PathBuf {
    spec.state_dir.join("nodes").join(node)
}

pub fn run_dir(node: &str) -> PathBuf {
    Path::new(RUN_DIR).join(node)
}

pub fn containerd_socket(node: &str) -> PathBuf {
    run_dir(node).join("containerd.sock")
}

fn cgroup_name(node: &str) -> String {
    format!("hcsi-{node}")
}

async fn ignore_exists(r: Result<String>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(ClusterError::Command { detail, .. })
            if detail.contains("File exists") || detail.contains("already assigned") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The host's address for the nodes, on a link of its own.
pub async fn host_link_up() -> Result<()> {
    // A bridge with no ports: a link of our own to hold the address (the kernel
    // may lack the dummy module), removed with `ip link del`.
    ignore_exists(run("ip", &["link", "add", HOST_LINK, "type", "bridge"]).await).await?;
    ignore_exists(run("ip", &["addr", "add", &format!("{API_ADDRESS}/32"), "dev", HOST_LINK]).await).await?;
    run("ip", &["link", "set", HOST_LINK, "up"]).await?;
    Ok(())
}

pub async fn host_link_down() -> Result<()> {
    if Path::new("/sys/class/net").join(HOST_LINK).exists() {
        run("ip", &["link", "del", HOST_LINK]).await?;
    }
    Ok(())
}

async fn network_up(node: &str, i: usize) -> Result<()> {
    let ns = netns(node);
    let (host, addr) = addresses(i);
    let (hv, nv) = (host_veth(i), format!("hcsi-n{i}"));
    network_down(node, i).await;
    run("ip", &["netns", "add", &ns]).await?;
    run("ip", &["link", "add", &hv, "type", "veth", "peer", "name", &nv]).await?;
    run("ip", &["link", "set", &nv, "netns", &ns]).await?;
    run("ip", &["addr", "add", &format!("{host}/30"), "dev", &hv]).await?;
    run("ip", &["link", "set", &hv, "up"]).await?;
    run("ip", &["-n", &ns, "link", "set", &nv, "name", "eth0"]).await?;
    run("ip", &["-n", &ns, "addr", "add", &format!("{addr}/30"), "dev", "eth0"]).await?;
    run("ip", &["-n", &ns, "link", "set", "eth0", "up"]).await?;
    run("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
    // The one way out: to the API server and simulator address. No default route.
    run("ip", &["-n", &ns, "route", "add", &format!("{API_ADDRESS}/32"), "via", &host.to_string()]).await?;
    Ok(())
}

async fn network_down(node: &str, i: usize) {
    let _ = run("ip", &["netns", "del", &netns(node)]).await;
    if Path::new("/sys/class/net").join(host_veth(i)).exists() {
        let _ = run("ip", &["link", "del", &host_veth(i)]).await;
    }
}

/// Mount points of the cgroup hierarchies (v1 controllers and the v2 mount).
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount))
        })
        .collect()
}

fn cgroups_up(node: &str) -> Result<()> {
    for m in cgroup_mounts() {
        let dir = m.join(cgroup_name(node));
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::io("creating cgroup", &dir, e))?;
        // A new v1 cpuset has no cpus or memory nodes until given its parent's.
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(m.join(f)) {
                let _ = std::fs::write(dir.join(f), v.trim());
            }
        }
    }
    Ok(())
}

/// Every process in the node's cgroups (its pods' containers).
fn cgroup_pids(node: &str) -> Vec<u32> {
    fn walk(dir: &Path, out: &mut Vec<u32>) {
        if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for m in cgroup_mounts() {
        walk(&m.join(cgroup_name(node)), &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn cgroups_down(node: &str) -> Vec<String> {
    fn remove(dir: &Path) -> bool {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&e.path());
            }
        }
        std::fs::remove_dir(dir).is_ok() || !dir.exists()
    }
    cgroup_mounts()
        .into_iter()
        .map(|m| m.join(cgroup_name(node)))
        .filter(|d| d.exists() && !remove(d))
        .map(|d| d.display().to_string())
        .collect()
}

/// Processes whose command line holds `needle` (containerd's shims name its socket).
fn pids_with_arg(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        if cmd.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn containerd_config(spec: &Spec, node: &str) -> String {
    let dir = node_dir(spec, node);
    let run = run_dir(node);
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # runc cannot write oom_score_adj here without CAP_SYS_RESOURCE (local-cluster.md).
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Pod network namespaces under the state dir, so they go with the node.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
        root = dir.join("containerd").display(),
        state = run.join("containerd").display(),
        sock = containerd_socket(node).display(),
        pause = images::PAUSE,
        cni_bin = cni::bin_dir(&spec.state_dir).display(),
        cni_conf = cni::conf_dir(&spec.state_dir).display(),
    )
}

fn kubelet_config(spec: &Spec, node: &str, addr: Ipv4Addr) -> String {
    let dir = node_dir(spec, node);
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{addr}"
port: 10250
readOnlyPort: 0
healthzBindAddress: "127.0.0.1"
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
cgroupRoot: "/{cgroup}"
containerRuntimeEndpoint: "unix://{sock}"
failSwapOn: false
# A full disk on this shared machine must not evict the suite's pods.
evictionHard: {{memory.available: "1%", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
volumePluginDir: "{flex}"
clusterDomain: cluster.local
resolvConf: ""
rotateCertificates: false
# The attach/detach controller detaches once the node status no longer lists the
# volume in use: report unmounts within seconds, not the default 10 s.
nodeStatusUpdateFrequency: 2s
# The kubelet grows a mounted filesystem (NodeExpandVolume after a resize) and
# refreshes Secret volumes only when it syncs the pod: every syncFrequency
# (default 1m, plus up to half of it as jitter). The scenarios' expansion bounds
# are seconds.
syncFrequency: 5s
# The node's heartbeat: a Lease renewed every quarter of this (default 40 s, a
# 10 s renewal). The controller-manager's grace period (control_plane.rs) is a
# few renewals, so a halted node goes NotReady within seconds, not 50.
nodeLeaseDurationSeconds: 8
"#,
        ca = spec.state_dir.join("pki/ca.crt").display(),
        cgroup = cgroup_name(node),
        sock = containerd_socket(node).display(),
        flex = dir.join("flexvolume").display(),
    )
}

/// Starts the node: network, mount namespace, containerd (with the images
/// imported), kubelet. Readiness is checked by the caller for all nodes at once.
pub async fn start(spec: &Spec, node: &str, images: &images::Images) -> Result<()> {
    let i = spec.node_index(node).ok_or_else(|| ClusterError::Invalid(format!("{node} is not a node")))?;
    let dir = node_dir(spec, node);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(run_dir(node));
    for d in ["kubelet", "containerd", "pod-logs", "container-logs", "flexvolume"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| ClusterError::io("creating", &dir.join(d), e))?;
    }
    std::fs::create_dir_all(run_dir(node)).map_err(|e| ClusterError::io("creating", &run_dir(node), e))?;
    network_up(node, i).await?;
    cgroups_up(node)?;

    // The mount namespace: private (no propagation from or to the host, whatever
    // the host's own propagation), its own /var/lib/kubelet and pod log dirs.
    let ready = dir.join("ns-ready");
    let d = dir.display();
    let script = format!(
        "set -e; mkdir -p /var/lib/kubelet /var/log/pods /var/log/containers
mount --bind {d}/kubelet /var/lib/kubelet
mount --make-rshared /var/lib/kubelet
mount --bind {d}/pod-logs /var/log/pods
mount --bind {d}/container-logs /var/log/containers
touch {ready}
exec sleep infinity",
        ready = ready.display()
    );
    let holder = process::spawn(
        &spec.state_dir,
        &format!("{node}-ns"),
        Path::new("nsenter"),
        &[
            format!("--net={}", netns_path(node).display()),
            "--".into(),
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    )?;
    wait_until(&format!("{node}: mount namespace"), Duration::from_secs(10), || {
        let ready = ready.clone();
        async move { (!ready.exists()).then(|| "not yet".into()) }
    })
    .await?;
    start_containerd(spec, node, holder).await?;
    images.import(&spec.tools.containerd.join("ctr"), &containerd_socket(node)).await?;
    start_kubelet(spec, node, holder)
}

/// `nsenter` arguments that run `program` in the node's network and mount
/// namespaces (those of the holder process).
fn enter(holder: u32, program: &Path, args: Vec<String>) -> Vec<String> {
    let mut v = vec![format!("--target={holder}"), "--mount".into(), "--net".into(), "--".into()];
    v.push(program.display().to_string());
    v.extend(args);
    v
}

/// The process holding the node's namespaces.
fn holder(spec: &Spec, node: &str) -> Result<u32> {
    process::running(&spec.state_dir, &format!("{node}-ns")).ok_or_else(|| {
        ClusterError::NotReady(format!("{node}: its namespace holder is not running (cluster up first)"))
    })
}

async fn start_containerd(spec: &Spec, node: &str, holder: u32) -> Result<()> {
    let dir = node_dir(spec, node);
    let cfg = dir.join("containerd.toml");
    write_file(&cfg, &containerd_config(spec, node), 0o644)?;
    let containerd = spec.tools.containerd.join("containerd");
    let sock = containerd_socket(node);
    // A socket left by a killed containerd would pass for the new one's.
    let _ = std::fs::remove_file(&sock);
    let pid = process::spawn_with_env(
        &spec.state_dir,
        &format!("{node}-containerd"),
        Path::new("nsenter"),
        &enter(holder, &containerd, vec![format!("--config={}", cfg.display())]),
        // The shims and runc are found on PATH.
        &[(
            "PATH",
            format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", spec.tools.containerd.display()),
        )],
    )?;
    wait_until(&format!("{node}: containerd"), Duration::from_secs(30), || {
        let sock = sock.clone();
        async move {
            if process::gone(pid) {
                return Some("exited".into());
            }
            (!sock.exists()).then(|| "no socket yet".into())
        }
    })
    .await
    .map_err(|e| {
        ClusterError::NotReady(format!("{e}\n{}", process::tail(&spec.state_dir, &format!("{node}-containerd"), 5)))
    })
}

fn start_kubelet(spec: &Spec, node: &str, holder: u32) -> Result<()> {
    let i = spec.node_index(node).ok_or_else(|| ClusterError::Invalid(format!("{node} is not a node")))?;
    let (_, addr) = addresses(i);
    let kcfg = node_dir(spec, node).join("kubelet.yaml");
    write_file(&kcfg, &kubelet_config(spec, node, addr), 0o644)?;
    let kubelet = spec.tools.kubernetes.join("kubelet");
    process::spawn(
        &spec.state_dir,
        &format!("{node}-kubelet"),
        Path::new("nsenter"),
        &enter(
            holder,
            &kubelet,
            vec![
                format!("--config={}", kcfg.display()),
                format!("--kubeconfig={}", spec.state_dir.join(format!("pki/node-{node}.kubeconfig")).display()),
                format!("--hostname-override={node}"),
                format!("--node-ip={addr}"),
                "--v=2".into(),
            ],
        ),
    )?;
    Ok(())
}

/// The node's VM halts: its kubelet, containerd, shims and containers die at
/// once (SIGKILL, no teardown), and what the VM had mounted goes with it (pod
/// volumes, staged devices, container root filesystems, pod network namespace
/// mounts), as after a power-off; its runtime state directory is emptied (a
/// tmpfs in a real VM). The node's disk (kubelet root, images) and its
/// namespaces stay, so `resume` boots it again. Kubernetes sees only that the
/// kubelet stopped reporting.
pub async fn halt(spec: &Spec, node: &str) -> Result<()> {
    let holder = holder(spec, node)?;
    let state = &spec.state_dir;
    for name in [format!("{node}-kubelet"), format!("{node}-containerd")] {
        if let Some(pid) = process::running(state, &name) {
            process::kill_now(pid);
        }
    }
    kill_containers(node).await;
    for p in pids_with_arg(&containerd_socket(node).display().to_string()) {
        process::kill_now(p);
    }
    for name in [format!("{node}-kubelet"), format!("{node}-containerd")] {
        process::stop(state, &name).await;
    }
    let runtime = run_dir(node).display().to_string();
    let mut targets: Vec<String> = mount_points(holder)
        .into_iter()
        .filter(|t| t.starts_with("/var/lib/kubelet/") || t.starts_with(&format!("{runtime}/")))
        .collect();
    // Deepest first; lazily, so a mount still busy for a moment goes anyway.
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    if !targets.is_empty() {
        let mut args = vec![format!("--target={holder}"), "--mount".into(), "--".into(), "umount".into(), "-l".into()];
        args.extend(targets.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // A mount below one already gone fails alone; what is left is checked next.
        let _ = run("nsenter", &args).await;
    }
    let left: Vec<String> = mount_points(holder)
        .into_iter()
        .filter(|t| t.starts_with("/var/lib/kubelet/") || t.starts_with(&format!("{runtime}/")))
        .collect();
    if !left.is_empty() {
        return Err(ClusterError::NotReady(format!("{node}: still mounted after the halt: {}", left.join(", "))));
    }
    let state_dir = run_dir(node).join("containerd");
    std::fs::remove_dir_all(&state_dir)
        .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        .map_err(|e| ClusterError::io("removing", &state_dir, e))?;
    Ok(())
}

/// The halted node's VM runs again: containerd and the kubelet start as at
/// boot (the images are still on its disk).
pub async fn resume(spec: &Spec, node: &str) -> Result<()> {
    let holder = holder(spec, node)?;
    start_containerd(spec, node, holder).await?;
    start_kubelet(spec, node, holder)
}

/// A file as the node's processes see it (its mount namespace: a pod's Secret
/// volume is a tmpfs mounted there only).
pub fn read_in_node(spec: &Spec, node: &str, path: &Path) -> Result<String> {
    let holder = holder(spec, node)?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let full = Path::new(&format!("/proc/{holder}/root")).join(rel);
    std::fs::read_to_string(&full).map_err(|e| ClusterError::io("reading", &full, e))
}

/// The node's network namespace (`ip netns` path).
pub fn netns_path(node: &str) -> PathBuf {
    Path::new("/run/netns").join(netns(node))
}

/// Mount points in the mount namespace of `pid` (octal escapes decoded).
fn mount_points(pid: u32) -> Vec<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    crate::work_dir::mount_points(&info)
}

/// SIGKILL of every process in the node's cgroups (its pods' containers).
async fn kill_containers(node: &str) {
    for _ in 0..3 {
        let pids = cgroup_pids(node);
        if pids.is_empty() {
            break;
        }
        pids.iter().for_each(|p| process::kill_now(*p));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the node and removes its namespaces, link and cgroups. Its pods'
/// mounts go with the mount namespace once every process in it is gone.
pub async fn stop(spec: &Spec, node: &str) -> Result<()> {
    let state = &spec.state_dir;
    process::stop(state, &format!("{node}-kubelet")).await;
    // Containers first (their shims would restart nothing, but would hold the
    // mount namespace), then the shims, containerd and the namespace holder.
    kill_containers(node).await;
    let sock = containerd_socket(node).display().to_string();
    let shims = pids_with_arg(&sock);
    for p in &shims {
        process::terminate(*p, Duration::from_secs(2)).await;
    }
    process::stop(state, &format!("{node}-containerd")).await;
    process::stop(state, &format!("{node}-ns")).await;
    let i = spec.node_index(node).unwrap_or(0);
    network_down(node, i).await;
    let mut left = Vec::new();
    for _ in 0..20 {
        left = cgroups_down(node);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = std::fs::remove_dir_all(run_dir(node));
    if left.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::NotReady(format!("{node}: cgroups still in use: {}", left.join(", "))))
    }
}

/// Ready condition per node ("True", or "False: <message>").
pub async fn ready_conditions(client: &kube::Client) -> Result<BTreeMap<String, String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&Default::default()).await.map_err(|e| ClusterError::NotReady(e.to_string()))?;
    Ok(list
        .items
        .into_iter()
        .map(|n| {
            let name = n.metadata.name.unwrap_or_default();
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| {
                    if c.status == "True" {
                        "True".to_string()
                    } else {
                        format!("{}: {}", c.status, c.message.unwrap_or_default())
                    }
                })
                .unwrap_or_else(|| "no Ready condition yet".into());
            (name, ready)
        })
        .collect())
}

pub async fn wait_ready(client: &kube::Client, nodes: &[String], within: Duration) -> Result<()> {
    wait_until("nodes", within, || async {
        let ready = match ready_conditions(client).await {
            Ok(r) => r,
            Err(e) => return Some(e.to_string()),
        };
        let not: Vec<String> = nodes
            .iter()
            .filter(|n| ready.get(*n).map(String::as_str) != Some("True"))
            .map(|n| format!("{n}: {}", ready.get(n).cloned().unwrap_or_else(|| "not registered".into())))
            .collect();
        (!not.is_empty()).then(|| not.join("; "))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_are_slash_30s_in_the_benchmarking_range_and_never_private() {
        let (h0, n0) = addresses(0);
        assert_eq!((h0.to_string(), n0.to_string()), ("198.18.1.1".into(), "198.18.1.2".into()));
        let (h1, n1) = addresses(1);
        assert_eq!((h1.to_string(), n1.to_string()), ("198.18.1.5".into(), "198.18.1.6".into()));
        for i in 0..60 {
            let (h, n) = addresses(i);
            assert!(!h.is_private() && !n.is_private() && !n.is_loopback());
            assert_eq!(h.octets()[..3], [198, 18, 1]);
        }
    }
}
