//! Compiles the vendored `csi.proto` and the kubelet plugin-registration API
//! (`pluginregistration.proto`) into tonic/prost bindings.
//!
//! Uses `protox` (a pure-Rust protobuf compiler), so no `protoc` binary is
//! needed at build time. The well-known `google/protobuf/*.proto` imports are
//! bundled by protox.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=csi.proto");
    println!("cargo:rerun-if-changed=pluginregistration.proto");
    println!("cargo:rerun-if-changed=build.rs");

    // Paths are relative to the crate directory (cargo runs build scripts there).
    let fds = protox::compile(["csi.proto", "pluginregistration.proto"], ["."])?;

    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;

    Ok(())
}
