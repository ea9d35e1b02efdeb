//! Request extractors that answer bad input with problem+json: a JSON body whose every
//! rejection has the right status, and the authenticated caller.
use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{FromRef, FromRequest, FromRequestParts, Path, Request, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{error::ApiError, verifier::Verifier};

/// Largest body of a management request, in bytes (413 beyond). Calls to deployed APIs
/// have their own limit, `Config::call_body_limit`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON body: 415 without a JSON content type, 400 when it is not JSON, 413 when too
/// big, 422 when its fields are wrong.
pub struct Json<T>(pub T);

/// The field a serde error message points at, if any.
fn field_of(msg: &str) -> Option<String> {
    if let Some(rest) = msg.split("missing field `").nth(1) {
        return rest.split('`').next().map(str::to_owned);
    }
    if let Some(rest) = msg.split("unknown field `").nth(1) {
        return rest.split('`').next().map(str::to_owned);
    }
    let after = msg.split("target type: ").nth(1)?;
    let (path, _) = after.split_once(": ")?;
    (!path.contains(' ') && !path.is_empty() && path != ".").then(|| path.to_owned())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "the body must be JSON, with Content-Type: application/json",
                ),
                JsonRejection::JsonSyntaxError(_) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "malformed-json", "the body is not valid JSON")
                }
                JsonRejection::JsonDataError(e) => {
                    let text = e.body_text();
                    let detail = text.replace("Failed to deserialize the JSON body into the target type: ", "");
                    match field_of(&text) {
                        Some(f) => ApiError::invalid(&f, detail),
                        None => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail),
                    }
                }
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(MAX_BODY_BYTES),
                other => ApiError::new(StatusCode::BAD_REQUEST, "bad-request", other.body_text()),
            }),
        }
    }
}

/// The key of the client's address (see [`crate::client_addr::key`]: an IPv6 client's
/// /64): the TCP peer, or behind a trusted proxy the address it forwarded for, as the
/// accept loop settled it. Empty when unknown.
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let settled = parts.extensions.get::<crate::client_addr::ClientAddr>().map(|c| c.0);
        let peer = || parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        Ok(ClientIp(settled.or_else(peer).map(crate::client_addr::key).unwrap_or_default()))
    }
}

/// The locale the client prefers, from `Accept-Language`: `ar` or `en`.
pub struct PreferredLocale(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PreferredLocale {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::ACCEPT_LANGUAGE).and_then(|h| h.to_str().ok());
        Ok(PreferredLocale(header.and_then(preferred_locale)))
    }
}

/// The first of `ar` or `en` in an `Accept-Language` value, by its q-weights.
pub fn preferred_locale(header: &str) -> Option<String> {
    let mut tags: Vec<(f32, String)> = header
        .split(',')
        .take(32)
        .filter_map(|part| {
            let mut bits = part.trim().split(';');
            let tag = bits.next()?.trim().split('-').next()?.to_ascii_lowercase();
            let q = bits.find_map(|b| b.trim().strip_prefix("q=")).and_then(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
            Some((q, tag))
        })
        .filter(|(q, tag)| *q > 0.0 && (tag == "ar" || tag == "en"))
        .collect();
    tags.sort_by(|a, b| b.0.total_cmp(&a.0));
    tags.into_iter().next().map(|(_, t)| t)
}

/// The authenticated caller of a request: a verified bearer token.
pub struct Caller {
    /// The raw token, passed on to the control plane.
    pub token: String,
    /// The user id the token was issued to.
    pub user_id: String,
}

/// The bearer token of `Authorization: Bearer <token>`: 401 when absent or malformed.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer token"))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 4096)
        .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be: Bearer <token>"))
}

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Arc<Verifier>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        let user_id = Arc::<Verifier>::from_ref(state).verify(token)?;
        Ok(Caller { token: token.to_owned(), user_id })
    }
}

/// The `{id}` of an API in a path, in canonical form. Anything that is not a UUID is a
/// 404, like an id nobody owns, so ids cannot be probed by their shape.
pub struct ApiId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such API");
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| not_found())?;
        let id = uuid::Uuid::try_parse(&raw).map_err(|_| not_found())?;
        Ok(ApiId(id.hyphenated().to_string()))
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`; any other body must
/// be JSON, with the same answers as [`Json`].
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(axum::http::header::CONTENT_TYPE).cloned();
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(MAX_BODY_BYTES)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad-request", r.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        // The JSON extractor needs only the content type and the body.
        let mut again = Request::new(Body::from(bytes));
        if let Some(ct) = content_type {
            again.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
        }
        let Json(v) = Json::<T>::from_request(again, state).await?;
        Ok(OptionalJson(v))
    }
}

/// The 413 of a body over `limit` bytes.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", format!("the body must be at most {limit} bytes"))
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn picks_the_locale() {
        use super::preferred_locale;
        assert_eq!(preferred_locale("ar-EG,ar;q=0.9,en;q=0.8").as_deref(), Some("ar"));
        assert_eq!(preferred_locale("fr-FR, en;q=0.5, ar;q=0.7").as_deref(), Some("ar"));
        assert_eq!(preferred_locale("de").as_deref(), None);
        assert_eq!(preferred_locale("en-US").as_deref(), Some("en"));
    }

    #[test]
    fn finds_the_field() {
        assert_eq!(
            field_of(
                "Failed to deserialize the JSON body into the target type: missing field `code` at line 1 column 2"
            )
            .as_deref(),
            Some("code")
        );
        assert_eq!(field_of("Failed to deserialize the JSON body into the target type: timeout_ms: invalid value: integer `-1`, expected u64 at line 1 column 40").as_deref(), Some("timeout_ms"));
        assert_eq!(field_of("Failed to deserialize the JSON body into the target type: invalid type: string \"x\", expected struct X").as_deref(), None);
    }
}
