//! Data through a pod's volume: write random bytes, read them back, compare checksums.

use sha2::Digest;

use crate::backend::Cluster;
use crate::model;

use super::{fail, Result};

pub(super) fn sha(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a pod path lands: (file or device on this machine, offset base, block).
fn pod_path<C: Cluster>(c: &C, pod: &str, path: &str) -> Result<(std::path::PathBuf, bool)> {
    let key = if pod.contains('/') { pod.to_string() } else { format!("default/{pod}") };
    let k = c.env().kubelet.lock().unwrap_or_else(|p| p.into_inner());
    let vols = k.pods.get(&key).ok_or_else(|| fail(format!("pod {pod} has no published volumes (is it Running?)")))?;
    for v in vols {
        if v.block && path == v.mount_path {
            return Ok((v.host_path.clone(), true));
        }
        if let Some(rest) = path.strip_prefix(v.mount_path.trim_end_matches('/')) {
            if rest.is_empty() || rest.starts_with('/') {
                return Ok((v.host_path.join(rest.trim_start_matches('/')), false));
            }
        }
    }
    Err(fail(format!("{path} is not on a volume of pod {pod}")))
}

/// Total size of the filesystem a pod sees at `path` (`stat -f` on the publish target).
pub(super) async fn filesystem_size<C: Cluster>(c: &C, pod: &str, path: &str) -> Result<u64> {
    let (target, block) = pod_path(c, pod, path)?;
    if block {
        return Err(fail(format!("{path} in pod {pod} is a block device, not a filesystem")));
    }
    let out = tokio::process::Command::new("stat")
        .args(["-f", "-c", "%S %b"])
        .arg(&target)
        .output()
        .await
        .map_err(|e| fail(format!("stat: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text.split_whitespace().map(str::parse::<u64>);
    match (out.status.success(), nums.next(), nums.next()) {
        (true, Some(Ok(block_size)), Some(Ok(blocks))) => Ok(block_size * blocks),
        _ => Err(fail(format!("stat -f {}: {}", target.display(), String::from_utf8_lossy(&out.stderr).trim()))),
    }
}

pub(super) async fn write<C: Cluster>(c: &C, w: &model::Write) -> Result<()> {
    use rand::RngCore;
    let mut data = vec![0u8; w.random_bytes as usize];
    rand::rng().fill_bytes(&mut data);
    let (path, block) = pod_path(c, &w.pod, &w.path)?;
    let checksum = sha(&data);
    let path2 = path.clone();
    let offset = w.offset;
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f =
            if block { std::fs::OpenOptions::new().write(true).open(&path2)? } else { std::fs::File::create(&path2)? };
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&data)?;
        f.sync_all()
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("writing {} in pod {}: {e}", w.path, w.pod)))?;
    c.env()
        .checksums
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(w.remember.clone(), format!("{checksum}:{}", w.random_bytes));
    Ok(())
}

pub(super) async fn read<C: Cluster>(c: &C, r: &model::Read) -> Result<()> {
    let remembered = c
        .env()
        .checksums
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&r.checksum)
        .cloned()
        .ok_or_else(|| fail(format!("no remembered checksum {:?}", r.checksum)))?;
    let (want, len) = remembered.split_once(':').ok_or_else(|| fail("bad checksum record"))?;
    let len: u64 = r.length.unwrap_or_else(|| len.parse().unwrap_or(0));
    let (path, block) = pod_path(c, &r.pod, &r.path)?;
    let offset = r.offset;
    let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path)?;
        if block {
            // Bypass the page cache of another node's view: read what the device holds.
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
    .map_err(|e| fail(format!("reading {} in pod {}: {e}", r.path, r.pod)))?;
    let have = sha(&data);
    if have != want {
        return Err(fail(format!(
            "{} in pod {}: checksum {} != remembered {}",
            r.path,
            r.pod,
            &have[..12],
            &want[..12.min(want.len())]
        )));
    }
    Ok(())
}
