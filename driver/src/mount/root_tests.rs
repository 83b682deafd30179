//! End-to-end tests of [`LinuxMounter`] against real filesystems on loop
//! devices. They need root and /dev/loop-control, so they are `#[ignore]`d
//! with that reason and CI runs them as root (`ci/test.sh`); run without
//! what they need they fail, never pass. Every loop device and mount is
//! released by a drop guard so a failing assertion leaves nothing behind.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use tempfile::TempDir;

use super::*;

const MIB: u64 = 1024 * 1024;

const NEEDS_ROOT: &str =
    "needs root and /dev/loop-control: real loop devices and mounts (ci/test.sh runs these as root)";

/// These tests are ignored by default; run explicitly, they fail loudly without root.
fn require_root() {
    assert!(nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists(), "{NEEDS_ROOT}");
}

fn run<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new(program).args(&args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse backing file attached to a loop device; detached on drop.
struct Loop {
    dev: PathBuf,
    backing: PathBuf,
    _dir: TempDir,
}

impl Loop {
    fn new(size_mib: u64) -> Self {
        Self::with_contents(size_mib, |_| {})
    }

    /// `prepare` gets the backing file before it is attached, to plant
    /// signatures without going through the block layer.
    fn with_contents(size_mib: u64, prepare: impl FnOnce(&mut fs::File)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("disk.img");
        let mut file = fs::File::create(&backing).expect("create backing file");
        file.set_len(size_mib * MIB).expect("size backing file");
        prepare(&mut file);
        drop(file);
        let dev = PathBuf::from(run("losetup", [OsStr::new("-f"), OsStr::new("--show"), backing.as_os_str()]).trim());
        Loop { dev, backing, _dir: dir }
    }

    fn grow(&self, size_mib: u64) {
        fs::OpenOptions::new().write(true).open(&self.backing).expect("open").set_len(size_mib * MIB).expect("grow");
        run("losetup", [OsStr::new("-c"), self.dev.as_os_str()]);
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mount point directory (with a space in its name, to exercise mountinfo
/// escapes) that is force-unmounted on drop.
struct Target {
    path: PathBuf,
    _dir: TempDir,
}

impl Target {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mount point");
        ensure_dir(&path).expect("mkdir");
        Target { path, _dir: dir }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        for _ in 0..MAX_GUARD_UNMOUNTS {
            match LinuxMounter::new().mount_at(&self.path) {
                Ok(Some(_)) => {
                    let _ = Command::new("umount").arg("-l").arg(&self.path).status();
                }
                _ => break,
            }
        }
    }
}

const MAX_GUARD_UNMOUNTS: usize = 8;

fn erofs(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(Errno::EROFS as i32)
}

fn loop_major_minor(dev: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(dev).expect("stat loop device").rdev();
    format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

async fn lifecycle(fs_type: FsType, size_mib: u64) {
    let m = LinuxMounter::new();
    let lo = Loop::new(size_mib);
    let target = Target::new();

    assert_eq!(m.probe(&lo.dev).await.expect("probe"), None, "a new loop device is blank");
    assert!(m.format_if_blank(&lo.dev, fs_type, &[]).await.expect("format"));
    assert_eq!(m.probe(&lo.dev).await.expect("probe"), Some(fs_type.to_string()));
    m.check(&lo.dev, fs_type).await.expect("a fresh filesystem checks clean");

    m.mount(&lo.dev, &target.path, Some(fs_type.as_str()), &["noatime".to_owned()]).await.expect("mount");
    let info = m.mount_at(&target.path).expect("mountinfo").expect("mounted");
    assert_eq!(info.fs_type, fs_type.as_str());
    assert_eq!(info.target, target.path);
    assert_eq!(info.source, lo.dev.to_string_lossy());
    assert!(info.options.iter().any(|o| o == "noatime"), "{:?}", info.options);
    assert!(!info.is_read_only());
    if fs_type != FsType::Btrfs {
        // btrfs reports an anonymous device number instead of the disk's.
        assert_eq!(info.major_minor, loop_major_minor(&lo.dev));
    }
    m.check(&lo.dev, fs_type).await.expect("a mounted device is not checked");

    fs::write(target.path.join("hello.txt"), b"persist me").expect("write to the new filesystem");
    let stats = m.stats(&target.path).expect("stats");
    assert!(stats.total_bytes > 0 && stats.total_bytes <= size_mib * MIB, "{stats:?}");
    assert!(stats.used_bytes > 0 && stats.used_bytes < stats.total_bytes, "{stats:?}");
    assert!(stats.available_bytes > 0 && stats.available_bytes + stats.used_bytes <= stats.total_bytes, "{stats:?}");
    assert!(stats.block_size >= 512 && stats.block_size.is_power_of_two(), "{stats:?}");
    if fs_type != FsType::Btrfs {
        // btrfs allocates inodes on demand and reports no inode totals.
        assert!(stats.total_inodes > 0 && stats.used_inodes > 0, "{stats:?}");
        assert_eq!(stats.used_inodes + stats.free_inodes, stats.total_inodes);
    }

    m.unmount(&target.path).await.expect("unmount");
    assert!(m.mount_at(&target.path).expect("mountinfo").is_none());
    let again = m.unmount(&target.path).await.expect_err("second unmount");
    assert!(matches!(again, MountError::NotMounted { .. }), "{again:?}");

    assert!(!m.format_if_blank(&lo.dev, fs_type, &[]).await.expect("format again"), "must be a no-op");
    m.check(&lo.dev, fs_type).await.expect("check after clean unmount");
    m.mount(&lo.dev, &target.path, None, &[]).await.expect("remount with auto-detected type");
    assert_eq!(fs::read(target.path.join("hello.txt")).expect("file survives"), b"persist me");
    m.unmount(&target.path).await.expect("unmount");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn ext4_lifecycle() {
    require_root();
    lifecycle(FsType::Ext4, 256).await;
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn xfs_lifecycle() {
    require_root();
    lifecycle(FsType::Xfs, 320).await;
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn btrfs_lifecycle() {
    require_root();
    lifecycle(FsType::Btrfs, 256).await;
}

async fn online_grow(fs_type: FsType, size_mib: u64) {
    let m = LinuxMounter::new();
    let lo = Loop::new(size_mib);
    let target = Target::new();
    m.format_if_blank(&lo.dev, fs_type, &[]).await.expect("format");
    m.mount(&lo.dev, &target.path, Some(fs_type.as_str()), &[]).await.expect("mount");
    assert_eq!(m.device_size(&lo.dev).await.expect("size"), size_mib * MIB);
    let before = m.stats(&target.path).expect("stats").total_bytes;

    lo.grow(size_mib * 2);
    assert_eq!(m.device_size(&lo.dev).await.expect("size"), size_mib * 2 * MIB);
    m.resize(&lo.dev, &target.path, fs_type).await.expect("resize");
    let after = m.stats(&target.path).expect("stats").total_bytes;
    // Metadata overhead differs per filesystem; most of the new space must show up.
    assert!(after > before + size_mib * MIB / 2, "{fs_type}: {before} -> {after}");
    m.unmount(&target.path).await.expect("unmount");
}

/// The kernel refuses EXT4_IOC_RESIZE_FS without CAP_SYS_RESOURCE, which
/// some sandboxes drop even for root (a privileged node plugin has it).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = fs::read_to_string("/proc/self/status").expect("procfs");
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff line");
    let mask = u64::from_str_radix(eff.trim(), 16).expect("hex capability mask");
    mask & (1 << CAP_SYS_RESOURCE) != 0
}

// Growing a mounted ext4 needs CAP_SYS_RESOURCE, which some sandboxes drop even for
// root. Each of these two runs only where its premise holds; ci/test.sh picks the one
// that matches the machine (see `has_cap_sys_resource`) and says which it ran.
#[tokio::test]
#[ignore = "needs root with CAP_SYS_RESOURCE: online ext4 growth (ci/test.sh runs it where the capability is present)"]
async fn ext4_online_grow() {
    require_root();
    assert!(
        has_cap_sys_resource(),
        "this test needs CAP_SYS_RESOURCE; without it run ext4_online_grow_refusal_names_the_capability"
    );
    online_grow(FsType::Ext4, 256).await;
}

#[tokio::test]
#[ignore = "needs root without CAP_SYS_RESOURCE: the refusal of online ext4 growth (ci/test.sh runs it where the capability is missing)"]
async fn ext4_online_grow_refusal_names_the_capability() {
    require_root();
    assert!(!has_cap_sys_resource(), "this machine can grow ext4 online: run ext4_online_grow instead");
    let m = LinuxMounter::new();
    let lo = Loop::new(256);
    let target = Target::new();
    m.format_if_blank(&lo.dev, FsType::Ext4, &[]).await.expect("format");
    m.mount(&lo.dev, &target.path, Some("ext4"), &[]).await.expect("mount");
    lo.grow(512);
    let err = m.resize(&lo.dev, &target.path, FsType::Ext4).await.expect_err("kernel refuses");
    assert!(
        matches!(err, MountError::MissingCapability { ref cmd, capability: "CAP_SYS_RESOURCE", .. } if cmd.starts_with("resize2fs")),
        "{err:?}"
    );
    assert!(err.to_string().contains("CAP_SYS_RESOURCE"), "{err}");
    m.unmount(&target.path).await.expect("unmount");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn xfs_online_grow() {
    require_root();
    online_grow(FsType::Xfs, 320).await;
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn btrfs_online_grow() {
    require_root();
    online_grow(FsType::Btrfs, 256).await;
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn ext4_device_is_never_reformatted_as_xfs() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(320);
    let target = Target::new();
    m.format_if_blank(&lo.dev, FsType::Ext4, &[]).await.expect("format ext4");
    m.mount(&lo.dev, &target.path, None, &[]).await.expect("mount");
    fs::write(target.path.join("data"), b"precious").expect("write");
    m.unmount(&target.path).await.expect("unmount");

    let err = m.format_if_blank(&lo.dev, FsType::Xfs, &[]).await.expect_err("must refuse");
    match err {
        MountError::DeviceHoldsOtherFs { device, found, wanted } => {
            assert_eq!((device, found.as_str(), wanted), (lo.dev.clone(), "ext4", FsType::Xfs));
        }
        other => panic!("expected DeviceHoldsOtherFs, got {other:?}"),
    }
    assert_eq!(m.probe(&lo.dev).await.expect("probe"), Some("ext4".to_owned()));
    m.mount(&lo.dev, &target.path, Some("ext4"), &[]).await.expect("mount");
    assert_eq!(fs::read(target.path.join("data")).expect("data untouched"), b"precious");
    m.unmount(&target.path).await.expect("unmount");
}

fn first_sector(path: &Path) -> Vec<u8> {
    let mut buf = vec![0; 512];
    fs::File::open(path).expect("open").read_exact(&mut buf).expect("read");
    buf
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn partition_table_is_not_formatted() {
    require_root();
    // A minimal MBR: one Linux partition from sector 2048, plus the boot signature.
    let lo = Loop::with_contents(64, |f| {
        let mut entry = vec![0u8, 0, 0, 0, 0x83, 0, 0, 0];
        entry.extend_from_slice(&2048u32.to_le_bytes());
        entry.extend_from_slice(&20480u32.to_le_bytes());
        f.seek(SeekFrom::Start(446)).expect("seek");
        f.write_all(&entry).expect("write partition entry");
        f.seek(SeekFrom::Start(510)).expect("seek");
        f.write_all(&[0x55, 0xaa]).expect("write signature");
    });
    let m = LinuxMounter::new();
    let mbr = first_sector(&lo.backing);
    assert_eq!(m.probe(&lo.dev).await.expect("probe"), Some("partition-table".to_owned()));
    for fs_type in FsType::ALL {
        let err = m.format_if_blank(&lo.dev, fs_type, &[]).await.expect_err("must refuse");
        assert!(matches!(err, MountError::DeviceHoldsOtherFs { ref found, .. } if found == "partition-table"));
    }
    assert_eq!(first_sector(&lo.backing), mbr, "partition table untouched");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn foreign_signature_is_not_formatted() {
    require_root();
    let lo = Loop::new(64);
    run("mkswap", [lo.dev.as_os_str()]);
    let m = LinuxMounter::new();
    assert_eq!(m.probe(&lo.dev).await.expect("probe"), Some("swap".to_owned()));
    let err = m.format_if_blank(&lo.dev, FsType::Btrfs, &[]).await.expect_err("must refuse");
    assert!(matches!(err, MountError::DeviceHoldsOtherFs { ref found, .. } if found == "swap"), "{err:?}");
    assert_eq!(m.probe(&lo.dev).await.expect("probe"), Some("swap".to_owned()), "signature untouched");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn readonly_bind_mount_is_read_only() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(128);
    let staging = Target::new();
    let ro_publish = Target::new();
    let rw_publish = Target::new();
    m.format_if_blank(&lo.dev, FsType::Ext4, &[]).await.expect("format");
    m.mount(&lo.dev, &staging.path, Some("ext4"), &[]).await.expect("mount staging");

    m.bind_mount(&staging.path, &ro_publish.path, true, &["nosuid".to_owned()]).await.expect("ro bind");
    let info = m.mount_at(&ro_publish.path).expect("mountinfo").expect("bound");
    assert!(info.is_read_only(), "{:?}", info.options);
    assert!(info.options.iter().any(|o| o == "nosuid"), "{:?}", info.options);
    let err = fs::write(ro_publish.path.join("nope"), b"x").expect_err("write must fail");
    assert!(erofs(&err), "expected EROFS, got {err:?}");

    // The read-only flag belongs to the bind, not the filesystem.
    fs::write(staging.path.join("via-staging"), b"x").expect("staging stays writable");
    assert!(ro_publish.path.join("via-staging").exists());

    m.bind_mount(&staging.path, &rw_publish.path, false, &[]).await.expect("rw bind");
    fs::write(rw_publish.path.join("via-publish"), b"y").expect("rw bind is writable");
    assert!(!m.mount_at(&rw_publish.path).expect("mountinfo").expect("bound").is_read_only());

    for t in [&ro_publish, &rw_publish, &staging] {
        m.unmount(&t.path).await.expect("unmount");
    }
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn block_device_bind_to_file() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(16);
    let dir = tempfile::tempdir().expect("tempdir");
    let publish = dir.path().join("pods/uid/volumeDevices/pv");
    ensure_file(&publish).expect("create target file");
    ensure_file(&publish).expect("idempotent");
    m.bind_mount(&lo.dev, &publish, true, &[]).await.expect("bind device");
    let _guard = Target { path: publish.clone(), _dir: tempfile::tempdir().expect("tempdir") };
    let info = m.mount_at(&publish).expect("mountinfo").expect("bound");
    assert!(info.is_read_only());
    assert_eq!(m.device_size(&publish).await.expect("size through the bind"), 16 * MIB);
    ensure_file(&publish).expect("existing bound target is fine");
    assert!(matches!(remove_target(&publish), Err(MountError::Busy { .. })));
    m.unmount(&publish).await.expect("unmount");
    remove_target(&publish).expect("remove");
    assert!(!publish.exists());
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn stacked_mounts_are_all_removed() {
    require_root();
    let m = LinuxMounter::new();
    let target = Target::new();
    let tmpfs = Path::new("tmpfs");
    for size in ["size=1m", "size=2m", "size=3m"] {
        m.mount(tmpfs, &target.path, Some("tmpfs"), &[size.to_owned(), "mode=0755".to_owned()]).await.expect("mount");
    }
    let top = m.mount_at(&target.path).expect("mountinfo").expect("mounted");
    assert!(top.options.iter().any(|o| o == "size=3072k"), "topmost is the last one: {:?}", top.options);
    assert_eq!(m.mounts().expect("mounts").iter().filter(|i| i.target == target.path).count(), 3);

    // Spellings kubelet might use for the same place.
    let with_slash = PathBuf::from(format!("{}/", target.path.display()));
    assert!(m.mount_at(&with_slash).expect("mountinfo").is_some());
    let link = target._dir.path().join("link");
    std::os::unix::fs::symlink(target._dir.path(), &link).expect("symlink");
    assert!(m.mount_at(&link.join("mount point")).expect("mountinfo").is_some());

    assert!(matches!(remove_target(&target.path), Err(MountError::Busy { .. })));
    m.unmount(&link.join("mount point")).await.expect("unmount through the symlink");
    assert!(m.mount_at(&target.path).expect("mountinfo").is_none());
    assert!(matches!(m.unmount(&target.path).await, Err(MountError::NotMounted { .. })));
    remove_target(&target.path).expect("rmdir");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn busy_mount_is_reported_busy() {
    require_root();
    let m = LinuxMounter::new();
    let target = Target::new();
    m.mount(Path::new("tmpfs"), &target.path, Some("tmpfs"), &[]).await.expect("mount");
    let open = fs::File::create(target.path.join("held-open")).expect("create");
    let err = m.unmount(&target.path).await.expect_err("an open file keeps it busy");
    assert!(matches!(err, MountError::Busy { .. }), "{err:?}");
    assert!(m.mount_at(&target.path).expect("mountinfo").is_some(), "still mounted");
    drop(open);
    // Other tests in this process fork mkfs/losetup children; until their exec, a child holds
    // a copy of every descriptor, so the last reference can outlive `drop` by a moment.
    let mut tries = 0;
    loop {
        match m.unmount(&target.path).await {
            Ok(()) => break,
            Err(MountError::Busy { .. }) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unmount once released: {e:?}"),
        }
    }
    assert!(m.mount_at(&target.path).expect("mountinfo").is_none());
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn damaged_ext4_is_corrupt() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(64);
    m.format_if_blank(&lo.dev, FsType::Ext4, &[]).await.expect("format");
    // Wipe the root inode and mark the fs not clean so preen looks at it.
    for request in ["clri <2>", "ssv state 0"] {
        run("debugfs", [OsStr::new("-w"), OsStr::new("-R"), OsStr::new(request), lo.dev.as_os_str()]);
    }
    let err = m.check(&lo.dev, FsType::Ext4).await.expect_err("must be corrupt");
    match err {
        MountError::Corrupt { fs, ref detail, .. } => {
            assert_eq!(fs, FsType::Ext4);
            assert!(detail.contains("UNEXPECTED INCONSISTENCY"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn damaged_xfs_is_corrupt() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(320);
    m.format_if_blank(&lo.dev, FsType::Xfs, &[]).await.expect("format");
    let rootino = run(
        "xfs_db",
        [OsStr::new("-c"), OsStr::new("sb 0"), OsStr::new("-c"), OsStr::new("print rootino"), lo.dev.as_os_str()],
    );
    let rootino = rootino.trim().trim_start_matches("rootino = ");
    let inode = format!("inode {rootino}");
    run(
        "xfs_db",
        [
            OsStr::new("-x"),
            OsStr::new("-c"),
            OsStr::new(&inode),
            OsStr::new("-c"),
            OsStr::new("write core.mode 0"),
            lo.dev.as_os_str(),
        ],
    );
    let err = m.check(&lo.dev, FsType::Xfs).await.expect_err("must be corrupt");
    assert!(matches!(err, MountError::Corrupt { fs: FsType::Xfs, .. }), "{err:?}");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn xfs_dirty_log_is_left_to_mount() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(320);
    let target = Target::new();
    m.format_if_blank(&lo.dev, FsType::Xfs, &[]).await.expect("format");
    m.mount(&lo.dev, &target.path, Some("xfs"), &[]).await.expect("mount");
    let mut file = fs::File::create(target.path.join("a")).expect("create");
    file.write_all(b"a").expect("write");
    // fsync forces the transaction into the on-disk log; shutting down then
    // keeps it from being written back in place, as a node crash would.
    file.sync_all().expect("fsync");
    drop(file);
    run("xfs_io", [OsStr::new("-x"), OsStr::new("-c"), OsStr::new("shutdown"), target.path.as_os_str()]);
    m.unmount(&target.path).await.expect("unmount");
    let repair = Command::new("xfs_repair").arg("-n").arg(&lo.dev).env("LC_ALL", "C").output().expect("xfs_repair");
    let said = String::from_utf8_lossy(&repair.stderr);
    assert!(said.contains("metadata changes in a log"), "the log should be dirty: {said}");

    m.check(&lo.dev, FsType::Xfs).await.expect("a dirty log is not corruption");
    m.mount(&lo.dev, &target.path, Some("xfs"), &[]).await.expect("mount replays the log");
    m.unmount(&target.path).await.expect("unmount");
    m.check(&lo.dev, FsType::Xfs).await.expect("clean after replay");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn check_of_btrfs_is_skipped() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(256);
    m.format_if_blank(&lo.dev, FsType::Btrfs, &[]).await.expect("format");
    m.check(&lo.dev, FsType::Btrfs).await.expect("btrfs is not checked");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn mkfs_options_are_passed_through() {
    require_root();
    let m = LinuxMounter::new();
    let lo = Loop::new(64);
    let opts = ["-L".to_owned(), "vol label".to_owned()];
    assert!(m.format_if_blank(&lo.dev, FsType::Ext4, &opts).await.expect("format"));
    let probed = run(
        "blkid",
        [
            OsStr::new("-p"),
            OsStr::new("-s"),
            OsStr::new("LABEL"),
            OsStr::new("-o"),
            OsStr::new("value"),
            lo.dev.as_os_str(),
        ],
    );
    assert_eq!(probed.trim(), "vol label");
    // No 5% root reserve: everything not used by metadata is available.
    let dumped = run("dumpe2fs", [OsStr::new("-h"), lo.dev.as_os_str()]);
    assert!(dumped.lines().any(|l| l.starts_with("Reserved block count:") && l.ends_with(" 0")), "{dumped}");
}

/// A filesystem made on a smaller device, then the device grown: what a volume
/// restored or cloned into a larger claim looks like on the node.
async fn grown_under(fs_type: FsType, size_mib: u64) -> (LinuxMounter, Loop, u64) {
    let m = LinuxMounter::new();
    let lo = Loop::new(size_mib);
    m.format_if_blank(&lo.dev, fs_type, &[]).await.expect("format");
    let before = m.filesystem_size(&lo.dev, fs_type).await.expect("superblock");
    assert!(before <= size_mib * MIB && before > size_mib * MIB * 9 / 10, "{fs_type}: {before}");
    lo.grow(size_mib * 2);
    assert_eq!(m.filesystem_size(&lo.dev, fs_type).await.expect("superblock"), before, "the fs did not grow by itself");
    (m, lo, before)
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn ext4_grows_unmounted_without_cap_sys_resource() {
    require_root();
    let (m, lo, before) = grown_under(FsType::Ext4, 256).await;
    m.resize(&lo.dev, Path::new("/nonexistent"), FsType::Ext4).await.expect("offline resize");
    let after = m.filesystem_size(&lo.dev, FsType::Ext4).await.expect("superblock");
    assert!(after > before + 200 * MIB, "{before} -> {after}");
    m.check(&lo.dev, FsType::Ext4).await.expect("still clean");
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn xfs_and_btrfs_sizes_come_from_the_superblock_mounted_or_not() {
    require_root();
    for (fs_type, size_mib) in [(FsType::Xfs, 320), (FsType::Btrfs, 256)] {
        let (m, lo, before) = grown_under(fs_type, size_mib).await;
        let target = Target::new();
        m.mount(&lo.dev, &target.path, Some(fs_type.as_str()), &[]).await.expect("mount");
        assert_eq!(m.filesystem_size(&lo.dev, fs_type).await.expect("superblock, mounted"), before);
        m.resize(&lo.dev, &target.path, fs_type).await.expect("online resize");
        let after = m.filesystem_size(&lo.dev, fs_type).await.expect("superblock");
        assert!(after > before + size_mib * MIB * 3 / 4, "{fs_type}: {before} -> {after}");
        m.unmount(&target.path).await.expect("unmount");
    }
}
