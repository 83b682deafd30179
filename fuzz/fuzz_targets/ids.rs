//! The identifiers the CO hands the driver and the names it derives from them
//! (driver/src/names.rs), plus the `grpc-timeout` header. Input: one line per
//! string; every parser runs on every line.
//!
//! Checked beyond "no panic": whatever is accepted round-trips, and every
//! derived name is itself valid where it ends up (a host object name, a label
//! value, a by-id file name).

#![no_main]

use harvester_csi_driver::deadline::parse_grpc_timeout;
use harvester_csi_driver::names::{
    by_id_name, disk_serial, label_value, snapshot_object_for, validate_node_id, validate_volume_id,
    volume_id_for, SnapshotId,
};
use libfuzzer_sys::fuzz_target;

/// What Kubernetes accepts as a label value.
fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && (v.is_empty()
            || (v.as_bytes()[0].is_ascii_alphanumeric() && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.split('\n') {
        if validate_volume_id(line).is_ok() {
            assert_eq!(volume_id_for(line).expect("a valid id is a valid name"), line);
            let serial = disk_serial(line);
            let by_id = by_id_name(line, Some(&serial), false);
            assert!(!by_id.contains('/') && !by_id.starts_with('.'), "by-id name {by_id:?} of {line:?}");
            let by_id = by_id_name(line, None, true);
            assert!(!by_id.contains('/') && !by_id.starts_with('.'), "by-id name {by_id:?} of {line:?}");
        }
        if let Ok(id) = volume_id_for(line) {
            assert!(validate_volume_id(&id).is_ok(), "name {line:?} became the invalid volume id {id:?}");
            assert_eq!(volume_id_for(line).ok(), Some(id), "volume ids must be stable");
        }
        if let Ok(name) = snapshot_object_for(line) {
            assert!(SnapshotId::parse(&name).is_ok(), "name {line:?} became the invalid snapshot name {name:?}");
        }
        if let Ok(id) = SnapshotId::parse(line) {
            assert_eq!(id.render(), line, "snapshot ids must round-trip");
            assert_eq!(SnapshotId::parse(&id.render()).ok(), Some(id));
        }
        let _ = validate_node_id(line);
        let value = label_value(line);
        assert!(is_label_value(&value), "{line:?} became the label value {value:?}");
        let _ = parse_grpc_timeout(line);
    }
});
