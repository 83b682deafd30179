//! Fixtures for the device tests: a manager in a temporary directory that
//! releases whatever it left on the host, and small host queries.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use syskit::find_program;

use super::{release_host_resources, DeviceManager, DeviceMode};

pub const MIB: u64 = 1024 * 1024;

/// Field order matters: the manager goes first, then the cleanup guard, and
/// the temporary directory last, after nothing is mounted in it any more.
pub struct Fixture {
    pub dm: DeviceManager,
    _cleanup: Cleanup,
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(mode: DeviceMode) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        Fixture { dm: DeviceManager::new(&root, mode), _cleanup: Cleanup { root }, dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs even when an assertion fails, so a broken test does not leave loop
/// devices or mounts behind on the host. Synchronous on purpose: Drop cannot
/// await, and the runtime may already be gone.
struct Cleanup {
    root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for failure in release_host_resources(&self.root) {
            eprintln!("cleanup: {failure}");
        }
    }
}

/// First line of every test marked `#[ignore = "needs root: ..."]`: run anyway
/// (`--ignored`) without root or loop devices, it fails saying so instead of
/// passing without having tested anything.
pub fn require_loop_devices() {
    if let Err(e) = DeviceManager::new("/nonexistent", DeviceMode::Loop).check() {
        panic!("this test needs root and loop devices; run it as root: {e}");
    }
}

/// How long a released loop device may take to disappear. Normally milliseconds;
/// generous because the machine may be busy with other builds and tests.
const RELEASE_BOUND: Duration = Duration::from_secs(30);

/// Waits until the volume's loop devices are exactly `want` (in any order), for
/// [`RELEASE_BOUND`] at most, and fails the test with what is left otherwise.
///
/// Releasing a loop device is asynchronous: the kernel frees it on its last close,
/// and anything on the machine may hold it open for a moment. `losetup
/// --associated`, which this manager, other tests and other simulators run all
/// the time, opens every device backed by the file it asks about. So a test waits
/// for a release instead of assuming it, and compares only devices of its own
/// files.
pub async fn wait_for_loops(dm: &DeviceManager, volume: &str, want: &[PathBuf]) {
    let mut want = want.to_vec();
    want.sort();
    let started = Instant::now();
    loop {
        let mut now = dm.loop_devices_of(volume).await.expect("listing loop devices");
        now.sort();
        if now == want {
            return;
        }
        assert!(
            started.elapsed() < RELEASE_BOUND,
            "loop devices of {volume} are still {now:?} after {RELEASE_BOUND:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn device_size(dev: &Path) -> u64 {
    let out = Command::new(find_program("blockdev")).arg("--getsize64").arg(dev).output().expect("blockdev");
    assert!(out.status.success(), "blockdev failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("size")
}

pub fn sh(program: &str, args: &[&OsStr]) {
    let status = Command::new(find_program(program)).args(args).status().expect("spawn");
    assert!(status.success(), "{program} {args:?} failed");
}

pub fn is_loop_device(path: &Path) -> bool {
    path.to_str()
        .and_then(|p| p.strip_prefix("/dev/loop"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
