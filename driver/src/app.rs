//! Starting the driver: configuration → clients → capability report → services.

use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::controller::{ControllerService, ControllerSettings};
use crate::guard::VolumeLocks;
use crate::guest::Guest;
use crate::host::retry::{retry_transient, STARTUP_BUDGET};
use crate::host::{Feature, Host};
use crate::identity::IdentityService;
use crate::metrics::Metrics;
use crate::mount::LinuxMounter;
use crate::node::{self, NodeService};
use crate::server::{self, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the Harvester cloud-config {path}: {reason}")]
    CloudConfig { path: String, reason: String },
    #[error("guest cluster access: {0}")]
    Guest(String),
    #[error(transparent)]
    Endpoint(#[from] server::EndpointError),
    #[error("identifying this node's VM: {0}")]
    NodeIdentity(crate::error::Error),
    #[error("identifying the host cluster: {0}")]
    ClusterIdentity(crate::error::Error),
    #[error("reading this node's topology: {0}")]
    NodeTopology(crate::error::Error),
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("kubelet plugin registration: {0}")]
    Registration(#[from] crate::registration::RegistrationError),
}

/// The host API as the cloud-config reaches it.
pub struct HostConnection {
    pub client: kube::Client,
    /// The namespace of the cloud-config context: the VMs' namespace.
    pub namespace: String,
    pub url: String,
    /// The CA certificate (DER) the cloud-config trusts, if it names one.
    pub ca_der: Option<Vec<u8>>,
}

/// The host client from the cloud-config, and its namespace (the VMs' namespace).
pub async fn host_client(config: &Config) -> Result<HostConnection, StartError> {
    let path = config.cloud_config_path();
    let err = |reason: String| StartError::CloudConfig { path: path.display().to_string(), reason };
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| err(e.to_string()))?;
    let mut kc = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    // kube's default retry waits out 429/503/504 for minutes (15 tries, exponential backoff): the
    // RPC would hang instead of answering UNAVAILABLE, and the CO retries with its own backoff.
    kc.default_retry = false;
    let namespace = kc.default_namespace.clone();
    let url = kc.cluster_url.to_string();
    let ca_der = kc.root_cert.as_ref().and_then(|certs| certs.first().cloned());
    // Reads are retried briefly in place (host::retry::ReadRetry); the buffer makes the
    // boxed service clonable, which the retry layer needs.
    let client = kube::client::ClientBuilder::try_from(kc)
        .map_err(|e| err(e.to_string()))?
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(crate::host::retry::ReadRetry::default()))
        .build();
    Ok(HostConnection { client, namespace, url, ca_der })
}

pub async fn guest_client(config: &Config) -> Result<Option<kube::Client>, StartError> {
    if config.no_guest_access {
        return Ok(None);
    }
    if let Some(path) = &config.guest_kubeconfig {
        let kubeconfig =
            Kubeconfig::read_from(path).map_err(|e| StartError::Guest(format!("{}: {e}", path.display())))?;
        let kc = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| StartError::Guest(e.to_string()))?;
        return kube::Client::try_from(kc).map(Some).map_err(|e| StartError::Guest(e.to_string()));
    }
    match kube::Config::incluster() {
        Ok(kc) => kube::Client::try_from(kc).map(Some).map_err(|e| StartError::Guest(e.to_string())),
        Err(_) => Ok(None),
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    config.validate().map_err(StartError::Config)?;
    let endpoint: Endpoint = config.endpoint.parse()?;
    let metrics = Arc::new(Metrics::default());
    let HostConnection { client, namespace, url: cluster_url, ca_der } = host_client(&config).await?;
    let mut host = Host::new(client.clone(), namespace.clone(), metrics.clone());
    if config.runs_controller() {
        host.watch_vms(shutdown.clone());
    }
    tracing::info!(namespace = %namespace, mode = ?config.mode, "harvester-csi-driver starting");
    let identity = retry_transient("identifying the host cluster", STARTUP_BUDGET, || {
        host.cluster_identity(ca_der.as_deref(), &cluster_url)
    })
    .await
    .map_err(StartError::ClusterIdentity)?;
    tracing::info!(value = %identity.value, source = ?identity.source, "host cluster identity (topology segment)");
    let cluster_topology = node::host_cluster_segment(&identity.value);

    // Only the controller reads the guest cluster; a node plugin never asks for access.
    let guest_client = if config.runs_controller() { guest_client(&config).await? } else { None };
    let guest = match &guest_client {
        Some(c) if config.runs_controller() => {
            let g = Guest::start(c.clone(), shutdown.clone());
            if g.wait_synced(std::time::Duration::from_secs(30)).await {
                Some(Arc::new(g))
            } else {
                tracing::warn!("the guest view did not sync within 30s; guest checks are off");
                None
            }
        }
        _ => None,
    };
    let guest_reason = if !config.runs_controller() {
        "controller-side feature (this process runs in node mode)"
    } else if config.no_guest_access {
        "disabled by --no-guest-access"
    } else {
        "no guest cluster access (in-cluster config or --guest-kubeconfig)"
    };
    for f in [Feature::GuestVolumeAttachments, Feature::RwxExportRefcount] {
        host.features.set(f, guest.is_some(), guest_reason);
    }
    host.features.set(Feature::NodeHealth, guest_client.is_some() && config.runs_controller(), guest_reason);
    host.probe_features().await;
    tokio::spawn(host.clone().run_reprobe_loop(shutdown.clone()));

    let cluster_id = match (&config.cluster_id, &guest) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(g)) => g.cluster_id().await,
        (None, None) => None,
    };
    if cluster_id.is_none() && config.runs_controller() {
        tracing::warn!("no guest cluster id (set --cluster-id): host volumes will not name their guest cluster");
    }

    let locks = VolumeLocks::default();
    let identity = IdentityService {
        host_client: Some(client.clone()),
        metrics: metrics.clone(),
        controller: config.runs_controller(),
    };
    let mut router = tonic::transport::Server::builder().add_service(csi_proto::IdentityServer::new(identity));
    if config.runs_controller() {
        let controller = ControllerService {
            host: host.clone(),
            guest: guest.clone(),
            locks: locks.clone(),
            vm_queues: Default::default(),
            settings: ControllerSettings {
                host_storage_class: config.host_storage_class.clone(),
                cluster_id,
                timeout: config.operation_timeout,
                max_volumes_per_node: config.max_volumes_per_node,
                accessible_topology: cluster_topology.clone(),
            },
            metrics: metrics.clone(),
        };
        router = router.add_service(csi_proto::ControllerServer::new(controller));
        if let Some(gc) = guest_client.clone() {
            let me = std::env::var("POD_NAME").unwrap_or_else(|_| format!("harvester-csi-{}", std::process::id()));
            tokio::spawn(crate::guest::node_health::run(gc, host.clone(), me, shutdown.clone()));
        }
    }
    if config.runs_node() {
        let node_id = node::vm_identity::discover(&host, &config.root, config.node_id.as_deref())
            .await
            .map_err(StartError::NodeIdentity)?;
        let mut topology =
            retry_transient("reading this node's topology", STARTUP_BUDGET, || host.node_topology(&node_id))
                .await
                .map_err(StartError::NodeTopology)?;
        topology.extend(cluster_topology.clone());
        let service = NodeService {
            node_id,
            root: config.root.clone(),
            kubelet_root: node::KubeletRoot::new(&config.kubelet_root),
            host: host.clone(),
            mounter: Arc::new(LinuxMounter::new().with_nfs_helper(config.nfs_mount_helper.clone())),
            locks: locks.clone(),
            metrics: metrics.clone(),
            max_volumes_per_node: config.max_volumes_per_node,
            topology,
            timeout: config.operation_timeout,
        };
        router = router.add_service(csi_proto::NodeServer::new(service));
    }
    if let Some(addr) = config.metrics_address {
        let listener = crate::metrics::bind(addr).await?;
        let (m, s) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, m, s).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let (bound, bound_rx) = tokio::sync::oneshot::channel();
    let registration = match (&config.plugin_registration_dir, &config.kubelet_registration_path) {
        (Some(dir), Some(path)) => {
            let service = crate::registration::RegistrationService {
                endpoint: path.display().to_string(),
                metrics: metrics.clone(),
            };
            let (dir, stop) = (dir.clone(), shutdown.clone());
            // Registered only once the CSI socket accepts calls: the kubelet calls
            // NodeGetInfo right after GetInfo.
            Some(tokio::spawn(async move {
                if bound_rx.await.is_err() {
                    return Ok(());
                }
                let served = crate::registration::serve(&dir, service, stop.clone()).await;
                // Without registration the kubelet never sends volumes here: stop the
                // whole plugin so that its container restarts and says why.
                stop.cancel();
                served
            }))
        }
        _ => None,
    };
    let served = server::serve(router, endpoint, shutdown.clone(), Some(bound)).await;
    shutdown.cancel();
    if let Some(r) = registration {
        match r.await {
            Ok(result) => result?,
            Err(e) => return Err(StartError::Config(format!("registration task: {e}"))),
        }
    }
    served?;
    Ok(())
}
