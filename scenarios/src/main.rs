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
    /// A real Kubernetes cluster with the Helm chart (not available yet).
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
    },
    /// Check scenario files against the schema without running them.
    Validate {
        /// Scenario files or directories of them (default: scenarios/cases).
        paths: Vec<PathBuf>,
    },
    /// Measure attach overhead, a burst of claims, and driver memory (root).
    Bench {
        /// The simulator's hotplug latency; overheads are reported above it.
        #[arg(long, default_value_t = 500)]
        hotplug_ms: u64,
        /// How many sequential attaches to time for the overhead percentiles.
        #[arg(long, default_value_t = 20)]
        attaches: usize,
        /// Claims (each with one pod) created at once in the burst.
        #[arg(long, default_value_t = 100)]
        burst: usize,
        /// Guest VMs the burst spreads its pods over.
        #[arg(long, default_value_t = 10)]
        vms: usize,
        /// Where the bench's work directory goes.
        #[arg(long, default_value = "target/scenarios-bench")]
        work_dir: PathBuf,
        /// Directory holding harvester-sim and harvester-csi-driver (default: next to this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
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
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Validate { paths } => {
            let all = load_all(&paths)?;
            println!("{} scenario file(s) valid", all.len());
            Ok(())
        }
        Command::Bench { hotplug_ms, attaches, burst, vms, work_dir, bin_dir } => {
            if !is_root() {
                bail!("the benchmark needs root (loop devices and mounts)");
            }
            let backend = embedded_backend(bin_dir)?;
            let _ = std::fs::remove_dir_all(&work_dir);
            std::fs::create_dir_all(&work_dir)?;
            let work_dir = work_dir.canonicalize()?;
            let opts = scenarios::bench::Options { hotplug_ms, attaches, burst, vms };
            let table = scenarios::bench::run(&backend, &opts, &work_dir).await?;
            print!("{table}");
            Ok(())
        }
        Command::Run { paths, backend, filter, junit, report: report_dir, work_dir, keep_work, bin_dir } => {
            let mut all = load_all(&paths)?;
            if let Some(f) = filter {
                let re = regex::Regex::new(&f).with_context(|| format!("--filter {f:?}"))?;
                all.retain(|(_, s)| re.is_match(&s.name));
                if all.is_empty() {
                    // A typo in CI's filter must not turn into a green run of nothing.
                    bail!("--filter {f:?} matches no scenario");
                }
            }
            let BackendKind::Embedded = backend else {
                bail!("the cluster backend is not implemented yet; use --backend embedded");
            };
            if !is_root() {
                bail!("the embedded backend needs root (loop devices and mounts)");
            }
            let backend = embedded_backend(bin_dir)?;
            std::fs::create_dir_all(&work_dir)?;
            let work_dir = work_dir.canonicalize()?;
            let (results, total) = runner::run_all(&backend, &all, &work_dir, keep_work).await;
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
