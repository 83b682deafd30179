//! CSI clients over the drivers' Unix sockets. Channels are lazy, so a driver
//! that is killed and restarted is simply reconnected on the next call.

use std::path::{Path, PathBuf};

use csi_proto::{ControllerClient, IdentityClient, NodeClient};
use tonic::transport::{Channel, Endpoint};

pub fn channel(socket: &Path) -> Channel {
    let path: PathBuf = socket.to_path_buf();
    // The URI is a placeholder: the connector below always dials the socket.
    Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(tower::service_fn(move |_| {
        let p = path.clone();
        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
    }))
}

#[derive(Clone)]
pub struct Csi {
    pub controller: ControllerClient<Channel>,
    pub identity: IdentityClient<Channel>,
}

impl Csi {
    pub fn new(socket: &Path) -> Self {
        let ch = channel(socket);
        Self { controller: ControllerClient::new(ch.clone()), identity: IdentityClient::new(ch) }
    }
}

pub fn node_client(socket: &Path) -> NodeClient<Channel> {
    NodeClient::new(channel(socket))
}

/// Whether a failure is one the sidecars retry with backoff.
pub fn retryable(code: tonic::Code) -> bool {
    !matches!(
        code,
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::AlreadyExists | tonic::Code::Unimplemented
    )
}
