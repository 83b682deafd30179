//! Data steps of the embedded backend: the runner is the kubelet, so a pod's
//! volume is a path on this machine (the publish target it recorded).

use std::path::PathBuf;

use super::{checksum as sha, DataTarget};
use crate::env::Env;
use crate::Failure;

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
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

/// Who a pod's container runs as, if not root: (uid, gid, supplementary groups,
/// which include the pod's fsGroup as the kubelet adds it).
fn non_root_identity(env: &Env, t: &DataTarget) -> Option<(u32, u32, Vec<u32>)> {
    let k = env.kubelet.lock().unwrap_or_else(|p| p.into_inner());
    let s = k.security.get(&format!("{}/{}", t.namespace, t.pod))?;
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
    if !out.status.success() {
        return Err(std::io::Error::other(format!("as uid {uid}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    fed?;
    Ok(out.stdout)
}

pub async fn write(env: &Env, t: &DataTarget, len: u64) -> Result<String, Failure> {
    use rand::RngCore;
    let mut data = vec![0u8; len as usize];
    rand::rng().fill_bytes(&mut data);
    let (path, block) = pod_path(env, t)?;
    let checksum = sha(&data);
    if let Some(who) = non_root_identity(env, t).filter(|_| !block) {
        let script = [std::ffi::OsStr::new("-c"), "cat > \"$1\" && sync".as_ref(), "sh".as_ref(), path.as_os_str()];
        as_identity(who, "sh", &script, data)
            .await
            .map_err(|e| fail(format!("writing {} in pod {}: {e}", t.path, t.pod)))?;
        return Ok(checksum);
    }
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
    if let Some(who) = non_root_identity(env, t).filter(|_| !block) {
        let data = as_identity(who, "cat", &[path.as_os_str()], Vec::new())
            .await
            .map_err(|e| fail(format!("reading {} in pod {}: {e}", t.path, t.pod)))?;
        return Ok(sha(&data));
    }
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

/// The size of the filesystem at the target path (statfs of the publish target).
pub async fn filesystem_size(env: &Env, t: &DataTarget) -> Result<u64, Failure> {
    let (path, block) = pod_path(env, t)?;
    if block {
        return Err(fail(format!("{} in pod {} is a block device, not a filesystem", t.path, t.pod)));
    }
    tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&path).map_err(std::io::Error::from)?;
        Ok(s.blocks().saturating_mul(s.fragment_size()))
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("statfs of {} in pod {}: {e}", t.path, t.pod)))
}
