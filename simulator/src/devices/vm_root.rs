//! A VM's fake root: the identity files a node plugin reads to find out which
//! VM it runs on, and the by-id directory its disks appear in.

use std::collections::HashSet;
use std::ffi::OsStr;

use tracing::debug;

use super::error::{io_err, Result};
use super::files::{create_dir_all, write_atomic};
use super::names::{check_line_value, check_name};
use super::DeviceManager;

impl DeviceManager {
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
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::super::test_support::Fixture;
    use super::super::{DeviceError, DeviceMode};

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
}
