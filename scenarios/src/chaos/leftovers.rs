//! What a run may leave on this machine, looked for after its cleanup steps: loop
//! devices whose backing file is under the run's work directory, mounts below it,
//! and by-id links in its VMs' roots. On the embedded backend the simulator keeps
//! everything under `<work>/host` (volumes, exports, `vms/<vm>/root`) and the
//! kubelet under `<work>/kubelet`, so "under the work directory" is exactly "this
//! run's", even while other runs and tests use loop devices and mounts elsewhere.

use std::path::Path;

/// The kernel appends this to a loop device's backing file once the file is deleted.
const DELETED: &str = " (deleted)";

/// Whether `path` (as the kernel reports it) is `work` or below it.
fn is_under(path: &str, work: &Path) -> bool {
    let path = path.strip_suffix(DELETED).unwrap_or(path);
    Path::new(path).starts_with(work)
}

/// Of `(device, backing file)` pairs, the devices backed by a file of the run.
pub fn loops_under(devices: &[(String, String)], work: &Path) -> Vec<String> {
    devices
        .iter()
        .filter(|(_, file)| is_under(file, work))
        .map(|(dev, file)| format!("loop device {dev} on {file}"))
        .collect()
}

/// Of `/proc/self/mountinfo`, the mount points below the run's work directory.
pub fn mounts_under(mountinfo: &str, work: &Path) -> Vec<String> {
    crate::work_dir::mount_points(mountinfo)
        .into_iter()
        .filter(|m| is_under(m, work))
        .map(|m| format!("mount {m}"))
        .collect()
}

/// by-id links in the VM roots of the run (`<work>/host/vms/<vm>/root/dev/disk/by-id`).
pub fn links_under(work: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(vms) = std::fs::read_dir(work.join("host").join("vms")) else { return found };
    for vm in vms.flatten() {
        let by_id = vm.path().join("root/dev/disk/by-id");
        let Ok(links) = std::fs::read_dir(&by_id) else { continue };
        for link in links.flatten() {
            found.push(format!("by-id link {}", link.path().display()));
        }
    }
    found.sort();
    found
}

/// Every bound loop device of this machine with its backing file (sysfs: no
/// device is opened, so looking does not hold one that is on its way out).
pub fn loop_devices() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(file) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            out.push((format!("/dev/{name}"), file.trim_end_matches('\n').to_string()));
        }
    }
    out.sort();
    out
}

/// Everything of the run still on this machine, now.
pub fn scan(work: &Path) -> Vec<String> {
    let mut found = loops_under(&loop_devices(), work);
    found.extend(mounts_under(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(), work));
    found.extend(links_under(work));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_devices_count_only_when_backed_by_a_file_of_the_run() {
        let work = Path::new("/w/seed-3");
        let devices = vec![
            ("/dev/loop0".to_string(), "/w/seed-3/host/volumes/pvc-1.img".to_string()),
            ("/dev/loop1".to_string(), "/w/seed-3/host/volumes/pvc-2.img (deleted)".to_string()),
            ("/dev/loop2".to_string(), "/w/seed-30/host/volumes/pvc-1.img".to_string()),
            ("/dev/loop3".to_string(), "/var/lib/other.img".to_string()),
        ];
        assert_eq!(
            loops_under(&devices, work),
            [
                "loop device /dev/loop0 on /w/seed-3/host/volumes/pvc-1.img",
                "loop device /dev/loop1 on /w/seed-3/host/volumes/pvc-2.img (deleted)"
            ]
        );
    }

    #[test]
    fn mounts_count_only_below_the_work_directory() {
        let info = "\
36 25 0:32 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
99 36 7:3 / /w/seed-3/host/exports/pvc-1 rw - ext4 /dev/loop3 rw
100 36 7:4 / /w/seed-3/kubelet/guest-1/my\\040dir rw - ext4 /dev/loop4 rw
101 36 7:5 / /w/seed-30/kubelet/x rw - ext4 /dev/loop5 rw
";
        assert_eq!(
            mounts_under(info, Path::new("/w/seed-3")),
            ["mount /w/seed-3/host/exports/pvc-1", "mount /w/seed-3/kubelet/guest-1/my dir"]
        );
    }

    #[test]
    fn links_are_found_in_every_vm_root() {
        let work = tempfile::tempdir().expect("temp dir");
        let by_id = |vm: &str| work.path().join("host/vms").join(vm).join("root/dev/disk/by-id");
        std::fs::create_dir_all(by_id("guest-1")).expect("dirs");
        std::fs::create_dir_all(by_id("guest-2")).expect("dirs");
        assert!(links_under(work.path()).is_empty(), "empty by-id directories leave nothing");
        std::os::unix::fs::symlink("/dev/null", by_id("guest-2").join("virtio-pvc-1")).expect("link");
        let found = links_under(work.path());
        assert_eq!(found.len(), 1);
        assert!(found[0].ends_with("guest-2/root/dev/disk/by-id/virtio-pvc-1"), "{found:?}");
    }

    #[test]
    fn a_run_that_never_started_has_no_links() {
        assert!(links_under(Path::new("/nonexistent/chaos-work")).is_empty());
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(cmd).args(args).output().expect(cmd);
        assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    #[ignore = "needs root: makes a loop device and a tmpfs mount below a temporary directory"]
    fn scan_finds_a_loop_device_a_mount_and_a_link_of_the_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let work = dir.path().canonicalize().expect("canonical");
        let file = work.join("host/volumes/v.img");
        let mounted = work.join("kubelet/guest-1/m");
        let by_id = work.join("host/vms/guest-1/root/dev/disk/by-id");
        for d in [file.parent().expect("parent"), &mounted, &by_id] {
            std::fs::create_dir_all(d).expect("dirs");
        }
        std::fs::File::create(&file).and_then(|f| f.set_len(1 << 20)).expect("backing file");
        let dev = run("losetup", &["-f", "--show", &file.display().to_string()]);
        run("mount", &["-t", "tmpfs", "tmpfs", &mounted.display().to_string()]);
        std::os::unix::fs::symlink(&dev, by_id.join("virtio-v")).expect("link");
        let found = scan(&work);
        // Released before asserting, so a failure leaks nothing.
        run("umount", &[&mounted.display().to_string()]);
        run("losetup", &["-d", &dev]);
        std::fs::remove_file(by_id.join("virtio-v")).expect("unlink");
        assert!(found.iter().any(|f| f.starts_with(&format!("loop device {dev} on "))), "{found:?}");
        assert!(found.contains(&format!("mount {}", mounted.display())), "{found:?}");
        assert!(found.iter().any(|f| f.starts_with("by-id link ") && f.ends_with("virtio-v")), "{found:?}");
        assert_eq!(found.len(), 3, "{found:?}");
        // A detached loop device is freed when its last opener (udev, say) closes it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !scan(&work).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(scan(&work).is_empty(), "released: {:?}", scan(&work));
    }
}
