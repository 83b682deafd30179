//! The device manager against real loop devices and mounts. Root only, so every
//! test is `#[ignore]`d; CI runs them as root with `--include-ignored`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use syskit::{find_program, mountinfo};

use super::mounts::mount_source;
use super::test_support::{device_size, is_loop_device, require_loop_devices, sh, wait_for_loops, Fixture, MIB};
use super::{loops, release_host_resources, DeviceMode};

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn loop_attach_grow_detach_delete() {
    require_loop_devices();
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
    wait_for_loops(dm, "vol", &[]).await;
    dm.detach("vm1", "vol", "virtio-vol").await.unwrap();

    dm.delete_backing_file("vol").await.unwrap();
    dm.delete_backing_file("vol").await.unwrap();
    assert!(!dm.backing_file("vol").exists());
    assert!(dm.loop_devices_of("vol").await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn loop_detach_while_mounted_releases_on_unmount() {
    require_loop_devices();
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
    assert_eq!(loops::autoclear(&dev).await, Some(true));
    // A dying device must not be handed out again as a fresh attachment.
    let again = dm.attach("vm1", "vol", "disk").await.unwrap();
    assert_ne!(again, dev);
    dm.detach("vm1", "vol", "disk").await.unwrap();

    sh("umount", &[mnt.as_os_str()]);
    wait_for_loops(dm, "vol", &[]).await;
    dm.delete_backing_file("vol").await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn loop_export_formats_once() {
    require_loop_devices();
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
    let table = mountinfo::parse(&mountinfo::read().unwrap()).unwrap();
    assert_eq!(table.iter().filter(|e| e.info.target == dir_abs).count(), 1);

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
#[ignore = "needs root: real loop devices and mounts"]
async fn loop_reconcile_repairs_lost_devices_and_stale_links() {
    require_loop_devices();
    let fx = Fixture::new(DeviceMode::Loop);
    let dm = &fx.dm;
    dm.create_backing_file("a", 8 * MIB).await.unwrap();
    dm.create_backing_file("b", 8 * MIB).await.unwrap();
    let dev_a = dm.attach("vm1", "a", "disk-a").await.unwrap();
    let dev_b = dm.attach("vm2", "b", "disk-b").await.unwrap();

    // As after a host reboot: a's device is gone and its link is dangling.
    sh("losetup", &[OsStr::new("--detach"), dev_a.as_os_str()]);
    wait_for_loops(dm, "a", &[]).await;
    // A crash between losetup and linking leaves an unlinked device of b.
    let file_b = dm.backing_file("b").canonicalize().unwrap();
    let out = Command::new(find_program("losetup")).args(["--find", "--show"]).arg(&file_b).output().unwrap();
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
#[ignore = "needs root: real loop devices and mounts"]
async fn loop_concurrent_attaches_get_distinct_devices() {
    require_loop_devices();
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
        wait_for_loops(dm, v, &[]).await;
    }
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn loop_a_device_on_its_way_out_counts_as_released() {
    require_loop_devices();
    let fx = Fixture::new(DeviceMode::Loop);
    let dm = &fx.dm;
    dm.create_backing_file("vol", 16 * MIB).await.unwrap();
    let file = dm.backing_file("vol");
    let dev = dm.attach("vm1", "vol", "disk").await.unwrap();
    assert!(!dm.is_released(&file, &dev).await.unwrap(), "attached and live");

    // Any opener defers the kernel's clear, as a `losetup --associated` elsewhere does.
    let held = std::fs::File::open(&dev).unwrap();
    dm.detach("vm1", "vol", "disk").await.unwrap();
    assert_eq!(dm.loop_devices_of("vol").await.unwrap(), vec![dev.clone()], "still there while held");
    assert!(dm.is_released(&file, &dev).await.unwrap());
    dm.release_loop(&file, &dev).await.unwrap();
    dm.grow_backing_file("vol", 32 * MIB).await.unwrap();
    let again = dm.attach("vm1", "vol", "disk").await.unwrap();
    assert_ne!(again, dev, "a device on its way out is never handed out again");
    dm.detach("vm1", "vol", "disk").await.unwrap();

    drop(held);
    wait_for_loops(dm, "vol", &[]).await;
    assert!(dm.is_released(&file, &dev).await.unwrap(), "gone counts too");
    dm.delete_backing_file("vol").await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: real loop devices and mounts"]
async fn loop_teardown_releases_only_what_lives_under_the_directory() {
    require_loop_devices();
    let fx = Fixture::new(DeviceMode::Loop);
    let other = Fixture::new(DeviceMode::Loop);
    let dm = &fx.dm;
    dm.create_backing_file("vol", 8 * MIB).await.unwrap();
    dm.attach("vm1", "vol", "disk").await.unwrap();
    dm.create_backing_file("rwx", 32 * MIB).await.unwrap();
    let export = dm.start_export("rwx").await.unwrap().canonicalize().unwrap();
    other.dm.create_backing_file("keep", 8 * MIB).await.unwrap();
    let kept = other.dm.attach("vm1", "keep", "disk").await.unwrap();

    let failures = release_host_resources(fx.path());
    assert!(failures.is_empty(), "{failures:?}");
    assert!(mount_source(&export).await.unwrap().is_none());
    wait_for_loops(dm, "vol", &[]).await;
    wait_for_loops(dm, "rwx", &[]).await;
    assert_eq!(other.dm.loop_devices_of("keep").await.unwrap(), vec![kept], "outside the directory");
    assert!(release_host_resources(fx.path()).is_empty(), "nothing left, nothing to fail");
}
