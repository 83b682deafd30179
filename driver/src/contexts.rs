//! Keys of the maps the controller hands the CO and the CO hands the node
//! plugin back: the volume context (from CreateVolume, on every later call)
//! and the publish context (from ControllerPublish, on stage and publish).
//! Both sides read them from here, so a key cannot drift between them.

/// Volume context: what CreateVolume decided about the volume's shape.
pub mod volume {
    /// `true` for an RWX volume served as an NFS export.
    pub const SHARED: &str = "harvesterhci.io/shared";
    /// `Block` or `Filesystem`: the host PVC's volume mode.
    pub const HOST_VOLUME_MODE: &str = "harvesterhci.io/hostVolumeMode";
}

/// Publish context: what ControllerPublish found on the host.
pub mod publish {
    /// Exact `/dev/disk/by-id` name of the hot-plugged disk.
    pub const BY_ID: &str = "harvesterhci.io/byIdName";
    /// Size the host allocated, to check the device against.
    pub const SIZE: &str = "harvesterhci.io/sizeBytes";
    /// `true` for an NFS export.
    pub const SHARED: &str = "harvesterhci.io/shared";
    /// The host PV (NetworkFilesystem name) of an export.
    pub const EXPORT: &str = "harvesterhci.io/export";
}
