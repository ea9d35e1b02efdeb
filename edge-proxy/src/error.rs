//! The edge's error type, and the one place errors become problem+json (RFC 9457).
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use souq_proto::{Kind, WireError};

/// An error answer: a status, a problem type and a client-safe detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Problem type slug, e.g. `docker-unavailable`.
    pub kind: &'static str,
    /// What went wrong, safe to show.
    pub detail: String,
    /// For validation errors, the request field at fault.
    pub field: Option<String>,
    /// Seconds for `Retry-After` on 429 and 503.
    pub retry_after: Option<u64>,
    /// For quota errors (and per-user rates), the limit that was reached.
    pub limit: Option<String>,
}

/// The edge's result type.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The problem type URI of a slug.
pub fn problem_type(slug: &str) -> String {
    format!("urn:souq:problem:{slug}")
}

impl ApiError {
    /// An error with a status and problem slug.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, kind, detail: detail.into(), field: None, retry_after: None, limit: None }
    }

    /// A 422 naming `field`.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        ApiError { field: Some(field.to_owned()), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail) }
    }

    /// A 401.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        let status = match e.kind {
            Kind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Forbidden | Kind::Quota => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::RateLimited | Kind::TooManyConcurrent => StatusCode::TOO_MANY_REQUESTS,
            Kind::TokenMalformed | Kind::TokenUnknown => StatusCode::BAD_REQUEST,
            Kind::TokenExpired | Kind::TokenUsed => StatusCode::GONE,
            Kind::DockerUnavailable | Kind::NoCapacity | Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::ResponseTooLarge => StatusCode::BAD_GATEWAY,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, kind: e.kind.slug(), detail: e.message, field: e.field, retry_after: e.retry_after, limit: e.limit }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::Internal || s.code() == tonic::Code::Unknown {
            tracing::error!(code = ?s.code(), message = s.message(), "control plane error");
        }
        WireError::from(&s).into()
    }
}

/// The problem+json body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:souq:problem:validation`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the status.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong.
    pub detail: String,
    /// For validation errors, the request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `quota` problems (and per-user rates), the limit that was reached, e.g. `apis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The request's trace id (32 hex digits), to quote to an operator; present when the
    /// edge traces requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
}

impl ApiError {
    /// The problem+json body of this error, with the current span's trace id: it is made
    /// inside the request's span (handlers, extractors and fallbacks all run in it).
    pub fn problem(&self) -> Problem {
        Problem {
            type_: problem_type(self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            limit: self.limit.clone(),
            trace_id: souq_proto::trace::current_trace_id(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.problem())).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after.unwrap_or(5)));
            }
            _ => {}
        }
        resp
    }
}
