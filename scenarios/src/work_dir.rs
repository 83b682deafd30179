//! A run's work directory on this machine: the mounts below it (a simulator's RWX
//! exports, the emulated kubelet's staging and publish mounts) and its removal.
//! The runner clears an earlier run's directory; chaos refuses to start a seed on
//! one that still has mounts, since those would be an earlier seed's leftovers.

use std::path::Path;

/// Mount points of a mountinfo text, decoded (the kernel writes space, tab,
/// newline and backslash as `\ooo`).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|field| String::from_utf8_lossy(&syskit::mountinfo::unescape(field.as_bytes())).into_owned())
        .collect()
}

/// Mount points of this process's mount namespace that lie strictly below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points(&info).into_iter().filter(|m| Path::new(m).starts_with(dir) && Path::new(m) != dir).collect()
}

/// Removes `dir` and everything in it; a directory that is not there is fine.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_mount_points_are_decoded() {
        let info = "\
36 25 0:32 / / rw - ext4 /dev/sda1 rw
99 36 7:3 / /var/lib/kubelet/pods/a\\040b rw - ext4 /dev/loop3 rw
100 36 7:4 / /x\\134y\\011 rw - ext4 /dev/loop4 rw
101 36 7:5 / /x\\9 rw - ext4 /dev/loop5 rw
";
        // A backslash that starts no escape stays.
        assert_eq!(mount_points(info), ["/", "/var/lib/kubelet/pods/a b", "/x\\y\t", "/x\\9"]);
    }

    #[test]
    fn removing_a_missing_directory_is_fine() {
        let root = tempfile::tempdir().expect("temp dir");
        remove(&root.path().join("never-made")).expect("missing is fine");
        let made = root.path().join("made/deeper");
        std::fs::create_dir_all(&made).expect("dirs");
        remove(&root.path().join("made")).expect("removed");
        assert!(!root.path().join("made").exists());
    }
}
