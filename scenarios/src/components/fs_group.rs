//! The kubelet's part of a pod's `fsGroup`: whether it applies to a CSI volume
//! (the CSIDriver's `fsGroupPolicy`, the PV's fsType and access modes), and the
//! ownership change itself (group of every file set to the fsGroup, group
//! read/write for files, plus execute and setgid for directories), as the
//! kubelet's `SetVolumeOwnership` does after NodePublish.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::storage::v1::CSIDriver;
use kube::Api;

use crate::env::{Env, DRIVER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Never change ownership.
    None,
    /// Always (when the pod sets an fsGroup).
    File,
    /// Only for a volume whose PV names an fsType and whose only access mode is
    /// ReadWriteOnce: Kubernetes' default when the CSIDriver sets none.
    ReadWriteOnceWithFsType,
}

impl Policy {
    fn parse(s: Option<&str>) -> Policy {
        match s {
            Some("None") => Policy::None,
            Some("File") => Policy::File,
            _ => Policy::ReadWriteOnceWithFsType,
        }
    }

    /// Whether the kubelet changes ownership of a volume with this fsType and these access modes.
    pub fn applies(self, fs_type: &str, access_modes: &[String]) -> bool {
        match self {
            Policy::None => false,
            Policy::File => true,
            // The kubelet logs "skipping fsGroup, fsType not provided" / "access mode is not RWO".
            Policy::ReadWriteOnceWithFsType => !fs_type.is_empty() && access_modes == ["ReadWriteOnce"],
        }
    }
}

/// The policy of this driver's CSIDriver object (the default when there is none).
pub async fn policy(env: &Env) -> Policy {
    let driver = Api::<CSIDriver>::all(env.guest.clone()).get_opt(DRIVER).await.ok().flatten();
    Policy::parse(driver.as_ref().and_then(|d| d.spec.fs_group_policy.as_deref()))
}

/// Gives `gid` the volume at `root`, recursively.
pub fn set_ownership(root: &Path, gid: u32, readonly: bool) -> io::Result<()> {
    const RW: u32 = 0o660;
    const RO: u32 = 0o440;
    const EXEC: u32 = 0o110;
    const SETGID: u32 = 0o2000;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        std::os::unix::fs::lchown(&path, None, Some(gid))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mut mask = if readonly { RO } else { RW };
        if meta.is_dir() {
            mask |= EXEC | SETGID;
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.permissions().mode() | mask))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_policy_skips_what_the_incident_hit() {
        let p = Policy::parse(None);
        assert_eq!(p, Policy::ReadWriteOnceWithFsType);
        assert!(!p.applies("", &modes(&["ReadWriteOnce"])), "no fsType in the PV");
        assert!(!p.applies("ext4", &modes(&["ReadWriteMany"])), "an RWX volume");
        assert!(p.applies("ext4", &modes(&["ReadWriteOnce"])));
        assert!(Policy::parse(Some("File")).applies("", &modes(&["ReadWriteMany"])));
        assert!(!Policy::parse(Some("None")).applies("ext4", &modes(&["ReadWriteOnce"])));
    }

    #[test]
    fn ownership_gives_the_group_write_access_and_inheritance() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("f"), b"x").expect("file");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(sub.join("f"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let gid = std::fs::metadata(dir.path()).expect("stat").gid();
        set_ownership(dir.path(), gid, false).expect("ownership");
        let d = std::fs::metadata(&sub).expect("stat");
        assert_eq!(d.permissions().mode() & 0o7777, 0o2775);
        let f = std::fs::metadata(sub.join("f")).expect("stat");
        assert_eq!(f.permissions().mode() & 0o777, 0o664);
        assert_eq!(f.gid(), gid);
    }
}
