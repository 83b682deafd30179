//! What the Helm chart deploys that decides how the Kubernetes components treat
//! this driver, mirrored here for the embedded backend (which plays those
//! components itself). The chart tests compare the chart with these values, so
//! the embedded suite proves the behaviour of the deployment users install.

use serde_json::{json, Value};

use crate::env::DRIVER;

/// The CSIDriver's fsGroup policy. `File`: the kubelet applies a pod's fsGroup to
/// every volume of this driver, whatever its fsType and access mode. The default
/// (`ReadWriteOnceWithFSType`) skips RWX volumes and volumes whose PV names no
/// fsType, leaving non-root pods unable to write (issue 13).
pub const FS_GROUP_POLICY: &str = "File";

/// The external-provisioner's `--default-fstype`: a PV of a class that names no
/// `csi.storage.k8s.io/fstype` still records the filesystem the driver makes.
pub const DEFAULT_FSTYPE: &str = "ext4";

/// The CSIDriver object the chart installs.
pub fn csi_driver() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": DRIVER},
        "spec": {
            "attachRequired": true,
            "podInfoOnMount": true,
            "fsGroupPolicy": FS_GROUP_POLICY,
            "volumeLifecycleModes": ["Persistent"],
        },
    })
}
