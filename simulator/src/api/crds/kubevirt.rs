//! `kubevirt.io` VirtualMachine and VirtualMachineInstance (kubevirt.io/api
//! core/v1): the domain's disks and the volumes behind them, hotplug state in
//! the VM and VMI status. Devices and settings outside storage stay free-form.

use serde_json::{json, Value};

use super::{
    array, boolean, conditions, date_time, enumeration, free_form, int64, int_or_string, integer, map_of, object,
    object_req, open, string, strings, Fields,
};

const BUSES: &[&str] = &["virtio", "sata", "scsi", "usb"];

fn disk_target(what: &str, extra: Vec<(&'static str, Value)>) -> Value {
    let mut props = vec![
        ("bus", enumeration("Bus type of the disk: virtio, sata, scsi or usb.", BUSES)),
        ("readonly", boolean("Whether the guest sees the device read-only.")),
    ];
    props.extend(extra);
    object(what, props)
}

fn disk() -> Value {
    open(object_req(
        "A disk, lun or cdrom device the guest sees, backed by the volume of the same name.",
        vec![
            ("name", string("Name of the device; it must match the name of a volume.")),
            (
                "disk",
                disk_target(
                    "Attach the volume as a disk.",
                    vec![("pciAddress", string("PCI address of the disk in the guest, e.g. 0000:81:01.10."))],
                ),
            ),
            (
                "lun",
                disk_target(
                    "Attach the volume as a LUN.",
                    vec![("reservation", boolean("Whether SCSI persistent reservations pass through."))],
                ),
            ),
            (
                "cdrom",
                disk_target(
                    "Attach the volume as a cdrom.",
                    vec![("tray", enumeration("Whether the tray is open or closed.", &["open", "closed"]))],
                ),
            ),
            ("bootOrder", integer("Boot order of the device; lower boots first, must be greater than 0.")),
            ("serial", string("Serial number the guest sees for the disk.")),
            ("dedicatedIOThread", boolean("Give the disk its own IO thread (virtio only).")),
            ("cache", enumeration("Cache mode of the disk.", &["none", "writethrough", "writeback"])),
            ("io", enumeration("IO mode of the disk.", &["native", "threads", "default"])),
            ("tag", string("A tag the guest can find the device by in its metadata.")),
            ("shareable", boolean("Whether several VMs may attach the disk at once.")),
            (
                "errorPolicy",
                enumeration("What the hypervisor does on an IO error.", &["stop", "ignore", "report", "enospace"]),
            ),
            ("blockSize", free_form("Logical and physical block size of the disk (custom sizes or matchVolume).")),
        ],
        &["name"],
    ))
}

fn claim_source(what: &str) -> Value {
    object_req(
        what,
        vec![
            ("claimName", string("Name of a PersistentVolumeClaim in the VM's namespace.")),
            ("readOnly", boolean("Whether the claim is used read-only.")),
            (
                "hotpluggable",
                boolean("Whether the volume was hot-plugged into the running VM (set by the hotplug API)."),
            ),
        ],
        &["claimName"],
    )
}

fn cloud_init(what: &str) -> Value {
    let secret_ref =
        || object("A reference to a Secret in the VM's namespace.", vec![("name", string("Name of the Secret."))]);
    object(
        what,
        vec![
            ("userData", string("Cloud-init user data, inline.")),
            ("userDataBase64", string("Cloud-init user data, base64 encoded.")),
            ("userDataSecretRef", secret_ref()),
            ("networkData", string("Cloud-init network data, inline.")),
            ("networkDataBase64", string("Cloud-init network data, base64 encoded.")),
            ("networkDataSecretRef", secret_ref()),
            ("secretRef", secret_ref()),
        ],
    )
}

fn volume() -> Value {
    open(object_req(
        "A volume: the storage behind the disk of the same name. Exactly one source is set.",
        vec![
            ("name", string("Name of the volume; a disk of the same name attaches it.")),
            ("persistentVolumeClaim", claim_source("A PersistentVolumeClaim in the VM's namespace.")),
            (
                "dataVolume",
                object_req(
                    "A CDI DataVolume in the VM's namespace.",
                    vec![
                        ("name", string("Name of the DataVolume.")),
                        ("hotpluggable", boolean("Whether the volume was hot-plugged into the running VM.")),
                    ],
                    &["name"],
                ),
            ),
            (
                "containerDisk",
                object_req(
                    "An ephemeral disk from a container image.",
                    vec![
                        ("image", string("The container image holding the disk.")),
                        (
                            "imagePullPolicy",
                            enumeration("When to pull the image.", &["Always", "Never", "IfNotPresent"]),
                        ),
                        ("imagePullSecret", string("Name of the Secret to pull the image with.")),
                        ("path", string("Path of the disk file inside the image.")),
                    ],
                    &["image"],
                ),
            ),
            ("cloudInitNoCloud", cloud_init("Cloud-init data served as a NoCloud datasource.")),
            ("cloudInitConfigDrive", cloud_init("Cloud-init data served as a ConfigDrive datasource.")),
            (
                "emptyDisk",
                object_req(
                    "A temporary disk that lives as long as the VMI.",
                    vec![("capacity", int_or_string("Size of the disk."))],
                    &["capacity"],
                ),
            ),
            (
                "ephemeral",
                object(
                    "A copy-on-write layer over a read-only claim, discarded with the VMI.",
                    vec![("persistentVolumeClaim", claim_source("The read-only claim under the layer."))],
                ),
            ),
            (
                "hostDisk",
                object_req(
                    "A disk image file on the host.",
                    vec![
                        ("path", string("Path of the image file on the host.")),
                        (
                            "type",
                            enumeration("Whether the file must exist or may be created.", &["Disk", "DiskOrCreate"]),
                        ),
                        ("capacity", int_or_string("Size of the image when it is created.")),
                        ("shared", boolean("Whether the disk is shared between VMs.")),
                    ],
                    &["path", "type"],
                ),
            ),
            (
                "configMap",
                object(
                    "A ConfigMap presented as a disk.",
                    vec![
                        ("name", string("Name of the ConfigMap.")),
                        ("optional", boolean("Whether the ConfigMap may be absent.")),
                        ("volumeLabel", string("Filesystem label of the disk.")),
                    ],
                ),
            ),
            (
                "secret",
                object(
                    "A Secret presented as a disk.",
                    vec![
                        ("secretName", string("Name of the Secret.")),
                        ("optional", boolean("Whether the Secret may be absent.")),
                        ("volumeLabel", string("Filesystem label of the disk.")),
                    ],
                ),
            ),
            (
                "serviceAccount",
                object(
                    "A ServiceAccount token presented as a disk.",
                    vec![("serviceAccountName", string("Name of the ServiceAccount."))],
                ),
            ),
            ("downwardAPI", free_form("Downward API fields presented as a disk.")),
            ("downwardMetrics", free_form("Host metrics presented to the guest as a disk.")),
            ("memoryDump", claim_source("A claim the VM's memory is dumped into.")),
            ("sysprep", free_form("A Sysprep answer file for Windows guests, from a ConfigMap or Secret.")),
        ],
        &["name"],
    ))
}

fn resource_list(what: &str) -> Value {
    map_of(what, int_or_string("A quantity."))
}

fn vmi_spec(what: &str) -> Value {
    open(object_req(
        what,
        vec![
            (
                "domain",
                open(object_req(
                    "The virtual hardware of the guest.",
                    vec![
                        (
                            "devices",
                            open(object(
                                "Devices of the guest.",
                                vec![
                                    ("disks", array("Disks, LUNs and cdroms; each names a volume.", disk())),
                                    (
                                        "interfaces",
                                        array("Network interfaces of the guest.", free_form("A network interface.")),
                                    ),
                                    (
                                        "autoattachGraphicsDevice",
                                        boolean("Whether a graphics device is attached by default."),
                                    ),
                                    (
                                        "autoattachSerialConsole",
                                        boolean("Whether a serial console is attached by default."),
                                    ),
                                ],
                            )),
                        ),
                        (
                            "resources",
                            object(
                                "Compute resources of the virt-launcher pod.",
                                vec![
                                    ("requests", resource_list("Requested resources (cpu, memory).")),
                                    ("limits", resource_list("Resource limits (cpu, memory).")),
                                ],
                            ),
                        ),
                        (
                            "cpu",
                            open(object(
                                "CPU topology and model of the guest.",
                                vec![
                                    ("cores", integer("Cores per socket.")),
                                    ("sockets", integer("Sockets.")),
                                    ("threads", integer("Threads per core.")),
                                    ("model", string("CPU model, or host-model / host-passthrough.")),
                                ],
                            )),
                        ),
                        (
                            "memory",
                            open(object(
                                "Memory of the guest.",
                                vec![("guest", int_or_string("Memory the guest sees."))],
                            )),
                        ),
                        (
                            "firmware",
                            open(object(
                                "Firmware of the guest.",
                                vec![
                                    ("uuid", string("The SMBIOS system UUID the guest reads (product_uuid).")),
                                    ("serial", string("The SMBIOS system serial number.")),
                                    ("bootloader", free_form("BIOS or EFI boot settings.")),
                                ],
                            )),
                        ),
                        (
                            "machine",
                            object(
                                "Machine type of the guest.",
                                vec![("type", string("QEMU machine type, e.g. q35."))],
                            ),
                        ),
                        ("features", free_form("Hypervisor features exposed to the guest (acpi, smm, hyperv...).")),
                    ],
                    &["devices"],
                )),
            ),
            ("volumes", array("Volumes that disks of the domain attach.", volume())),
            ("networks", array("Networks the interfaces connect to.", free_form("A pod or Multus network."))),
            ("nodeSelector", map_of("Labels a node must have for the VMI to run there.", json!({"type": "string"}))),
            ("affinity", free_form("Scheduling affinity of the virt-launcher pod.")),
            ("tolerations", array("Taints the VMI tolerates.", free_form("A toleration."))),
            (
                "evictionStrategy",
                enumeration(
                    "What happens on node drain.",
                    &["None", "LiveMigrate", "LiveMigrateIfPossible", "External"],
                ),
            ),
            ("terminationGracePeriodSeconds", int64("Seconds the guest gets to shut down.")),
            ("hostname", string("Hostname of the guest.")),
            ("subdomain", string("Subdomain of the guest's DNS name.")),
            (
                "accessCredentials",
                array("SSH keys and passwords injected into the guest.", free_form("An access credential.")),
            ),
            ("readinessProbe", free_form("Probe that decides when the VMI is ready.")),
            ("livenessProbe", free_form("Probe that decides when the VMI is restarted.")),
        ],
        &["domain"],
    ))
}

fn volume_phase() -> Value {
    enumeration(
        "Phase of a hotplugged volume.",
        &[
            "Pending",
            "Bound",
            "AttachedToNode",
            "MountedToPod",
            "Ready",
            "Detaching",
            "UnMountedFromPod",
            "MemoryDumpVolumeCompleted",
            "MemoryDumpVolumeInProgress",
            "MemoryDumpVolumeFailed",
        ],
    )
}

fn add_volume_options() -> Value {
    object_req(
        "A volume to hot-plug (the addvolume request body).",
        vec![
            ("name", string("Name of the volume and of its disk.")),
            ("disk", disk()),
            (
                "volumeSource",
                object(
                    "Where the volume comes from: a claim or a DataVolume.",
                    vec![
                        ("persistentVolumeClaim", claim_source("A PersistentVolumeClaim in the VM's namespace.")),
                        (
                            "dataVolume",
                            object_req(
                                "A CDI DataVolume in the VM's namespace.",
                                vec![
                                    ("name", string("Name of the DataVolume.")),
                                    ("hotpluggable", boolean("Always true for hot-plugged volumes.")),
                                ],
                                &["name"],
                            ),
                        ),
                    ],
                ),
            ),
            ("dryRun", strings("All: validate only.")),
        ],
        &["name", "disk", "volumeSource"],
    )
}

pub(super) fn virtual_machine() -> (Fields, &'static str) {
    let spec = open(object_req(
        "The desired state of the VM: whether it runs and the template of its instances.",
        vec![
            ("running", boolean("Deprecated in favour of runStrategy: whether the VM should run.")),
            (
                "runStrategy",
                enumeration(
                    "When the VM runs.",
                    &["Always", "RerunOnFailure", "Manual", "Halted", "Once", "WaitAsReceiver"],
                ),
            ),
            (
                "template",
                object_req(
                    "The template of the VirtualMachineInstances this VM starts.",
                    vec![
                        ("metadata", free_form("Labels and annotations of the instances.")),
                        ("spec", vmi_spec("The specification of the instances.")),
                    ],
                    &[],
                ),
            ),
            ("dataVolumeTemplates", array("DataVolumes created with the VM.", free_form("A DataVolume template."))),
            ("instancetype", free_form("A reference to an instancetype that supplies the VM's resources.")),
            ("preference", free_form("A reference to a preference that supplies defaults.")),
        ],
        &["template"],
    ));
    let status = open(object(
        "The observed state of the VM.",
        vec![
            ("created", boolean("Whether an instance exists.")),
            ("ready", boolean("Whether the instance is running and ready.")),
            (
                "printableStatus",
                enumeration(
                    "The state kubectl and the UI print.",
                    &[
                        "Stopped",
                        "Provisioning",
                        "Starting",
                        "Running",
                        "Paused",
                        "Stopping",
                        "Terminating",
                        "CrashLoopBackOff",
                        "Migrating",
                        "Unknown",
                        "ErrorUnschedulable",
                        "ErrImagePull",
                        "ImagePullBackOff",
                        "ErrorPvcNotFound",
                        "DataVolumeError",
                        "WaitingForVolumeBinding",
                        "WaitingForReceiver",
                    ],
                ),
            ),
            ("runStrategy", string("The run strategy in effect.")),
            ("conditions", conditions("Conditions of the VM.")),
            (
                "volumeRequests",
                array(
                    "Hotplug requests not yet reflected in the template (legacy hotplug).",
                    object(
                        "One add or remove request.",
                        vec![
                            ("addVolumeOptions", add_volume_options()),
                            (
                                "removeVolumeOptions",
                                object_req(
                                    "A volume to unplug (the removevolume request body).",
                                    vec![
                                        ("name", string("Name of the volume.")),
                                        ("dryRun", strings("All: validate only.")),
                                    ],
                                    &["name"],
                                ),
                            ),
                        ],
                    ),
                ),
            ),
            (
                "volumeSnapshotStatuses",
                array(
                    "Whether each volume can be snapshotted.",
                    object_req(
                        "Snapshot support of one volume.",
                        vec![
                            ("name", string("Name of the volume.")),
                            ("enabled", boolean("Whether the volume can be snapshotted.")),
                            ("reason", string("Why not, when it cannot.")),
                        ],
                        &["name", "enabled"],
                    ),
                ),
            ),
            ("stateChangeRequests", array("Pending start and stop requests.", free_form("A state change request."))),
            ("observedGeneration", int64("The generation the status reflects.")),
            ("desiredGeneration", int64("The generation of the VM spec.")),
        ],
    ));
    (
        Fields { properties: vec![("spec", spec), ("status", status)], required: vec!["spec"] },
        "VirtualMachine handles the VirtualMachineInstances of one VM: it starts and stops them from its template and carries hot-plugged volumes across restarts.",
    )
}

pub(super) fn virtual_machine_instance() -> (Fields, &'static str) {
    let volume_status = open(object_req(
        "The state of one volume of the VMI, hot-plugged or not.",
        vec![
            ("name", string("Name of the volume.")),
            ("target", string("The libvirt target device (sda, vdb...); empty until the disk is in the domain. It is not the guest's device name.")),
            ("phase", volume_phase()),
            ("reason", string("Machine-readable reason of the phase.")),
            ("message", string("Human-readable details of the phase.")),
            (
                "hotplugVolume",
                object(
                    "Set for hot-plugged volumes only: the attachment pod.",
                    vec![
                        ("attachPodName", string("Name of the hp-volume pod.")),
                        ("attachPodUID", string("UID of the hp-volume pod, empty until it is ready.")),
                    ],
                ),
            ),
            (
                "persistentVolumeClaimInfo",
                object(
                    "What the claim behind the volume offers.",
                    vec![
                        ("claimName", string("Name of the claim.")),
                        ("accessModes", strings("Access modes of the claim.")),
                        ("volumeMode", enumeration("Block or Filesystem.", &["Block", "Filesystem"])),
                        ("capacity", map_of("Capacity of the bound volume.", int_or_string("A quantity."))),
                        ("requests", map_of("Requested size of the claim.", int_or_string("A quantity."))),
                        ("preallocated", boolean("Whether the storage is preallocated.")),
                        ("filesystemOverhead", string("Share of a filesystem volume the disk image may not use.")),
                    ],
                ),
            ),
            ("size", int64("Size of the volume in bytes.")),
            ("memoryDumpVolume", free_form("Details of a memory dump volume.")),
            ("containerDiskVolume", free_form("Details of a container disk volume.")),
        ],
        &["name", "target"],
    ));
    let status = open(object(
        "The observed state of the VMI.",
        vec![
            (
                "phase",
                enumeration(
                    "Lifecycle phase of the VMI.",
                    &[
                        "Pending",
                        "Scheduling",
                        "Scheduled",
                        "Running",
                        "Succeeded",
                        "Failed",
                        "WaitingForSync",
                        "Unknown",
                    ],
                ),
            ),
            ("nodeName", string("The node the VMI runs on.")),
            ("reason", string("Why the VMI is in this state.")),
            ("conditions", conditions("Conditions of the VMI.")),
            (
                "interfaces",
                array(
                    "Network interfaces as the guest agent reports them.",
                    object(
                        "One interface.",
                        vec![
                            ("name", string("Name of the interface in the VMI spec.")),
                            ("interfaceName", string("Name of the interface in the guest.")),
                            ("mac", string("MAC address.")),
                            ("ipAddress", string("Primary IP address.")),
                            ("ipAddresses", strings("All IP addresses.")),
                            ("infoSource", string("Where the data comes from (domain, guest-agent...).")),
                            ("queueCount", integer("Number of queues.")),
                        ],
                    ),
                ),
            ),
            ("volumeStatus", array("One entry per volume, sorted by name.", volume_status)),
            ("activePods", map_of("UIDs of the virt-launcher pods, to their nodes.", json!({"type": "string"}))),
            ("guestOSInfo", free_form("The guest OS as the guest agent reports it.")),
            ("migrationState", free_form("State of the last live migration.")),
            ("qosClass", string("QoS class of the virt-launcher pod.")),
            ("launcherContainerImageVersion", string("Image of the virt-launcher pod.")),
            (
                "phaseTransitionTimestamps",
                array(
                    "When each phase began.",
                    object(
                        "A phase and when it began.",
                        vec![
                            ("phase", string("The phase.")),
                            ("phaseTransitionTimestamp", date_time("When it began.")),
                        ],
                    ),
                ),
            ),
            ("created", date_time("Unused; kept for compatibility.")),
        ],
    ));
    (
        Fields {
            properties: vec![("spec", vmi_spec("The specification of the running guest.")), ("status", status)],
            required: vec!["spec"],
        },
        "VirtualMachineInstance is a running virtual machine: one virt-launcher pod and its guest.",
    )
}
