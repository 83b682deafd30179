//! Where snapshot and backup data live in the state directory, and the
//! annotation a restored PVC carries to name its backup: the contract between
//! the snapshot controllers, which write that data, and Longhorn, which
//! provisions volumes from it. Neither depends on the other; both depend on this.

use std::path::{Path, PathBuf};

/// On a PVC created by a VolumeRemoteRestore: `ns/name` of the backup to fill it from.
pub const RESTORE_FROM_BACKUP: &str = "sim.harvesterhci.io/restore-from-backup";

/// The data file of a VolumeSnapshotContent.
pub fn snapshot_file(state_dir: &Path, content: &str) -> PathBuf {
    state_dir.join("snapshots").join(format!("{content}.img"))
}

/// `ns/name` of a VolumeRemoteBackup → its data file.
pub fn backup_file(state_dir: &Path, ns_name: &str) -> PathBuf {
    state_dir.join("backups").join(format!("{}.img", ns_name.replace('/', "_")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_stay_inside_their_directories() {
        let dir = Path::new("/state");
        assert_eq!(snapshot_file(dir, "snapcontent-1"), Path::new("/state/snapshots/snapcontent-1.img"));
        assert_eq!(backup_file(dir, "default/b1"), Path::new("/state/backups/default_b1.img"));
    }
}
