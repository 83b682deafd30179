//! The floors the benchmark compares with: what formatting and mounting costs
//! on this machine with the tools the driver uses, measured without the driver
//! (and without the simulator, the runner or any API call in between).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::Failure;

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
}

async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, Failure> {
    let out = Command::new(program).args(args).output().await.map_err(|e| fail(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("{program} {:?}: {}", args, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One scratch volume: a sparse file of the bench's claim size on a loop device.
struct Scratch {
    device: String,
    mountpoint: PathBuf,
}

async fn make(dir: &Path, i: usize, size: u64) -> Result<Scratch, Failure> {
    let file = dir.join(format!("floor-{i}.img"));
    let f = std::fs::File::create(&file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    f.set_len(size).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    let device = run("losetup", &["--find".as_ref(), "--show".as_ref(), file.as_os_str()]).await?;
    let mountpoint = dir.join(format!("floor-{i}.mnt"));
    std::fs::create_dir_all(&mountpoint).map_err(|e| fail(format!("{}: {e}", mountpoint.display())))?;
    Ok(Scratch { device, mountpoint })
}

/// What the node plugin does to a blank volume, and nothing else: the same
/// `mkfs.ext4` options (driver/src/mount/linux.rs), then the mount.
async fn format_and_mount(s: &Scratch) -> Result<Duration, Failure> {
    let t = Instant::now();
    run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-m".as_ref(),
            "0".as_ref(),
            "-E".as_ref(),
            "nodiscard".as_ref(),
            "--".as_ref(),
            s.device.as_ref(),
        ],
    )
    .await?;
    run("mount", &[s.device.as_ref(), s.mountpoint.as_os_str()]).await?;
    Ok(t.elapsed())
}

async fn remove(s: &Scratch) {
    let _ = Command::new("umount").arg(&s.mountpoint).output().await;
    let _ = Command::new("losetup").args(["-d", &s.device]).output().await;
}

/// `count` blank volumes of `size` bytes, formatted and mounted `parallel` at a
/// time (the node plugins of `parallel` VMs side by side): the wall time of
/// that, and the median time of one. Loop devices are set up before the clock
/// starts (the simulator's hotplug latency stands for that part) and taken
/// down after.
pub async fn format_and_mount_many(
    dir: &Path,
    count: usize,
    size: u64,
    parallel: usize,
) -> Result<(Duration, Duration), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let mut scratch = Vec::with_capacity(count);
    let mut made = Ok(());
    for i in 0..count {
        match make(dir, i, size).await {
            Ok(s) => scratch.push(Arc::new(s)),
            Err(e) => {
                made = Err(e);
                break;
            }
        }
    }
    let timed = match made {
        Ok(()) => {
            let gate = Arc::new(Semaphore::new(parallel.max(1)));
            let started = Instant::now();
            let tasks: Vec<_> = scratch
                .iter()
                .cloned()
                .map(|s| {
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        let _turn = gate.acquire_owned().await;
                        format_and_mount(&s).await
                    })
                })
                .collect();
            let mut each = Vec::with_capacity(count);
            let mut error = None;
            for t in tasks {
                match t.await {
                    Ok(Ok(d)) => each.push(d),
                    Ok(Err(e)) => error = Some(e),
                    Err(e) => error = Some(fail(format!("floor task: {e}"))),
                }
            }
            let wall = started.elapsed();
            match error {
                Some(e) => Err(e),
                None => {
                    each.sort();
                    Ok((wall, each.get(each.len() / 2).copied().unwrap_or_default()))
                }
            }
        }
        Err(e) => Err(e),
    };
    for s in &scratch {
        remove(s).await;
    }
    let _ = std::fs::remove_dir_all(dir);
    timed
}
