//! Serving the gRPC services on a Unix socket or TCP.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} must be unix:///path or tcp://host:port")]
    Scheme(String),
    #[error("endpoint {0:?}: {1}")]
    Address(String, String),
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() || !path.starts_with('/') {
                return Err(EndpointError::Address(s.into(), "the socket path must be absolute".into()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr.parse().map(Endpoint::Tcp).map_err(|e| EndpointError::Address(s.into(), e.to_string()));
        }
        Err(EndpointError::Scheme(s.into()))
    }
}

/// Serves until `shutdown`. A stale Unix socket file is removed first. `bound`
/// hears once the endpoint accepts connections (kubelet registration waits for it).
pub async fn serve(
    router: Router,
    endpoint: Endpoint,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<()>>,
) -> std::io::Result<()> {
    let announce = move || {
        if let Some(b) = bound {
            let _ = b.send(());
        }
    };
    match endpoint {
        Endpoint::Unix(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let listener = tokio::net::UnixListener::bind(&path)?;
            tracing::info!(socket = %path.display(), "serving CSI");
            announce();
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let _ = std::fs::remove_file(&path);
            Ok(())
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(%addr, "serving CSI");
            announce();
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown.cancelled_owned(),
                )
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("unix:///csi/csi.sock", true)]
    #[case("tcp://127.0.0.1:10000", true)]
    #[case("unix://relative", false)]
    #[case("http://x", false)]
    #[case("tcp://nohost", false)]
    fn endpoints(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(s.parse::<Endpoint>().is_ok(), ok);
    }
}
