//! Starting and stopping a simulator: state directory, seeding or restoring,
//! TLS, kubeconfigs, the HTTPS listener and the controllers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::api::authn::{self, Authenticator};
use crate::api::http::{self, ServerState};
use crate::api::ops::Api;
use crate::api::resources::Registry;
use crate::api::store::Store;
use crate::controllers::{self, Ctx};
use crate::devices::{DeviceManager, DeviceMode};
use crate::faults::Faults;
use crate::world::World;
use crate::{kubeconfig, persist, profiles, seed, tls};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub profile: String,
    pub world: Option<PathBuf>,
    pub devices: DeviceMode,
    /// Watch history kept for resuming watches (older versions get 410).
    pub watch_history: usize,
}

impl SimConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            profile: "v1.5".into(),
            world: None,
            devices: DeviceMode::Loop,
            watch_history: 50_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Profile(#[from] profiles::UnknownProfile),
    #[error(transparent)]
    World(#[from] crate::world::WorldError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Devices(#[from] crate::devices::DeviceError),
    #[error("state directory {dir} was created with profile {found}; start it with --profile {found} or use another directory")]
    ProfileMismatch { dir: String, found: String },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("seeding the world: {0}")]
    Seed(crate::api::error::ApiError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SimError {
    let path = path.display().to_string();
    move |source| SimError::Io { op, path, source }
}

pub const CLOUD_CONFIG: &str = "cloud-config";
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const ENDPOINT_FILE: &str = "endpoint";

pub struct Simulator {
    pub address: SocketAddr,
    pub url: String,
    pub state_dir: PathBuf,
    pub ctx: Arc<Ctx>,
    pub server: Arc<ServerState>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let dir = config.state_dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let profile = profiles::lookup(&config.profile)?;
        let world = match &config.world {
            Some(p) => World::load(p)?,
            None => World::resolved_default(),
        };
        let devices = Arc::new(DeviceManager::new(&dir, config.devices));
        devices.check()?;

        let token_path = dir.join(ADMIN_TOKEN);
        let admin_token = match std::fs::read_to_string(&token_path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = authn::new_token();
                tls::write_secret_file(&token_path, &t)?;
                t
            }
        };

        let store = Arc::new(Store::new(config.watch_history));
        let registry = Registry::new(|t| profile.serves(t), true);
        let api = Arc::new(Api::new(store.clone(), registry));
        let faults = Arc::new(Faults::new(world.faults.clone()));
        let authn = Arc::new(Authenticator::new(&admin_token));
        let server = Arc::new(ServerState::new(api.clone(), authn.clone(), faults.clone(), profile.version_document()));
        let ctx = Arc::new(Ctx {
            api: api.clone(),
            devices,
            faults,
            profile: profile.clone(),
            timing: RwLock::new(world.timing.clone()),
            server: server.clone(),
            state_dir: dir.clone(),
            admin_token: admin_token.clone(),
            restart: tokio::sync::Notify::new(),
            restart_downtime: RwLock::new(Duration::from_millis(500)),
            hotplug: Default::default(),
            timers: Default::default(),
        });
        controllers::install_admission(&ctx);
        *server.admin.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(crate::admin::Admin::new(Arc::downgrade(&ctx))));

        let restored = match persist::load(&dir)? {
            Some(snapshot) => {
                if snapshot.profile != profile.name {
                    return Err(SimError::ProfileMismatch { dir: dir.display().to_string(), found: snapshot.profile });
                }
                persist::restore(&store, snapshot);
                true
            }
            None => {
                seed::seed(&api, &profile, &world).map_err(SimError::Seed)?;
                false
            }
        };
        authn.sync_service_account_tokens(&admin_token, &api.list("", "secrets", None));

        let listener =
            TcpListener::bind(config.listen).await.map_err(io_err("bind", Path::new(&config.listen.to_string())))?;
        let address =
            listener.local_addr().map_err(io_err("local address of", Path::new(&config.listen.to_string())))?;
        let server_tls = tls::load_or_create(&dir, &[address.ip()])?;
        let host = if address.ip().is_unspecified() { "127.0.0.1".to_string() } else { address.ip().to_string() };
        let url = format!("https://{host}:{}", address.port());
        *server.server_address.write().unwrap_or_else(|p| p.into_inner()) = format!("{host}:{}", address.port());

        write_kubeconfigs(&dir, &url, &server_tls.ca_pem, &admin_token, &api, &world)?;
        std::fs::write(dir.join(ENDPOINT_FILE), format!("{url}\n"))
            .map_err(io_err("write", &dir.join(ENDPOINT_FILE)))?;

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(persist::run(store.clone(), profile.name.to_string(), dir.clone(), shutdown.clone())));
        tasks.extend(controllers::start(ctx.clone(), restored, shutdown.clone()).await);
        tasks.push(tokio::spawn(serve(
            listener,
            config.listen,
            address,
            TlsAcceptor::from(server_tls.config),
            server.clone(),
            ctx.clone(),
            shutdown.clone(),
        )));
        tracing::info!(%url, profile = profile.name, restored, "harvester simulator serving");
        Ok(Self { address, url, state_dir: dir, ctx, server, shutdown, tasks })
    }

    pub fn cloud_config_path(&self) -> PathBuf {
        self.state_dir.join(CLOUD_CONFIG)
    }

    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        self.state_dir.join(ADMIN_KUBECONFIG)
    }

    /// Stops serving and controllers and writes the final state.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// The cloud-config of the first guest credentials, one per further credentials,
/// and the admin kubeconfig.
fn write_kubeconfigs(
    dir: &Path,
    url: &str,
    ca: &str,
    admin_token: &str,
    api: &Api,
    world: &World,
) -> Result<(), SimError> {
    for (i, cred) in world.credentials().iter().enumerate() {
        let secret = api.get_opt("", "secrets", &cred.namespace, &seed::token_secret_name(&cred.service_account));
        let token = secret
            .as_deref()
            .map(|s| crate::api::meta::str_at(s, "/data/token").to_string())
            .and_then(|t| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, t).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let text = kubeconfig::render(
            url,
            ca,
            &format!("{}-{}", cred.namespace, cred.service_account),
            &token,
            &cred.namespace,
        );
        let name = if i == 0 {
            CLOUD_CONFIG.to_string()
        } else {
            format!("{CLOUD_CONFIG}-{}-{}", cred.namespace, cred.service_account)
        };
        tls::write_secret_file(&dir.join(name), &text)?;
    }
    tls::write_secret_file(&dir.join(ADMIN_KUBECONFIG), &kubeconfig::render(url, ca, "admin", admin_token, "default"))?;
    Ok(())
}

/// Accepts TLS connections and serves the API. A restart request (admin API)
/// closes the listener and every connection, waits, and binds the same port again.
async fn serve(
    mut listener: TcpListener,
    configured: SocketAddr,
    address: SocketAddr,
    acceptor: TlsAcceptor,
    server: Arc<ServerState>,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
) {
    let _ = configured;
    let router = http::router(server.clone());
    loop {
        let generation = CancellationToken::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => { generation.cancel(); return; }
                downtime = ctx.restart_requested() => {
                    generation.cancel();
                    drop(listener);
                    server.drop_watches();
                    ctx.api.store.compact_history();
                    tokio::time::sleep(downtime).await;
                    listener = loop {
                        match TcpListener::bind(address).await {
                            Ok(l) => break l,
                            Err(e) => {
                                tracing::warn!(error = %e, "re-binding after restart");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    };
                    break;
                }
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    spawn_connection(stream, acceptor.clone(), router.clone(), generation.clone());
                }
            }
        }
    }
}

/// Serves one accepted TCP connection over TLS until it ends or `stop` fires.
pub(crate) fn spawn_connection(
    stream: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    router: axum::Router,
    stop: CancellationToken,
) {
    // As Go servers do: without it, the last segment of a response can
    // wait for a delayed ACK (~40 ms stalls on lists and watches).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY");
    }
    let service = TowerToHyperService::new(router);
    tokio::spawn(async move {
        let Ok(tls) = acceptor.accept(stream).await else { return };
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::select! {
            _ = conn => {}
            _ = stop.cancelled() => {}
        }
    });
}
