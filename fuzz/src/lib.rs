//! Shared pieces of the fuzz targets: a tokio runtime whose clock jumps ahead
//! whenever every task waits (so a retry back-off or a wait for a device costs
//! nothing), a Harvester host that can never be reached, and the rule every
//! CSI refusal is held to.
//!
//! The targets live in `fuzz_targets/`; the seed corpus in `seeds/<target>/`.

pub mod seeds;

use std::future::Future;
use std::sync::OnceLock;

/// One single-threaded runtime per fuzzing process, its clock paused: timers
/// fire as soon as nothing else can run, so waits bounded by a deadline end
/// at once instead of after the deadline's real duration.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a tokio runtime for the fuzz target")
    });
    rt.block_on(fut)
}

/// A host API client whose every call fails at once, as if the host were
/// unreachable: requests that pass validation end in the driver's answer for
/// a host it cannot reach, never on the network. Must be called inside the
/// runtime (the client spawns its request buffer there).
pub fn unreachable_host_client() -> kube::Client {
    let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "the fuzz harness has no host",
        ))
    });
    kube::Client::new(service, "guest-ns")
}

/// The codes a CSI refusal may carry. `Unknown` is what a panic in a tonic
/// handler or an unmapped error turns into, and `Internal` is the driver's
/// "this is a bug" answer: neither may come out of bad input.
pub fn assert_proper_status(rpc: &str, status: &tonic::Status) {
    use tonic::Code;
    let ok = matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Aborted
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Unimplemented
            | Code::PermissionDenied
    );
    assert!(ok, "{rpc} refused bad input with {:?}: {}", status.code(), status.message());
    assert!(!status.message().is_empty(), "{rpc} refused with {:?} and no message", status.code());
}
