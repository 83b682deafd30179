//! Releasing what simulators left on the host under a directory. Mounts and
//! loop devices outlive a simulator by design (a restart must find them), so
//! tests and tools that are done with a state directory release them here.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use syskit::{find_program, mountinfo};

/// Unmounts (lazily, innermost first) everything mounted below `dir`, then
/// detaches the live loop devices backed by files below it. Touches nothing
/// outside `dir`. Best effort and synchronous, so it can run in `Drop` after a
/// failed assertion, when the async runtime may be gone; returns what it could
/// not release, as text for a log line.
///
/// A loop device already released (auto-clear set) is left to the kernel,
/// which frees it on its last close; its name may then be reused at once by a
/// device of another test or simulator, so every device is held open while it
/// is checked and detached (see `DeviceManager::release_loop`).
pub fn release_host_resources(dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let Ok(dir) = dir.canonicalize() else { return failures };
    match mountinfo::read().and_then(|text| mountinfo::parse(&text)) {
        Ok(entries) => {
            for entry in entries.iter().rev().filter(|e| e.info.target.starts_with(&dir)) {
                let target = &entry.info.target;
                if let Err(e) = run("umount", &["--lazy".as_ref(), target.as_os_str()]) {
                    failures.push(format!("unmounting {}: {e}", target.display()));
                }
            }
        }
        Err(e) => failures.push(e.to_string()),
    }
    let Ok(devices) = std::fs::read_dir("/sys/block") else { return failures };
    for name in devices.flatten().map(|d| d.file_name()) {
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else { continue };
        if !status(name).is_some_and(|s| s.backing_file.starts_with(&dir)) {
            continue;
        }
        let dev = Path::new("/dev").join(name);
        // Fails while the kernel tears the device down, or once the node is gone.
        let Ok(_pin) = File::open(&dev) else { continue };
        match status(name) {
            Some(s) if s.backing_file.starts_with(&dir) && !s.autoclear => {}
            _ => continue,
        }
        if let Err(e) = run("losetup", &["--detach".as_ref(), dev.as_os_str()]) {
            failures.push(format!("detaching {}: {e}", dev.display()));
        }
    }
    failures
}

/// What sysfs says about a bound loop device (`None` if unbound or unknown).
struct Status {
    backing_file: PathBuf,
    autoclear: bool,
}

fn status(name: &str) -> Option<Status> {
    let sys = Path::new("/sys/block").join(name).join("loop");
    let backing = std::fs::read_to_string(sys.join("backing_file")).ok()?;
    let backing = backing.trim_end_matches('\n');
    let autoclear = std::fs::read_to_string(sys.join("autoclear")).ok()?.trim() == "1";
    Some(Status { backing_file: PathBuf::from(backing.trim_end_matches(" (deleted)")), autoclear })
}

fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    match Command::new(find_program(program)).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{program} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_host_resources_needs_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(release_host_resources(dir.path()).is_empty());
        assert!(release_host_resources(&dir.path().join("missing")).is_empty());
    }
}
