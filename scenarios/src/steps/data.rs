//! Data through a pod's volume: write random bytes, read them back, compare checksums.

use sha2::Digest;

use crate::backend::Cluster;
use crate::model;

use super::{fail, Result};

pub(super) fn sha(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a pod's container runs as, if not root: (uid, gid, supplementary groups,
/// which include the pod's fsGroup as the kubelet adds it).
fn non_root_identity<C: Cluster>(c: &C, pod: &str) -> Option<(u32, u32, Vec<u32>)> {
    let key = if pod.contains('/') { pod.to_string() } else { format!("default/{pod}") };
    let k = c.env().kubelet.lock().unwrap_or_else(|p| p.into_inner());
    let s = k.security.get(&key)?;
    let uid = s.run_as_user.filter(|u| *u != 0)?;
    Some((uid, s.run_as_group.unwrap_or(0), s.fs_group.into_iter().collect()))
}

/// Runs `program args` as that identity (util-linux `setpriv`), feeding `input`,
/// returning stdout: a pod's file access is checked against its user and groups.
async fn as_identity(
    (uid, gid, groups): (u32, u32, Vec<u32>),
    program: &str,
    args: &[&std::ffi::OsStr],
    input: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.arg(format!("--groups={}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",")));
    }
    let mut child = cmd
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // A program refused (permission denied) exits before reading its input: its
    // own message below says why, not the broken pipe this write then meets.
    let fed = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(&input).await,
        None => Ok(()),
    };
    let out = child.wait_with_output().await?;
    if out.status.success() {
        fed?;
    }
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(std::io::Error::other(format!("as uid {uid}: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
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

/// Total size of the filesystem a pod sees at `path` (statfs of the publish target).
pub(super) async fn filesystem_size<C: Cluster>(c: &C, pod: &str, path: &str) -> Result<u64> {
    let (target, block) = pod_path(c, pod, path)?;
    if block {
        return Err(fail(format!("{path} in pod {pod} is a block device, not a filesystem")));
    }
    tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&target).map_err(std::io::Error::from)?;
        Ok(s.blocks().saturating_mul(s.fragment_size()))
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("statfs of {path} in pod {pod}: {e}")))
}

pub(super) async fn write<C: Cluster>(c: &C, w: &model::Write) -> Result<()> {
    use rand::RngCore;
    let mut data = vec![0u8; w.random_bytes as usize];
    rand::rng().fill_bytes(&mut data);
    let (path, block) = pod_path(c, &w.pod, &w.path)?;
    let checksum = sha(&data);
    let remember = || {
        c.env()
            .checksums
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(w.remember.clone(), format!("{checksum}:{}", w.random_bytes));
    };
    if let Some(who) = non_root_identity(c, &w.pod).filter(|_| !block) {
        let script = [std::ffi::OsStr::new("-c"), "cat > \"$1\" && sync".as_ref(), "sh".as_ref(), path.as_os_str()];
        as_identity(who, "sh", &script, data)
            .await
            .map_err(|e| fail(format!("writing {} in pod {}: {e}", w.path, w.pod)))?;
        remember();
        return Ok(());
    }
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
    remember();
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
    let data = if let Some(who) = non_root_identity(c, &r.pod).filter(|_| !block) {
        as_identity(who, "cat", &[path.as_os_str()], Vec::new()).await
    } else {
        read_as_root(path, block, offset, len).await
    }
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

async fn read_as_root(path: std::path::PathBuf, block: bool, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
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
    .map_err(std::io::Error::other)?
}
