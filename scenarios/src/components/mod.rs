//! The Kubernetes side, played as the real components do it: the
//! external-provisioner, the attach/detach controller with the
//! external-attacher, the kubelet, the external-resizer and the
//! external-snapshotter. Each is a loop over guest API objects.

pub mod attacher;
pub mod fs_group;
pub mod kubelet;
pub mod node_lifecycle;
pub mod provisioner;
pub mod registrar;
pub mod resizer;
pub mod snapshotter;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::PersistentVolume;

/// The CSI access mode Kubernetes derives from an access-mode list.
pub fn mode_of(access_modes: &[String]) -> Mode {
    if access_modes.iter().any(|m| m == "ReadWriteMany") {
        Mode::MultiNodeMultiWriter
    } else if access_modes.iter().any(|m| m == "ReadOnlyMany") {
        Mode::MultiNodeReaderOnly
    } else if access_modes.iter().any(|m| m == "ReadWriteOncePod") {
        Mode::SingleNodeSingleWriter
    } else {
        Mode::SingleNodeWriter
    }
}

pub fn capability(access_modes: &[String], block: bool, fs_type: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: mode_of(access_modes) as i32 }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume { fs_type: fs_type.into(), ..Default::default() })
        }),
    }
}

/// The capability a PV is used with.
pub fn pv_capability(pv: &PersistentVolume) -> csi::VolumeCapability {
    let spec = pv.spec.clone().unwrap_or_default();
    let block = spec.volume_mode.as_deref() == Some("Block");
    let fs = spec.csi.as_ref().and_then(|c| c.fs_type.clone()).unwrap_or_default();
    capability(&spec.access_modes.unwrap_or_default(), block, &fs)
}

pub fn pv_handle(pv: &PersistentVolume) -> String {
    pv.spec.as_ref().and_then(|s| s.csi.as_ref()).map(|c| c.volume_handle.clone()).unwrap_or_default()
}

/// Waits one polling period; false once the run is stopping.
pub async fn tick(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(period) => true,
    }
}

/// Works on independent objects at once, as the sidecars' worker pools do.
pub async fn concurrently<T, R, F, Fut>(items: Vec<T>, work: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    futures::future::join_all(items.into_iter().map(work)).await
}

/// Lets an object go once this component is done with it. The whole list is
/// written back, so another component's finalizer on the same object stays.
pub async fn remove_finalizer<K>(api: &kube::Api<K>, object: &K, finalizer: &str) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let name = meta.name.as_deref().ok_or("object has no name")?;
    let kept: Vec<&String> = meta.finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": kept}})),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
