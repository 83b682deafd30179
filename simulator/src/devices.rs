//! Fake KubeVirt disk hot-plug for the simulator.
//!
//! A Longhorn volume is a sparse file under `DIR/volumes/<volume>.img`. Hot-plugging
//! it into a VM gives the VM's fake root (`DIR/vms/<vm>/root`, the directory a CSI
//! node plugin is pointed at with `--root`) a `dev/disk/by-id/<link>` symlink to a
//! real block device, so the plugin can format, mount and resize it exactly as on a
//! real guest. RWX volumes are instead served from `DIR/exports/<volume>`, standing
//! in for a share-manager export.
//!
//! Two modes exist because loop devices need root:
//! * [`DeviceMode::Loop`]: every attachment is its own `/dev/loopN` backed by the
//!   volume file, and exports are ext4 loop mounts.
//! * [`DeviceMode::File`]: by-id links point straight at the backing file and exports
//!   are plain directories. It is never chosen as a silent fallback, because a plugin
//!   that expects a block device would then misbehave in confusing ways.
//!
//! Loop devices are identified by what they are backed by (`losetup --associated`)
//! and whether the kernel will auto-clear them, never by remembered state, so the
//! manager keeps working across simulator restarts (see [`DeviceManager::reconcile`]).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::process::Command;
use tracing::{debug, info, warn};

/// Generous for losetup/mount, which normally finish in milliseconds; exists so a
/// wedged kernel or NFS-like hang cannot stall the simulator forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// mkfs touches metadata proportional to the volume size, so it gets more time.
const MKFS_TIMEOUT: Duration = Duration::from_secs(120);
/// Kubernetes object names (DNS subdomains) are at most 253 bytes.
const MAX_NAME_LEN: usize = 253;
const LOOP_CONTROL: &str = "/dev/loop-control";
/// Stacked mounts on one export directory are unusual; this only bounds the loop.
const MAX_UNMOUNTS: usize = 8;

/// Errors from [`DeviceManager`].
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed { command: String, status: String, stderr: String },
    #[error("`{command}` did not finish within {} s", timeout.as_secs())]
    CommandTimedOut { command: String, timeout: Duration },
    #[error(
        "loop device mode is unavailable: {reason}; loop mode needs root (euid 0) and a \
         usable /dev/loop-control. Run as root, or use `--devices file` to back disks \
         with plain files instead"
    )]
    LoopUnavailable { reason: String },
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName { kind: String, name: String, reason: &'static str },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue { what: &'static str, value: String, reason: &'static str },
    #[error("cannot shrink volume {volume} from {current} to {requested} bytes")]
    Shrink { volume: String, current: u64, requested: u64 },
    #[error("{0}")]
    Conflict(String),
}

type Result<T, E = DeviceError> = std::result::Result<T, E>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DeviceError {
    let path = path.to_path_buf();
    move |source| DeviceError::Io { op, path, source }
}

/// How volumes are presented to guests; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMode {
    Loop,
    File,
}

/// Validates a name used as a single path component (volume, vm, link, nic).
///
/// `..` is rejected anywhere in the name, not only as the whole name, which also
/// lets the manager use names containing `..` for its own temporary files without
/// any chance of colliding with a caller's name.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 253 bytes")
    } else if name.contains('/') {
        Some("must not contain '/'")
    } else if name.contains("..") {
        Some("must not contain '..'")
    } else if name == "." {
        Some("must not be '.'")
    } else if name.chars().any(char::is_control) {
        Some("must not contain NUL or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DeviceError::InvalidName { kind: kind.to_owned(), name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

/// Values written as one-line sysfs files must stay one line.
fn check_line_value(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DeviceError::InvalidValue { what, value: value.to_owned(), reason }),
        None => Ok(()),
    }
}

/// Creates and tracks fake hot-plug devices under one state directory.
///
/// Share it behind an `Arc`: operations on the same volume are serialised
/// internally (so, e.g., two attaches cannot both decide a loop device is unused),
/// while different volumes proceed concurrently.
#[derive(Debug)]
pub struct DeviceManager {
    state_dir: PathBuf,
    mode: DeviceMode,
    busy_volumes: Mutex<HashSet<String>>,
    tmp_seq: AtomicU64,
}

/// Releases a per-volume lock taken by [`DeviceManager::lock_volume`].
struct VolumeGuard<'a> {
    busy: &'a Mutex<HashSet<String>>,
    volume: String,
}

impl Drop for VolumeGuard<'_> {
    fn drop(&mut self) {
        lock_set(self.busy).remove(&self.volume);
    }
}

/// A panic elsewhere must not wedge every later device operation, and the set
/// stays consistent because each critical section is a single insert/remove.
fn lock_set(m: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeviceManager {
    pub fn new(state_dir: impl Into<PathBuf>, mode: DeviceMode) -> Self {
        Self { state_dir: state_dir.into(), mode, busy_volumes: Mutex::new(HashSet::new()), tmp_seq: AtomicU64::new(0) }
    }

    pub fn mode(&self) -> DeviceMode {
        self.mode
    }

    /// Checks that the mode can work here (Loop: euid 0 and an openable
    /// /dev/loop-control). Meant to be called once at start so a misconfiguration
    /// is reported up front rather than on the first hot-plug.
    pub fn check(&self) -> Result<()> {
        if self.mode == DeviceMode::File {
            return Ok(());
        }
        match effective_uid() {
            Ok(0) => {}
            Ok(uid) => {
                return Err(DeviceError::LoopUnavailable {
                    reason: format!("running with effective uid {uid}, not root"),
                })
            }
            Err(e) => {
                return Err(DeviceError::LoopUnavailable { reason: format!("cannot determine the effective uid: {e}") })
            }
        }
        // Opening it (not just stat-ing) also catches containers whose device
        // cgroup hides loop devices from an otherwise-root process.
        if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(LOOP_CONTROL) {
            return Err(DeviceError::LoopUnavailable { reason: format!("cannot open {LOOP_CONTROL}: {e}") });
        }
        Ok(())
    }

    /// Path of a volume's backing file. Does not validate `volume`; every async
    /// method does, so only callers building their own paths need [`check_name`].
    pub fn backing_file(&self, volume: &str) -> PathBuf {
        self.state_dir.join("volumes").join(format!("{volume}.img"))
    }

    /// The VM's fake root directory. Does not validate `vm` (see [`Self::backing_file`]).
    pub fn vm_root(&self, vm: &str) -> PathBuf {
        self.state_dir.join("vms").join(vm).join("root")
    }

    /// Where an RWX volume is exported. Does not validate `volume`.
    pub fn export_dir(&self, volume: &str) -> PathBuf {
        self.state_dir.join("exports").join(volume)
    }

    fn by_id_dir(&self, vm: &str) -> PathBuf {
        self.vm_root(vm).join("dev").join("disk").join("by-id")
    }

    /// Serialises work on one volume. A polling lock keeps the module within the
    /// tokio features the simulator enables (no `sync`); contention is rare and
    /// short, so the 10 ms poll costs nothing noticeable.
    async fn lock_volume(&self, volume: &str) -> VolumeGuard<'_> {
        loop {
            let acquired = lock_set(&self.busy_volumes).insert(volume.to_owned());
            if acquired {
                return VolumeGuard { busy: &self.busy_volumes, volume: volume.to_owned() };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates the sparse backing file. Idempotent; an existing file that is already
    /// large enough is left untouched (it holds the volume's data).
    pub async fn create_backing_file(&self, volume: &str, size: u64) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let path = self.backing_file(volume);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io_err("creating directory", dir))?;
        }
        // truncate(false): re-creating an existing volume must never lose data.
        tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .await
            .map_err(io_err("creating backing file", &path))?;
        self.grow_locked(volume, &path, size, false).await
    }

    /// Copies a file sparsely (a clone's or a snapshot's data), creating the target's
    /// directory; through the same runner as every other device command.
    pub async fn copy_sparse(&self, src: &Path, dst: &Path) -> Result<()> {
        if let Some(dir) = dst.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io_err("creating directory", dir))?;
        }
        run("cp", &[OsStr::new("--sparse=always"), src.as_os_str(), dst.as_os_str()], MKFS_TIMEOUT)
            .await
            .and_then(Finished::into_ok)
            .map(|_| ())
    }

    /// Grows the backing file; shrinking is an error because it would cut off data
    /// under a filesystem. Attached loop devices get their capacity refreshed so the
    /// guest sees the new size, as after a real online expansion.
    pub async fn grow_backing_file(&self, volume: &str, size: u64) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let path = self.backing_file(volume);
        self.grow_locked(volume, &path, size, true).await
    }

    async fn grow_locked(&self, volume: &str, path: &Path, size: u64, strict: bool) -> Result<()> {
        let current = tokio::fs::metadata(path).await.map_err(io_err("reading backing file", path))?.len();
        if size < current {
            if strict {
                return Err(DeviceError::Shrink { volume: volume.to_owned(), current, requested: size });
            }
            return Ok(());
        }
        if size > current {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .map_err(io_err("opening backing file", path))?;
            file.set_len(size).await.map_err(io_err("resizing backing file", path))?;
            info!(volume, from = current, to = size, "grew backing file");
        } else if !strict {
            return Ok(());
        }
        // An explicit grow refreshes even when the size is unchanged, so a grow
        // retried after a crash between set_len and the refresh still completes.
        if self.mode == DeviceMode::Loop {
            for dev in self.loops_at(path).await? {
                run_ok("losetup", &[OsStr::new("--set-capacity"), dev.as_os_str()]).await?;
                debug!(volume, device = %dev.display(), "refreshed loop capacity");
            }
        }
        Ok(())
    }

    /// Deletes the volume: stops its export, removes every by-id link that leads to
    /// it (so no guest keeps a link that could later resolve to a reused loop
    /// device), releases its loop devices, then removes the file. Idempotent.
    pub async fn delete_backing_file(&self, volume: &str) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let path = self.backing_file(volume);
        self.stop_export_locked(volume).await?;

        let loops = self.loops_at(&path).await?;
        let mut doomed: HashSet<PathBuf> = loops.iter().cloned().collect();
        if let Some(abs) = canonical_if_exists(&path).await? {
            doomed.insert(abs);
        }
        for (link, target) in self.all_links().await? {
            if doomed.contains(&target) {
                warn!(volume, link = %link.display(), "removing link of deleted volume");
                remove_if_exists(&link).await?;
            }
        }
        for dev in &loops {
            self.release_loop(&path, dev).await?;
        }
        remove_if_exists(&path).await?;

        let export = self.export_dir(volume);
        match self.mode {
            // In file mode the export directory *is* the RWX volume's data.
            DeviceMode::File => match tokio::fs::remove_dir_all(&export).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("removing export directory", &export)(e))
                }
                _ => {}
            },
            // Only an empty mount point is left; if it is somehow not empty, keep it
            // rather than delete data that may still belong to a live mount.
            DeviceMode::Loop => {
                if let Err(e) = tokio::fs::remove_dir(&export).await {
                    if e.kind() != io::ErrorKind::NotFound {
                        warn!(volume, error = %e, "left export directory in place");
                    }
                }
            }
        }
        info!(volume, "deleted volume");
        Ok(())
    }

    /// Writes the guest's identity files and makes sure its by-id directory exists.
    /// Idempotent: files are rewritten, and NIC directories not listed are removed
    /// so the fake root matches the VM's current spec.
    pub async fn prepare_vm_root(&self, vm: &str, firmware_uuid: &str, nics: &[(String, String)]) -> Result<()> {
        check_name("vm", vm)?;
        check_line_value("firmware uuid", firmware_uuid)?;
        for (nic, mac) in nics {
            check_name("nic", nic)?;
            check_line_value("mac address", mac)?;
        }
        let root = self.vm_root(vm);

        let dmi = root.join("sys").join("class").join("dmi").join("id");
        create_dir_all(&dmi).await?;
        write_atomic(&dmi.join("product_uuid"), format!("{}\n", firmware_uuid.to_lowercase())).await?;

        let net = root.join("sys").join("class").join("net");
        create_dir_all(&net).await?;
        for (nic, mac) in nics {
            let dir = net.join(nic);
            create_dir_all(&dir).await?;
            write_atomic(&dir.join("address"), format!("{}\n", mac.to_lowercase())).await?;
        }
        let wanted: HashSet<&OsStr> = nics.iter().map(|(nic, _)| OsStr::new(nic)).collect();
        let mut entries = tokio::fs::read_dir(&net).await.map_err(io_err("listing", &net))?;
        while let Some(entry) = entries.next_entry().await.map_err(io_err("listing", &net))? {
            if wanted.contains(entry.file_name().as_os_str()) {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().await.map_err(io_err("inspecting", &path))?.is_dir();
            let removed =
                if is_dir { tokio::fs::remove_dir_all(&path).await } else { tokio::fs::remove_file(&path).await };
            removed.map_err(io_err("removing stale nic", &path))?;
            debug!(vm, nic = %path.display(), "removed stale nic");
        }

        create_dir_all(&self.by_id_dir(vm)).await?;
        Ok(())
    }

    /// Hot-plugs `volume` into `vm`: gives the guest a block device and a by-id link
    /// to it, and returns the device path (the backing file itself in file mode).
    ///
    /// Idempotent: a link that already resolves to a live loop device of this volume
    /// is kept. A stale link (device gone, or now backing something else, e.g. after
    /// a host reboot) is replaced. A loop device of this volume that nothing links to
    /// (left by a crash between creating it and linking it) is reused instead of
    /// leaking a new one.
    pub async fn attach(&self, vm: &str, volume: &str, link_name: &str) -> Result<PathBuf> {
        check_name("vm", vm)?;
        check_name("volume", volume)?;
        check_name("link", link_name)?;
        let _guard = self.lock_volume(volume).await;
        self.attach_locked(vm, volume, link_name).await
    }

    async fn attach_locked(&self, vm: &str, volume: &str, link_name: &str) -> Result<PathBuf> {
        let file = self.backing_file(volume);
        let file_abs = tokio::fs::canonicalize(&file).await.map_err(io_err("attaching backing file", &file))?;
        let by_id = self.by_id_dir(vm);
        let link = by_id.join(link_name);
        let current = read_link_if_exists(&link).await?;

        let (device, created) = match self.mode {
            DeviceMode::File => {
                if current.as_deref() == Some(file_abs.as_path()) {
                    return Ok(file_abs);
                }
                (file_abs.clone(), false)
            }
            DeviceMode::Loop => {
                let live = self.live_loops_at(&file_abs).await?;
                if let Some(target) = &current {
                    if live.contains(target) {
                        debug!(vm, volume, link = link_name, "already attached");
                        return Ok(target.clone());
                    }
                }
                match self.orphan_loops(&live).await?.into_iter().next() {
                    Some(dev) => {
                        info!(vm, volume, device = %dev.display(), "reusing unlinked loop device");
                        (dev, false)
                    }
                    None => (new_loop(&file_abs).await?, true),
                }
            }
        };
        if let Some(old) = &current {
            warn!(vm, volume, link = link_name, old = %old.display(), "replacing stale link");
        }
        if let Err(e) = self.place_link(&by_id, &link, &device).await {
            if created {
                if let Err(cleanup) = self.release_loop(&file_abs, &device).await {
                    warn!(device = %device.display(), error = %cleanup, "could not release loop device");
                }
            }
            return Err(e);
        }
        info!(vm, volume, link = link_name, device = %device.display(), "attached");
        Ok(device)
    }

    /// Swaps the link in with a rename so a guest scanning by-id never sees it
    /// missing or half-made while a stale link is being replaced.
    async fn place_link(&self, by_id: &Path, link: &Path, target: &Path) -> Result<()> {
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

    /// Unplugs: removes the link and releases its loop device with `losetup -d`,
    /// even if the guest still has it mounted. The kernel then only marks the device
    /// auto-clear and frees it when the last user closes it, which is what a real
    /// surprise unplug looks like to a guest (I/O keeps working until unmount).
    /// Unlinked, unmounted loop devices of the volume are released as well.
    /// Idempotent.
    pub async fn detach(&self, vm: &str, volume: &str, link_name: &str) -> Result<()> {
        check_name("vm", vm)?;
        check_name("volume", volume)?;
        check_name("link", link_name)?;
        let _guard = self.lock_volume(volume).await;
        let link = self.by_id_dir(vm).join(link_name);
        let current = read_link_if_exists(&link).await?;
        if remove_if_exists(&link).await? {
            info!(vm, volume, link = link_name, "detached");
        }
        if self.mode == DeviceMode::File {
            return Ok(());
        }
        let file = self.backing_file(volume);
        let loops = self.loops_at(&file).await?;
        if let Some(target) = current {
            // A link that now points at another volume's device (stale after a
            // reboot) must not take that device down with it.
            let referenced = self.link_targets().await?;
            if loops.contains(&target) && !referenced.contains(&target) {
                self.release_loop(&file, &target).await?;
            }
        }
        self.release_orphans_locked(volume).await
    }

    /// Loop devices currently backed by the volume's file (always empty in file
    /// mode). Includes devices that are already detached but still held open.
    pub async fn loop_devices_of(&self, volume: &str) -> Result<Vec<PathBuf>> {
        check_name("volume", volume)?;
        self.loops_at(&self.backing_file(volume)).await
    }

    /// By-id links currently present in a VM's root, sorted by name.
    pub async fn attached_links(&self, vm: &str) -> Result<Vec<(String, PathBuf)>> {
        check_name("vm", vm)?;
        let mut links = Vec::new();
        for (path, target) in links_in(&self.by_id_dir(vm)).await? {
            if let Some(name) = path.file_name().and_then(OsStr::to_str) {
                links.push((name.to_owned(), target));
            }
        }
        links.sort();
        Ok(links)
    }

    /// Starts an RWX export: in loop mode, formats the backing file as ext4 unless
    /// blkid finds anything on it (data is never reformatted) and loop-mounts it at
    /// the export directory; in file mode just creates the directory. Idempotent.
    pub async fn start_export(&self, volume: &str) -> Result<PathBuf> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        let dir = self.export_dir(volume);
        create_dir_all(&dir).await?;
        if self.mode == DeviceMode::File {
            return Ok(dir);
        }
        let file = self.backing_file(volume);
        let file_abs = tokio::fs::canonicalize(&file).await.map_err(io_err("exporting backing file", &file))?;
        let dir_abs = tokio::fs::canonicalize(&dir).await.map_err(io_err("resolving", &dir))?;

        if let Some(source) = mount_source(&dir_abs).await? {
            if self.loops_at(&file_abs).await?.contains(&source) {
                return Ok(dir);
            }
            return Err(DeviceError::Conflict(format!(
                "{} is already mounted from {}, not from volume {volume}",
                dir.display(),
                source.display()
            )));
        }

        if !has_signature(&file_abs).await? {
            run("mkfs.ext4", &[OsStr::new("-q"), OsStr::new("-F"), file_abs.as_os_str()], MKFS_TIMEOUT)
                .await
                .and_then(Finished::into_ok)?;
            info!(volume, "formatted export as ext4");
        }
        if !self.live_loops_at(&file_abs).await?.is_empty() {
            warn!(volume, "volume is also hot-plugged as a block device; mounting it twice can corrupt it");
        }
        run_ok("mount", &[OsStr::new("-o"), OsStr::new("loop"), file_abs.as_os_str(), dir_abs.as_os_str()]).await?;
        info!(volume, dir = %dir.display(), "export started");
        Ok(dir)
    }

    /// Stops an RWX export. A busy mount is detached lazily, so clients holding
    /// files open keep them until they close, like a share-manager going away.
    /// The directory is kept (in file mode it holds the data). Idempotent.
    pub async fn stop_export(&self, volume: &str) -> Result<()> {
        check_name("volume", volume)?;
        let _guard = self.lock_volume(volume).await;
        self.stop_export_locked(volume).await
    }

    async fn stop_export_locked(&self, volume: &str) -> Result<()> {
        if self.mode == DeviceMode::File {
            return Ok(());
        }
        let dir = self.export_dir(volume);
        let Some(dir_abs) = canonical_if_exists(&dir).await? else {
            return Ok(());
        };
        for _ in 0..MAX_UNMOUNTS {
            if mount_source(&dir_abs).await?.is_none() {
                return Ok(());
            }
            if let Err(e) = run_ok("umount", &[dir_abs.as_os_str()]).await {
                warn!(volume, error = %e, "unmount failed, detaching lazily");
                run_ok("umount", &[OsStr::new("--lazy"), dir_abs.as_os_str()]).await?;
            }
            info!(volume, "export stopped");
        }
        if mount_source(&dir_abs).await?.is_none() {
            return Ok(());
        }
        Err(DeviceError::Conflict(format!("{} is still mounted after {MAX_UNMOUNTS} unmounts", dir.display())))
    }

    /// Brings the wanted `(vm, volume, link)` attachments back after a simulator or
    /// host restart: re-attaches where the loop device is gone, fixes stale links,
    /// then releases loop devices of those volumes that nothing links to. Keeps going
    /// past failures so one broken volume does not block the rest; returns the first
    /// error.
    pub async fn reconcile(&self, wanted: &[(String, String, String)]) -> Result<()> {
        let mut first_error = None;
        let mut volumes = Vec::new();
        for (vm, volume, link) in wanted {
            match self.attach(vm, volume, link).await {
                Ok(_) => {
                    if !volumes.contains(volume) {
                        volumes.push(volume.clone());
                    }
                }
                Err(e) => {
                    warn!(vm, volume, link, error = %e, "reconcile: attach failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        if self.mode == DeviceMode::Loop {
            for volume in &volumes {
                let _guard = self.lock_volume(volume).await;
                if let Err(e) = self.release_orphans_locked(volume).await {
                    warn!(volume, error = %e, "reconcile: releasing unlinked loop devices failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn loops_at(&self, file: &Path) -> Result<Vec<PathBuf>> {
        if self.mode == DeviceMode::File {
            return Ok(Vec::new());
        }
        // losetup matches by inode; a missing file simply has no devices (and we
        // always release devices before deleting a file).
        match canonical_if_exists(file).await? {
            Some(abs) => loops_backed_by(&abs).await,
            None => Ok(Vec::new()),
        }
    }

    /// Loop devices of the file that are not already on their way out. A device
    /// with auto-clear set was released (or was created by `mount -o loop` for an
    /// export), so it must never be handed to a guest as a fresh attachment.
    async fn live_loops_at(&self, file: &Path) -> Result<Vec<PathBuf>> {
        let mut live = Vec::new();
        for dev in self.loops_at(file).await? {
            if loop_autoclear(&dev).await == Some(false) {
                live.push(dev);
            }
        }
        Ok(live)
    }

    /// Live devices that no by-id link points at and nothing has mounted.
    async fn orphan_loops(&self, live: &[PathBuf]) -> Result<Vec<PathBuf>> {
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let referenced = self.link_targets().await?;
        let mounted: HashSet<PathBuf> = mounts().await?.into_iter().map(|m| m.source).collect();
        Ok(live.iter().filter(|dev| !referenced.contains(*dev) && !mounted.contains(*dev)).cloned().collect())
    }

    async fn release_orphans_locked(&self, volume: &str) -> Result<()> {
        let file = self.backing_file(volume);
        let live = self.live_loops_at(&file).await?;
        for dev in self.orphan_loops(&live).await? {
            info!(volume, device = %dev.display(), "releasing unlinked loop device");
            self.release_loop(&file, &dev).await?;
        }
        Ok(())
    }

    async fn release_loop(&self, file: &Path, dev: &Path) -> Result<()> {
        match run_ok("losetup", &[OsStr::new("--detach"), dev.as_os_str()]).await {
            Ok(_) => Ok(()),
            // Someone else freeing it first is the outcome we wanted anyway.
            Err(e) if !self.loops_at(file).await?.iter().any(|d| d == dev) => {
                debug!(device = %dev.display(), error = %e, "loop device already gone");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Every by-id link of every VM, as (link path, target).
    async fn all_links(&self) -> Result<Vec<(PathBuf, PathBuf)>> {
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

    async fn link_targets(&self) -> Result<HashSet<PathBuf>> {
        Ok(self.all_links().await?.into_iter().map(|(_, target)| target).collect())
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

fn effective_uid() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no parsable Uid line in /proc/self/status"))
}

async fn create_dir_all(dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir).await.map_err(io_err("creating directory", dir))
}

/// Replaces the file in one step so a plugin reading it concurrently never sees
/// it empty or half-written.
async fn write_atomic(path: &Path, contents: String) -> Result<()> {
    let mut tmp_name = OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    tokio::fs::write(&tmp, contents).await.map_err(io_err("writing", &tmp))?;
    tokio::fs::rename(&tmp, path).await.map_err(io_err("replacing", path))
}

/// Returns whether something was removed.
async fn remove_if_exists(path: &Path) -> Result<bool> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// `None` if the path does not exist or is not a symlink.
async fn read_link_if_exists(path: &Path) -> Result<Option<PathBuf>> {
    match tokio::fs::read_link(path).await {
        Ok(target) => Ok(Some(target)),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::InvalidInput) => Ok(None),
        Err(e) => Err(io_err("reading link", path)(e)),
    }
}

async fn canonical_if_exists(path: &Path) -> Result<Option<PathBuf>> {
    match tokio::fs::canonicalize(path).await {
        Ok(abs) => Ok(Some(abs)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("resolving", path)(e)),
    }
}

/// `None` when sysfs cannot tell us, which callers treat as "not safe to reuse".
async fn loop_autoclear(dev: &Path) -> Option<bool> {
    let name = dev.file_name()?;
    let flag = Path::new("/sys/block").join(name).join("loop").join("autoclear");
    match tokio::fs::read_to_string(flag).await.ok()?.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

async fn loops_backed_by(file_abs: &Path) -> Result<Vec<PathBuf>> {
    let stdout = run_ok(
        "losetup",
        &[
            OsStr::new("--list"),
            OsStr::new("--noheadings"),
            OsStr::new("--output"),
            OsStr::new("NAME"),
            OsStr::new("--associated"),
            file_abs.as_os_str(),
        ],
    )
    .await?;
    Ok(stdout.lines().map(str::trim).filter(|line| !line.is_empty()).map(PathBuf::from).collect())
}

/// losetup picks and claims a free device atomically in current util-linux, but
/// older versions can lose a race with a concurrent setup and report EBUSY, in
/// which case one retry picks another device.
async fn new_loop(file_abs: &Path) -> Result<PathBuf> {
    let args = [OsStr::new("--find"), OsStr::new("--show"), file_abs.as_os_str()];
    let mut finished = run("losetup", &args, COMMAND_TIMEOUT).await?;
    if !finished.success && finished.stderr.contains("busy") {
        warn!(file = %file_abs.display(), "loop device setup raced, retrying");
        tokio::time::sleep(Duration::from_millis(100)).await;
        finished = run("losetup", &args, COMMAND_TIMEOUT).await?;
    }
    let command = finished.command.clone();
    let stdout = finished.into_ok()?;
    match stdout.lines().map(str::trim).find(|line| !line.is_empty()) {
        Some(dev) => Ok(PathBuf::from(dev)),
        None => Err(DeviceError::CommandFailed {
            command,
            status: "exit status 0".to_owned(),
            stderr: "no device name printed".to_owned(),
        }),
    }
}

/// blkid exits 2 when it finds no signature at all. Anything it does find (a
/// filesystem, a partition table, LVM...) counts, so existing data is never
/// formatted over.
async fn has_signature(file_abs: &Path) -> Result<bool> {
    let finished = run(
        "blkid",
        &[OsStr::new("--probe"), OsStr::new("--output"), OsStr::new("value"), file_abs.as_os_str()],
        COMMAND_TIMEOUT,
    )
    .await?;
    match finished.code {
        Some(0) => Ok(true),
        Some(2) => Ok(false),
        _ => finished.into_ok().map(|_| true),
    }
}

struct MountEntry {
    mount_point: PathBuf,
    source: PathBuf,
}

async fn mounts() -> Result<Vec<MountEntry>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = tokio::fs::read_to_string(path).await.map_err(io_err("reading", path))?;
    Ok(parse_mountinfo(&text))
}

/// Source of the topmost mount at `dir` (which must be canonical), if any.
async fn mount_source(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(mounts().await?.into_iter().rev().find(|m| m.mount_point == dir).map(|m| m.source))
}

/// Parses /proc/self/mountinfo: field 5 is the mount point, and the source comes
/// second after the "-" separator that ends the variable-length optional fields.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let mount_point = fields.nth(4)?;
            let mut after = fields.skip_while(|f| *f != "-").skip(1);
            let _fstype = after.next()?;
            let source = after.next()?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
                source: PathBuf::from(unescape_mountinfo(source)),
            })
        })
        .collect()
}

/// The kernel escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

struct Finished {
    command: String,
    code: Option<i32>,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn into_ok(self) -> Result<String> {
        if self.success {
            return Ok(self.stdout);
        }
        Err(DeviceError::CommandFailed {
            command: self.command,
            status: match self.code {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_owned(),
            },
            stderr: self.stderr.trim().to_owned(),
        })
    }
}

async fn run_ok(program: &str, args: &[&OsStr]) -> Result<String> {
    run(program, args, COMMAND_TIMEOUT).await.and_then(Finished::into_ok)
}

async fn run(program: &str, args: &[&OsStr], timeout: Duration) -> Result<Finished> {
    let exe = resolve_program(program);
    let mut command = program.to_owned();
    for arg in args {
        command.push(' ');
        command.push_str(&arg.to_string_lossy());
    }
    debug!(%command, "running");
    let child = Command::new(&exe)
        .args(args)
        // Error text is matched (EBUSY) and shown to users; keep it untranslated.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the wait on timeout then kills the child instead of leaking it.
        .kill_on_drop(true)
        .spawn()
        .map_err(io_err("running", &exe))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.map_err(io_err("waiting for", &exe))?,
        Err(_) => return Err(DeviceError::CommandTimedOut { command, timeout }),
    };
    Ok(Finished {
        command,
        code: output.status.code(),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The admin tools live in sbin, which is often missing from PATH when the
/// simulator is started by a service manager or `sudo` without a login shell.
fn resolve_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command as StdCommand;

    const MIB: u64 = 1024 * 1024;

    /// Field order matters: the manager goes first, then the cleanup guard, and
    /// the temporary directory last, after nothing is mounted in it any more.
    struct Fixture {
        dm: DeviceManager,
        _cleanup: Cleanup,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(mode: DeviceMode) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().canonicalize().expect("canonical tempdir");
            Fixture { dm: DeviceManager::new(&root, mode), _cleanup: Cleanup { root }, dir }
        }

        fn path(&self) -> &Path {
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
            if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
                let mut points: Vec<PathBuf> = parse_mountinfo(&text)
                    .into_iter()
                    .map(|m| m.mount_point)
                    .filter(|p| p.starts_with(&self.root))
                    .collect();
                points.reverse();
                for point in points {
                    let _ = StdCommand::new(resolve_program("umount")).arg("--lazy").arg(&point).status();
                }
            }
            let Ok(entries) = std::fs::read_dir(self.root.join("volumes")) else {
                return;
            };
            for entry in entries.flatten() {
                let Ok(out) = StdCommand::new(resolve_program("losetup"))
                    .args(["--list", "--noheadings", "--output", "NAME", "--associated"])
                    .arg(entry.path())
                    .output()
                else {
                    continue;
                };
                for dev in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = StdCommand::new(resolve_program("losetup")).args(["--detach", dev.trim()]).status();
                }
            }
        }
    }

    fn loop_ready() -> bool {
        match DeviceManager::new("/nonexistent", DeviceMode::Loop).check() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipping: needs root and loop devices ({e})");
                false
            }
        }
    }

    fn device_size(dev: &Path) -> u64 {
        let out = StdCommand::new(resolve_program("blockdev")).arg("--getsize64").arg(dev).output().expect("blockdev");
        assert!(out.status.success(), "blockdev failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("size")
    }

    fn sh(program: &str, args: &[&OsStr]) {
        let status = StdCommand::new(resolve_program(program)).args(args).status().expect("spawn");
        assert!(status.success(), "{program} {args:?} failed");
    }

    fn is_loop_device(path: &Path) -> bool {
        path.to_str()
            .and_then(|p| p.strip_prefix("/dev/loop"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The simulator shares one manager across spawned tasks, so its futures must be
    /// Send; this fails to compile otherwise.
    #[test]
    fn manager_and_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        fn sync<T: Send + Sync>() {}
        sync::<DeviceManager>();
        let dm = DeviceManager::new("/nonexistent", DeviceMode::File);
        send(&dm.attach("vm", "v", "l"));
        send(&dm.detach("vm", "v", "l"));
        send(&dm.start_export("v"));
        send(&dm.delete_backing_file("v"));
        send(&dm.reconcile(&[]));
    }

    #[test]
    fn check_name_rejects_bad_names() {
        for bad in ["", "../x", "a/b", "..", ".", "a..b", "a\0b", "a\nb"] {
            assert!(
                matches!(check_name("volume", bad), Err(DeviceError::InvalidName { .. })),
                "{bad:?} should be rejected"
            );
        }
        assert!(check_name("volume", &"x".repeat(254)).is_err());
        assert!(check_name("volume", &"x".repeat(253)).is_ok());
        assert!(check_name("volume", "pvc-0b6e4a1c-2f3d.img").is_ok());
        let msg = check_name("vm", "a/b").unwrap_err().to_string();
        assert!(msg.contains("vm") && msg.contains("a/b"), "{msg}");
    }

    #[tokio::test]
    async fn methods_validate_names_before_touching_paths() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        let invalid = |r: Result<_>| matches!(r, Err(DeviceError::InvalidName { .. }));
        assert!(invalid(dm.create_backing_file("../x", MIB).await));
        assert!(invalid(dm.grow_backing_file("a/b", MIB).await));
        assert!(invalid(dm.delete_backing_file("").await));
        assert!(invalid(dm.attach("vm", "../x", "l").await.map(|_| ())));
        assert!(invalid(dm.attach("../vm", "v", "l").await.map(|_| ())));
        assert!(invalid(dm.attach("vm", "v", "a/b").await.map(|_| ())));
        assert!(invalid(dm.detach("vm", "v", "..").await));
        assert!(invalid(dm.loop_devices_of("a/b").await.map(|_| ())));
        assert!(invalid(dm.attached_links("").await.map(|_| ())));
        assert!(invalid(dm.start_export("../x").await.map(|_| ())));
        assert!(invalid(dm.stop_export("a/b").await));
        assert!(invalid(dm.prepare_vm_root("a/b", "u", &[]).await));
        let nic = [("../eth0".to_owned(), "aa:bb".to_owned())];
        assert!(invalid(dm.prepare_vm_root("vm", "u", &nic).await));
        let bad = [("x".to_owned(), "../../v".to_owned(), "l".to_owned())];
        assert!(invalid(dm.reconcile(&bad).await));
        assert!(!fx.path().join("x").exists());
    }

    #[test]
    fn loop_unavailable_message_suggests_file_mode() {
        let msg =
            DeviceError::LoopUnavailable { reason: "running with effective uid 1000, not root".into() }.to_string();
        assert!(msg.contains("root") && msg.contains("/dev/loop-control"), "{msg}");
        assert!(msg.contains("--devices file"), "{msg}");
        assert!(DeviceManager::new("/x", DeviceMode::File).check().is_ok());
    }

    #[test]
    fn mountinfo_parsing_handles_optional_fields_and_escapes() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 shared:2 - ext4 /dev/loop3 rw\n\
                    37 35 0:5 / /proc rw - proc proc rw\n\
                    garbage\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mount_point, Path::new("/mnt/a b"));
        assert_eq!(mounts[0].source, Path::new("/dev/loop3"));
        assert_eq!(mounts[1].mount_point, Path::new("/proc"));
        assert_eq!(unescape_mountinfo("a\\134b\\"), OsString::from("a\\b\\"));
        assert_eq!(unescape_mountinfo("\\777"), OsString::from("\\777"));
    }

    #[tokio::test]
    async fn backing_file_is_sparse_grows_and_never_truncates() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        dm.create_backing_file("vol", 64 * MIB).await.unwrap();
        let path = dm.backing_file("vol");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 * MIB);
        assert!(meta.blocks() <= 8, "not sparse: {} blocks", meta.blocks());

        std::fs::write(&path, b"data").unwrap();
        dm.grow_backing_file("vol", 64 * MIB).await.unwrap();
        dm.create_backing_file("vol", 128 * MIB).await.unwrap();
        dm.create_backing_file("vol", MIB).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 * MIB);
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"data");

        dm.grow_backing_file("vol", 256 * MIB).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 256 * MIB);
        assert!(matches!(
            dm.grow_backing_file("vol", MIB).await,
            Err(DeviceError::Shrink { current, requested, .. })
                if current == 256 * MIB && requested == MIB
        ));
        assert!(dm.grow_backing_file("missing", MIB).await.is_err());

        dm.delete_backing_file("vol").await.unwrap();
        dm.delete_backing_file("vol").await.unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn prepare_vm_root_writes_identity_files() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        let nics = vec![
            ("eth0".to_owned(), "52:54:00:AA:BB:01".to_owned()),
            ("eth1".to_owned(), "52:54:00:aa:bb:02".to_owned()),
        ];
        let uuid = "5D307CA9-B3EF-428C-8861-06E72D69F223";
        dm.prepare_vm_root("vm1", uuid, &nics).await.unwrap();
        let root = dm.vm_root("vm1");
        assert_eq!(root, fx.dm.state_dir.join("vms/vm1/root"));
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("sys/class/dmi/id/product_uuid"), "5d307ca9-b3ef-428c-8861-06e72d69f223\n");
        assert_eq!(read("sys/class/net/eth0/address"), "52:54:00:aa:bb:01\n");
        assert_eq!(read("sys/class/net/eth1/address"), "52:54:00:aa:bb:02\n");
        assert!(root.join("dev/disk/by-id").is_dir());

        // Rerun with one NIC changed and one dropped: files are rewritten.
        let nics = vec![("eth0".to_owned(), "52:54:00:aa:bb:09".to_owned())];
        dm.prepare_vm_root("vm1", uuid, &nics).await.unwrap();
        assert_eq!(read("sys/class/net/eth0/address"), "52:54:00:aa:bb:09\n");
        assert!(!root.join("sys/class/net/eth1").exists());
        let leftovers: Vec<_> =
            std::fs::read_dir(root.join("sys/class/dmi/id")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![OsString::from("product_uuid")]);

        assert!(matches!(dm.prepare_vm_root("vm1", "two\nlines", &[]).await, Err(DeviceError::InvalidValue { .. })));
        assert!(dm.prepare_vm_root("vm1", "", &[]).await.is_err());
    }

    #[tokio::test]
    async fn file_mode_attach_detach_and_export() {
        let fx = Fixture::new(DeviceMode::File);
        let dm = &fx.dm;
        assert!(dm.attach("vm1", "vol", "disk-1").await.is_err(), "no backing file yet");
        dm.create_backing_file("vol", 8 * MIB).await.unwrap();
        let file = dm.backing_file("vol").canonicalize().unwrap();

        let dev = dm.attach("vm1", "vol", "disk-1").await.unwrap();
        assert_eq!(dev, file);
        assert_eq!(dm.attach("vm1", "vol", "disk-1").await.unwrap(), file);
        let link = dm.vm_root("vm1").join("dev/disk/by-id/disk-1");
        assert_eq!(std::fs::read_link(&link).unwrap(), file);
        assert_eq!(dm.attached_links("vm1").await.unwrap(), vec![("disk-1".to_owned(), file.clone())]);
        assert!(dm.loop_devices_of("vol").await.unwrap().is_empty());

        // A stale link (e.g. left from another volume) is replaced.
        std::os::unix::fs::symlink("/dev/null", dm.vm_root("vm1").join("dev/disk/by-id/disk-2")).unwrap();
        assert_eq!(dm.attach("vm1", "vol", "disk-2").await.unwrap(), file);
        dm.detach("vm1", "vol", "disk-2").await.unwrap();

        dm.detach("vm1", "vol", "disk-1").await.unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert!(dm.attached_links("vm1").await.unwrap().is_empty());
        dm.detach("vm1", "vol", "disk-1").await.unwrap();
        assert!(dm.attached_links("never-prepared").await.unwrap().is_empty());

        let export = dm.start_export("vol").await.unwrap();
        assert_eq!(export, dm.export_dir("vol"));
        assert!(export.is_dir());
        std::fs::write(export.join("f"), b"x").unwrap();
        assert_eq!(dm.start_export("vol").await.unwrap(), export);
        dm.stop_export("vol").await.unwrap();
        dm.stop_export("vol").await.unwrap();
        assert!(export.join("f").exists(), "file mode keeps export data on stop");

        // Deleting an attached volume unplugs it and removes its export data.
        dm.attach("vm1", "vol", "disk-1").await.unwrap();
        dm.delete_backing_file("vol").await.unwrap();
        assert!(dm.attached_links("vm1").await.unwrap().is_empty());
        assert!(!export.exists());
        assert!(!dm.backing_file("vol").exists());
    }

    #[tokio::test]
    async fn loop_attach_grow_detach_delete() {
        if !loop_ready() {
            return;
        }
        let fx = Fixture::new(DeviceMode::Loop);
        let dm = &fx.dm;
        dm.check().unwrap();
        dm.create_backing_file("vol", 16 * MIB).await.unwrap();
        assert!(std::fs::metadata(dm.backing_file("vol")).unwrap().blocks() <= 8);

        let dev = dm.attach("vm1", "vol", "virtio-vol").await.unwrap();
        assert!(is_loop_device(&dev), "{}", dev.display());
        let link = dm.vm_root("vm1").join("dev/disk/by-id/virtio-vol");
        assert_eq!(std::fs::read_link(&link).unwrap(), dev);
        assert_eq!(device_size(&link), 16 * MIB);
        assert_eq!(dm.attach("vm1", "vol", "virtio-vol").await.unwrap(), dev);
        assert_eq!(dm.loop_devices_of("vol").await.unwrap(), vec![dev.clone()]);
        assert_eq!(dm.attached_links("vm1").await.unwrap(), vec![("virtio-vol".to_owned(), dev.clone())]);

        dm.grow_backing_file("vol", 48 * MIB).await.unwrap();
        assert_eq!(device_size(&dev), 48 * MIB);
        assert!(dm.grow_backing_file("vol", 16 * MIB).await.is_err());

        dm.detach("vm1", "vol", "virtio-vol").await.unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        // A child forked by a concurrent test holds a copy of any open descriptor until its
        // exec, which defers the kernel's auto-clear by a moment: the device must go, soon.
        let mut left = dm.loop_devices_of("vol").await.unwrap();
        for _ in 0..40 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            left = dm.loop_devices_of("vol").await.unwrap();
        }
        assert!(left.is_empty(), "loop devices still attached: {left:?}");
        dm.detach("vm1", "vol", "virtio-vol").await.unwrap();

        dm.delete_backing_file("vol").await.unwrap();
        dm.delete_backing_file("vol").await.unwrap();
        assert!(!dm.backing_file("vol").exists());
        assert!(dm.loop_devices_of("vol").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn loop_detach_while_mounted_releases_on_unmount() {
        if !loop_ready() {
            return;
        }
        let fx = Fixture::new(DeviceMode::Loop);
        let dm = &fx.dm;
        dm.create_backing_file("vol", 32 * MIB).await.unwrap();
        let dev = dm.attach("vm1", "vol", "disk").await.unwrap();
        sh("mkfs.ext4", &[OsStr::new("-q"), dev.as_os_str()]);
        let mnt = fx.path().join("guest-mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh("mount", &[dev.as_os_str(), mnt.as_os_str()]);

        dm.detach("vm1", "vol", "disk").await.unwrap();
        assert!(dm.attached_links("vm1").await.unwrap().is_empty());
        // Still in use by the mount, so the kernel only marked it auto-clear.
        assert_eq!(dm.loop_devices_of("vol").await.unwrap(), vec![dev.clone()]);
        assert_eq!(loop_autoclear(&dev).await, Some(true));
        // A dying device must not be handed out again as a fresh attachment.
        let again = dm.attach("vm1", "vol", "disk").await.unwrap();
        assert_ne!(again, dev);
        dm.detach("vm1", "vol", "disk").await.unwrap();

        sh("umount", &[mnt.as_os_str()]);
        let mut remaining = dm.loop_devices_of("vol").await.unwrap();
        for _ in 0..50 {
            if remaining.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            remaining = dm.loop_devices_of("vol").await.unwrap();
        }
        assert!(remaining.is_empty(), "still backed: {remaining:?}");
        dm.delete_backing_file("vol").await.unwrap();
    }

    #[tokio::test]
    async fn loop_export_formats_once() {
        if !loop_ready() {
            return;
        }
        let fx = Fixture::new(DeviceMode::Loop);
        let dm = &fx.dm;
        assert!(dm.start_export("vol").await.is_err(), "no backing file yet");
        dm.create_backing_file("vol", 32 * MIB).await.unwrap();
        let dir = dm.start_export("vol").await.unwrap();
        assert_eq!(dir, dm.export_dir("vol"));
        let dir_abs = dir.canonicalize().unwrap();
        assert!(mount_source(&dir_abs).await.unwrap().is_some());
        std::fs::write(dir.join("hello.txt"), b"kept").unwrap();
        assert_eq!(dm.start_export("vol").await.unwrap(), dir);
        assert_eq!(
            parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap())
                .iter()
                .filter(|m| m.mount_point == dir_abs)
                .count(),
            1
        );

        dm.stop_export("vol").await.unwrap();
        assert!(mount_source(&dir_abs).await.unwrap().is_none());
        assert!(!dir.join("hello.txt").exists());
        dm.stop_export("vol").await.unwrap();

        dm.start_export("vol").await.unwrap();
        assert_eq!(std::fs::read(dir.join("hello.txt")).unwrap(), b"kept");

        // A busy export is detached lazily instead of failing.
        let busy = std::fs::File::open(dir.join("hello.txt")).unwrap();
        dm.stop_export("vol").await.unwrap();
        assert!(mount_source(&dir_abs).await.unwrap().is_none());
        drop(busy);

        dm.delete_backing_file("vol").await.unwrap();
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn loop_reconcile_repairs_lost_devices_and_stale_links() {
        if !loop_ready() {
            return;
        }
        let fx = Fixture::new(DeviceMode::Loop);
        let dm = &fx.dm;
        dm.create_backing_file("a", 8 * MIB).await.unwrap();
        dm.create_backing_file("b", 8 * MIB).await.unwrap();
        let dev_a = dm.attach("vm1", "a", "disk-a").await.unwrap();
        let dev_b = dm.attach("vm2", "b", "disk-b").await.unwrap();

        // As after a host reboot: a's device is gone and its link is dangling.
        sh("losetup", &[OsStr::new("--detach"), dev_a.as_os_str()]);
        // A crash between losetup and linking leaves an unlinked device of b.
        let file_b = dm.backing_file("b").canonicalize().unwrap();
        let out = StdCommand::new(resolve_program("losetup")).args(["--find", "--show"]).arg(&file_b).output().unwrap();
        let orphan = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(is_loop_device(&orphan));
        // And vm2 has a stale link for b pointing at a's old device path.
        std::os::unix::fs::symlink(&dev_a, dm.vm_root("vm2").join("dev/disk/by-id/disk-b2")).unwrap();

        let wanted = vec![
            ("vm1".to_owned(), "a".to_owned(), "disk-a".to_owned()),
            ("vm2".to_owned(), "b".to_owned(), "disk-b".to_owned()),
            ("vm2".to_owned(), "b".to_owned(), "disk-b2".to_owned()),
        ];
        dm.reconcile(&wanted).await.unwrap();

        let links_a = dm.attached_links("vm1").await.unwrap();
        assert_eq!(links_a.len(), 1);
        assert_eq!(dm.loop_devices_of("a").await.unwrap(), vec![links_a[0].1.clone()]);
        assert_eq!(device_size(&links_a[0].1), 8 * MIB);

        let links_b = dm.attached_links("vm2").await.unwrap();
        assert_eq!(links_b.len(), 2);
        assert_eq!(links_b[0].1, dev_b, "a healthy link is left alone");
        assert_eq!(links_b[1].1, orphan, "the unlinked device is reused");
        let mut loops_b = dm.loop_devices_of("b").await.unwrap();
        loops_b.sort();
        let mut expected = vec![dev_b.clone(), orphan.clone()];
        expected.sort();
        assert_eq!(loops_b, expected);

        // Reconciling again changes nothing.
        dm.reconcile(&wanted).await.unwrap();
        assert_eq!(dm.attached_links("vm2").await.unwrap(), links_b);

        // Deleting an attached volume unplugs it everywhere.
        dm.delete_backing_file("b").await.unwrap();
        assert!(dm.attached_links("vm2").await.unwrap().is_empty());
        dm.delete_backing_file("a").await.unwrap();
        assert!(dm.attached_links("vm1").await.unwrap().is_empty());

        let missing = vec![("vm1".to_owned(), "gone".to_owned(), "x".to_owned())];
        assert!(dm.reconcile(&missing).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loop_concurrent_attaches_get_distinct_devices() {
        if !loop_ready() {
            return;
        }
        let fx = Fixture::new(DeviceMode::Loop);
        let dm = &fx.dm;
        for v in ["v1", "v2", "v3", "v4"] {
            dm.create_backing_file(v, 4 * MIB).await.unwrap();
        }
        let (r1, r2, r3, r4, r5) = tokio::join!(
            dm.attach("vm", "v1", "l1"),
            dm.attach("vm", "v2", "l2"),
            dm.attach("vm", "v3", "l3"),
            dm.attach("vm", "v4", "l4"),
            dm.attach("vm", "v1", "l1"),
        );
        let devs: Vec<PathBuf> = [r1, r2, r3, r4].into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(r5.unwrap(), devs[0], "same link attached twice shares the device");
        let unique: HashSet<_> = devs.iter().collect();
        assert_eq!(unique.len(), 4);
        assert_eq!(dm.attached_links("vm").await.unwrap().len(), 4);
        for (i, v) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
            assert_eq!(dm.loop_devices_of(v).await.unwrap(), vec![devs[i].clone()]);
            dm.detach("vm", v, &format!("l{}", i + 1)).await.unwrap();
            assert!(dm.loop_devices_of(v).await.unwrap().is_empty());
        }
    }
}
