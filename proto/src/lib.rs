//! Rust bindings for the Container Storage Interface (CSI) gRPC API.
//!
//! The bindings are generated at build time (see `build.rs`) from the
//! vendored `csi.proto` in this crate's directory, using
//! [`protox`](https://docs.rs/protox) (pure Rust, no `protoc` needed) and
//! `tonic-prost-build`. Both the server side (`*_server` modules with the
//! `Identity`, `Controller`, `Node`, `GroupController` and
//! `SnapshotMetadata` traits) and the client side (`*_client` modules) are
//! generated.
//!
//! The generated items live in [`csi::v1`] (protobuf package `csi.v1`); the
//! most commonly used service traits, servers and clients are re-exported at
//! the crate root for convenience.
//!
//! Vendored spec version: see [`CSI_SPEC_VERSION`].
//!
//! # Secrets and `Debug`
//!
//! Every generated message implements [`Debug`] (prost derives it), and the
//! derived implementation prints **all** fields, including the `secrets`
//! maps that CSI marks with `(csi_secret) = true` (e.g.
//! [`csi::v1::CreateVolumeRequest::secrets`],
//! [`csi::v1::NodeStageVolumeRequest::secrets`]). Never log a request (or a
//! `tonic::Request` wrapping one) with `{:?}` / `tracing`'s `?` sigil; log
//! the specific non-secret fields you need (volume id, node id, ...)
//! instead.

/// Version of the CSI specification the vendored `csi.proto` was taken
/// from (container-storage-interface/spec tag `v1.13.0`).
pub const CSI_SPEC_VERSION: &str = "1.13.0";

/// Generated CSI protobuf types and gRPC services.
pub mod csi {
    /// The `csi.v1` protobuf package: every CSI message, enum and service.
    ///
    /// # Warning: do not `{:?}`-log requests
    ///
    /// All messages derive [`Debug`], which includes `secrets` maps (fields
    /// annotated `(csi_secret) = true` in the spec, such as
    /// [`CreateVolumeRequest::secrets`](v1::CreateVolumeRequest::secrets),
    /// `DeleteVolumeRequest::secrets`, `ControllerPublishVolumeRequest::secrets`,
    /// `NodeStageVolumeRequest::secrets`, `NodePublishVolumeRequest::secrets`,
    /// ...). Formatting a request with `{:?}` leaks credentials into logs.
    /// Log individual, non-secret fields instead.
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        missing_docs,
        rustdoc::bare_urls,
        rustdoc::broken_intra_doc_links,
        rustdoc::invalid_html_tags
    )]
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

pub use csi::v1::controller_client::ControllerClient;
pub use csi::v1::controller_server::{Controller, ControllerServer};
pub use csi::v1::group_controller_client::GroupControllerClient;
pub use csi::v1::group_controller_server::{GroupController, GroupControllerServer};
pub use csi::v1::identity_client::IdentityClient;
pub use csi::v1::identity_server::{Identity, IdentityServer};
pub use csi::v1::node_client::NodeClient;
pub use csi::v1::node_server::{Node, NodeServer};
pub use csi::v1::snapshot_metadata_client::SnapshotMetadataClient;
pub use csi::v1::snapshot_metadata_server::{SnapshotMetadata, SnapshotMetadataServer};

/// Re-export of the `prost-types` crate used by the generated code
/// (`Timestamp`, `BoolValue`, `Int64Value`, ...), so dependents use the
/// exact same version.
pub use prost_types;

/// The kubelet plugin-registration API (`pluginregistration.k8s.io/v1`,
/// protobuf package `pluginregistration`): what node-driver-registrar serves
/// on a socket in the kubelet's `plugins_registry` directory, so the kubelet
/// finds a CSI driver's node socket.
pub mod pluginregistration {
    #[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs)]
    mod generated {
        tonic::include_proto!("pluginregistration");
    }
    pub use generated::*;
}
