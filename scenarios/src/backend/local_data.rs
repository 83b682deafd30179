//! Data steps of the embedded backend: the runner is the kubelet, so a pod's
//! volume is a path on this machine (the publish target it recorded).

use std::path::PathBuf;

use sha2::Digest;

use super::DataTarget;
use crate::env::Env;
use crate::Failure;

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
}

pub fn sha(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a pod path lands: (file or device on this machine, block).
fn pod_path(env: &Env, t: &DataTarget) -> Result<(PathBuf, bool), Failure> {
    let key = format!("{}/{}", t.namespace, t.pod);
    let k = env.kubelet.lock().unwrap_or_else(|p| p.into_inner());
    let vols =
        k.pods.get(&key).ok_or_else(|| fail(format!("pod {} has no published volumes (is it Running?)", t.pod)))?;
    for v in vols {
        if v.block && t.path == v.mount_path {
            return Ok((v.host_path.clone(), true));
        }
        if let Some(rest) = t.path.strip_prefix(v.mount_path.trim_end_matches('/')) {
            if rest.is_empty() || rest.starts_with('/') {
                return Ok((v.host_path.join(rest.trim_start_matches('/')), false));
            }
        }
    }
    Err(fail(format!("{} is not on a volume of pod {}", t.path, t.pod)))
}

pub async fn write(env: &Env, t: &DataTarget, len: u64) -> Result<String, Failure> {
    use rand::RngCore;
    let mut data = vec![0u8; len as usize];
    rand::rng().fill_bytes(&mut data);
    let (path, block) = pod_path(env, t)?;
    let checksum = sha(&data);
    let offset = t.offset;
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f =
            if block { std::fs::OpenOptions::new().write(true).open(&path)? } else { std::fs::File::create(&path)? };
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&data)?;
        f.sync_all()
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("writing {} in pod {}: {e}", t.path, t.pod)))?;
    Ok(checksum)
}

pub async fn read(env: &Env, t: &DataTarget, len: u64) -> Result<String, Failure> {
    let (path, block) = pod_path(env, t)?;
    let offset = t.offset;
    let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path)?;
        if block {
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        } else {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            Ok(buf)
        }
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("reading {} in pod {}: {e}", t.path, t.pod)))?;
    Ok(sha(&data))
}
