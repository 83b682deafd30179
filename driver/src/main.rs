//! `harvester-csi-driver`: the CSI driver for Kubernetes clusters in Harvester VMs.

use clap::Parser;
use harvester_csi_driver::config::{Config, LogFormat, Tool};
use tokio_util::sync::CancellationToken;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: container logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    match &config.tool {
        Some(Tool::Orphans { json, include_unowned }) => {
            return match orphan_report(&config, *json, *include_unowned).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("harvester-csi-driver orphans: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Tool::CloudConfig(args)) => {
            let mut out = std::io::stdout();
            return match harvester_csi_driver::cloud_config::execute(args, &mut out).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("harvester-csi-driver cloud-config: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    match harvester_csi_driver::app::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harvester-csi-driver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn orphan_report(config: &Config, json: bool, include_unowned: bool) -> anyhow::Result<()> {
    use harvester_csi_driver::{app, host::Host, metrics::Metrics, orphans};
    let conn = app::host_client(config).await?;
    let host = Host::new(conn.client, conn.namespace, std::sync::Arc::new(Metrics::default()));
    let guest = app::guest_client(config).await?;
    let report = orphans::report(&host, config.cluster_id.as_deref(), guest.as_ref(), include_unowned).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", orphans::render(&report));
    }
    Ok(())
}
