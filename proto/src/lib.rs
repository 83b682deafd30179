//! CSI spec protobuf bindings (tonic/prost). Filled by the CSI driver issue: the vendored `csi.proto` compiled at build time.
