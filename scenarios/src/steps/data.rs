//! Data through a pod's volume: write random bytes, read them back, compare
//! checksums. Where the bytes go is the backend's business (a path on this
//! machine, or `exec` in the pod).

use crate::backend::{Cluster, DataTarget};
use crate::model;

use super::{fail, Result};

fn target(pod: &str, path: &str, offset: u64) -> DataTarget {
    let (namespace, pod) = pod.split_once('/').unwrap_or(("default", pod));
    DataTarget { namespace: namespace.into(), pod: pod.into(), path: path.into(), offset }
}

pub(super) async fn write<C: Cluster>(c: &C, w: &model::Write) -> Result<()> {
    let checksum = c.write_data(&target(&w.pod, &w.path, w.offset), w.random_bytes).await?;
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
    let have = c.read_data(&target(&r.pod, &r.path, r.offset), len).await?;
    if have != want {
        return Err(fail(format!(
            "{} in pod {}: checksum {} != remembered {}",
            r.path,
            r.pod,
            &have[..12.min(have.len())],
            &want[..12.min(want.len())]
        )));
    }
    Ok(())
}

/// Total size of the filesystem a pod sees at `path`.
pub(super) async fn filesystem_size<C: Cluster>(c: &C, pod: &str, path: &str) -> Result<u64> {
    c.filesystem_size(&target(pod, path, 0)).await
}
