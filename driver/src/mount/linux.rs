//! [`Mounter`] for Linux nodes, built on util-linux, e2fsprogs, xfsprogs and
//! btrfs-progs plus procfs/sysfs.

use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use syskit::{mountinfo, Cmd, Output};

use super::nfs::NfsMounter;
use super::{FsStats, FsType, MountError, MountInfo, Mounter};

/// More stacked mounts than this on one target means something keeps
/// re-mounting it; give up rather than spin.
const MAX_STACKED_MOUNTS: usize = 32;

/// How long an unmount waits out a transiently busy mount (a forked child's
/// inherited descriptor): about 0.75 s in all, then busy is reported.
const BUSY_RETRY_DELAYS: [Duration; 4] =
    [Duration::from_millis(50), Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)];

#[derive(Debug, Clone)]
pub struct LinuxMounter {
    /// For commands that touch only metadata: blkid, mount, umount, blockdev.
    timeout: Duration,
    /// For commands whose run time grows with the volume: mkfs, fsck, resize.
    slow_timeout: Duration,
    nfs: NfsMounter,
}

impl Default for LinuxMounter {
    fn default() -> Self {
        LinuxMounter {
            timeout: Self::DEFAULT_TIMEOUT,
            slow_timeout: Self::DEFAULT_SLOW_TIMEOUT,
            nfs: NfsMounter::default(),
        }
    }
}

impl LinuxMounter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_SLOW_TIMEOUT: Duration = Duration::from_secs(600);

    pub fn new() -> Self {
        Self::default()
    }

    /// Deadline for quick commands (probe, mount, unmount).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// NFS mounts through `helper` (called as `HELPER <server>:<export> <target> <options>`)
    /// instead of `mount -t nfs`: where the kernel has no NFS client.
    pub fn with_nfs_helper(mut self, helper: Option<PathBuf>) -> Self {
        self.nfs = NfsMounter { helper };
        self
    }

    /// Deadline for mkfs, fsck and resize.
    pub fn with_slow_timeout(mut self, timeout: Duration) -> Self {
        self.slow_timeout = timeout;
        self
    }

    /// Whether the filesystem on block device `device` is mounted anywhere,
    /// matched by device number so /dev/disk/by-id aliases count too.
    async fn device_is_mounted(&self, device: &Path) -> Result<bool, MountError> {
        let meta = tokio::fs::metadata(device).await.map_err(|e| MountError::io("stat", device, e))?;
        if !meta.file_type().is_block_device() {
            return Ok(false);
        }
        let dev = major_minor(meta.rdev());
        Ok(self.mounts()?.iter().any(|m| m.major_minor == dev))
    }
}

fn major_minor(rdev: u64) -> String {
    format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

impl Mounter for LinuxMounter {
    async fn probe(&self, device: &Path) -> Result<Option<String>, MountError> {
        // blkid exits 2 both for "no signature" and for a path that does not
        // exist, so a typo would read as a blank disk unless we look first.
        let meta = tokio::fs::metadata(device).await.map_err(|e| MountError::io("stat", device, e))?;
        if meta.is_dir() {
            return Err(MountError::io("probe", device, io::Error::from(ErrorKind::IsADirectory)));
        }
        // -p bypasses blkid's cache, which may predate the last mkfs/wipe.
        let cmd = Cmd::new("blkid").args(["-p", "-o", "export", "--"]).arg(device);
        let out = cmd.output(self.timeout).await?;
        match classify_blkid(out.code, &out.stdout) {
            Probe::Blank => Ok(None),
            Probe::Found(found) => Ok(Some(found)),
            Probe::Failed => Err(cmd.failed(&out).into()),
        }
    }

    async fn format_if_blank(&self, device: &Path, fs: FsType, mkfs_options: &[String]) -> Result<bool, MountError> {
        match self.probe(device).await? {
            Some(found) if found == fs.as_str() => {
                tracing::debug!(device = %device.display(), %fs, "already formatted");
                Ok(false)
            }
            Some(found) => Err(MountError::DeviceHoldsOtherFs { device: device.to_owned(), found, wanted: fs }),
            None => {
                tracing::info!(device = %device.display(), %fs, "formatting blank device");
                mkfs_command(fs, device, mkfs_options).run(self.slow_timeout).await?;
                Ok(true)
            }
        }
    }

    async fn check(&self, device: &Path, fs: FsType) -> Result<(), MountError> {
        if fs == FsType::Btrfs {
            // btrfs commits copy-on-write transactions with checksummed
            // metadata, so there is nothing to preen after a crash and mount
            // itself verifies the superblock and tree roots. `btrfs check` is
            // documented as an expert tool: slow on big volumes, and a
            // read-only verdict we could not act on would only block mounts.
            return Ok(());
        }
        if self.device_is_mounted(device).await? {
            // Both checkers refuse (or, worse, misreport) a live filesystem;
            // a mounted one was checked before it was mounted.
            tracing::debug!(device = %device.display(), "mounted, skipping fsck");
            return Ok(());
        }
        let (cmd, verdict_of): (Cmd, fn(&Output) -> Fsck) = match fs {
            FsType::Ext4 => (Cmd::new("e2fsck").args(["-p", "--"]).arg(device), |out| classify_e2fsck(out.code)),
            FsType::Xfs => (Cmd::new("xfs_repair").args(["-n", "--"]).arg(device), |out| {
                classify_xfs_repair(out.code, &out.combined())
            }),
            FsType::Btrfs => return Ok(()),
        };
        let out = cmd.output(self.slow_timeout).await?;
        match verdict_of(&out) {
            Fsck::Clean => Ok(()),
            Fsck::Repaired => {
                tracing::warn!(device = %device.display(), %fs, output = %out.diagnostic(), "fsck repaired the filesystem");
                Ok(())
            }
            Fsck::DirtyLog => {
                tracing::info!(device = %device.display(), "xfs log is dirty; mount will replay it");
                Ok(())
            }
            Fsck::Corrupt => Err(MountError::Corrupt { device: device.to_owned(), fs, detail: out.diagnostic() }),
            Fsck::Failed => Err(cmd.failed(&out).into()),
        }
    }

    async fn mount(
        &self,
        source: &Path,
        target: &Path,
        fs_type: Option<&str>,
        options: &[String],
    ) -> Result<(), MountError> {
        let mut cmd = Cmd::new("mount");
        if let Some(fs_type) = fs_type.filter(|t| !t.is_empty()) {
            cmd = cmd.args(["-t", fs_type]);
        }
        if let Some(opts) = join_options(options.iter().map(String::as_str)) {
            cmd = cmd.arg("-o").arg(opts);
        }
        cmd.arg("--").arg(source).arg(target).run(self.timeout).await?;
        Ok(())
    }

    async fn bind_mount(
        &self,
        source: &Path,
        target: &Path,
        readonly: bool,
        options: &[String],
    ) -> Result<(), MountError> {
        // The kernel ignores ro/nosuid/... on the initial MS_BIND; they only
        // take effect on a follow-up MS_REMOUNT|MS_BIND. Doing that step
        // ourselves keeps the result independent of the util-linux version.
        Cmd::new("mount").args(["--bind", "--"]).arg(source).arg(target).run(self.timeout).await?;
        let Some(flags) = bind_remount_options(readonly, options) else {
            return Ok(());
        };
        let remount = Cmd::new("mount").arg("-o").arg(flags).arg("--").arg(target);
        if let Err(err) = remount.run(self.timeout).await {
            // A writable view of a volume published read-only is worse than
            // a failed publish, so take the bind back down.
            if let Err(undo) = Cmd::new("umount").arg("--").arg(target).run(self.timeout).await {
                tracing::error!(target = %target.display(), error = %undo, "could not undo bind mount after failed remount");
            }
            return Err(err.into());
        }
        Ok(())
    }

    async fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let Some(top) = self.mount_at(target)? else {
            return Err(MountError::NotMounted { path: target.to_owned() });
        };
        // The kernel's spelling of the mount point lets umount run with -c
        // (no canonicalisation), so it never stats a dead mount and hangs.
        let mount_point = top.target;
        let mut busy_waits = BUSY_RETRY_DELAYS.iter();
        for _ in 0..MAX_STACKED_MOUNTS {
            let cmd = Cmd::new("umount").args(["-c", "--"]).arg(&mount_point);
            let mut out = cmd.output(self.timeout).await?;
            // A process that forks (this one runs mkfs, mount, ... for other volumes) leaves its
            // child a copy of every open descriptor until the child's exec; a descriptor of a file
            // on this mount then keeps it busy for that moment. Only a busy state that outlasts
            // a short wait is real.
            while out.code != Some(0) && out.diagnostic().contains("busy") {
                let Some(delay) = busy_waits.next() else { break };
                tokio::time::sleep(*delay).await;
                out = cmd.output(self.timeout).await?;
            }
            if out.code != Some(0) {
                let diag = out.diagnostic();
                if diag.contains("busy") {
                    return Err(MountError::Busy { path: target.to_owned(), detail: diag });
                }
                // "not mounted" means someone else got there first; the
                // mount table below decides whether we are done.
                if !diag.contains("not mounted") {
                    return Err(cmd.failed(&out).into());
                }
            }
            if self.mount_at(&mount_point)?.is_none() {
                return Ok(());
            }
        }
        Err(MountError::Busy {
            path: target.to_owned(),
            detail: format!("still mounted after {MAX_STACKED_MOUNTS} unmounts"),
        })
    }

    fn mounts(&self) -> Result<Vec<MountInfo>, MountError> {
        let text = mountinfo::read()?;
        Ok(mountinfo::parse(&text)?.into_iter().map(|e| e.info).collect())
    }

    fn mount_at(&self, target: &Path) -> Result<Option<MountInfo>, MountError> {
        let text = mountinfo::read()?;
        let lexical = lexical_absolute(target);
        if let Some(found) = mountinfo::find_at(&text, &lexical)? {
            return Ok(Some(found));
        }
        // Kubelet's root may sit behind a symlink while the kernel records
        // the resolved path. Only the parent is resolved: stat-ing the mount
        // point itself could fail or hang when the mount is stale.
        match resolved_parent(&lexical) {
            Some(resolved) if resolved != lexical => Ok(mountinfo::find_at(&text, &resolved)?),
            _ => Ok(None),
        }
    }

    async fn resize(&self, device: &Path, mount_point: &Path, fs: FsType) -> Result<(), MountError> {
        if fs == FsType::Ext4 && !self.device_is_mounted(device).await? {
            // Offline growth: resize2fs insists on a forced check first, and needs no
            // CAP_SYS_RESOURCE (that is only for the online ioctl).
            let check = Cmd::new("e2fsck").args(["-f", "-p", "--"]).arg(device);
            let out = check.output(self.slow_timeout).await?;
            match classify_e2fsck(out.code) {
                Fsck::Clean | Fsck::Repaired | Fsck::DirtyLog => {}
                Fsck::Corrupt => {
                    return Err(MountError::Corrupt { device: device.to_owned(), fs, detail: out.diagnostic() })
                }
                Fsck::Failed => return Err(check.failed(&out).into()),
            }
        }
        let cmd = match fs {
            // resize2fs finds the mount itself and grows online.
            FsType::Ext4 => Cmd::new("resize2fs").arg("--").arg(device),
            FsType::Xfs => Cmd::new("xfs_growfs").args(["-d", "--"]).arg(mount_point),
            // Single-device volumes: devid 1 is the only device.
            FsType::Btrfs => Cmd::new("btrfs").args(["filesystem", "resize", "--", "max"]).arg(mount_point),
        };
        let out = cmd.output(self.slow_timeout).await?;
        if out.code == Some(0) {
            return Ok(());
        }
        // EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE; resize2fs words the EPERM like this.
        if fs == FsType::Ext4 && out.combined().contains("Permission denied to resize filesystem") {
            return Err(MountError::MissingCapability {
                cmd: cmd.display(),
                what: "growing a mounted ext4 filesystem",
                capability: "CAP_SYS_RESOURCE",
                detail: out.diagnostic(),
            });
        }
        Err(cmd.failed(&out).into())
    }

    async fn filesystem_size(&self, device: &Path, fs: FsType) -> Result<u64, MountError> {
        // Each tool reads the superblock without changing anything, mounted or not.
        let cmd = match fs {
            FsType::Ext4 => Cmd::new("dumpe2fs").args(["-h", "--"]).arg(device),
            // xfs_info asks the kernel when the device is mounted (the on-disk superblock lags
            // behind an online grow) and reads the superblock with xfs_db when it is not.
            FsType::Xfs => Cmd::new("xfs_info").arg(device),
            FsType::Btrfs => Cmd::new("btrfs").args(["inspect-internal", "dump-super", "--"]).arg(device),
        };
        let out = cmd.run(self.timeout).await?;
        superblock_size(fs, &out.stdout).ok_or_else(|| MountError::Malformed {
            what: cmd.display(),
            detail: "no filesystem size in the superblock dump".into(),
        })
    }

    fn stats(&self, path: &Path) -> Result<FsStats, MountError> {
        let s = nix::sys::statvfs::statvfs(path).map_err(|e| MountError::io("statvfs", path, e.into()))?;
        Ok(fs_stats(&Statvfs {
            bsize: widen(s.block_size()),
            frsize: widen(s.fragment_size()),
            blocks: widen(s.blocks()),
            bfree: widen(s.blocks_free()),
            bavail: widen(s.blocks_available()),
            files: widen(s.files()),
            ffree: widen(s.files_free()),
        }))
    }

    async fn device_size(&self, device: &Path) -> Result<u64, MountError> {
        let meta = tokio::fs::metadata(device).await.map_err(|e| MountError::io("stat", device, e))?;
        if !meta.file_type().is_block_device() {
            return Err(MountError::io("size", device, io::Error::new(ErrorKind::InvalidInput, "not a block device")));
        }
        // sysfs answers from the kernel's record without opening the device,
        // so a wedged device cannot stall us.
        let sysfs = PathBuf::from(format!("/sys/dev/block/{}/size", major_minor(meta.rdev())));
        match tokio::fs::read_to_string(&sysfs).await {
            Ok(text) => sectors_to_bytes(&text).ok_or_else(|| MountError::Malformed {
                what: sysfs.display().to_string(),
                detail: format!("expected a sector count, got {:?}", text.trim()),
            }),
            Err(e) => {
                // Some node plugin deployments do not mount /sys.
                tracing::debug!(path = %sysfs.display(), error = %e, "sysfs unavailable, asking blockdev");
                // blockdev has its own argument parser that rejects "--".
                let cmd = Cmd::new("blockdev").arg("--getsize64").arg(device);
                let out = cmd.run(self.timeout).await?;
                out.stdout.trim().parse::<u64>().map_err(|_| MountError::Malformed {
                    what: cmd.display(),
                    detail: format!("expected a byte count, got {:?}", out.stdout.trim()),
                })
            }
        }
    }

    fn is_stale(&self, target: &Path) -> bool {
        match std::fs::metadata(target) {
            Ok(_) => false,
            Err(e) => e.raw_os_error().is_some_and(is_stale_errno),
        }
    }

    fn is_block_device(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
    }

    fn is_same_device_node(&self, a: &Path, b: &Path) -> bool {
        super::targets::same_device_node(a, b)
    }

    async fn mount_nfs(&self, server: &str, export: &str, target: &Path, options: &str) -> Result<(), MountError> {
        self.nfs.mount(server, export, target, options).await
    }
}

/// The filesystem's size from a superblock dump: ext4 `dumpe2fs -h` (block
/// count × block size), `xfs_info` (data blocks × bsize), btrfs `dump-super`
/// (total_bytes).
fn superblock_size(fs: FsType, dump: &str) -> Option<u64> {
    let field = |names: &[&str], sep: char| -> Option<u64> {
        dump.lines().find_map(|l| {
            let (k, v) = l.split_once(sep)?;
            names.contains(&k.trim()).then(|| v.trim().parse().ok()).flatten()
        })
    };
    match fs {
        FsType::Ext4 => field(&["Block count"], ':')?.checked_mul(field(&["Block size"], ':')?),
        FsType::Xfs => {
            // data     =                       bsize=4096   blocks=81920, imaxpct=25
            let data = dump.lines().find(|l| l.trim_start().starts_with("data "))?;
            let value = |key: &str| -> Option<u64> {
                data.split(|c: char| c.is_whitespace() || c == ',')
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|v| v.parse().ok())
            };
            value("blocks=")?.checked_mul(value("bsize=")?)
        }
        FsType::Btrfs => dump.lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some("total_bytes")).then(|| parts.next()?.parse().ok()).flatten()
        }),
    }
}

fn mkfs_command(fs: FsType, device: &Path, user_options: &[String]) -> Cmd {
    // Defaults go first so the caller's options, parsed later, win. None of
    // them force: the device was just probed blank, and without a force flag
    // mkfs.xfs and mkfs.btrfs repeat that check themselves.
    //
    // Discard is skipped because a blank device has nothing to discard and
    // discarding a large thin volume can outlast our timeout.
    let (program, defaults): (&'static str, &[&str]) = match fs {
        // -m 0: the 5% root reserve protects a system disk; on a volume it
        // only hides capacity the user asked and pays for.
        FsType::Ext4 => ("mkfs.ext4", &["-m", "0", "-E", "nodiscard"]),
        FsType::Xfs => ("mkfs.xfs", &["-K"]),
        FsType::Btrfs => ("mkfs.btrfs", &["-K"]),
    };
    Cmd::new(program).args(defaults).args(user_options).arg("--").arg(device)
}

#[derive(Debug, PartialEq, Eq)]
enum Probe {
    Blank,
    Found(String),
    Failed,
}

/// Interprets `blkid -p -o export`: exit 0 with KEY=value lines, 2 when no
/// signature was found, 8 when several conflicting signatures were found.
fn classify_blkid(code: Option<i32>, stdout: &str) -> Probe {
    match code {
        Some(0) => {
            let value = |key: &str| {
                stdout.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=').filter(|v| !v.is_empty()))
            };
            if let Some(fs) = value("TYPE") {
                Probe::Found(fs.to_owned())
            } else if let Some(pt) = value("PTTYPE") {
                tracing::debug!(pttype = pt, "partition table found");
                Probe::Found("partition-table".to_owned())
            } else {
                Probe::Found("unknown".to_owned())
            }
        }
        Some(2) => Probe::Blank,
        Some(8) => Probe::Found("unknown".to_owned()),
        _ => Probe::Failed,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Fsck {
    Clean,
    Repaired,
    /// xfs only: the log holds unreplayed changes.
    DirtyLog,
    Corrupt,
    Failed,
}

/// e2fsck's exit status is a bit mask: 1 = errors fixed, 2 = fixed but a
/// reboot is advised (meaningful only for the root fs, so ignored),
/// 4 = errors left uncorrected, 8+ = operational/usage failure.
fn classify_e2fsck(code: Option<i32>) -> Fsck {
    match code {
        Some(0) => Fsck::Clean,
        Some(c) if c & 4 != 0 => Fsck::Corrupt,
        // 8 and above say e2fsck could not do its job (device unreadable,
        // in use, ...), which says nothing about the data: report it as a
        // failed command so nobody starts repairing a healthy filesystem.
        Some(c) if c & !3 == 0 => Fsck::Repaired,
        _ => Fsck::Failed,
    }
}

/// `xfs_repair -n` exits 1 on corruption, but also when it could not even
/// start (e.g. device in use), and it reports a dirty log as a warning
/// followed by inconsistencies that the log replay at mount would resolve.
fn classify_xfs_repair(code: Option<i32>, output: &str) -> Fsck {
    if output.contains("valuable metadata changes in a log") {
        return Fsck::DirtyLog;
    }
    match code {
        Some(0) => Fsck::Clean,
        // Only a run that reached the checking phases has a verdict.
        Some(1) if output.contains("Phase 1") => Fsck::Corrupt,
        _ => Fsck::Failed,
    }
}

/// The `-o` value for the remount that applies flags to a bind mount, or
/// `None` when the plain bind is already what was asked for.
fn bind_remount_options(readonly: bool, options: &[String]) -> Option<String> {
    let extra: Vec<&str> = options
        .iter()
        .map(String::as_str)
        .filter(|o| !matches!(*o, "" | "bind" | "rbind" | "remount"))
        // A read-only publish must stay read-only whatever the mount flags say.
        .filter(|o| !(readonly && *o == "rw"))
        .collect();
    if !readonly && extra.is_empty() {
        return None;
    }
    let ro = readonly.then_some("ro");
    join_options(["bind", "remount"].into_iter().chain(ro).chain(extra))
}

fn join_options<'a>(options: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let joined = options.into_iter().filter(|o| !o.is_empty()).collect::<Vec<_>>().join(",");
    (!joined.is_empty()).then_some(joined)
}

/// Absolute, without `.` components or trailing slashes — the shape the
/// kernel uses in mountinfo. Symlinks and `..` are left for the fallback.
fn lexical_absolute(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_owned())
    };
    absolute.components().collect()
}

fn resolved_parent(path: &Path) -> Option<PathBuf> {
    let name: OsString = path.file_name()?.to_owned();
    let parent = std::fs::canonicalize(path.parent()?).ok()?;
    Some(parent.join(name))
}

/// The errors stat returns for a mount whose backend vanished: a dead FUSE
/// daemon (ENOTCONN), a lost device (EIO), an NFS handle gone stale (ESTALE).
fn is_stale_errno(code: i32) -> bool {
    [Errno::ENOTCONN, Errno::EIO, Errno::ESTALE].into_iter().any(|e| e as i32 == code)
}

/// sysfs block sizes are always in 512-byte sectors, whatever the device's
/// logical block size.
fn sectors_to_bytes(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok()?.checked_mul(512)
}

/// libc's statvfs field types differ between targets (u32 or u64).
fn widen(v: impl Into<u64>) -> u64 {
    v.into()
}

struct Statvfs {
    bsize: u64,
    frsize: u64,
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
}

fn fs_stats(s: &Statvfs) -> FsStats {
    // f_frsize is the unit of the block counts; some old filesystems leave it 0.
    let unit = if s.frsize == 0 { s.bsize } else { s.frsize };
    FsStats {
        total_bytes: s.blocks.saturating_mul(unit),
        available_bytes: s.bavail.saturating_mul(unit),
        used_bytes: s.blocks.saturating_sub(s.bfree).saturating_mul(unit),
        total_inodes: s.files,
        free_inodes: s.ffree,
        // btrfs allocates inodes dynamically and may report 0 totals.
        used_inodes: s.files.saturating_sub(s.ffree),
        block_size: unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn blkid_classification() {
        let ext4 = "DEVNAME=/dev/loop1\nUUID=abc\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n";
        assert_eq!(classify_blkid(Some(0), ext4), Probe::Found("ext4".into()));
        assert_eq!(classify_blkid(Some(0), "DEVNAME=/dev/loop1\nPTTYPE=dos\n"), Probe::Found("partition-table".into()));
        assert_eq!(classify_blkid(Some(0), "PTUUID=1\nPTTYPE=gpt\n"), Probe::Found("partition-table".into()));
        // PTTYPE must not be mistaken for TYPE.
        assert_eq!(classify_blkid(Some(0), "PTTYPE=gpt\nTYPE=\n"), Probe::Found("partition-table".into()));
        assert_eq!(classify_blkid(Some(0), "DEVNAME=/dev/x\nUSAGE=other\n"), Probe::Found("unknown".into()));
        assert_eq!(classify_blkid(Some(2), ""), Probe::Blank);
        assert_eq!(classify_blkid(Some(8), ""), Probe::Found("unknown".into()));
        assert_eq!(classify_blkid(Some(4), ""), Probe::Failed);
        assert_eq!(classify_blkid(None, ""), Probe::Failed);
    }

    #[test]
    fn e2fsck_exit_codes() {
        assert_eq!(classify_e2fsck(Some(0)), Fsck::Clean);
        assert_eq!(classify_e2fsck(Some(1)), Fsck::Repaired);
        assert_eq!(classify_e2fsck(Some(2)), Fsck::Repaired);
        assert_eq!(classify_e2fsck(Some(3)), Fsck::Repaired);
        assert_eq!(classify_e2fsck(Some(4)), Fsck::Corrupt);
        assert_eq!(classify_e2fsck(Some(12)), Fsck::Corrupt);
        assert_eq!(classify_e2fsck(Some(8)), Fsck::Failed);
        assert_eq!(classify_e2fsck(Some(32)), Fsck::Failed);
        assert_eq!(classify_e2fsck(None), Fsck::Failed);
    }

    #[test]
    fn xfs_repair_verdicts() {
        let phases = "Phase 1 - find and verify superblock...\nPhase 2 - using internal log\n";
        assert_eq!(classify_xfs_repair(Some(0), phases), Fsck::Clean);
        assert_eq!(classify_xfs_repair(Some(1), &format!("{phases}disconnected inode 131")), Fsck::Corrupt);
        let dirty = "ALERT: The filesystem has valuable metadata changes in a log which is being\nignored";
        assert_eq!(classify_xfs_repair(Some(1), &format!("{phases}{dirty}")), Fsck::DirtyLog);
        let mounted = "xfs_repair: /dev/loop1 contains a mounted and writable filesystem\nfatal error";
        assert_eq!(classify_xfs_repair(Some(1), mounted), Fsck::Failed);
        assert_eq!(classify_xfs_repair(None, phases), Fsck::Failed);
    }

    #[test]
    fn mkfs_flags() {
        let dev = Path::new("/dev/vdb");
        assert_eq!(mkfs_command(FsType::Ext4, dev, &[]).display(), "mkfs.ext4 -m 0 -E nodiscard -- /dev/vdb");
        assert_eq!(
            mkfs_command(FsType::Xfs, dev, &strings(&["-L", "data"])).display(),
            "mkfs.xfs -K -L data -- /dev/vdb"
        );
        assert_eq!(mkfs_command(FsType::Btrfs, dev, &[]).display(), "mkfs.btrfs -K -- /dev/vdb");
    }

    #[test]
    fn bind_remount_flags() {
        assert_eq!(bind_remount_options(false, &[]), None);
        assert_eq!(bind_remount_options(false, &strings(&["", "bind"])), None);
        assert_eq!(bind_remount_options(true, &[]).as_deref(), Some("bind,remount,ro"));
        assert_eq!(bind_remount_options(true, &strings(&["rw", "nosuid"])).as_deref(), Some("bind,remount,ro,nosuid"));
        assert_eq!(bind_remount_options(false, &strings(&["noexec"])).as_deref(), Some("bind,remount,noexec"));
    }

    #[test]
    fn option_joining() {
        assert_eq!(join_options(["a", "", "b"]).as_deref(), Some("a,b"));
        assert_eq!(join_options([""]), None);
        assert_eq!(join_options([]), None);
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(lexical_absolute(Path::new("/a/./b/")), Path::new("/a/b"));
        assert_eq!(lexical_absolute(Path::new("/")), Path::new("/"));
        assert!(lexical_absolute(Path::new("rel")).is_absolute());
    }

    #[test]
    fn resolved_parent_follows_symlinks_but_not_the_last_component() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let canonical_real = std::fs::canonicalize(&real).expect("canonical");
        assert_eq!(resolved_parent(&link.join("missing")), Some(canonical_real.join("missing")));
        assert_eq!(resolved_parent(Path::new("/")), None);
    }

    #[test]
    fn stale_errnos() {
        for e in [Errno::ENOTCONN, Errno::EIO, Errno::ESTALE] {
            assert!(is_stale_errno(e as i32));
        }
        assert!(!is_stale_errno(Errno::ENOENT as i32));
        assert!(!is_stale_errno(Errno::EACCES as i32));
    }

    #[test]
    fn healthy_and_missing_paths_are_not_stale() {
        let m = LinuxMounter::new();
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(!m.is_stale(tmp.path()));
        assert!(!m.is_stale(&tmp.path().join("missing")));
    }

    #[test]
    fn superblock_dumps() {
        let ext4 = "Filesystem volume name:   <none>\nBlock count:              65536\nReserved block count:     3276\nBlock size:               4096\n";
        assert_eq!(superblock_size(FsType::Ext4, ext4), Some(65536 * 4096));
        let xfs = "meta-data=/dev/loop3             isize=512    agcount=4, agsize=20480 blks\n         =                       sectsz=512   attr=2, projid32bit=1\ndata     =                       bsize=4096   blocks=81920, imaxpct=25\n         =                       sunit=0      swidth=0 blks\nnaming   =version 2              bsize=4096   ascii-ci=0, ftype=1\nlog      =internal log           bsize=4096   blocks=16384, version=2\n";
        assert_eq!(superblock_size(FsType::Xfs, xfs), Some(81920 * 4096));
        let btrfs = "superblock: bytenr=65536, device=/dev/loop3\ntotal_bytes\t\t268435456\nbytes_used\t\t147456\ndev_item.total_bytes\t268435456\n";
        assert_eq!(superblock_size(FsType::Btrfs, btrfs), Some(268435456));
        assert_eq!(superblock_size(FsType::Ext4, "Block count: 12\n"), None, "no block size");
        assert_eq!(superblock_size(FsType::Xfs, "data     =   bsize=4096   blocks=lots, imaxpct=25"), None);
    }

    #[test]
    fn sysfs_sizes() {
        assert_eq!(sectors_to_bytes("655360\n"), Some(335_544_320));
        assert_eq!(sectors_to_bytes("x"), None);
        assert_eq!(sectors_to_bytes(&u64::MAX.to_string()), None);
    }

    #[test]
    fn stats_arithmetic() {
        let s = Statvfs { bsize: 4096, frsize: 1024, blocks: 100, bfree: 40, bavail: 30, files: 50, ffree: 45 };
        assert_eq!(
            fs_stats(&s),
            FsStats {
                total_bytes: 102_400,
                available_bytes: 30_720,
                used_bytes: 61_440,
                total_inodes: 50,
                free_inodes: 45,
                used_inodes: 5,
                block_size: 1024,
            }
        );
        let odd = Statvfs { bsize: 512, frsize: 0, blocks: 1, bfree: 2, bavail: 0, files: 0, ffree: 0 };
        let stats = fs_stats(&odd);
        assert_eq!((stats.block_size, stats.used_bytes, stats.used_inodes), (512, 0, 0));
    }

    #[test]
    fn stats_of_a_real_filesystem_are_sane() {
        let stats = LinuxMounter::new().stats(Path::new("/")).expect("statvfs /");
        assert!(stats.total_bytes > 0);
        assert!(stats.available_bytes <= stats.total_bytes);
        assert!(stats.used_bytes <= stats.total_bytes);
        assert!(stats.block_size.is_power_of_two());
    }

    #[test]
    fn mount_at_root_and_not_at_a_plain_dir() {
        let m = LinuxMounter::new();
        assert!(m.mount_at(Path::new("/")).expect("mountinfo").is_some());
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(m.mount_at(tmp.path()).expect("mountinfo").is_none());
        assert!(!m.mounts().expect("mountinfo").is_empty());
    }

    #[tokio::test]
    async fn probe_of_a_missing_device_is_an_error_not_blank() {
        let err = LinuxMounter::new().probe(Path::new("/dev/does-not-exist-xyz")).await.expect_err("missing");
        assert!(matches!(err, MountError::Io { ref source, .. } if source.kind() == ErrorKind::NotFound), "{err:?}");
    }

    #[tokio::test]
    async fn device_size_rejects_regular_files() {
        let tmp = tempfile::NamedTempFile::new().expect("tempfile");
        let err = LinuxMounter::new().device_size(tmp.path()).await.expect_err("not a device");
        assert!(matches!(err, MountError::Io { op: "size", .. }), "{err:?}");
    }
}
