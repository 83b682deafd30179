//! A TCP forwarder from an address inside a node's network namespace to an
//! address the host reaches: how the simulator becomes reachable from every
//! node at `localhost` (a `changeHostAddress` fault), as the same Harvester
//! under another name. The listening socket is made in the node's namespace (a
//! socket belongs to the namespace it was created in) by a short-lived thread
//! that enters it; connections are accepted and relayed by the runner's tasks
//! in the host's namespace, until `stop` is cancelled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{ClusterError, Result};

/// A listener bound to `addr` in the network namespace at `netns` (an `ip netns` path).
fn listen_in(netns: &Path, addr: SocketAddr) -> Result<std::net::TcpListener> {
    let path: PathBuf = netns.to_path_buf();
    let made = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
        let ns = std::fs::File::open(&path)?;
        // Only this thread changes namespace; it ends right after.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .map_err(|_| ClusterError::Invalid(format!("listening on {addr} in {}: the thread panicked", netns.display())))?;
    made.map_err(|e| ClusterError::io("listening in", &netns.join(addr.to_string()), e))
}

/// Forwards every connection to `listen` in the namespace `netns` to `to`.
pub fn start(netns: &Path, listen: SocketAddr, to: SocketAddr, stop: CancellationToken) -> Result<()> {
    let listener = listen_in(netns, listen)?;
    let listener = TcpListener::from_std(listener).map_err(|e| ClusterError::io("listening in", netns, e))?;
    let name = netns.display().to_string();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((mut inbound, _)) => {
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        // Refused upstream (the simulator restarting): the client's
                        // connection closes, as a refused one would fail.
                        let Ok(mut upstream) = TcpStream::connect(to).await else { return };
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(netns = %name, error = %e, "forwarder: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    #[ignore = "needs root: enters a network namespace (its own, so the test touches nothing else)"]
    async fn a_connection_in_the_namespace_reaches_the_host_side() {
        // The test's "node": the runner's own namespace, entered by path.
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("upstream");
        let to = upstream.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let own = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let listen = probe.local_addr().expect("addr");
        drop(probe);
        start(&own, listen, to, stop.clone()).expect("forwarder");
        let server = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.expect("accept");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf.map(|b| b.to_ascii_uppercase())).await.expect("write");
        });
        let mut c = TcpStream::connect(listen).await.expect("connect through the forwarder");
        c.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"PING");
        server.await.expect("server");
        stop.cancel();
    }
}
