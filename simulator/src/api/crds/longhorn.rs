//! `longhorn.io/v1beta2` Volume, VolumeAttachment and ShareManager
//! (longhorn k8s/pkg/apis/longhorn/v1beta2).

use super::{array, boolean, conditions, enumeration, int64, integer, map_of, object, open, string, strings, Fields};

/// Longhorn encodes int64 sizes as JSON strings.
fn size_string(description: &str) -> serde_json::Value {
    serde_json::json!({"type": "string", "format": "int64", "description": description})
}

pub(super) fn volume() -> (Fields, &'static str) {
    let spec = open(object(
        "The desired state of the volume.",
        vec![
            ("size", size_string("Size in bytes, as a string.")),
            ("numberOfReplicas", integer("Number of replicas.")),
            ("staleReplicaTimeout", integer("Minutes before a failed replica is removed.")),
            (
                "dataLocality",
                enumeration(
                    "Whether a replica is kept on the attached node.",
                    &["disabled", "best-effort", "strict-local"],
                ),
            ),
            (
                "accessMode",
                enumeration("rwo, rwop (one pod) or rwx (NFS through a share manager).", &["rwo", "rwop", "rwx"]),
            ),
            ("migratable", boolean("Whether the volume may attach to two nodes during a live migration (rwx only).")),
            ("encrypted", boolean("Whether the volume is encrypted.")),
            ("frontend", enumeration("How the engine exposes the volume.", &["blockdev", "iscsi", "nvmf", "ublk", ""])),
            ("dataEngine", enumeration("Data engine of the volume.", &["v1", "v2"])),
            ("nodeID", string("The node to attach to; set by Longhorn's attachment controller.")),
            ("migrationNodeID", string("The node a migration attaches to.")),
            ("disableFrontend", boolean("Attach without a frontend (maintenance).")),
            ("fromBackup", string("URL of the backup to restore the volume from.")),
            ("dataSource", string("A volume or snapshot to clone from.")),
            ("backingImage", string("Name of the backing image.")),
            ("image", string("Engine image of the volume.")),
            ("diskSelector", strings("Disk tags replicas must land on.")),
            ("nodeSelector", strings("Node tags replicas must land on.")),
            (
                "replicaAutoBalance",
                enumeration(
                    "Replica balancing across nodes and zones.",
                    &["ignored", "disabled", "least-effort", "best-effort"],
                ),
            ),
            ("revisionCounterDisabled", boolean("Whether the revision counter is off.")),
            (
                "unmapMarkSnapChainRemoved",
                enumeration("Whether trim marks removed snapshots.", &["ignored", "disabled", "enabled"]),
            ),
            (
                "snapshotDataIntegrity",
                enumeration("Snapshot checksum mode.", &["ignored", "disabled", "enabled", "fast-check"]),
            ),
            ("snapshotMaxCount", integer("Most snapshots kept.")),
            ("snapshotMaxSize", size_string("Largest total snapshot size in bytes, as a string.")),
            ("backupCompressionMethod", enumeration("Compression of backups.", &["none", "lz4", "gzip"])),
            ("lastAttachedBy", string("Who attached the volume last.")),
            ("Standby", boolean("Whether the volume is a disaster-recovery standby (the JSON key is capitalised).")),
        ],
    ));
    let status = open(object(
        "The observed state of the volume.",
        vec![
            (
                "state",
                enumeration(
                    "Attachment state.",
                    &["creating", "attached", "detached", "attaching", "detaching", "deleting"],
                ),
            ),
            ("robustness", enumeration("Replica health.", &["healthy", "degraded", "faulted", "unknown"])),
            ("currentNodeID", string("The node the volume is attached to.")),
            ("currentImage", string("Engine image in use.")),
            ("ownerID", string("The node whose manager owns the volume.")),
            ("actualSize", int64("Bytes used on disk.")),
            ("frontendDisabled", boolean("Whether the volume is attached without a frontend.")),
            ("expansionRequired", boolean("Whether a size change is pending.")),
            ("isStandby", boolean("Whether the volume is a standby.")),
            ("restoreRequired", boolean("Whether a restore is pending.")),
            ("lastBackup", string("Name of the last backup.")),
            ("lastBackupAt", string("When the last backup was taken.")),
            ("lastDegradedAt", string("When the volume last became degraded.")),
            (
                "shareState",
                enumeration(
                    "State of the share manager (rwx volumes).",
                    &["unknown", "starting", "running", "stopping", "stopped", "error", ""],
                ),
            ),
            ("shareEndpoint", string("nfs:// URL of the export while the share manager runs.")),
            ("conditions", conditions("Conditions (Scheduled, Restore, TooManySnapshots...).")),
            (
                "kubernetesStatus",
                object(
                    "The Kubernetes objects using the volume.",
                    vec![
                        ("pvName", string("Name of the PersistentVolume.")),
                        ("pvStatus", string("Phase of the PersistentVolume.")),
                        ("namespace", string("Namespace of the claim.")),
                        ("pvcName", string("Name of the claim.")),
                        ("lastPVCRefAt", string("When a claim last referenced the volume.")),
                        ("lastPodRefAt", string("When a pod last used the volume.")),
                        (
                            "workloadsStatus",
                            array(
                                "Pods using the volume.",
                                object(
                                    "One pod.",
                                    vec![
                                        ("podName", string("Name of the pod.")),
                                        ("podStatus", string("Phase of the pod.")),
                                        ("workloadName", string("Name of the owning workload.")),
                                        ("workloadType", string("Kind of the owning workload.")),
                                    ],
                                ),
                            ),
                        ),
                    ],
                ),
            ),
        ],
    ));
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec![] },
        "Volume is a Longhorn volume: replicated block storage that backs a PersistentVolume.",
    )
}

pub(super) fn volume_attachment() -> (Fields, &'static str) {
    let ticket = object(
        "A request to attach the volume.",
        vec![
            ("id", string("ID of the ticket.")),
            ("type", string("Who asks: csi-attacher, share-manager-controller, longhorn-api...")),
            ("nodeID", string("The node to attach to.")),
            (
                "parameters",
                map_of("Attach parameters (disableFrontend, lastAttachedBy).", serde_json::json!({"type": "string"})),
            ),
            ("generation", int64("Generation of the ticket.")),
        ],
    );
    let ticket_status = object(
        "Whether a ticket is satisfied.",
        vec![
            ("id", string("ID of the ticket.")),
            ("satisfied", boolean("Whether the volume is attached as the ticket asks.")),
            ("conditions", conditions("Conditions of the ticket.")),
            ("generation", int64("Generation of the ticket the status reflects.")),
        ],
    );
    let spec = open(object(
        "Attachment requests for one volume.",
        vec![("volume", string("Name of the volume.")), ("attachmentTickets", map_of("Tickets by ID.", ticket))],
    ));
    let status = open(object(
        "Which tickets are satisfied.",
        vec![("attachmentTicketStatuses", map_of("Ticket statuses by ID.", ticket_status))],
    ));
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec![] },
        "VolumeAttachment collects who wants a Longhorn volume attached and where; it has the volume's name.",
    )
}

pub(super) fn share_manager() -> (Fields, &'static str) {
    let spec = open(object("The share manager of one rwx volume.", vec![("image", string("Share manager image."))]));
    let status = open(object(
        "The observed state of the NFS export.",
        vec![
            (
                "state",
                enumeration(
                    "State of the share manager.",
                    &["unknown", "starting", "running", "stopping", "stopped", "error"],
                ),
            ),
            ("ownerID", string("The node whose manager owns the share manager.")),
            ("currentImage", string("Image in use.")),
            ("endpoint", string("nfs://<address>/<volume> while running, else empty.")),
        ],
    ));
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec![] },
        "ShareManager exports an rwx Longhorn volume over NFS; it has the volume's name.",
    )
}
