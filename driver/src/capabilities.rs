//! What the driver advertises and accepts, in one place.

use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::AccessType;
use csi_proto::csi::v1 as csi;

use crate::error::{Error, Result};

pub fn controller_capabilities() -> Vec<csi::controller_service_capability::rpc::Type> {
    use csi::controller_service_capability::rpc::Type;
    vec![
        Type::CreateDeleteVolume,
        Type::PublishUnpublishVolume,
        Type::ListVolumes,
        Type::ListVolumesPublishedNodes,
        Type::GetVolume,
        Type::ExpandVolume,
        Type::CreateDeleteSnapshot,
        Type::ListSnapshots,
        Type::GetSnapshot,
        Type::CloneVolume,
        Type::PublishReadonly,
        Type::SingleNodeMultiWriter,
        Type::GetVolumeHealth,
    ]
}

/// Capabilities that need host snapshots (advertised only where the host has them).
pub fn is_snapshot_capability(t: csi::controller_service_capability::rpc::Type) -> bool {
    use csi::controller_service_capability::rpc::Type;
    matches!(t, Type::CreateDeleteSnapshot | Type::ListSnapshots | Type::GetSnapshot)
}

pub fn node_capabilities() -> Vec<csi::node_service_capability::rpc::Type> {
    use csi::node_service_capability::rpc::Type;
    vec![
        Type::StageUnstageVolume,
        Type::GetVolumeStats,
        Type::ExpandVolume,
        Type::SingleNodeMultiWriter,
        Type::GetVolumeHealth,
    ]
}

/// The shape of a volume as the capabilities ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Several nodes at once: an NFS export (RWX).
    pub shared: bool,
    pub block: bool,
    /// Only for mount access; `None` = default.
    pub fs_type: Option<String>,
    pub mount_flags: Vec<String>,
    pub reader_only: bool,
    /// SINGLE_NODE_SINGLE_WRITER: one publish target at a time.
    pub single_writer: bool,
}

pub const SUPPORTED_FS: &[&str] = &["ext4", "xfs", "btrfs"];

fn mode_of(cap: &csi::VolumeCapability) -> Result<Mode> {
    let raw = cap
        .access_mode
        .as_ref()
        .map(|m| m.mode)
        .ok_or_else(|| Error::InvalidArgument("volume capability has no access mode".into()))?;
    match Mode::try_from(raw) {
        Ok(Mode::Unknown) | Err(_) => Err(Error::InvalidArgument(format!("access mode {raw} is not supported"))),
        Ok(m) => Ok(m),
    }
}

/// Checks one capability and describes it.
pub fn shape_of(cap: &csi::VolumeCapability) -> Result<Shape> {
    let mode = mode_of(cap)?;
    let shared = matches!(mode, Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter);
    let reader_only = matches!(mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly);
    let single_writer = mode == Mode::SingleNodeSingleWriter;
    match &cap.access_type {
        Some(AccessType::Block(_)) => {
            if shared {
                return Err(Error::InvalidArgument(
                    "multi-node block volumes are not supported: Longhorn RWX block volumes exist for VM live migration only".into(),
                ));
            }
            Ok(Shape { shared, block: true, fs_type: None, mount_flags: vec![], reader_only, single_writer })
        }
        Some(AccessType::Mount(m)) => {
            // Any case, as `FsType` parses it: "XFS" in a hand-written class means xfs.
            let fs = m.fs_type.trim().to_ascii_lowercase();
            if !shared && !fs.is_empty() && !SUPPORTED_FS.contains(&fs.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "filesystem {fs:?} is not supported; use one of {}",
                    SUPPORTED_FS.join(", ")
                )));
            }
            Ok(Shape {
                shared,
                block: false,
                fs_type: (!fs.is_empty()).then_some(fs),
                mount_flags: m.mount_flags.clone(),
                reader_only,
                single_writer,
            })
        }
        None => Err(Error::InvalidArgument("volume capability must be either block or mount".into())),
    }
}

/// All capabilities of a request must agree on block vs mount; any shared one makes the volume shared.
pub fn shape_of_all(caps: &[csi::VolumeCapability]) -> Result<Shape> {
    let first = caps.first().ok_or_else(|| Error::InvalidArgument("volume capabilities are required".into()))?;
    let mut shape = shape_of(first)?;
    for cap in &caps[1..] {
        let s = shape_of(cap)?;
        if s.block != shape.block {
            return Err(Error::InvalidArgument("volume capabilities mix block and mount access".into()));
        }
        shape.shared |= s.shared;
        shape.reader_only &= s.reader_only;
        if shape.fs_type.is_none() {
            shape.fs_type = s.fs_type;
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn cap(mode: Mode, block: bool, fs: &str) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(Default::default())
            } else {
                AccessType::Mount(csi::volume_capability::MountVolume { fs_type: fs.into(), ..Default::default() })
            }),
        }
    }

    #[rstest]
    #[case(Mode::SingleNodeWriter, false, "ext4", Ok((false, false)))]
    #[case(Mode::SingleNodeWriter, true, "", Ok((false, true)))]
    #[case(Mode::MultiNodeMultiWriter, false, "", Ok((true, false)))]
    #[case(Mode::MultiNodeMultiWriter, true, "", Err(tonic::Code::InvalidArgument))]
    #[case(Mode::SingleNodeReaderOnly, false, "xfs", Ok((false, false)))]
    #[case(Mode::SingleNodeWriter, false, "ntfs", Err(tonic::Code::InvalidArgument))]
    #[case(Mode::SingleNodeWriter, false, "XFS", Ok((false, false)))]
    #[case(Mode::Unknown, false, "", Err(tonic::Code::InvalidArgument))]
    fn shapes(
        #[case] mode: Mode,
        #[case] block: bool,
        #[case] fs: &str,
        #[case] want: std::result::Result<(bool, bool), tonic::Code>,
    ) {
        let got = shape_of(&cap(mode, block, fs)).map(|s| (s.shared, s.block)).map_err(|e| e.code());
        assert_eq!(got, want);
    }

    #[test]
    fn the_filesystem_is_named_in_lower_case() {
        assert_eq!(shape_of(&cap(Mode::SingleNodeWriter, false, " Ext4 ")).unwrap().fs_type.as_deref(), Some("ext4"));
    }

    #[test]
    fn missing_type_and_mixed_types_are_rejected() {
        let none = csi::VolumeCapability {
            access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
            access_type: None,
        };
        assert!(shape_of(&none).is_err());
        assert!(shape_of_all(&[cap(Mode::SingleNodeWriter, true, ""), cap(Mode::SingleNodeWriter, false, "")]).is_err());
        assert!(shape_of_all(&[]).is_err());
    }
}
