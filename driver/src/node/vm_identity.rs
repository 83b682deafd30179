//! Which VM is this node? An exact, unique match: the firmware UUID the guest
//! sees (`/sys/class/dmi/id/product_uuid`) against the VMIs, else the full MAC
//! set. Ambiguity or no match is an error — never "the first one" (#6981).

use std::path::Path;

use crate::error::{Error, Result};
use crate::host::kubevirt::Vmi;
use crate::host::retry::{retry_transient, STARTUP_BUDGET};
use crate::host::Host;

/// MACs that identify nothing: loopback, and Calico's shared veth MAC (#6981).
const IGNORED_MACS: &[&str] = &["00:00:00:00:00:00", "ee:ee:ee:ee:ee:ee"];

pub fn read_product_uuid(root: &Path) -> Option<String> {
    let raw = std::fs::read_to_string(root.join("sys/class/dmi/id/product_uuid")).ok()?;
    let v = raw.trim().to_ascii_lowercase();
    (!v.is_empty()).then_some(v)
}

pub fn read_macs(root: &Path) -> Vec<String> {
    let mut macs = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/net")) else { return macs };
    for e in entries.flatten() {
        if e.file_name() == "lo" {
            continue;
        }
        let Ok(raw) = std::fs::read_to_string(e.path().join("address")) else { continue };
        let mac = raw.trim().to_ascii_lowercase();
        let valid = mac.len() == 17
            && mac.split(':').count() == 6
            && mac.split(':').all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
        if valid && !IGNORED_MACS.contains(&mac.as_str()) {
            macs.push(mac);
        }
    }
    macs.sort();
    macs.dedup();
    macs
}

/// Picks the VM from VMI objects (pure, for tests).
pub fn match_vm(vmis: &[Vmi], uuid: Option<&str>, macs: &[String]) -> Result<String> {
    let name = |v: &Vmi| v.name().to_string();
    if let Some(u) = uuid {
        let by_uuid: Vec<String> =
            vmis.iter().filter(|v| v.firmware_uuid().eq_ignore_ascii_case(u)).map(name).collect();
        match by_uuid.len() {
            1 => return Ok(by_uuid[0].clone()),
            0 => {}
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "firmware UUID {u} matches several VMs ({}); set --node-id",
                    by_uuid.join(", ")
                )))
            }
        }
    }
    let by_macs: Vec<String> = vmis
        .iter()
        .filter(|v| {
            let vm_macs: Vec<String> = v
                .interface_macs()
                .map(str::to_ascii_lowercase)
                .filter(|m| !IGNORED_MACS.contains(&m.as_str()))
                .collect();
            !vm_macs.is_empty() && vm_macs.iter().all(|m| macs.contains(m))
        })
        .map(name)
        .collect();
    match by_macs.len() {
        1 => Ok(by_macs[0].clone()),
        0 => Err(Error::FailedPrecondition(format!(
            "no VM matches this node (firmware UUID {}, MACs {}); set --node-id",
            uuid.unwrap_or("unknown"),
            if macs.is_empty() { "none".to_string() } else { macs.join(", ") }
        ))),
        _ => Err(Error::FailedPrecondition(format!(
            "the MACs of this node match several VMs ({}); set --node-id",
            by_macs.join(", ")
        ))),
    }
}

pub async fn discover(host: &Host, root: &Path, override_id: Option<&str>) -> Result<String> {
    if let Some(id) = override_id.filter(|s| !s.is_empty()) {
        crate::names::validate_node_id(id)?;
        return Ok(id.to_string());
    }
    let uuid = read_product_uuid(root);
    let macs = read_macs(root);
    let vmis = retry_transient("listing VMIs to identify this node", STARTUP_BUDGET, || host.list_vmis()).await?;
    let vm = match_vm(&vmis, uuid.as_deref(), &macs)?;
    tracing::info!(vm = %vm, uuid = uuid.as_deref().unwrap_or("-"), "identified this node's VM");
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vmi(name: &str, uuid: &str, macs: &[&str]) -> Vmi {
        Vmi::with_identity(name, uuid, macs)
    }

    #[test]
    fn uuid_wins_and_must_be_unique() {
        let vmis = [vmi("a", "U1", &["52:54:00:00:00:01"]), vmi("b", "u2", &["52:54:00:00:00:02"])];
        assert_eq!(match_vm(&vmis, Some("u2"), &[]).unwrap(), "b");
        let dup = [vmi("a", "u1", &[]), vmi("b", "u1", &[])];
        assert!(match_vm(&dup, Some("u1"), &[]).unwrap_err().to_string().contains("several"));
    }

    #[test]
    fn mac_fallback_needs_the_full_set_and_ignores_calico() {
        let vmis = [
            vmi("a", "x", &["52:54:00:00:00:01", "ee:ee:ee:ee:ee:ee"]),
            vmi("b", "y", &["52:54:00:00:00:01", "52:54:00:00:00:02"]),
        ];
        let local = vec!["52:54:00:00:00:01".to_string()];
        assert_eq!(match_vm(&vmis, Some("nope"), &local).unwrap(), "a");
        let both = vec!["52:54:00:00:00:01".to_string(), "52:54:00:00:00:02".to_string()];
        assert!(match_vm(&vmis, None, &both).unwrap_err().to_string().contains("several"));
        assert!(match_vm(&vmis, None, &[]).unwrap_err().to_string().contains("no VM"));
    }

    #[test]
    fn reads_sysfs_under_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sys/class/dmi/id")).unwrap();
        std::fs::write(root.path().join("sys/class/dmi/id/product_uuid"), "ABC\n").unwrap();
        for (nic, mac) in [
            ("enp1s0", "52:54:00:AA:BB:CC"),
            ("cali1", "ee:ee:ee:ee:ee:ee"),
            ("lo", "00:00:00:00:00:00"),
            ("bad", "zz"),
        ] {
            std::fs::create_dir_all(root.path().join("sys/class/net").join(nic)).unwrap();
            std::fs::write(root.path().join("sys/class/net").join(nic).join("address"), mac).unwrap();
        }
        assert_eq!(read_product_uuid(root.path()).as_deref(), Some("abc"));
        assert_eq!(read_macs(root.path()), ["52:54:00:aa:bb:cc"]);
    }
}
