//! By-id links in the VMs' fake roots: listing them and swapping one in.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::error::{io_err, Result};
use super::files::{create_dir_all, read_link_if_exists, remove_if_exists};
use super::DeviceManager;

impl DeviceManager {
    /// By-id links currently present in a VM's root, sorted by name.
    pub async fn attached_links(&self, vm: &str) -> Result<Vec<(String, PathBuf)>> {
        super::check_name("vm", vm)?;
        let mut links = Vec::new();
        for (path, target) in links_in(&self.by_id_dir(vm)).await? {
            if let Some(name) = path.file_name().and_then(OsStr::to_str) {
                links.push((name.to_owned(), target));
            }
        }
        links.sort();
        Ok(links)
    }

    /// Every by-id link of every VM, as (link path, target).
    pub(super) async fn all_links(&self) -> Result<Vec<(PathBuf, PathBuf)>> {
        let vms = self.state_dir.join("vms");
        let mut entries = match tokio::fs::read_dir(&vms).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &vms)(e)),
        };
        let mut all = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_err("listing", &vms))? {
            let by_id = entry.path().join("root").join("dev").join("disk").join("by-id");
            all.extend(links_in(&by_id).await?);
        }
        Ok(all)
    }

    pub(super) async fn link_targets(&self) -> Result<HashSet<PathBuf>> {
        Ok(self.all_links().await?.into_iter().map(|(_, target)| target).collect())
    }

    /// Swaps the link in with a rename so a guest scanning by-id never sees it
    /// missing or half-made while a stale link is being replaced.
    pub(super) async fn place_link(&self, by_id: &Path, link: &Path, target: &Path) -> Result<()> {
        create_dir_all(by_id).await?;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        // Contains "..", so it can never equal a name that passed check_name.
        let tmp = by_id.join(format!("..attach-{}-{seq}", std::process::id()));
        remove_if_exists(&tmp).await?;
        tokio::fs::symlink(target, &tmp).await.map_err(io_err("creating link", &tmp))?;
        if let Err(e) = tokio::fs::rename(&tmp, link).await {
            // Best effort: the error that matters is the rename's.
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_err("installing link", link)(e));
        }
        Ok(())
    }
}

/// Symlinks in one by-id directory; our own temporary links (names with "..")
/// and anything that is not a symlink are skipped.
async fn links_in(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut links = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(io_err("listing", dir))? {
        if entry.file_name().as_bytes().windows(2).any(|w| w == b"..") {
            continue;
        }
        let path = entry.path();
        if let Some(target) = read_link_if_exists(&path).await? {
            links.push((path, target));
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::Fixture;
    use super::super::DeviceMode;
    use super::*;

    #[tokio::test]
    async fn links_are_listed_per_vm_and_temporaries_skipped() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        assert!(dm.attached_links("vm1").await.expect("no root yet").is_empty());
        let by_id = dm.by_id_dir("vm1");
        dm.place_link(&by_id, &by_id.join("b"), Path::new("/dev/null")).await.expect("place b");
        dm.place_link(&by_id, &by_id.join("a"), Path::new("/dev/zero")).await.expect("place a");
        dm.place_link(&by_id, &by_id.join("a"), Path::new("/dev/full")).await.expect("replace a");
        std::os::unix::fs::symlink("/dev/null", by_id.join("..attach-leftover")).expect("temporary");
        std::fs::write(by_id.join("plain-file"), b"").expect("plain file");
        let other = dm.by_id_dir("vm2");
        dm.place_link(&other, &other.join("c"), Path::new("/dev/null")).await.expect("place c");

        assert_eq!(
            dm.attached_links("vm1").await.expect("list"),
            vec![("a".to_owned(), PathBuf::from("/dev/full")), ("b".to_owned(), PathBuf::from("/dev/null"))]
        );
        let targets = dm.link_targets().await.expect("targets");
        let expected: HashSet<PathBuf> = ["/dev/full", "/dev/null"].map(PathBuf::from).into();
        assert_eq!(targets, expected);
        assert_eq!(dm.all_links().await.expect("all").len(), 3);
    }
}
