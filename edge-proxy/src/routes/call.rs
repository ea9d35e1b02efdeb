//! `/call/{slug}/{*path}`: the data path. Authenticates the caller, finds the API in the
//! route table, and runs the call on one of its instances, straight on the agent.
use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use tracing::debug;

use crate::{
    AppState,
    call::{event, reply},
    error::{ApiError, Problem, Result},
    extract::{bearer, too_large},
};

/// Time on top of the route's timeout for the hop to the agent and the sandbox's I/O.
const SLACK: Duration = Duration::from_secs(2);
/// The timeout assumed when a route names none (the agents' default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a call may take, whatever the route says.
const MAX_TIMEOUT: Duration = Duration::from_secs(900);

/// The caller's user id. API keys arrive with the marketplace; until then, only a bearer
/// token is accepted.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<String> {
    if headers.contains_key("x-api-key") {
        return Err(ApiError::unauthenticated(
            "API keys are not enabled yet; call with the owner's Authorization: Bearer token",
        ));
    }
    state.verifier.verify(bearer(headers)?)
}

/// The slug and the rest of a `/call/...` path: `/call/s/a/b` → (`s`, `/a/b`), and
/// `/call/s` → (`s`, `/`).
pub fn split_call_path(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix("/call/").unwrap_or("");
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

fn no_such_api() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such API")
}

/// Calls a deployed API. The request's method, path after the slug, query, headers (less
/// hop-by-hop ones and credentials) and body reach the handler as its event; its answer
/// comes back as the response.
#[utoipa::path(post, path = "/call/{slug}/{path}", tag = "call", security(("bearer" = [])),
    params(("slug" = String, Path, description = "The API's slug"),
        ("path" = String, Path, description = "Any path, passed to the handler; any method is accepted")),
    request_body(content = String, description = "Anything the handler takes", content_type = "*/*"),
    responses((status = 200, description = "The handler's answer, with the status and headers it chose"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The handler failed (problem type handler-error)", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
        (status = 504, body = Problem, content_type = "application/problem+json")))]
pub async fn call(State(state): State<AppState>, req: Request) -> Result<Response> {
    // Who calls is settled before anything about the API is looked up or the body is read,
    // so nobody learns which slugs exist without a valid token.
    let user_id = authenticate(&state, req.headers())?;
    let route = state.routing.snapshot().get(split_call_path(req.uri().path()).0).ok_or_else(no_such_api)?.clone();
    if route.owner_id != user_id {
        return Err(if route.public {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the owner may call this API for now; subscriptions arrive with the marketplace",
            )
        } else {
            no_such_api()
        });
    }
    if route.backends.is_empty() {
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the API has no running instance; deploy it, or wait for it to start",
            )
        });
    }

    let (mut parts, body) = req.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    // Reading through the extractor applies the route's body limit.
    let body = Bytes::from_request(Request::from_parts(parts, body), &state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(state.call_body_limit)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "the body could not be read")
        }
    })?;
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let (slug, path) = split_call_path(uri.path());
    let event = event::build(&event::CallRequest {
        method: method.as_str(),
        path,
        raw_query: uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
        request_id,
    });
    drop(body);

    let timeout = match route.timeout {
        t if t.is_zero() => DEFAULT_TIMEOUT,
        t => t.min(MAX_TIMEOUT),
    };
    let invoked = tokio::time::timeout(timeout + SLACK, state.agents.invoke(&route, event)).await.map_err(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the API did not answer within {} ms", timeout.as_millis()),
        )
    })?;
    let (result, node) = invoked?;
    debug!(slug, node, duration_ms = result.duration_ms, "call answered");
    let mut resp = reply::reply(result)?;
    protect(resp.headers_mut());
    Ok(resp)
}

/// Every API shares the edge's origin, so a handler's page must not act as the edge's:
/// a sandboxed CSP gives any document it serves an opaque origin, and nosniff stops a
/// browser from guessing a type the handler did not name.
fn protect(headers: &mut HeaderMap) {
    headers.append(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

#[cfg(test)]
mod tests {
    use super::split_call_path;

    #[test]
    fn splits_slug_from_path() {
        assert_eq!(split_call_path("/call/s"), ("s", "/"));
        assert_eq!(split_call_path("/call/s/"), ("s", "/"));
        assert_eq!(split_call_path("/call/s/a/b%2Fc"), ("s", "/a/b%2Fc"));
        assert_eq!(split_call_path("/other"), ("", "/"));
    }
}
