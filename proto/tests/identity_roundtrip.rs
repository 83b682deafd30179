//! Round-trip test: a trivial `Identity` server served on a Unix domain
//! socket, queried with the generated `IdentityClient` over that socket.

use std::time::Duration;

use csi_proto::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse,
    ProbeRequest, ProbeResponse,
};
use csi_proto::{Identity, IdentityClient, IdentityServer};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

const PLUGIN_NAME: &str = "test.csi.example.com";
const VENDOR_VERSION: &str = "0.0.1-test";

struct TestIdentity;

#[tonic::async_trait]
impl Identity for TestIdentity {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: PLUGIN_NAME.to_owned(),
            vendor_version: VENDOR_VERSION.to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities: Vec::new() }))
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

async fn roundtrip() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("csi.sock");

    let listener = UnixListener::bind(&socket_path)?;
    let incoming = UnixListenerStream::new(listener);
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(Server::builder().add_service(IdentityServer::new(TestIdentity)).serve_with_incoming_shutdown(
            incoming,
            async {
                let _ = shutdown_rx.await;
            },
        ));

    // The URI is ignored by the connector; it only has to be well-formed.
    let client_path = socket_path.clone();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = client_path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    let mut client = IdentityClient::new(channel);

    let info = client.get_plugin_info(GetPluginInfoRequest {}).await?.into_inner();
    assert_eq!(info.name, PLUGIN_NAME);
    assert_eq!(info.vendor_version, VENDOR_VERSION);
    assert!(info.manifest.is_empty());

    let probe = client.probe(ProbeRequest {}).await?.into_inner();
    assert_eq!(probe.ready, Some(true));

    let caps = client.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await?.into_inner();
    assert!(caps.capabilities.is_empty());

    drop(client);
    let _ = shutdown_tx.send(());
    server.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_roundtrip_over_unix_socket() {
    tokio::time::timeout(Duration::from_secs(30), roundtrip())
        .await
        .expect("identity round-trip timed out")
        .expect("identity round-trip failed");
}
