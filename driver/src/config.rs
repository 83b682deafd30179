//! Command-line flags; every flag is also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Where the host cloud-config is looked for when `--kubeconfig` is unset or missing (upstream's fallback).
pub const DEFAULT_CLOUD_CONFIG: &str = "/etc/kubernetes/cloud-config";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Identity + Controller (a Deployment with the provisioner/attacher/resizer/snapshotter sidecars).
    Controller,
    /// Identity + Node (a DaemonSet on every guest node).
    Node,
    /// All three services in one process (tests, csi-sanity).
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--version`: says when the binary is a debug build, so that a benchmark can
/// refuse to measure one (`scenarios bench`).
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    env!("CARGO_PKG_VERSION")
};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "harvester-csi-driver",
    version = VERSION,
    about = "CSI driver for Kubernetes clusters running in Harvester VMs"
)]
pub struct Config {
    /// CSI endpoint: unix:///path/to/csi.sock or tcp://host:port.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,

    #[arg(long, env = "CSI_MODE", value_enum, default_value = "all")]
    pub mode: Mode,

    /// Kubeconfig of the Harvester host (the guest's cloud-config). Falls back to /etc/kubernetes/cloud-config.
    #[arg(long, env = "HARVESTER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Host StorageClass for volumes whose guest StorageClass names none (empty: the host's default class).
    #[arg(long, env = "HOST_STORAGE_CLASS")]
    pub host_storage_class: Option<String>,

    /// Override the discovered VM name (normally found from the firmware UUID or MAC set).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// The kubelet's root directory: node calls with staging or publish paths outside it are refused.
    #[arg(long, env = "KUBELET_ROOT", default_value = "/var/lib/kubelet")]
    pub kubelet_root: PathBuf,

    /// Prefix for /dev/disk/by-id and /sys reads (production: /).
    #[arg(long, env = "CSI_ROOT", default_value = "/")]
    pub root: PathBuf,

    /// Kubeconfig of the guest cluster; without it the in-cluster config is tried, else guest features are off.
    #[arg(long, env = "GUEST_KUBECONFIG")]
    pub guest_kubeconfig: Option<PathBuf>,

    /// Do not use any guest cluster access, even in-cluster.
    #[arg(long, env = "NO_GUEST_ACCESS", default_value_t = false)]
    pub no_guest_access: bool,

    /// Identifier of this guest cluster, written on host objects (default: the guest kube-system namespace UID).
    #[arg(long, env = "CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// Serve Prometheus metrics, /healthz and /capabilities here (e.g. 0.0.0.0:9808).
    #[arg(long, env = "METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,

    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Reported as max_volumes_per_node (hot-plugged SCSI disks per VM).
    #[arg(long, env = "MAX_VOLUMES_PER_NODE", default_value_t = 32)]
    pub max_volumes_per_node: i64,

    /// Program that performs NFS mounts (`HELPER <server>:<export> <target> <options>`); default: mount -t nfs.
    #[arg(long, env = "NFS_MOUNT_HELPER")]
    pub nfs_mount_helper: Option<PathBuf>,

    /// Longest a single RPC waits for the host when the caller sent no deadline.
    #[arg(long, env = "OPERATION_TIMEOUT", default_value = "100s", value_parser = parse_duration)]
    pub operation_timeout: Duration,

    /// Serve the kubelet plugin-registration API (what node-driver-registrar does) on
    /// `DIR/driver.harvesterhci.io-reg.sock`, DIR being the kubelet's plugins_registry
    /// (node mode only; needs --kubelet-registration-path).
    #[arg(long, env = "PLUGIN_REGISTRATION_DIR", requires = "kubelet_registration_path")]
    pub plugin_registration_dir: Option<PathBuf>,

    /// The CSI socket as the kubelet sees it (e.g.
    /// /var/lib/kubelet/plugins/driver.harvesterhci.io/csi.sock); sent to the kubelet at registration.
    #[arg(long, env = "KUBELET_REGISTRATION_PATH", requires = "plugin_registration_dir")]
    pub kubelet_registration_path: Option<PathBuf>,

    /// A tool instead of serving (flags above give the clusters to talk to).
    #[command(subcommand)]
    pub tool: Option<Tool>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// List this driver's host volumes (of --cluster-id, if given) and which are
    /// orphans: attached nowhere and without a guest PV. Never deletes anything.
    Orphans {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also list volumes the upstream driver made that this driver never used
        /// (unlabelled `pvc-<uuid>` RWX host PVCs); their guest cluster is unknown.
        #[arg(long)]
        include_unowned: bool,
    },
    /// Make this guest cluster's identity on the Harvester host and write its
    /// cloud-config (what upstream's generate_addon_csi.sh does): a ServiceAccount
    /// in the VMs' namespace, a RoleBinding to harvesterhci.io:cloudprovider, a
    /// ClusterRoleBinding to harvesterhci.io:csi-driver, a token Secret, then the
    /// kubeconfig. Needs a Harvester admin's credentials; safe to run again.
    CloudConfig(CloudConfigArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CloudConfigArgs {
    /// Kubeconfig of the Harvester host whose credentials may create ServiceAccounts,
    /// Secrets and RBAC bindings (a Harvester admin's).
    #[arg(long)]
    pub host_kubeconfig: PathBuf,
    /// Host namespace of the guest cluster's VMs (the cloud-config's namespace).
    #[arg(long)]
    pub namespace: String,
    /// ServiceAccount to make for the guest cluster (e.g. the guest cluster's name).
    #[arg(long)]
    pub service_account: String,
    /// Where to write the cloud-config (mode 0600); the chart's Secret key has this name.
    #[arg(long, default_value = "cloud-provider-config")]
    pub output: PathBuf,
    /// Print the objects that would be created (YAML) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Host API URL for the cloud-config (default: the host kubeconfig's server); e.g.
    /// https://<Harvester VIP>:6443 when that kubeconfig goes through Rancher.
    #[arg(long)]
    pub server: Option<String>,
    /// Longest wait for the host's token controller to issue the token.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `90s`, `2m`, `1500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    }
}

impl Config {
    pub fn runs_controller(&self) -> bool {
        matches!(self.mode, Mode::Controller | Mode::All)
    }
    pub fn runs_node(&self) -> bool {
        matches!(self.mode, Mode::Node | Mode::All)
    }

    /// Flag combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if !self.runs_controller() && self.guest_kubeconfig.is_some() {
            return Err("--guest-kubeconfig is read only by the controller (--mode controller or all); \
                 a node plugin never talks to the guest cluster: remove the flag"
                .into());
        }
        if self.plugin_registration_dir.is_some() && !self.runs_node() {
            return Err(
                "--plugin-registration-dir registers a node plugin with its kubelet; it needs --mode node (or all), not --mode controller"
                    .into(),
            );
        }
        if let Some(p) = &self.kubelet_registration_path {
            if !p.is_absolute() {
                return Err(format!("--kubelet-registration-path {} must be absolute", p.display()));
            }
        }
        Ok(())
    }

    /// The cloud-config path to use: the flag if it exists, else the upstream fallback.
    pub fn cloud_config_path(&self) -> PathBuf {
        match &self.kubeconfig {
            Some(p) if p.exists() => p.clone(),
            Some(p) if !PathBuf::from(DEFAULT_CLOUD_CONFIG).exists() => p.clone(),
            _ => PathBuf::from(DEFAULT_CLOUD_CONFIG),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("90s", Some(90_000))]
    #[case("2m", Some(120_000))]
    #[case("1500ms", Some(1500))]
    #[case("7", Some(7000))]
    #[case("1h", None)]
    #[case("x", None)]
    fn durations(#[case] input: &str, #[case] millis: Option<u64>) {
        assert_eq!(parse_duration(input).ok().map(|d| d.as_millis() as u64), millis);
    }

    #[rstest]
    #[case(&["--mode=node", "--plugin-registration-dir=/r", "--kubelet-registration-path=/k/csi.sock"], Ok(()))]
    #[case(&["--mode=all", "--plugin-registration-dir=/r", "--kubelet-registration-path=/k/csi.sock"], Ok(()))]
    #[case(&["--mode=controller", "--plugin-registration-dir=/r", "--kubelet-registration-path=/k/csi.sock"], Err("--mode node"))]
    #[case(&["--mode=node", "--plugin-registration-dir=/r", "--kubelet-registration-path=csi.sock"], Err("absolute"))]
    fn registration_flags(#[case] args: &[&str], #[case] want: Result<(), &str>) {
        let c = Config::try_parse_from(std::iter::once("driver").chain(args.iter().copied())).expect("flags parse");
        match (c.validate(), want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[rstest]
    #[case(&["--plugin-registration-dir=/r"])]
    #[case(&["--kubelet-registration-path=/k/csi.sock"])]
    fn registration_flags_come_together(#[case] args: &[&str]) {
        let e = Config::try_parse_from(std::iter::once("driver").chain(args.iter().copied()))
            .expect_err("one registration flag without the other");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{e}");
    }

    #[rstest]
    #[case(&["--mode=node", "--guest-kubeconfig=/g"], false)]
    #[case(&["--mode=node"], true)]
    #[case(&["--mode=controller", "--guest-kubeconfig=/g"], true)]
    #[case(&["--mode=all", "--guest-kubeconfig=/g"], true)]
    fn guest_kubeconfig_is_refused_in_node_mode(#[case] args: &[&str], #[case] ok: bool) {
        let config = Config::try_parse_from(std::iter::once("harvester-csi-driver").chain(args.iter().copied()))
            .expect("flags parse");
        let checked = config.validate();
        assert_eq!(checked.is_ok(), ok, "{checked:?}");
        if let Err(e) = checked {
            assert!(e.contains("--guest-kubeconfig"), "{e}");
        }
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            if arg.get_long().is_some_and(|l| l != "help" && l != "version") {
                assert!(arg.get_env().is_some(), "--{} has no env var", arg.get_long().unwrap_or_default());
            }
        }
    }
}
