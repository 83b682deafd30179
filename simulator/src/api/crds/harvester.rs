//! `harvesterhci.io/v1beta1` Setting (harvester pkg/apis/harvesterhci.io),
//! NetworkFilesystem (networkfs-manager) and the remote backup and restore
//! kinds of v1.8.

use super::{boolean, conditions, enumeration, free_form, object, object_req, open, string, Fields};

pub(super) fn setting() -> (Fields, &'static str) {
    let status =
        object("The observed state of the setting.", vec![("conditions", conditions("Conditions of the setting."))]);
    (
        Fields {
            properties: vec![
                ("value", string("The value set by an administrator; the default applies when empty.")),
                ("default", string("The default value of this Harvester release.")),
                ("customized", boolean("Whether the value was changed from the default.")),
                ("source", string("Where the value comes from (e.g. an environment variable).")),
                ("status", status),
            ],
            required: vec![],
        },
        "Setting is a cluster-wide Harvester setting; its fields sit at the top level, not under spec.",
    )
}

const NFS_STATES: &[&str] = &["Enabled", "Enabling", "Disabled", "Disabling", "Unknown"];

pub(super) fn network_filesystem() -> (Fields, &'static str) {
    let spec = open(object_req(
        "Which volume to export and whether.",
        vec![
            (
                "networkFSName",
                string("Name of the Longhorn volume (and PersistentVolume) to export; also the export path."),
            ),
            ("desiredState", enumeration("Whether the export should be up.", NFS_STATES)),
            ("perferredNodes", string("Node to attach the export on (the JSON key is misspelt upstream).")),
            ("provisioner", string("Storage provisioner of the volume, e.g. Longhorn.")),
        ],
        &["networkFSName"],
    ));
    let status = open(object(
        "The observed state of the export.",
        vec![
            ("state", enumeration("Where the export is in its lifecycle.", NFS_STATES)),
            (
                "status",
                enumeration("Whether the endpoint is usable.", &["Ready", "NotReady", "Reconciling", "Unknown"]),
            ),
            ("endpoint", string("IP address of the NFS server (no scheme, no path).")),
            ("type", enumeration("Type of the export.", &["NFS", "Unknown"])),
            ("mountOpts", string("Mount options, from the PersistentVolume's nfsOptions.")),
            ("conditions", conditions("Conditions (Ready, NotReady, EndpointChanged).")),
        ],
    ));
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec!["spec"] },
        "NetworkFilesystem turns the NFS export of an rwx Longhorn volume on and off and reports its endpoint.",
    )
}

pub(super) fn volume_remote_backup() -> (Fields, &'static str) {
    let spec = open(object_req(
        "What to back up.",
        vec![
            ("type", enumeration("The storage the backup is taken from: lh for Longhorn.", &["lh"])),
            ("source", string("Name of the PersistentVolumeClaim to back up, in the same namespace.")),
        ],
        &["source"],
    ));
    let status = open(object(
        "The result of the backup.",
        vec![
            ("success", boolean("Whether the backup is complete.")),
            ("error", string("Why the backup failed, when it did.")),
            ("backupTarget", string("Where the backup is stored.")),
            ("sourceSpec", free_form("The spec of the claim that was backed up, to restore it with.")),
        ],
    ));
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec!["spec"] },
        "VolumeRemoteBackup backs a volume up to the backup target.",
    )
}

pub(super) fn volume_remote_restore() -> (Fields, &'static str) {
    let spec = open(object_req(
        "Which backup to restore.",
        vec![
            ("type", enumeration("The storage the backup was taken from: lh for Longhorn.", &["lh"])),
            ("from", string("The VolumeRemoteBackup to restore, as namespace/name.")),
        ],
        &["from"],
    ));
    let status = open(object(
        "The result of the restore.",
        vec![
            ("success", boolean("Whether the restored claim is bound.")),
            ("error", string("Why the restore failed, when it did.")),
            ("restoredVolume", string("Name of the restored PersistentVolumeClaim (the restore's own name).")),
        ],
    ));
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec!["spec"] },
        "VolumeRemoteRestore restores a remote backup into a new PersistentVolumeClaim of the same name.",
    )
}
