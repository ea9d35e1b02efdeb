//! Error kinds that cross the gRPC wire. A `tonic::Status` carries its kind (and, for a
//! validation error, the offending field) in metadata, so the edge maps errors by kind
//! rather than by parsing messages.
use tonic::{Code, Status, metadata::MetadataValue};

const KIND_KEY: &str = "souq-kind";
const FIELD_KEY: &str = "souq-field";
const RETRY_AFTER_KEY: &str = "souq-retry-after";
const LIMIT_KEY: &str = "souq-limit";

/// What went wrong, as far as a client needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request field is invalid (422 at the edge).
    Validation,
    /// No or bad credentials (401).
    Unauthenticated,
    /// Authenticated but not allowed (403).
    Forbidden,
    /// Over one of the caller's quotas; `limit` names it (403).
    Quota,
    /// No such thing (404).
    NotFound,
    /// Conflicts with existing state (409).
    Conflict,
    /// Too many requests (429).
    RateLimited,
    /// A single-use token that is not a token at all (400).
    TokenMalformed,
    /// A single-use token nobody issued (400).
    TokenUnknown,
    /// A single-use token past its expiry (410).
    TokenExpired,
    /// A single-use token already used, or voided by a newer one (410).
    TokenUsed,
    /// The node's Docker Engine cannot be reached (503).
    DockerUnavailable,
    /// No node can take the work now (503).
    NoCapacity,
    /// A dependency (agent, control plane, database) is down (503).
    Unavailable,
    /// Took too long (504).
    Timeout,
    /// A deployed handler's answer is over the node's output cap (502).
    ResponseTooLarge,
    /// The caller already has as many executes in flight on the node as one user may (429).
    TooManyConcurrent,
    /// A bug or an unexpected failure; the message is generic (500).
    Internal,
}

impl Kind {
    /// The slug used in metadata and in problem+json `type` URIs.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Validation => "validation",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Forbidden => "forbidden",
            Kind::Quota => "quota",
            Kind::NotFound => "not-found",
            Kind::Conflict => "conflict",
            Kind::RateLimited => "rate-limited",
            Kind::TokenMalformed => "token-malformed",
            Kind::TokenUnknown => "token-unknown",
            Kind::TokenExpired => "token-expired",
            Kind::TokenUsed => "token-used",
            Kind::DockerUnavailable => "docker-unavailable",
            Kind::NoCapacity => "no-capacity",
            Kind::Unavailable => "unavailable",
            Kind::Timeout => "timeout",
            Kind::ResponseTooLarge => "response-too-large",
            Kind::TooManyConcurrent => "too-many-concurrent",
            Kind::Internal => "internal",
        }
    }

    fn code(self) -> Code {
        match self {
            Kind::Validation => Code::InvalidArgument,
            Kind::Unauthenticated => Code::Unauthenticated,
            Kind::Forbidden | Kind::Quota => Code::PermissionDenied,
            Kind::NotFound => Code::NotFound,
            Kind::Conflict => Code::AlreadyExists,
            Kind::RateLimited | Kind::ResponseTooLarge | Kind::TooManyConcurrent => Code::ResourceExhausted,
            Kind::TokenMalformed | Kind::TokenUnknown => Code::InvalidArgument,
            Kind::TokenExpired | Kind::TokenUsed => Code::FailedPrecondition,
            Kind::DockerUnavailable | Kind::NoCapacity | Kind::Unavailable => Code::Unavailable,
            Kind::Timeout => Code::DeadlineExceeded,
            Kind::Internal => Code::Internal,
        }
    }

    fn from_slug(s: &str) -> Option<Kind> {
        const ALL: [Kind; 18] = [
            Kind::Validation,
            Kind::TokenMalformed,
            Kind::TokenUnknown,
            Kind::TokenExpired,
            Kind::TokenUsed,
            Kind::Unauthenticated,
            Kind::Forbidden,
            Kind::Quota,
            Kind::NotFound,
            Kind::Conflict,
            Kind::RateLimited,
            Kind::DockerUnavailable,
            Kind::NoCapacity,
            Kind::Unavailable,
            Kind::Timeout,
            Kind::ResponseTooLarge,
            Kind::TooManyConcurrent,
            Kind::Internal,
        ];
        ALL.into_iter().find(|k| k.slug() == s)
    }

    /// The kind implied by a bare gRPC code, for statuses that carry no kind
    /// (transport failures, or a peer that is not Souq).
    fn from_code(code: Code) -> Kind {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Kind::Validation,
            Code::Unauthenticated => Kind::Unauthenticated,
            Code::PermissionDenied => Kind::Forbidden,
            Code::NotFound => Kind::NotFound,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => Kind::Conflict,
            Code::ResourceExhausted => Kind::RateLimited,
            Code::Unavailable | Code::Cancelled => Kind::Unavailable,
            Code::DeadlineExceeded => Kind::Timeout,
            _ => Kind::Internal,
        }
    }
}

/// An error as it travels between Souq's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// What went wrong.
    pub kind: Kind,
    /// A message safe to show to the client.
    pub message: String,
    /// For [`Kind::Validation`]: the request field at fault.
    pub field: Option<String>,
    /// For [`Kind::RateLimited`]: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
    /// For [`Kind::Quota`] (and a per-user rate): the name of the limit, e.g. `apis`.
    pub limit: Option<String>,
}

impl WireError {
    /// An error of `kind` with a client-safe message.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        WireError { kind, message: message.into(), field: None, retry_after: None, limit: None }
    }

    /// A 429 that may be retried after `seconds`.
    pub fn rate_limited(message: impl Into<String>, seconds: u64) -> Self {
        WireError { retry_after: Some(seconds), ..WireError::new(Kind::RateLimited, message) }
    }

    /// Over the caller's quota `limit` (403 at the edge).
    pub fn quota(limit: &str, message: impl Into<String>) -> Self {
        WireError { limit: Some(limit.to_owned()), ..WireError::new(Kind::Quota, message) }
    }

    /// A validation error naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        WireError { field: Some(field.to_owned()), ..WireError::new(Kind::Validation, message) }
    }
}

impl From<WireError> for Status {
    fn from(e: WireError) -> Status {
        let mut status = Status::new(e.kind.code(), e.message);
        let meta = status.metadata_mut();
        meta.insert(KIND_KEY, MetadataValue::from_static(e.kind.slug()));
        if let Some(field) = e.field.and_then(|f| f.parse::<MetadataValue<_>>().ok()) {
            meta.insert(FIELD_KEY, field);
        }
        if let Some(secs) = e.retry_after {
            meta.insert(RETRY_AFTER_KEY, MetadataValue::from(secs));
        }
        if let Some(limit) = e.limit.and_then(|l| l.parse::<MetadataValue<_>>().ok()) {
            meta.insert(LIMIT_KEY, limit);
        }
        status
    }
}

impl From<&Status> for WireError {
    fn from(s: &Status) -> WireError {
        let get = |key| s.metadata().get(key).and_then(|v| v.to_str().ok());
        match get(KIND_KEY).and_then(Kind::from_slug) {
            Some(kind) => WireError {
                kind,
                message: s.message().to_owned(),
                field: get(FIELD_KEY).map(str::to_owned),
                retry_after: get(RETRY_AFTER_KEY).and_then(|v| v.parse().ok()),
                limit: get(LIMIT_KEY).map(str::to_owned),
            },
            // A status Souq did not make (a transport error): never pass its text on.
            None => {
                let kind = Kind::from_code(s.code());
                let message = match kind {
                    Kind::Unavailable => "a Souq service is unreachable",
                    Kind::Timeout => "a Souq service did not answer in time",
                    _ => "internal error",
                };
                WireError::new(kind, message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_field_and_retry_after_survive_the_wire() {
        let status: Status = WireError::invalid("timeout_ms", "too long").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let back = WireError::from(&status);
        assert_eq!(back, WireError::invalid("timeout_ms", "too long"));
        let status: Status = WireError::rate_limited("slow down", 42).into();
        assert_eq!(WireError::from(&status), WireError::rate_limited("slow down", 42));
        let status: Status = WireError::quota("apis", "at most 20 APIs").into();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(WireError::from(&status), WireError::quota("apis", "at most 20 APIs"));
        let status: Status = WireError::new(Kind::TokenExpired, "expired").into();
        assert_eq!(WireError::from(&status).kind, Kind::TokenExpired);
    }

    #[test]
    fn foreign_status_gets_a_generic_message() {
        let status = Status::unavailable("tcp connect error: 127.0.0.1:1 refused");
        let e = WireError::from(&status);
        assert_eq!(e.kind, Kind::Unavailable);
        assert!(!e.message.contains("127.0.0.1"));
    }
}
