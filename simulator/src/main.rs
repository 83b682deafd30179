//! `harvester-sim`: serve a simulated Harvester host or a plain guest-cluster API,
//! or change faults of a running host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use harvester_simulator::devices::DeviceMode;
use harvester_simulator::faults::FaultSpec;
use harvester_simulator::guest::GuestCluster;
use harvester_simulator::sim::{ADMIN_KUBECONFIG, CLOUD_CONFIG};
use harvester_simulator::{SimConfig, Simulator};

/// `--version`: says when the binary is a debug build (`scenarios bench` refuses those).
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    env!("CARGO_PKG_VERSION")
};

#[derive(Parser)]
#[command(name = "harvester-sim", version = VERSION, about = "A fake Harvester host cluster for testing guest CSI drivers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Devices {
    /// Real loop devices (needs root).
    Loop,
    /// By-id links point at the backing files (no root; for API-only work).
    File,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until interrupted.
    Serve {
        /// Where state, certificates, kubeconfigs, volumes and VM roots live.
        #[arg(long, env = "HARVESTER_SIM_STATE_DIR")]
        state_dir: PathBuf,
        #[arg(long, env = "HARVESTER_SIM_LISTEN", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Harvester release to behave like (v1.2 … v1.8).
        #[arg(long, env = "HARVESTER_SIM_PROFILE", default_value = "v1.5")]
        profile: String,
        /// World file (YAML); the documented default world without it.
        #[arg(long, env = "HARVESTER_SIM_WORLD")]
        world: Option<PathBuf>,
        #[arg(long, env = "HARVESTER_SIM_DEVICES", value_enum, default_value = "loop")]
        devices: Devices,
        /// Log format.
        #[arg(long, env = "HARVESTER_SIM_LOG_FORMAT", default_value = "text")]
        log_format: String,
    },
    /// Serve a plain Kubernetes API for a guest cluster (no Harvester kinds, no
    /// controllers; state in memory) until interrupted, writing an admin
    /// kubeconfig to STATE_DIR/guest.kubeconfig.
    Guest {
        /// Where the CA and the kubeconfig live.
        #[arg(long, env = "HARVESTER_SIM_GUEST_STATE_DIR")]
        state_dir: PathBuf,
        #[arg(long, env = "HARVESTER_SIM_GUEST_LISTEN", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Log format.
        #[arg(long, env = "HARVESTER_SIM_LOG_FORMAT", default_value = "text")]
        log_format: String,
    },
    /// Change a running simulator (talks to its admin API).
    Fault {
        #[arg(long, env = "HARVESTER_SIM_STATE_DIR")]
        state_dir: PathBuf,
        #[command(subcommand)]
        action: FaultAction,
    },
}

#[derive(Subcommand)]
enum FaultAction {
    /// Print the current faults.
    Show,
    /// Replace the faults with a YAML/JSON file (same shape as the world file's `faults`).
    Set { file: PathBuf },
    /// Remove all faults.
    Clear,
    /// Stop a VM (NAMESPACE/NAME).
    StopVm { vm: String },
    /// Start a VM (NAMESPACE/NAME).
    StartVm { vm: String },
    /// Move an RWX volume's share-manager (its endpoint changes).
    MoveShare { volume: String },
    /// End every open watch.
    DropWatches,
    /// Restart the API server (listener down for the given time; old watch versions expire).
    Restart {
        #[arg(long, default_value_t = 500)]
        downtime_ms: u64,
    },
    /// Replace the guest-facing RBAC with another release's.
    Rbac { profile: String },
    /// Show the devices each VM sees.
    Devices,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: container logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn admin_request(state_dir: &Path, method: &str, path: &str, body: Option<String>) -> Result<String> {
    let kubeconfig_path = state_dir.join(ADMIN_KUBECONFIG);
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path).with_context(|| {
        format!("reading {} (is a simulator serving this state directory?)", kubeconfig_path.display())
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let request = http::Request::builder()
        .method(method)
        .uri(format!("/sim/{path}"))
        .header("content-type", "application/json")
        .body(body.unwrap_or_default().into_bytes())?;
    client.request_text(request).await.with_context(|| format!("{method} /sim/{path}"))
}

fn split_vm(vm: &str) -> Result<(&str, &str)> {
    match vm.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        _ => bail!("expected NAMESPACE/NAME, got {vm:?}"),
    }
}

async fn fault(state_dir: PathBuf, action: FaultAction) -> Result<()> {
    let out = match action {
        FaultAction::Show => admin_request(&state_dir, "GET", "faults", None).await?,
        FaultAction::Set { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let spec: FaultSpec =
                serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            spec.validate().map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            admin_request(&state_dir, "PUT", "faults", Some(serde_json::to_string(&spec)?)).await?
        }
        FaultAction::Clear => admin_request(&state_dir, "PUT", "faults", Some("{}".into())).await?,
        FaultAction::StopVm { vm } => {
            let (ns, name) = split_vm(&vm)?;
            admin_request(&state_dir, "POST", &format!("vms/{ns}/{name}/stop"), None).await?
        }
        FaultAction::StartVm { vm } => {
            let (ns, name) = split_vm(&vm)?;
            admin_request(&state_dir, "POST", &format!("vms/{ns}/{name}/start"), None).await?
        }
        FaultAction::MoveShare { volume } => {
            admin_request(&state_dir, "POST", &format!("sharemanagers/{volume}/move"), None).await?
        }
        FaultAction::DropWatches => admin_request(&state_dir, "POST", "watches/drop", None).await?,
        FaultAction::Restart { downtime_ms } => {
            admin_request(&state_dir, "POST", "restart", Some(format!("{{\"downtimeMs\":{downtime_ms}}}"))).await?
        }
        FaultAction::Rbac { profile } => admin_request(&state_dir, "POST", &format!("rbac/{profile}"), None).await?,
        FaultAction::Devices => admin_request(&state_dir, "GET", "devices", None).await?,
    };
    println!("{out}");
    Ok(())
}

async fn until_stopped() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { state_dir, listen, profile, world, devices, log_format } => {
            init_logging(&log_format);
            let mut config = SimConfig::new(&state_dir);
            config.listen = listen;
            config.profile = profile;
            config.world = world;
            config.devices = match devices {
                Devices::Loop => DeviceMode::Loop,
                Devices::File => DeviceMode::File,
            };
            let sim = Simulator::start(config).await?;
            println!("address: {}", sim.url);
            println!("cloud-config: {}", state_dir.join(CLOUD_CONFIG).display());
            println!("admin-kubeconfig: {}", state_dir.join(ADMIN_KUBECONFIG).display());
            until_stopped().await?;
            sim.shutdown().await;
            Ok(())
        }
        Command::Guest { state_dir, listen, log_format } => {
            init_logging(&log_format);
            let guest = GuestCluster::start_on(&state_dir, listen).await?;
            println!("address: {}", guest.url);
            println!("kubeconfig: {}", guest.kubeconfig.display());
            tracing::info!(url = %guest.url, "guest cluster API serving");
            until_stopped().await?;
            guest.shutdown().await;
            Ok(())
        }
        Command::Fault { state_dir, action } => {
            init_logging("text");
            fault(state_dir, action).await
        }
    }
}
