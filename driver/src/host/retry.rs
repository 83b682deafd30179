//! Retrying host calls that failed transiently, for the callers that have no CO
//! retrying for them: startup (which VM am I, where does it run) and the
//! capability probe. A transient 500 there must not become a wrong answer that
//! lasts for the life of the process.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Result;

/// How long startup keeps retrying before it gives up and exits (the kubelet
/// restarts the container with its own backoff).
pub const STARTUP_BUDGET: Duration = Duration::from_secs(120);
/// How long one capability probe call keeps retrying before the feature is
/// reported with the error that stopped it.
pub const PROBE_BUDGET: Duration = Duration::from_secs(3);

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `op` until it succeeds, fails with an answer (anything not
/// transient), or the next wait would end past `budget`.
pub async fn retry_transient<T, F, Fut>(what: &str, budget: Duration, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + budget;
    let mut delay = FIRST_DELAY;
    loop {
        match op().await {
            Err(e) if e.is_transient() && Instant::now() + delay <= deadline => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
            other => return other,
        }
    }
}

/// A tower retry policy for the host client: reads (GET, which covers get, list and the
/// start of a watch) that the host answered with 429 or 5xx, or that failed in transport,
/// are sent again twice, 100 ms then 300 ms later. An RPC makes about ten host reads, so
/// without this a 1 % error rate on the host fails one RPC in ten; writes are never
/// repeated here (the CO retries the whole, idempotent, operation).
#[derive(Debug, Clone)]
pub struct ReadRetry {
    left: u32,
    delay: Duration,
}

impl Default for ReadRetry {
    fn default() -> Self {
        Self { left: 2, delay: Duration::from_millis(100) }
    }
}

impl<Res> tower::retry::Policy<http::Request<kube::client::Body>, http::Response<Res>, tower::BoxError> for ReadRetry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut http::Request<kube::client::Body>,
        result: &mut std::result::Result<http::Response<Res>, tower::BoxError>,
    ) -> Option<Self::Future> {
        if req.method() != http::Method::GET || self.left == 0 {
            return None;
        }
        let failed = match result {
            Ok(r) => r.status() == http::StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error(),
            Err(_) => true,
        };
        if !failed {
            return None;
        }
        self.left -= 1;
        let delay = self.delay;
        self.delay *= 3;
        tracing::debug!(uri = %req.uri(), retry_in = ?delay, "host read failed; sending it again");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &http::Request<kube::client::Body>) -> Option<http::Request<kube::client::Body>> {
        if req.method() != http::Method::GET {
            return None;
        }
        let mut copy = http::Request::new(req.body().try_clone()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::Error;

    fn server_error() -> Error {
        Error::host(
            "list things",
            kube::Error::Api(Box::new(kube::core::Status {
                code: 500,
                reason: "InternalError".into(),
                ..Default::default()
            })),
        )
    }

    #[tokio::test]
    async fn retries_transient_failures_until_success() {
        let calls = AtomicU32::new(0);
        let r = retry_transient("listing", STARTUP_BUDGET, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(server_error())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_answer_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = retry_transient("listing", STARTUP_BUDGET, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::PermissionDenied("no".into()))
        })
        .await;
        assert!(matches!(r, Err(Error::PermissionDenied(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_with_the_last_error_when_the_budget_is_spent() {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let budget = Duration::from_secs(1);
        let r: Result<()> = retry_transient("listing", budget, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(server_error())
        })
        .await;
        assert!(r.unwrap_err().is_transient());
        assert!(start.elapsed() <= budget, "waited {:?}", start.elapsed());
        // Waits of 100+200+400 ms fit in 1 s; the next 800 ms would not.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
