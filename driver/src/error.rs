//! The driver's error type and its one mapping to gRPC status codes.

use kube::core::Status as ErrorResponse;

use crate::mount::MountError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
    /// A host (Harvester) API call failed; mapped by the Status reason.
    #[error("{op}: {}", describe(source))]
    Host {
        op: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A local file a tool reads or writes (e.g. the cloud-config it generates).
    #[error("{op} {path}: {source}")]
    File {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The host's own words for an API error; kube's Display adds a debug dump.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

impl Error {
    pub fn host(op: impl Into<String>, source: kube::Error) -> Self {
        Error::Host { op: op.into(), source: Box::new(source) }
    }

    /// The Kubernetes Status behind a host error, if any.
    pub fn api_response(&self) -> Option<&ErrorResponse> {
        match self {
            Error::Host { source, .. } => match source.as_ref() {
                kube::Error::Api(resp) => Some(resp),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
            || self.api_response().is_some_and(|r| r.reason == "NotFound" || r.code == 404)
    }

    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::PermissionDenied(_))
            || self.api_response().is_some_and(|r| r.reason == "Forbidden" || r.code == 403)
    }

    /// A host error worth retrying as is: the host was unreachable, overloaded or failed
    /// internally (5xx, 429, timeouts, connection errors). Anything else is an answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Host { .. })
            && matches!(self.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
    }

    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Aborted(_) => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Internal(_) | Error::File { .. } => Code::Internal,
            Error::Mount(e) => match e {
                MountError::UnsupportedFs { .. } => Code::InvalidArgument,
                MountError::DeviceHoldsOtherFs { .. } | MountError::Corrupt { .. } => Code::FailedPrecondition,
                MountError::NotMounted { .. } => Code::FailedPrecondition,
                MountError::Busy { .. } => Code::Unavailable,
                MountError::Timeout { .. } => Code::DeadlineExceeded,
                MountError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Code::NotFound,
                MountError::CommandFailed { .. }
                | MountError::MissingCapability { .. }
                | MountError::Io { .. }
                | MountError::Malformed { .. } => Code::Internal,
            },
            Error::Host { source, .. } => match source.as_ref() {
                kube::Error::Api(r) => match (r.reason.as_str(), r.code) {
                    ("NotFound", _) | (_, 404) => Code::NotFound,
                    ("Forbidden", _) | (_, 403) => Code::PermissionDenied,
                    ("Unauthorized", _) | (_, 401) => Code::Unauthenticated,
                    ("Conflict" | "AlreadyExists", _) | (_, 409) => Code::Aborted,
                    // Admission webhooks (Harvester's) refuse with 422: the host's state does not allow it.
                    ("Invalid", _) | (_, 422) => Code::FailedPrecondition,
                    ("TooManyRequests", _) | (_, 429) => Code::Unavailable,
                    ("Timeout", _) | (_, 504) => Code::DeadlineExceeded,
                    (_, 500..=599) => Code::Unavailable,
                    _ => Code::Internal,
                },
                kube::Error::HyperError(_) | kube::Error::Service(_) => Code::Unavailable,
                _ => Code::Internal,
            },
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn api(code: u16, reason: &str) -> Error {
        Error::host(
            "get thing",
            kube::Error::Api(Box::new(ErrorResponse {
                message: "m".into(),
                reason: reason.into(),
                code,
                ..Default::default()
            })),
        )
    }

    #[rstest]
    #[case(404, "NotFound", tonic::Code::NotFound)]
    #[case(403, "Forbidden", tonic::Code::PermissionDenied)]
    #[case(409, "Conflict", tonic::Code::Aborted)]
    #[case(409, "AlreadyExists", tonic::Code::Aborted)]
    #[case(422, "Invalid", tonic::Code::FailedPrecondition)]
    #[case(500, "InternalError", tonic::Code::Unavailable)]
    #[case(503, "ServiceUnavailable", tonic::Code::Unavailable)]
    #[case(429, "TooManyRequests", tonic::Code::Unavailable)]
    #[case(504, "Timeout", tonic::Code::DeadlineExceeded)]
    #[case(400, "BadRequest", tonic::Code::Internal)]
    fn host_errors_map_by_reason(#[case] code: u16, #[case] reason: &str, #[case] want: tonic::Code) {
        assert_eq!(api(code, reason).code(), want);
    }

    #[rstest]
    #[case(500, "InternalError", true)]
    #[case(503, "ServiceUnavailable", true)]
    #[case(429, "TooManyRequests", true)]
    #[case(504, "Timeout", true)]
    #[case(403, "Forbidden", false)]
    #[case(404, "NotFound", false)]
    #[case(409, "Conflict", false)]
    fn only_host_failures_are_transient(#[case] code: u16, #[case] reason: &str, #[case] want: bool) {
        assert_eq!(api(code, reason).is_transient(), want);
    }

    #[test]
    fn the_drivers_own_unavailable_is_not_a_host_failure() {
        assert!(!Error::Unavailable("device busy".into()).is_transient());
    }
}
