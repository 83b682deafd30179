//! `scenarios`: run the YAML end-to-end suite.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use scenarios::backend::embedded::Embedded;
use scenarios::{report, runner};

#[derive(Parser)]
#[command(name = "scenarios", version, about = "End-to-end scenarios for the Harvester CSI driver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendKind {
    /// harvester-sim + driver processes on this machine (root).
    Embedded,
    /// A real Kubernetes with the driver installed by the Helm chart: the local
    /// cluster (`scenarios cluster`), or an existing one with --kubeconfig.
    Cluster,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios (default: scenarios/cases).
    Run {
        /// Scenario files or directories of them (default: scenarios/cases).
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "embedded")]
        backend: BackendKind,
        /// Only scenarios whose name matches this regular expression.
        #[arg(long)]
        filter: Option<String>,
        /// Write a JUnit XML report here (one test case per scenario).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Directory for per-scenario timelines (Markdown and JSON).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Where scenario work directories go (kept for failed scenarios).
        #[arg(long, default_value = "target/scenarios")]
        work_dir: PathBuf,
        /// Keep the work directories (driver and simulator logs) of passed scenarios too.
        #[arg(long)]
        keep_work: bool,
        /// Directory holding harvester-sim and harvester-csi-driver (default: next to this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Scenarios run side by side (embedded backend; default: 2 per core). The
        /// cluster backend runs one at a time: its scenarios share one cluster.
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        #[command(flatten)]
        cluster: Box<ClusterRunArgs>,
    },
    /// Randomized chaos (root): each seed is a random volume workflow with faults
    /// (kill -9 of the controller, a node plugin or the simulator; API error
    /// rates; watch drops), checked for double attachment, checksums, bounded
    /// convergence and leftovers. A failing seed replays with `--seed S`.
    Chaos(ChaosArgs),
    /// Check scenario files against the schema without running them.
    Validate {
        /// Scenario files or directories of them (default: scenarios/cases).
        paths: Vec<PathBuf>,
    },
    /// A local Kubernetes cluster from the real components (root): one node per VM.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Measure attach overhead, bursts of claims, and driver memory against their floors
    /// (root; release builds only: `cargo build --release --bins`).
    Bench {
        /// The simulator's hotplug latency; publish times are compared with it.
        #[arg(long, default_value_t = 500)]
        hotplug_ms: u64,
        /// How many sequential attaches to time for the publish percentiles.
        #[arg(long, default_value_t = 20)]
        attaches: usize,
        /// Bursts as CLAIMS:VMS (claims with one pod each, created at once and spread over
        /// the VMs), each on a fresh cluster; two or more also give the time per claim as
        /// the burst grows, e.g. `--burst 100:10 --burst 1000:50`.
        #[arg(long = "burst", default_value = "100:10")]
        bursts: Vec<scenarios::bench::Burst>,
        /// Where the bench's work directory goes.
        #[arg(long, default_value = "target/scenarios-bench")]
        work_dir: PathBuf,
        /// Directory holding harvester-sim and harvester-csi-driver (default: next to this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ChaosArgs {
    /// How many seeds to run, counting up from --first-seed.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Run this seed (repeatable) instead of a range: the replay of a failure.
    #[arg(long = "seed", conflicts_with_all = ["seeds", "first_seed"])]
    seed: Vec<u64>,
    /// Print this seed's scenario as YAML and exit (runs nothing, needs no root).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed", "seed"])]
    print: Option<u64>,
    /// Write the scenario of every failing seed here (`chaos-seed-<S>.yaml`, for `scenarios run`).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Where the seeds' work directories go (kept for failed seeds).
    #[arg(long, default_value = "target/scenarios-chaos")]
    work_dir: PathBuf,
    /// Keep the work directories of passed seeds too.
    #[arg(long)]
    keep_work: bool,
    /// Directory holding harvester-sim and harvester-csi-driver (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

async fn chaos_command(a: ChaosArgs) -> Result<()> {
    use scenarios::chaos::run;
    if let Some(seed) = a.print {
        print!("{}", run::yaml_of(seed)?);
        return Ok(());
    }
    if !is_root() {
        bail!("scenarios chaos runs the embedded backend, which needs root (loop devices and mounts)");
    }
    let seeds: Vec<u64> =
        if a.seed.is_empty() { (0..a.seeds).map(|i| a.first_seed.wrapping_add(i)).collect() } else { a.seed.clone() };
    let backend = embedded_backend(a.bin_dir)?;
    std::fs::create_dir_all(&a.work_dir)?;
    let opts = run::Options { seeds, work_dir: a.work_dir.canonicalize()?, keep_work: a.keep_work, write: a.write };
    let started = std::time::Instant::now();
    let results = run::run_seeds(backend, &opts).await;
    print!("{}", run::summary(&results, started.elapsed().as_secs_f64()));
    if results.iter().any(|r| !r.passed) {
        std::process::exit(1);
    }
    Ok(())
}

#[derive(clap::Args, Clone)]
struct ClusterDir {
    /// Where the cluster keeps its state (certificates, etcd, node directories, logs).
    #[arg(long, default_value = "target/cluster", env = "HCSI_CLUSTER_DIR")]
    state_dir: PathBuf,
}

/// `run --backend cluster` options.
#[derive(clap::Args, Clone)]
struct ClusterRunArgs {
    /// An existing cluster (e.g. kind from kind-config/) instead of the local one.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The local cluster: reused if it runs, else started for the run and stopped after.
    #[command(flatten)]
    up: ClusterUpArgs,
    /// The chart to install.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/chart/harvester-csi-driver"))]
    chart: PathBuf,
    /// Helm values files applied before each scenario's own (image names: ci/cluster/images.sh
    /// writes target/cluster-images/images-values.yaml).
    #[arg(long = "values")]
    values: Vec<PathBuf>,
    /// helm (default: the helm build in the tool cache).
    #[arg(long, env = "HCSI_HELM")]
    helm: Option<PathBuf>,
    /// Where the simulator listens; driver pods (host network) must reach it.
    #[arg(long, default_value = "198.18.0.1:9443")]
    sim_listen: String,
}

#[derive(clap::Args, Clone)]
struct ClusterUpArgs {
    #[command(flatten)]
    dir: ClusterDir,
    /// Node (= VM) names.
    #[arg(long, value_delimiter = ',', default_value = "guest-1,guest-2")]
    nodes: Vec<String>,
    /// Image archives (files, or directories of *.tar) imported into every node.
    #[arg(long = "images", env = "HCSI_CLUSTER_IMAGES", value_delimiter = ':')]
    images: Vec<PathBuf>,
    /// Directory with kube-apiserver, kube-controller-manager, kube-scheduler and
    /// kubelet (default: the newest build in /var/cache/harvester-csi-tools).
    #[arg(long, env = "HCSI_KUBERNETES_BIN")]
    kubernetes_bin: Option<PathBuf>,
    /// Directory with containerd, ctr and the runc shim.
    #[arg(long, default_value = "/usr/bin")]
    containerd_bin: PathBuf,
    /// etcd binary (Debian's etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// external-snapshotter's build (bin/snapshot-controller and crd/): installs the
    /// VolumeSnapshot CRDs and runs the snapshot-controller. Default: the newest
    /// csi-snapshotter build in the tool cache, if any.
    #[arg(long, env = "HCSI_SNAPSHOTTER_DIR")]
    snapshotter_dir: Option<PathBuf>,
    /// Run without the VolumeSnapshot CRDs and snapshot-controller.
    #[arg(long)]
    no_snapshots: bool,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Start etcd, the control plane and one containerd + kubelet per node; wait until Ready.
    Up(ClusterUpArgs),
    /// Stop everything `up` started and remove its namespaces, links and cgroups.
    Down(ClusterDir),
    /// Show what runs and whether the nodes are Ready.
    Status(ClusterDir),
}

/// The newest complete build of `tool` in the tool cache.
fn cached_tool(tool: &str) -> Result<PathBuf> {
    let cache = std::env::var_os("HCSI_TOOLS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/harvester-csi-tools".into());
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .with_context(|| format!("{} (build with ci/cluster/build-tools.sh {tool})", cache.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.strip_prefix(tool).is_some_and(|v| v.starts_with("-v")))
                && p.join(".complete").exists()
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no {tool} build in {} (run ci/cluster/build-tools.sh {tool})", cache.display()))
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p)?;
    Ok(p.canonicalize()?)
}

async fn cluster_command(action: ClusterAction) -> Result<()> {
    use scenarios::cluster;
    if !is_root() {
        bail!("the local cluster needs root (network and mount namespaces, cgroups)");
    }
    match action {
        ClusterAction::Up(a) => {
            let spec = cluster_spec(&a)?;
            let images = cluster::images::Images::from_paths(&a.images)?;
            let started = std::time::Instant::now();
            let spec = cluster::up(spec, &images).await?;
            println!(
                "cluster up in {:.1}s; kubeconfig: {}",
                started.elapsed().as_secs_f64(),
                spec.admin_kubeconfig().display()
            );
            Ok(())
        }
        ClusterAction::Down(d) => {
            cluster::down(&absolute(&d.state_dir)?).await?;
            println!("cluster down");
            Ok(())
        }
        ClusterAction::Status(d) => {
            for (what, state) in cluster::status(&absolute(&d.state_dir)?).await? {
                println!("{what:32} {state}");
            }
            Ok(())
        }
    }
}

fn cluster_spec(a: &ClusterUpArgs) -> Result<scenarios::cluster::Spec> {
    let kubernetes = match &a.kubernetes_bin {
        Some(d) => d.clone(),
        None => cached_tool("kubernetes")?.join("bin"),
    };
    for b in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"] {
        if !kubernetes.join(b).exists() {
            bail!("{} not found (ci/cluster/build-tools.sh kubernetes builds it)", kubernetes.join(b).display());
        }
    }
    for (b, pkg) in [
        (a.etcd.clone(), "etcd-server"),
        (a.containerd_bin.join("containerd"), "containerd"),
        (a.containerd_bin.join("ctr"), "containerd"),
    ] {
        if !b.exists() {
            bail!("{} not found (apt-get install {pkg})", b.display());
        }
    }
    let snapshots = if a.no_snapshots {
        None
    } else {
        let dir = match &a.snapshotter_dir {
            Some(d) => d.clone(),
            None => cached_tool("csi-snapshotter")?,
        };
        let s = scenarios::cluster::addons::Snapshots {
            controller: dir.join("bin/snapshot-controller"),
            crds: dir.join("crd"),
        };
        if !s.controller.exists() || !s.crds.is_dir() {
            bail!("{}: no bin/snapshot-controller and crd/ (ci/cluster/build-tools.sh csi-snapshotter; or --no-snapshots)", dir.display());
        }
        Some(s)
    };
    Ok(scenarios::cluster::Spec {
        state_dir: absolute(&a.dir.state_dir)?,
        snapshots,
        nodes: a.nodes.clone(),
        tools: scenarios::cluster::Tools { kubernetes, etcd: a.etcd.clone(), containerd: a.containerd_bin.clone() },
    })
}

fn default_cases() -> Vec<PathBuf> {
    vec![PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/cases"))]
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, scenarios::model::Scenario)>> {
    let defaults = default_cases();
    let files = runner::collect(if paths.is_empty() { &defaults } else { paths })?;
    if files.is_empty() {
        bail!("no scenario files found");
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match runner::load(&f) {
            Ok(s) => out.push((f, s)),
            Err(e) => errors.push(e.0),
        }
    }
    if !errors.is_empty() {
        bail!("invalid scenario files:\n{}", errors.join("\n"));
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Cluster { action } => cluster_command(action).await,
        Command::Chaos(a) => chaos_command(a).await,
        Command::Validate { paths } => {
            let all = load_all(&paths)?;
            println!("{} scenario file(s) valid", all.len());
            Ok(())
        }
        Command::Bench { hotplug_ms, attaches, bursts, work_dir, bin_dir } => {
            if !is_root() {
                bail!("the benchmark needs root (loop devices and mounts)");
            }
            let backend = embedded_backend(bin_dir)?;
            scenarios::bench::refuse_debug_builds(&backend).await?;
            let _ = std::fs::remove_dir_all(&work_dir);
            std::fs::create_dir_all(&work_dir)?;
            let work_dir = work_dir.canonicalize()?;
            let opts = scenarios::bench::Options { hotplug_ms, attaches, bursts };
            let table = scenarios::bench::run(&backend, &opts, &work_dir).await?;
            print!("{table}");
            Ok(())
        }
        Command::Run {
            paths,
            backend,
            filter,
            junit,
            report: report_dir,
            work_dir,
            keep_work,
            bin_dir,
            jobs,
            cluster,
        } => {
            let mut all = load_all(&paths)?;
            if let Some(f) = filter {
                let re = regex::Regex::new(&f).with_context(|| format!("--filter {f:?}"))?;
                all.retain(|(_, s)| re.is_match(&s.name));
                if all.is_empty() {
                    // A typo in CI's filter must not turn into a green run of nothing.
                    bail!("--filter {f:?} matches no scenario");
                }
            }
            if !is_root() {
                bail!(
                    "the {} backend needs root (loop devices and mounts)",
                    if matches!(backend, BackendKind::Embedded) { "embedded" } else { "cluster" }
                );
            }
            std::fs::create_dir_all(&work_dir)?;
            let work_dir = work_dir.canonicalize()?;
            let (results, total) = match backend {
                BackendKind::Embedded => {
                    let backend = embedded_backend(bin_dir)?;
                    let jobs = jobs.map_or_else(runner::default_jobs, usize::from).min(all.len());
                    println!("{} scenario(s), {jobs} at a time", all.len());
                    runner::run_all(&backend, &all, &work_dir, keep_work, jobs).await
                }
                BackendKind::Cluster => {
                    if jobs.is_some_and(|j| j > 1) {
                        // One cluster, one simulator address its driver pods reach, one chart release.
                        bail!("the cluster backend runs one scenario at a time (--jobs 1)");
                    }
                    let (backend, started_here) = cluster_backend(bin_dir, &cluster, &all).await?;
                    let r = runner::run_all(&backend, &all, &work_dir, keep_work, 1).await;
                    if started_here {
                        scenarios::cluster::down(&absolute(&cluster.up.dir.state_dir)?).await?;
                    }
                    r
                }
            };
            print!("{}", report::summary(&results));
            println!("total {:.1}s", total.as_secs_f64());
            if let Some(j) = junit {
                std::fs::write(&j, report::junit(&results, total))
                    .with_context(|| format!("writing {}", j.display()))?;
            }
            if let Some(d) = report_dir {
                report::write_report(&d, &results).with_context(|| format!("writing {}", d.display()))?;
            }
            if results.iter().any(|r| !r.passed) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// The cluster backend: against --kubeconfig, or the local cluster (started here
/// with a node per VM the scenarios use, unless one runs already).
async fn cluster_backend(
    bin_dir: Option<PathBuf>,
    a: &ClusterRunArgs,
    all: &[(PathBuf, scenarios::model::Scenario)],
) -> Result<(scenarios::backend::cluster::ClusterBackend, bool)> {
    use scenarios::cluster;
    let bins = embedded_backend(bin_dir)?;
    let helm = match &a.helm {
        Some(h) => h.clone(),
        // Helm 3: helm 4 takes post-renderers only as plugins.
        None => cached_tool("helm")
            .ok()
            .filter(|d| d.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("helm-v3")))
            .or_else(|| {
                let cache = std::env::var_os("HCSI_TOOLS_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "/var/cache/harvester-csi-tools".into());
                let versions =
                    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/cluster/versions.sh")).ok()?;
                let v = versions.lines().find_map(|l| l.strip_prefix("HELM_VERSION="))?.trim().to_string();
                Some(cache.join(format!("helm-{v}")))
            })
            .context("no helm 3 build in the tool cache (ci/cluster/build-tools.sh helm), or pass --helm")?
            .join("bin/helm"),
    };
    let (kubeconfig, local, started_here) = match &a.kubeconfig {
        Some(k) => (k.clone(), None, false),
        None => {
            let state = absolute(&a.up.dir.state_dir)?;
            let running = cluster::Spec::load(&state)
                .ok()
                .filter(|_| cluster::process::running(&state, "kube-apiserver").is_some());
            match running {
                Some(spec) => (spec.admin_kubeconfig(), Some(spec), false),
                None => {
                    let mut up = a.up.clone();
                    let mut nodes: Vec<String> =
                        all.iter().flat_map(|(_, s)| scenarios::backend::cluster::plugin_nodes(s)).collect();
                    nodes.sort();
                    nodes.dedup();
                    up.nodes = nodes;
                    let spec = cluster_spec(&up)?;
                    let images = cluster::images::Images::from_paths(&up.images)?;
                    let started = std::time::Instant::now();
                    let spec = cluster::up(spec, &images).await?;
                    println!("cluster up in {:.1}s ({} nodes)", started.elapsed().as_secs_f64(), spec.nodes.len());
                    (spec.admin_kubeconfig(), Some(spec), true)
                }
            }
        }
    };
    Ok((
        scenarios::backend::cluster::ClusterBackend {
            kubeconfig,
            local,
            sim_bin: bins.sim_bin,
            driver_bin: bins.driver_bin,
            helm,
            chart: a.chart.clone(),
            values: a.values.clone(),
            sim_listen: a.sim_listen.clone(),
        },
        started_here,
    ))
}

fn embedded_backend(bin_dir: Option<PathBuf>) -> Result<Embedded> {
    let bins = match bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?.parent().map(PathBuf::from).context("locating the binaries")?,
    };
    let backend = Embedded { sim_bin: bins.join("harvester-sim"), driver_bin: bins.join("harvester-csi-driver") };
    for b in [&backend.sim_bin, &backend.driver_bin] {
        if !b.exists() {
            bail!("{} not found (build with `cargo build --bins`, or pass --bin-dir)", b.display());
        }
    }
    Ok(backend)
}

/// The effective uid, from /proc/self/status.
fn is_root() -> bool {
    effective_uid() == 0
}

fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
