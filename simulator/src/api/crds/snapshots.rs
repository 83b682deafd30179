//! `snapshot.storage.k8s.io/v1` VolumeSnapshot, VolumeSnapshotContent and
//! VolumeSnapshotClass (kubernetes-csi/external-snapshotter client/config/crd).

use serde_json::json;

use super::{boolean, date_time, enumeration, int64, int_or_string, map_of, object, object_req, string, Fields};

const DELETION_POLICIES: &[&str] = &["Delete", "Retain"];

fn error() -> serde_json::Value {
    object(
        "The last error of snapshot creation, if any.",
        vec![("message", string("The error message.")), ("time", date_time("When the error happened."))],
    )
}

pub(super) fn volume_snapshot() -> (Fields, &'static str) {
    let spec = object_req(
        "What to snapshot, or which existing snapshot content to bind.",
        vec![
            (
                "source",
                object(
                    "Exactly one of persistentVolumeClaimName and volumeSnapshotContentName. Immutable.",
                    vec![
                        ("persistentVolumeClaimName", string("Name of the claim to snapshot, in the same namespace.")),
                        ("volumeSnapshotContentName", string("Name of a pre-existing VolumeSnapshotContent to bind.")),
                    ],
                ),
            ),
            ("volumeSnapshotClassName", string("Name of the VolumeSnapshotClass; the default class when empty.")),
        ],
        &["source"],
    );
    let status = object(
        "The observed state of the snapshot.",
        vec![
            ("boundVolumeSnapshotContentName", string("Name of the bound VolumeSnapshotContent.")),
            ("creationTime", date_time("When the storage system took the snapshot.")),
            ("readyToUse", boolean("Whether the snapshot can be restored from.")),
            ("restoreSize", int_or_string("The smallest size a volume restored from the snapshot can have.")),
            ("error", error()),
            ("volumeGroupSnapshotName", string("Name of the group snapshot this snapshot belongs to.")),
        ],
    );
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec!["spec"] },
        "VolumeSnapshot is a user's request for a snapshot of a PersistentVolumeClaim.",
    )
}

pub(super) fn volume_snapshot_content() -> (Fields, &'static str) {
    let spec = object_req(
        "The snapshot in the storage system and the VolumeSnapshot it is bound to.",
        vec![
            ("deletionPolicy", enumeration("Whether the storage snapshot goes with this object.", DELETION_POLICIES)),
            ("driver", string("Name of the CSI driver that manages the snapshot.")),
            (
                "source",
                object(
                    "Exactly one of volumeHandle (take a snapshot) and snapshotHandle (an existing one).",
                    vec![
                        ("volumeHandle", string("CSI volume ID of the volume to snapshot.")),
                        ("snapshotHandle", string("CSI snapshot ID of an existing snapshot.")),
                    ],
                ),
            ),
            ("sourceVolumeMode", enumeration("Volume mode of the source volume.", &["Block", "Filesystem"])),
            ("volumeSnapshotClassName", string("Name of the VolumeSnapshotClass.")),
            (
                "volumeSnapshotRef",
                object(
                    "The VolumeSnapshot this content is bound to.",
                    vec![
                        ("apiVersion", string("API version of the referent.")),
                        ("kind", string("Kind of the referent.")),
                        ("name", string("Name of the referent.")),
                        ("namespace", string("Namespace of the referent.")),
                        ("uid", string("UID of the referent.")),
                        ("resourceVersion", string("Resource version of the referent.")),
                        ("fieldPath", string("A field of the referent.")),
                    ],
                ),
            ),
        ],
        &["deletionPolicy", "driver", "source", "volumeSnapshotRef"],
    );
    let status = object(
        "The observed state of the snapshot content.",
        vec![
            ("creationTime", int64("When the snapshot was taken, in nanoseconds since the epoch.")),
            ("readyToUse", boolean("Whether the snapshot can be restored from.")),
            ("restoreSize", int64("Size in bytes of a volume restored from the snapshot.")),
            ("snapshotHandle", string("CSI snapshot ID.")),
            ("error", error()),
            ("volumeGroupSnapshotHandle", string("CSI ID of the group snapshot.")),
        ],
    );
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec!["spec"] },
        "VolumeSnapshotContent is a snapshot taken in the storage system, bound to one VolumeSnapshot.",
    )
}

pub(super) fn volume_snapshot_class() -> (Fields, &'static str) {
    (
        Fields {
            properties: vec![
                ("driver", string("Name of the CSI driver that takes the snapshots.")),
                (
                    "deletionPolicy",
                    enumeration("What happens to storage snapshots when their content object goes.", DELETION_POLICIES),
                ),
                ("parameters", map_of("Driver-specific parameters.", json!({"type": "string"}))),
            ],
            required: vec!["deletionPolicy", "driver"],
        },
        "VolumeSnapshotClass names the CSI driver and parameters snapshots of a class are taken with.",
    )
}
