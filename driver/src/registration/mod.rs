//! Kubelet plugin registration, served by the node plugin itself (what
//! node-driver-registrar does as a sidecar): the `pluginregistration.k8s.io/v1`
//! `Registration` service on `<plugins_registry>/driver.harvesterhci.io-reg.sock`.
//! The kubelet's plugin watcher finds the socket, asks GetInfo for the CSI
//! socket, calls NodeGetInfo there, and reports the outcome with
//! NotifyRegistrationStatus. Removing the socket (at shutdown) deregisters.
//! Connections pass through [`authority`]: the kubelet sends an `:authority`
//! that hyper refuses.

mod authority;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use csi_proto::pluginregistration::registration_server::{Registration, RegistrationServer};
use csi_proto::pluginregistration::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::names::DRIVER_NAME;

/// The plugin type the kubelet's CSI handler accepts.
const CSI_PLUGIN: &str = "CSIPlugin";
/// The kubelet's CSI plugin handler supports these registration versions.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// The registration socket for this driver inside the plugins_registry directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(format!("{DRIVER_NAME}-reg.sock"))
}

pub struct RegistrationService {
    /// The CSI socket as the kubelet sees it.
    pub endpoint: String,
    pub metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _request: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::info!(endpoint = %self.endpoint, "kubelet asked for registration info");
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN.into(),
            name: DRIVER_NAME.into(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        self.metrics.set_kubelet_registration(status.plugin_registered);
        if status.plugin_registered {
            tracing::info!("registered with the kubelet");
        } else {
            // The kubelet will not send volumes here until the cause is fixed and it
            // retries: say so loudly (node-driver-registrar exits in this case).
            tracing::error!(error = %status.error, "the kubelet refused to register this node plugin");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("registration socket {path}: {source}")]
    Socket { path: String, source: std::io::Error },
    #[error("serving registration on {path}: {reason}")]
    Serve { path: String, reason: String },
}

/// Serves registration until `shutdown`, then removes the socket (which makes the
/// kubelet deregister the plugin). A stale socket from an earlier run is replaced.
pub async fn serve(
    dir: &Path,
    service: RegistrationService,
    shutdown: CancellationToken,
) -> Result<(), RegistrationError> {
    let path = socket_path(dir);
    let sock_err = |source| RegistrationError::Socket { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(sock_err)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(sock_err)?;
    tracing::info!(socket = %path.display(), "serving kubelet plugin registration");
    let (conns, incoming) = tokio::sync::mpsc::channel::<std::io::Result<Connection>>(4);
    let accepting = tokio::spawn(accept(listener, conns, shutdown.clone()));
    let served = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(service))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(incoming), shutdown.cancelled_owned())
        .await;
    accepting.abort();
    let _ = std::fs::remove_file(&path);
    served.map_err(|e| RegistrationError::Serve { path: path.display().to_string(), reason: e.to_string() })
}

/// One registration connection as tonic sees it: the far end of a pipe whose
/// near end the authority rewriter feeds.
struct Connection(tokio::io::DuplexStream);

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts kubelet connections; each is piped through the authority rewriter.
async fn accept(
    listener: tokio::net::UnixListener,
    conns: tokio::sync::mpsc::Sender<std::io::Result<Connection>>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = listener.accept() => s,
        };
        let stream = match stream {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a registration connection");
                continue;
            }
        };
        let (near, far) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (client_read, mut client_write) = stream.into_split();
            let (server_read, server_write) = tokio::io::split(near);
            let mut server_read = server_read;
            let up = authority::client_to_server(client_read, server_write);
            let down = tokio::io::copy(&mut server_read, &mut client_write);
            let (up, _) = tokio::join!(up, down);
            if let Err(e) = up {
                tracing::warn!(error = %e, "registration connection");
            }
        });
        if conns.send(Ok(Connection(far))).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::pluginregistration::registration_client::RegistrationClient;
    use std::time::Duration;

    async fn client(path: PathBuf) -> RegistrationClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
            .expect("connecting to the registration socket");
        RegistrationClient::new(channel)
    }

    async fn wait_for_socket(path: &Path) {
        use std::os::unix::fs::FileTypeExt;
        for _ in 0..500 {
            if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never became a socket", path.display());
    }

    #[tokio::test]
    async fn answers_the_kubelet_and_removes_its_socket_at_shutdown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(Metrics::default());
        let stop = CancellationToken::new();
        // A stale socket file from a killed predecessor must not stop a restart.
        std::fs::write(socket_path(dir.path()), b"").expect("stale socket");
        let service = RegistrationService {
            endpoint: "/var/lib/kubelet/plugins/driver.harvesterhci.io/csi.sock".into(),
            metrics: metrics.clone(),
        };
        let server = tokio::spawn({
            let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
            async move { serve(&dir, service, stop).await }
        });
        let path = socket_path(dir.path());
        assert_eq!(path.file_name().and_then(|n| n.to_str()), Some("driver.harvesterhci.io-reg.sock"));
        wait_for_socket(&path).await;
        let mut c = client(path.clone()).await;

        let info = c.get_info(InfoRequest {}).await.expect("GetInfo").into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "driver.harvesterhci.io");
        assert_eq!(info.endpoint, "/var/lib/kubelet/plugins/driver.harvesterhci.io/csi.sock");
        assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);

        c.notify_registration_status(RegistrationStatus { plugin_registered: false, error: "boom".into() })
            .await
            .expect("NotifyRegistrationStatus (failed)");
        let text = metrics.render();
        assert!(text.contains("harvester_csi_kubelet_plugin_registered 0\n"), "{text}");
        assert!(text.contains("harvester_csi_kubelet_plugin_registration_failures_total 1\n"), "{text}");
        c.notify_registration_status(RegistrationStatus { plugin_registered: true, error: String::new() })
            .await
            .expect("NotifyRegistrationStatus (ok)");
        assert!(metrics.render().contains("harvester_csi_kubelet_plugin_registered 1\n"));

        drop(c);
        stop.cancel();
        server.await.expect("server task").expect("serve");
        assert!(!path.exists(), "the socket must go at shutdown so the kubelet deregisters");
    }
}
