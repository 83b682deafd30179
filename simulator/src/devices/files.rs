//! Small filesystem helpers whose "already so" outcomes are not errors, so
//! every device operation can be repeated after a crash.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{io_err, Result};

pub(super) async fn create_dir_all(dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir).await.map_err(io_err("creating directory", dir))
}

/// Replaces the file in one step so a plugin reading it concurrently never sees
/// it empty or half-written.
pub(super) async fn write_atomic(path: &Path, contents: String) -> Result<()> {
    let mut tmp_name = OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    tokio::fs::write(&tmp, contents).await.map_err(io_err("writing", &tmp))?;
    tokio::fs::rename(&tmp, path).await.map_err(io_err("replacing", path))
}

/// Returns whether something was removed.
pub(super) async fn remove_if_exists(path: &Path) -> Result<bool> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// `None` if the path does not exist or is not a symlink.
pub(super) async fn read_link_if_exists(path: &Path) -> Result<Option<PathBuf>> {
    match tokio::fs::read_link(path).await {
        Ok(target) => Ok(Some(target)),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::InvalidInput) => Ok(None),
        Err(e) => Err(io_err("reading link", path)(e)),
    }
}

pub(super) async fn canonical_if_exists(path: &Path) -> Result<Option<PathBuf>> {
    match tokio::fs::canonicalize(path).await {
        Ok(abs) => Ok(Some(abs)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("resolving", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_things_are_not_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        assert!(!remove_if_exists(&missing).await.expect("remove"));
        assert_eq!(read_link_if_exists(&missing).await.expect("read link"), None);
        assert_eq!(canonical_if_exists(&missing).await.expect("canonicalize"), None);

        let file = dir.path().join("f");
        write_atomic(&file, "one\n".into()).await.expect("write");
        write_atomic(&file, "two\n".into()).await.expect("rewrite");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "two\n");
        assert_eq!(read_link_if_exists(&file).await.expect("not a link"), None);
        assert!(remove_if_exists(&file).await.expect("remove"));
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert!(names.is_empty(), "no temporary file left: {names:?}");
    }
}
