//! Creating and removing the directories and files that mounts land on, and taking
//! mounts off them.
//!
//! All are idempotent because kubelet retries every Node call.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::Path;

use super::{MountError, Mounter};

/// Makes sure `path` is a directory (a filesystem publish/staging target).
pub fn ensure_dir(path: &Path) -> Result<(), MountError> {
    fs::create_dir_all(path).map_err(|e| MountError::io("create directory", path, e))
}

/// Makes sure `path` exists as a non-directory (a block-volume publish
/// target), creating an empty file and its parents if needed.
pub fn ensure_file(path: &Path) -> Result<(), MountError> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    // create_new instead of create: if a device is already bind-mounted here
    // we must not open it for writing, let alone truncate it.
    match fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Err(MountError::io(
                "create file",
                path,
                io::Error::new(ErrorKind::IsADirectory, "a directory is in the way"),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(MountError::io("stat", path, e)),
        },
        Err(e) => Err(MountError::io("create file", path, e)),
    }
}

/// Removes a mount target (empty directory or file) if present.
///
/// Never removes contents: a non-empty directory means something is still
/// mounted or a volume's data leaked onto the node disk, and deleting it
/// would hide that or destroy the data.
pub fn remove_target(path: &Path) -> Result<(), MountError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MountError::io("stat", path, e)),
    };
    let removed = if meta.is_dir() { fs::remove_dir(path) } else { fs::remove_file(path) };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::ResourceBusy => {
            Err(MountError::Busy { path: path.to_owned(), detail: "it is still a mount point".to_owned() })
        }
        Err(e) => Err(MountError::io("remove", path, e)),
    }
}

/// Unmounts `path` if something is mounted there; a path that is not mounted, or gone,
/// is already in the wanted state (NodeUnpublish/NodeUnstage retries).
pub async fn unmount_if_mounted(mounter: &impl Mounter, path: &Path) -> Result<(), MountError> {
    match mounter.unmount(path).await {
        Ok(()) | Err(MountError::NotMounted { .. }) => Ok(()),
        Err(MountError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether two paths are the same device node (a block publish target bound from the
/// device, and the device): same device number, and both actually device nodes.
pub(super) fn same_device_node(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let rdev = |p: &Path| fs::metadata(p).ok().filter(|m| m.file_type().is_block_device()).map(|m| m.rdev());
    rdev(a).is_some() && rdev(a) == rdev(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_dir_is_idempotent_and_creates_parents() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/c");
        ensure_dir(&dir).expect("first");
        ensure_dir(&dir).expect("second");
        assert!(dir.is_dir());
    }

    #[test]
    fn ensure_dir_rejects_a_file_in_the_way() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        fs::write(&file, b"x").expect("write");
        assert!(matches!(ensure_dir(&file), Err(MountError::Io { .. })));
    }

    #[test]
    fn ensure_file_is_idempotent_and_keeps_contents() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("pods/x/dev");
        ensure_file(&file).expect("first");
        fs::write(&file, b"keep").expect("write");
        ensure_file(&file).expect("second");
        assert_eq!(fs::read(&file).expect("read"), b"keep");
    }

    #[test]
    fn ensure_file_rejects_a_directory_in_the_way() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = ensure_file(tmp.path()).expect_err("a directory is not a file");
        assert!(matches!(err, MountError::Io { ref source, .. } if source.kind() == ErrorKind::IsADirectory));
    }

    #[test]
    fn remove_target_handles_dirs_files_and_absence() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        let file = tmp.path().join("f");
        ensure_dir(&dir).expect("dir");
        ensure_file(&file).expect("file");
        for path in [&dir, &file] {
            remove_target(path).expect("remove");
            assert!(!path.exists());
            remove_target(path).expect("absent is fine");
        }
    }

    #[test]
    fn remove_target_never_deletes_contents() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        ensure_file(&dir.join("data")).expect("file");
        assert!(matches!(remove_target(&dir), Err(MountError::Io { .. })));
        assert!(dir.join("data").exists());
    }

    #[test]
    fn only_the_same_block_device_is_the_same_device_node() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(!same_device_node(&file, &file), "a regular file is no device node");
        assert!(!same_device_node(Path::new("/dev/null"), Path::new("/dev/null")), "a character device is not a disk");
        assert!(!same_device_node(dir.path().join("missing").as_path(), &file));
    }
}
