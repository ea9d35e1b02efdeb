//! `/call/{slug}/{*path}`: the data path. Authenticates the caller (an API key, or the
//! owner's token), finds the API in the route table, checks the caller's subscription and
//! its plan's limits, runs the call on one of the API's instances, straight on the agent,
//! and meters it before answering. Every lookup is in memory; nothing asks the control
//! plane per call.
use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Bytes, HttpBody},
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};
use souq_proto::{Kind, limits::DEFAULT_TIMEOUT};
use tracing::debug;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::{GatewayTimeout, NotFound, PROBLEM_JSON, PayloadTooLarge, Unauthorized, Unavailable};
use crate::{
    AppState,
    access::{
        Grant,
        credential::{CallCaller, authenticate, looks_like_key, refuse_key_in_query},
    },
    error::{ApiError, Problem, Result},
    extract::too_large,
    limit::{Limits, Verdict, month},
    meter::{Draft, Kind as MeterKind},
    metrics::{Refusal, UNKNOWN_API},
    route_table::Route,
    upstream::{
        agents::{InvokeError, invoke},
        event, reply,
    },
};

/// Time on top of the route's timeout for the hop to the agent and the sandbox's I/O.
const SLACK: Duration = Duration::from_secs(2);
/// Longest a call may take, whatever the route says.
const MAX_TIMEOUT: Duration = Duration::from_secs(900);

/// The data path: any method on `/call/{slug}`, `/call/{slug}/` and
/// `/call/{slug}/{*path}`. OpenAPI has no "any method" and no rest-of-path parameter, so
/// the document shows it once, as the handler's annotation says: `POST
/// /call/{slug}/{path}`.
pub fn routes() -> OpenApiRouter<AppState> {
    // The annotation's document only: its POST, one-segment route is not what is served.
    let (_, doc) = OpenApiRouter::<AppState>::new().routes(routes!(call)).split_for_parts();
    OpenApiRouter::with_openapi(doc)
        .route("/call/{slug}", any(call))
        .route("/call/{slug}/", any(call))
        .route("/call/{slug}/{*path}", any(call))
}

/// Whether `caller` may call `route`, and under which grant: the owner always, without
/// limits (`None`); anyone else with a subscription to a public API. A private API that
/// is not the caller's is not found, as if it did not exist.
fn authorize(state: &AppState, caller: &CallCaller, route: &Route) -> Result<Option<Arc<Grant>>> {
    if route.owner_id == caller.user_id {
        return Ok(None);
    }
    if !route.public {
        return Err(no_such_api());
    }
    let grant = state.access.snapshot().grant(&caller.user_id, &route.api_id).cloned();
    grant.map(Some).ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "forbidden", "subscribe to this API first"))
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

/// A 400 (`api-key-in-url`, as [`refuse_key_in_query`] answers) when a segment of `path`,
/// as sent or percent-decoded, looks like an API key (`souq_<prefix>_<secret>`, by
/// [`looks_like_key`]): such a call never reaches the handler's `event.path`.
pub fn refuse_key_in_path(path: &str) -> Result<()> {
    if path_holds_key(path) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "api-key-in-url",
            "API keys go in the X-API-Key header, never in the URL",
        ));
    }
    Ok(())
}

/// `path` with every segment that looks like an API key (as sent or percent-decoded)
/// replaced by `…`, for logs: the request span records the path before
/// [`refuse_key_in_path`] refuses it. Borrowed when nothing looks like a key.
pub fn redact_keys(path: &str) -> Cow<'_, str> {
    if !path_holds_key(path) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(path.split('/').map(|seg| if path_holds_key(seg) { "…" } else { seg }).collect::<Vec<_>>().join("/"))
}

fn path_holds_key(path: &str) -> bool {
    looks_like_key(path) || (path.contains('%') && looks_like_key(&crate::query::percent_decode(path, false)))
}

fn no_such_api() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such API")
}

/// Calls a deployed API. The request's method, path after the slug, query, headers (less
/// hop-by-hop ones and credentials) and body reach the handler as its event; its answer
/// comes back as the response. A subscriber's call is rate-limited and counted against
/// the plan's monthly quota first; every call that reaches a handler is metered before
/// its answer leaves.
#[utoipa::path(post, path = "/call/{slug}/{path}", tag = "call", security(("api_key" = []), ("bearer" = [])),
    params(("slug" = String, Path, description = "The API's slug"),
        ("path" = String, Path, description = "Any path, passed to the handler; any method is accepted")),
    request_body(content = String, description = "Anything the handler takes", content_type = "*/*"),
    responses((status = 200, description = "The handler's answer, with the status and headers it chose; a subscriber's call carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset"),
        (status = 400, description = "An API key in the URL (problem type api-key-in-url), or two credentials", body = Problem, content_type = PROBLEM_JSON),
        Unauthorized,
        (status = 403, description = "Not subscribed to this API", body = Problem, content_type = PROBLEM_JSON),
        NotFound,
        PayloadTooLarge,
        (status = 429, description = "Over the plan's rate (problem type rate-limited, with Retry-After and RateLimit-*) or its monthly quota (quota-exceeded, Retry-After until next month)", body = Problem, content_type = PROBLEM_JSON),
        (status = 502, description = "The handler failed (problem type handler-error), or answered past the node's output cap (response-too-large), or the API's host was lost during the call (upstream-lost: it may have run; a POST or PATCH is never run twice, a GET, HEAD, OPTIONS, PUT or DELETE is tried on another replica first)", body = Problem, content_type = PROBLEM_JSON),
        Unavailable,
        GatewayTimeout))]
pub async fn call(State(state): State<AppState>, req: Request) -> Result<Response> {
    let started = Instant::now();
    // The slug when the route table has it (bounded by the APIs), else `unknown`.
    let slug = split_call_path(req.uri().path()).0;
    let api = match state.routes.snapshot().get(slug) {
        Some(_) => slug.to_owned(),
        None => UNKNOWN_API.to_owned(),
    };
    let answer = call_api(&state, req, started).await;
    let status = match &answer {
        Ok(resp) => resp.status(),
        Err(e) => e.status,
    };
    state.metrics.api_call(api, status.as_u16(), started.elapsed());
    answer
}

/// [`call`], less its metrics.
async fn call_api(state: &AppState, req: Request, started: Instant) -> Result<Response> {
    let ts_ms = month::unix_ms_now();
    // A key in the URL is refused before anything else reads the request.
    refuse_key_in_query(req.uri().query())?;
    refuse_key_in_path(req.uri().path())?;
    // Who calls is settled before anything about the API is looked up or the body is read,
    // so nobody learns which slugs exist without valid credentials.
    let caller = authenticate(&state.access, &state.verifier, req.headers())?;
    let route = state.routes.snapshot().get(split_call_path(req.uri().path()).0).ok_or_else(no_such_api)?.clone();
    let grant = authorize(state, &caller, &route)?;
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
    let body = Bytes::from_request(Request::from_parts(parts, body), state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            state.metrics.refused(Refusal::BodyTooLarge);
            too_large(state.call_body_limit)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "the body could not be read")
        }
    })?;

    // Admitted into the meter first (503 when it is full), then limited: a refusal
    // records nothing and counts nothing.
    let admission = state.meter.admit(Draft {
        api_id: route.api_id.clone(),
        user_id: caller.user_id,
        key_id: caller.key_id.unwrap_or_default(),
        subscription_id: grant.as_ref().map(|g| g.subscription_id.clone()).unwrap_or_default(),
        kind: MeterKind::Call,
        bytes_in: body.len() as u64,
        started,
        ts_ms,
    })
    .inspect_err(|_| state.metrics.refused(Refusal::Metering))?;
    let month_label = month::Month::of_unix_ms(ts_ms).label();
    let limits = grant.as_deref().filter(|_| state.meter.is_on()).map(|g| Limits::of(g, &month_label));
    let mut rate_headers = None;
    if let Some(l) = &limits {
        match state.limiter.check(l, ts_ms).await {
            Verdict::Allowed(h) => rate_headers = Some(h),
            refused => {
                state.metrics.refused(match refused {
                    Verdict::QuotaExceeded { .. } => Refusal::Quota,
                    _ => Refusal::RateLimit,
                });
                if let Some(a) = admission {
                    a.cancel();
                }
                return Ok(refused.refusal().unwrap_or_else(|| StatusCode::TOO_MANY_REQUESTS.into_response()));
            }
        }
    }

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
    let invoked = tokio::time::timeout(timeout + SLACK, invoke(&state.agents, &route, &method, event, timeout)).await;
    let answer = match invoked {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the API did not answer within {} ms", timeout.as_millis()),
        )),
        // No replica took the call (nothing ran), or its host was lost during it (it may
        // have run, but no handler's answer came): only calls that reached a handler and
        // got its answer are metered and counted.
        Ok(Err(e @ (InvokeError::NoReplica | InvokeError::Lost))) => {
            if let Some(a) = admission {
                a.cancel();
            }
            if let Some(l) = &limits {
                state.limiter.refund(l, ts_ms).await;
            }
            return Err(e.into());
        }
        Ok(Err(e)) => {
            let e = ApiError::from(e);
            if e.kind == Kind::TooManyConcurrent.slug() {
                state.metrics.refused(Refusal::Concurrency);
            }
            Err(e)
        }
        Ok(Ok((result, node))) => {
            debug!(slug, node, duration_ms = result.duration_ms, "call answered");
            reply::reply(result).await.map(|mut resp| {
                protect(resp.headers_mut());
                resp
            })
        }
    };
    let mut resp = answer.unwrap_or_else(IntoResponse::into_response);
    if let Some(h) = rate_headers {
        h.apply(resp.headers_mut());
    }
    if let Some(a) = admission {
        let bytes_out = resp.body().size_hint().exact().unwrap_or(0);
        a.commit(resp.status().as_u16(), bytes_out).await?;
    }
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
    use super::{redact_keys, refuse_key_in_path, split_call_path};

    const SECRET: &str = "0123456789abcdefghijklmnopqrstuv";

    #[test]
    fn splits_slug_from_path() {
        assert_eq!(split_call_path("/call/s"), ("s", "/"));
        assert_eq!(split_call_path("/call/s/"), ("s", "/"));
        assert_eq!(split_call_path("/call/s/a/b%2Fc"), ("s", "/a/b%2Fc"));
        assert_eq!(split_call_path("/other"), ("", "/"));
    }

    #[test]
    fn a_key_in_the_path_is_refused() {
        let key = format!("souq_abcd1234_{SECRET}");
        for path in [
            format!("/call/s/{key}"),
            format!("/call/s/a/{key}/b"),
            format!("/call/s/a/token={key}"),
            format!("/call/{key}"),
            // Encoded, it is still a key.
            format!("/call/s/{}", key.replace('_', "%5F")),
            format!("/call/s/%73ouq_abcd1234_{SECRET}"),
        ] {
            let e = refuse_key_in_path(&path).expect_err(&path);
            assert_eq!((e.status.as_u16(), e.kind), (400, "api-key-in-url"), "{path}");
            assert_eq!(e.detail, "API keys go in the X-API-Key header, never in the URL");
        }
        for path in ["/call/s", "/call/s/", "/call/s/souq_is_great", "/call/s/souq_/x", "/call/s/a%ZZ/souq", "/call/s/souq_ab/cd"] {
            assert!(refuse_key_in_path(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn keys_are_redacted_from_logged_paths() {
        let key = format!("souq_abcd1234_{SECRET}");
        assert_eq!(redact_keys(&format!("/call/s/a/{key}/b")), "/call/s/a/…/b");
        assert_eq!(redact_keys(&format!("/call/s/{}", key.replace('_', "%5F"))), "/call/s/…");
        assert!(matches!(redact_keys("/call/s/souq_is_great"), std::borrow::Cow::Borrowed("/call/s/souq_is_great")));
    }
}
