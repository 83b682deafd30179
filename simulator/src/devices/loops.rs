//! Loop devices: finding the ones backed by a file, telling live ones from ones
//! on their way out, creating, releasing and resizing them. Everything is asked
//! of the kernel (losetup, sysfs) each time, never remembered.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use syskit::Cmd;
use tracing::{debug, warn};

use super::error::{io_err, DeviceError, Result};
use super::files::canonical_if_exists;
use super::{DeviceManager, DeviceMode, COMMAND_TIMEOUT};

impl DeviceManager {
    /// Loop devices currently backed by the volume's file (always empty in file
    /// mode). Includes devices that are already detached but still held open.
    pub async fn loop_devices_of(&self, volume: &str) -> Result<Vec<PathBuf>> {
        super::check_name("volume", volume)?;
        self.loops_at(&self.backing_file(volume)).await
    }

    pub(super) async fn loops_at(&self, file: &Path) -> Result<Vec<PathBuf>> {
        if self.mode == DeviceMode::File {
            return Ok(Vec::new());
        }
        // losetup matches by inode; a missing file simply has no devices (and we
        // always release devices before deleting a file).
        match canonical_if_exists(file).await? {
            Some(abs) => backed_by(&abs).await,
            None => Ok(Vec::new()),
        }
    }

    /// Loop devices of the file that are not already on their way out. A device
    /// with auto-clear set was released (or was created by `mount -o loop` for an
    /// export), so it must never be handed to a guest as a fresh attachment.
    pub(super) async fn live_loops_at(&self, file: &Path) -> Result<Vec<PathBuf>> {
        let mut live = Vec::new();
        for dev in self.loops_at(file).await? {
            if autoclear(&dev).await == Some(false) {
                live.push(dev);
            }
        }
        Ok(live)
    }

    /// Detaches `dev` if it is still a live device of `file`. The kernel frees a
    /// detached device when its last opener closes it, so a released device may
    /// linger a moment with auto-clear set (anything on the machine can hold it
    /// open briefly; `losetup --associated` itself opens the devices it reports).
    /// Once freed, its name can be taken at once by a new device of another volume
    /// or another process, so a device listed a moment ago must not be detached by
    /// name unchecked. Holding it open pins it: while this process has it open the
    /// kernel cannot free or rebind it, so the check and the detach see the same
    /// device. A device already released or gone is fine: that is the goal.
    pub(super) async fn release_loop(&self, file: &Path, dev: &Path) -> Result<()> {
        let _pin = match tokio::fs::File::open(dev).await {
            Ok(pin) => pin,
            // ENXIO: the kernel is tearing it down; ENOENT: the node is gone.
            Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32) || e.kind() == io::ErrorKind::NotFound => {
                debug!(device = %dev.display(), error = %e, "loop device already gone");
                return Ok(());
            }
            Err(e) => return Err(io_err("opening loop device", dev)(e)),
        };
        if self.is_released(file, dev).await? {
            debug!(device = %dev.display(), "loop device already released");
            return Ok(());
        }
        Cmd::admin_tool("losetup").arg("--detach").arg(dev).run(COMMAND_TIMEOUT).await?;
        // Dropping the pin is the last close, unless someone else still has it open.
        Ok(())
    }

    /// Re-reads the backing file's size into every device of `file`, as after a real
    /// online expansion. A device that goes away meanwhile needs no refresh.
    pub(super) async fn refresh_capacity(&self, file: &Path) -> Result<()> {
        for dev in self.loops_at(file).await? {
            match Cmd::admin_tool("losetup").arg("--set-capacity").arg(&dev).run(COMMAND_TIMEOUT).await {
                Ok(_) => debug!(device = %dev.display(), "refreshed loop capacity"),
                Err(e) if !self.loops_at(file).await?.contains(&dev) => {
                    debug!(device = %dev.display(), error = %e, "loop device went away before its refresh");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Gone from `file`, or marked to be freed on its last close.
    pub(super) async fn is_released(&self, file: &Path, dev: &Path) -> Result<bool> {
        if !self.loops_at(file).await?.iter().any(|d| d == dev) {
            return Ok(true);
        }
        Ok(autoclear(dev).await == Some(true))
    }
}

/// `None` when sysfs cannot tell us, which callers treat as "not safe to reuse".
pub(super) async fn autoclear(dev: &Path) -> Option<bool> {
    let name = dev.file_name()?;
    let flag = Path::new("/sys/block").join(name).join("loop").join("autoclear");
    match tokio::fs::read_to_string(flag).await.ok()?.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

async fn backed_by(file_abs: &Path) -> Result<Vec<PathBuf>> {
    let out = Cmd::admin_tool("losetup")
        .args(["--list", "--noheadings", "--output", "NAME", "--associated"])
        .arg(file_abs)
        .run(COMMAND_TIMEOUT)
        .await?;
    Ok(out.stdout.lines().map(str::trim).filter(|line| !line.is_empty()).map(PathBuf::from).collect())
}

/// losetup picks and claims a free device atomically in current util-linux, but
/// older versions can lose a race with a concurrent setup and report EBUSY, in
/// which case one retry picks another device.
pub(super) async fn create(file_abs: &Path) -> Result<PathBuf> {
    let cmd = Cmd::admin_tool("losetup").args(["--find", "--show"]).arg(file_abs);
    let mut out = cmd.output(COMMAND_TIMEOUT).await?;
    if !out.success() && out.stderr.contains("busy") {
        warn!(file = %file_abs.display(), "loop device setup raced, retrying");
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = cmd.output(COMMAND_TIMEOUT).await?;
    }
    if !out.success() {
        return Err(cmd.failed(&out).into());
    }
    match out.stdout.lines().map(str::trim).find(|line| !line.is_empty()) {
        Some(dev) => Ok(PathBuf::from(dev)),
        None => Err(DeviceError::UnexpectedOutput {
            command: cmd.display(),
            output: out.stdout,
            expected: "the name of the new device",
        }),
    }
}
