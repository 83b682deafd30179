//! `upstreamVolumes`: the state the upstream (Go) driver left before the switch,
//! made the way it made it (reference §2.1, §3.4, §9), before the steps run:
//!
//! - host: a PVC named after the volume, `accessModes: [ReadWriteMany]`, Block for
//!   RWO / Filesystem for RWX, the class from the `hostStorageClass` parameter (else
//!   the host default), the size rounded up to 2 MiB, no labels or annotations; for
//!   RWX on Longhorn, once bound, a NetworkFilesystem named after the host PV,
//!   `Disabled`, provisioner `Longhorn`;
//! - data: what upstream's node plugin did to the disk: its mount-utils format
//!   (`mkfs.ext4 -F -m0`, or `mkfs.xfs -f` for a class with
//!   `csi.storage.k8s.io/fstype: xfs`) and the file written through a mount; raw bytes
//!   at an offset for block volumes; for RWX, Longhorn's share-manager filesystem
//!   (`mkfs.ext4 -F`) holding the file at its export root;
//! - guest: the claim bound to a PV as upstream's provisioner made it: named after
//!   the volume, handle = volume, `fsType` from the class (`ext4`, its chart's default),
//!   volume attributes = the StorageClass parameters but the provisioner's own
//!   `csi.storage.k8s.io/*` keys, capacity = the size asked (not rounded), no node
//!   affinity. Made as a restore (Velero) makes them: the PV first, its claimRef
//!   naming the claim without a uid, then the claim naming its PV (the guest API gives
//!   it a fresh uid); the persistent-volume controller binds them, and seeding waits
//!   for that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{json, Value};

use crate::backend::Cluster;
use crate::components::binder::BIND_COMPLETED;
use crate::env::DRIVER;
use crate::model::{self, UpstreamVolume};

use super::{eventually, fail, Result};

const ALIGN: u64 = 2 << 20;
const FSTYPE_KEY: &str = "csi.storage.k8s.io/fstype";
const MIN_SIZE: u64 = 10 << 20;
/// kube-controller-manager binds a claim whose PV it has seen at once; a binding that
/// loses a race waits for its resync (15 s).
const BIND_WITHIN: Duration = Duration::from_secs(45);

/// Makes every upstream volume, in order.
pub async fn seed<C: Cluster>(c: &C, volumes: &[UpstreamVolume]) -> Result<()> {
    for v in volumes {
        seed_one(c, v).await.map_err(|e| fail(format!("upstream volume {} ({}): {e}", v.volume, v.claim)))?;
    }
    Ok(())
}

async fn seed_one<C: Cluster>(c: &C, v: &UpstreamVolume) -> Result<()> {
    let env = c.env();
    let class = Api::<StorageClass>::all(env.guest.clone())
        .get(&v.storage_class)
        .await
        .map_err(|e| fail(format!("guest StorageClass {}: {e}", v.storage_class)))?;
    let mut params: BTreeMap<String, String> = class.parameters.clone().unwrap_or_default();
    // The external-provisioner takes its own keys out before calling the driver.
    let fs_type = params.get(FSTYPE_KEY).cloned().unwrap_or_else(|| "ext4".into());
    params.retain(|k, _| !k.starts_with("csi.storage.k8s.io/"));
    let size = model::parse_size(&v.size).map_err(fail)?;
    let host_size = size.max(MIN_SIZE).div_ceil(ALIGN) * ALIGN;

    // The host PVC, exactly as upstream's buildHostPVCFromScratch made it.
    let mut spec = json!({
        "accessModes": ["ReadWriteMany"],
        "volumeMode": if v.rwx() { "Filesystem" } else { "Block" },
        "resources": {"requests": {"storage": host_size.to_string()}},
    });
    if let Some(host_class) = params.get("hostStorageClass") {
        spec["storageClassName"] = json!(host_class);
    }
    let host_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": v.volume, "namespace": env.host_namespace}, "spec": spec}))
            .map_err(|e| fail(e.to_string()))?;
    host_pvcs.create(&PostParams::default(), &pvc).await.map_err(|e| fail(format!("creating the host PVC: {e}")))?;
    eventually(Duration::from_secs(30), "the host PVC to be bound", || async {
        let p = host_pvcs.get(&v.volume).await.map_err(|e| fail(e.to_string()))?;
        let bound = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        Ok((!bound).then(|| "not bound yet".to_string()))
    })
    .await?;
    let host_pv = host_pvcs
        .get(&v.volume)
        .await
        .map_err(|e| fail(e.to_string()))?
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| fail("the bound host PVC names no PV"))?;
    if v.rwx() {
        let ar = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("harvesterhci.io", "v1beta1", "NetworkFilesystem"),
            "networkfilesystems",
        );
        let nfs: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), "harvester-system", &ar);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "NetworkFilesystem",
            "metadata": {"name": host_pv, "namespace": "harvester-system"},
            "spec": {"networkFSName": host_pv, "desiredState": "Disabled", "provisioner": "Longhorn"},
        }))
        .map_err(|e| fail(e.to_string()))?;
        nfs.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| fail(format!("creating the NetworkFilesystem: {e}")))?;
    }
    if let Some(data) = &v.data {
        let file = c.host_volume_file(&host_pv)?;
        let mount_point = env.kubelet_root.with_file_name("upstream-seed").join(&host_pv);
        let bytes = random(data.random_bytes);
        let checksum = crate::backend::checksum(&bytes);
        match (&data.path, data.offset) {
            (Some(path), _) => {
                // Upstream's node plugin formats RWO disks (mount-utils' options); the
                // share-manager formats RWX exports.
                let mkfs: (&str, &[&str]) = match (v.rwx(), fs_type.as_str()) {
                    (true, _) => ("mkfs.ext4", &["-q", "-F"]),
                    (false, "ext4") => ("mkfs.ext4", &["-q", "-F", "-m0"]),
                    (false, "xfs") => ("mkfs.xfs", &["-q", "-f"]),
                    (false, other) => return Err(fail(format!("no upstream format for fsType {other}"))),
                };
                write_file_on_new_fs(&file, mkfs, &mount_point, path, bytes).await?
            }
            (None, Some(offset)) => write_at(&file, offset, bytes).await?,
            (None, None) => return Err(fail("data needs a path or an offset")),
        }
        env.checksums
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(data.remember.clone(), format!("{checksum}:{}", data.random_bytes));
    }

    // The guest side as a restore (Velero's) leaves it: the PV first, its claimRef naming
    // the claim without a uid, then the claim naming the PV; the persistent-volume
    // controller binds them. Writing the bound state here instead would race it: a claim
    // marked bound-completed whose PV its cache has not seen yet is marked Lost for good,
    // and a claim without that mark is taken as unbound by the scheduler.
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": v.volume, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
        "spec": {
            "capacity": {"storage": size.to_string()},
            "accessModes": [v.access_mode],
            "volumeMode": v.volume_mode,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": v.storage_class,
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": v.namespace, "name": v.claim},
            "csi": {"driver": DRIVER, "volumeHandle": v.volume, "fsType": if v.block() { Value::Null } else { json!(fs_type) },
                    "volumeAttributes": params},
        },
    }))
    .map_err(|e| fail(e.to_string()))?;
    env.pvs().create(&PostParams::default(), &pv).await.map_err(|e| fail(format!("creating the guest PV: {e}")))?;
    // Once the controller has looked at the PV it does not write it again until the claim
    // comes; before that, its own phase update races its binding, which then loses and
    // waits for the resync.
    eventually(BIND_WITHIN, "the guest PV to be Available", || async {
        let pv = env.pvs().get(&v.volume).await.map_err(|e| fail(e.to_string()))?;
        let phase = pv.status.and_then(|s| s.phase).unwrap_or_default();
        Ok((phase != "Available").then(|| format!("phase {phase:?}")))
    })
    .await?;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": v.claim, "namespace": v.namespace},
        "spec": {
            "storageClassName": v.storage_class, "accessModes": [v.access_mode], "volumeMode": v.volume_mode,
            "resources": {"requests": {"storage": size.to_string()}}, "volumeName": v.volume,
        },
    }))
    .map_err(|e| fail(e.to_string()))?;
    let claims = env.pvcs(&v.namespace);
    claims.create(&PostParams::default(), &claim).await.map_err(|e| fail(format!("creating the guest claim: {e}")))?;
    eventually(BIND_WITHIN, "the guest claim to be bound to its PV", || async {
        let c = claims.get(&v.claim).await.map_err(|e| fail(e.to_string()))?;
        let phase = c.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
        let completed = c.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(BIND_COMPLETED));
        Ok((phase != "Bound" || !completed).then(|| format!("phase {phase}, bind-completed {completed}")))
    })
    .await?;
    Ok(())
}

fn random(n: u64) -> Vec<u8> {
    use rand::RngCore;
    let mut data = vec![0u8; n as usize];
    rand::rng().fill_bytes(&mut data);
    data
}

async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| fail(format!("running {program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!("{program} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Formats the volume and writes one file through a real (loop) mount, unmounted after.
async fn write_file_on_new_fs(
    file: &Path,
    (mkfs, mkfs_args): (&str, &[&str]),
    mount_point: &Path,
    path: &str,
    data: Vec<u8>,
) -> Result<()> {
    let mut args: Vec<&std::ffi::OsStr> = mkfs_args.iter().map(std::ffi::OsStr::new).collect();
    args.push(file.as_os_str());
    run(mkfs, &args).await?;
    std::fs::create_dir_all(mount_point).map_err(|e| fail(format!("{}: {e}", mount_point.display())))?;
    run("mount", &["-o".as_ref(), "loop".as_ref(), file.as_os_str(), mount_point.as_os_str()]).await?;
    let target: PathBuf = mount_point.join(path.trim_start_matches('/'));
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        use std::io::Write;
        let mut f = std::fs::File::create(&target)?;
        f.write_all(&data)?;
        f.sync_all()
    })
    .await
    .map_err(|e| fail(e.to_string()))
    .and_then(|r| r.map_err(|e| fail(format!("writing {path}: {e}"))));
    // Unmounted whatever the write did: the volume must be free for the driver.
    let unmounted = run("umount", &[mount_point.as_os_str()]).await;
    written?;
    unmounted
}

/// Raw bytes at `offset`, as an application writing to the block device left them.
async fn write_at(file: &Path, offset: u64, data: Vec<u8>) -> Result<()> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&file)?;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&data)?;
        f.sync_all()
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("writing at offset {offset}: {e}")))
}
