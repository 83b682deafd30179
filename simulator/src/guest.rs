//! A plain Kubernetes API for a guest cluster: the same engine serving core,
//! storage, RBAC, coordination and snapshot kinds, without any Harvester type
//! or controller. The scenario runner serves one in process (and plays the
//! components); `harvester-sim guest` serves one on its own, so a driver can
//! be run by hand against a guest API and a simulated host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::api::authn::{self, Authenticator};
use crate::api::http::{self, ServerState};
use crate::api::ops::{Api, WriteOptions};
use crate::api::resources::Registry;
use crate::api::store::Store;
use crate::faults::Faults;
use crate::sim::SimError;
use crate::{kubeconfig, tls};

const GROUPS: &[&str] =
    &["", "storage.k8s.io", "rbac.authorization.k8s.io", "coordination.k8s.io", "snapshot.storage.k8s.io"];

/// The admin kubeconfig a guest API writes into its directory.
pub const GUEST_KUBECONFIG: &str = "guest.kubeconfig";

pub struct GuestCluster {
    pub url: String,
    /// An admin kubeconfig for this cluster.
    pub kubeconfig: PathBuf,
    pub api: Arc<Api>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn version_document() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

impl GuestCluster {
    /// On a free loopback port.
    pub async fn start(dir: &Path) -> Result<Self, SimError> {
        Self::start_on(dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// On `listen`; state lives in memory only, the CA and the kubeconfig in `dir`.
    pub async fn start_on(dir: &Path, listen: SocketAddr) -> Result<Self, SimError> {
        let io = |op: &'static str| {
            let path = dir.display().to_string();
            move |source| SimError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create"))?;
        let token = authn::new_token();
        let store = Arc::new(Store::new(50_000));
        let api = Arc::new(Api::new(store, Registry::new(|t| GROUPS.contains(&t.group), false)));
        let server = Arc::new(ServerState::new(
            api.clone(),
            Arc::new(Authenticator::new(&token)),
            Arc::new(Faults::default()),
            version_document(),
        ));
        let ns_rt = api
            .resource("", "namespaces")
            .ok_or_else(|| SimError::Seed(crate::api::error::ApiError::internal("namespaces not served")))?;
        for ns in ["default", "kube-system", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}});
            api.create(&ns_rt, "", obj, &WriteOptions { keep_status: true, ..Default::default() })
                .map_err(SimError::Seed)?;
        }
        let listener = TcpListener::bind(listen).await.map_err(io("bind"))?;
        let address = listener.local_addr().map_err(io("local address of"))?;
        let server_tls = tls::load_or_create(dir, &[address.ip()])?;
        // A wildcard listener is reached through loopback, which the certificate always names.
        let host = if address.ip().is_unspecified() { "127.0.0.1".to_string() } else { address.ip().to_string() };
        let url = format!("https://{host}:{}", address.port());
        *server.server_address.write().unwrap_or_else(|p| p.into_inner()) = format!("{host}:{}", address.port());
        let path = dir.join(GUEST_KUBECONFIG);
        tls::write_secret_file(&path, &kubeconfig::render(&url, &server_tls.ca_pem, "admin", &token, "default"))?;
        let shutdown = CancellationToken::new();
        let router = http::router(server);
        let acceptor = TlsAcceptor::from(server_tls.config);
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        crate::sim::spawn_connection(stream, acceptor.clone(), router.clone(), stop.clone());
                    }
                }
            }
        });
        Ok(Self { url, kubeconfig: path, api, shutdown, task })
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
