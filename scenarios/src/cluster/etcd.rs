//! etcd: Debian's etcd-server (3.4), one member on loopback, a fresh data
//! directory at every `up`. Ports are off the usual 2379/2380 so an etcd the
//! machine runs for something else is left alone.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{process, wait_until, ClusterError, Result, Spec};

pub const CLIENT_PORT: u16 = 22379;
const PEER_PORT: u16 = 22380;

pub struct Etcd {
    pub url: String,
}

async fn healthy() -> Option<String> {
    let mut s = match tokio::net::TcpStream::connect(("127.0.0.1", CLIENT_PORT)).await {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await {
        return Some(e.to_string());
    }
    let mut body = String::new();
    match tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut body)).await {
        Ok(Ok(_)) if body.contains("\"health\":\"true\"") => None,
        Ok(Ok(_)) => Some(body.lines().last().unwrap_or("").to_string()),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer".into()),
    }
}

pub async fn start(spec: &Spec) -> Result<Etcd> {
    let data = spec.state_dir.join("etcd");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| ClusterError::io("creating", &data, e))?;
    let url = format!("http://127.0.0.1:{CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{PEER_PORT}");
    let args: Vec<String> = vec![
        "--name=hcsi".into(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={url}"),
        format!("--advertise-client-urls={url}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=hcsi={peer}"),
        "--initial-cluster-state=new".into(),
        // The suite's writes are small; a 2-core machine shared with builds can stall
        // fsync for a while, and a leader election would only add noise.
        "--heartbeat-interval=250".into(),
        "--election-timeout=2500".into(),
        "--log-level=warn".into(),
    ];
    let pid = process::spawn(&spec.state_dir, "etcd", &spec.tools.etcd, &args)?;
    wait_until("etcd", Duration::from_secs(30), || async move {
        if process::gone(pid) {
            return Some("exited".into());
        }
        healthy().await
    })
    .await
    .map_err(|e| ClusterError::NotReady(format!("{e}\n{}", process::tail(&spec.state_dir, "etcd", 5))))?;
    Ok(Etcd { url })
}
