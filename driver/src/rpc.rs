//! Shared RPC plumbing: metrics, logging of failures, error → Status.

use std::future::Future;

use crate::error::Result;
use crate::metrics::Metrics;

/// Runs one RPC body, recording its count, latency and code; failures are
/// logged by message (never the request: it may carry secrets).
pub async fn observe<T>(
    metrics: &Metrics,
    method: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let timer = metrics.start_rpc(method);
    let result = fut.await;
    match &result {
        Ok(_) => timer.finish(tonic::Code::Ok),
        Err(e) => {
            let code = e.code();
            timer.finish(code);
            match code {
                tonic::Code::Aborted | tonic::Code::DeadlineExceeded => {
                    tracing::info!(method, ?code, error = %e, "rpc not finished")
                }
                _ => tracing::warn!(method, ?code, error = %e, "rpc failed"),
            }
        }
    }
    result.map(tonic::Response::new).map_err(tonic::Status::from)
}
