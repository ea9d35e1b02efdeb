//! A handler's result as the HTTP answer: a plain value is a 200, the Lambda proxy shape
//! `{statusCode, headers, body, isBase64Encoded}` sets the status, headers and body, and a
//! handler error is a 502 problem. Only the proxy shape's keys are read (`shape`); a
//! large JSON answer is read on a blocking thread, a few at a time, never on the async
//! workers.
use axum::{
    body::Body,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::Response,
};
use base64::Engine;
use serde_json::Value;
use souq_proto::agent::{InvokeResult, ResultKind};
use tokio::sync::Semaphore;

use super::shape::{self, Shape};
use crate::error::ApiError;

/// Longest handler error message shown to the caller.
pub const MAX_ERROR_DETAIL: usize = 4096;
/// JSON answers up to this size are read where they arrive; larger ones on a blocking
/// thread.
pub const INLINE_READ_BYTES: usize = 64 * 1024;
/// Most large answers read at once; further ones wait for a turn (their call's timeout
/// still bounds them).
const MAX_BLOCKING_READS: usize = 8;
static BLOCKING_READS: Semaphore = Semaphore::const_new(MAX_BLOCKING_READS);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

/// Headers a handler may set; every other header it names is dropped silently. Every API
/// shares the edge's origin, so only headers whose effect ends with this one response may
/// pass, never ones that act on the whole origin (`clear-site-data`,
/// `strict-transport-security`, `set-cookie`, `alt-svc`, `nel`, `report-to`, `accept-ch`,
/// `www-authenticate`, `service-worker-allowed`, `origin-agent-cluster`...), nor ones that
/// describe this edge's connection (hop-by-hop ones, `content-length`).
///
/// - the body: `content-type`, `content-language`, `content-disposition`,
///   `content-encoding` (the edge passes the body's bytes as they are and never
///   re-encodes them, so a handler that sends gzip bytes may say so), `content-range`,
///   `accept-ranges`;
/// - caching: `cache-control`, `expires`, `etag`, `last-modified`, `vary`;
/// - the answer: `location`, `retry-after`, `link`, `allow`;
/// - any `x-` custom header, less [`EDGE_X_HEADERS`] and [`EDGE_X_PREFIXES`].
///
/// Not `set-cookie`: one API's cookie would reach every other API on the origin (and could
/// fixate their sessions); APIs that need state use tokens. Not `access-control-*`: every
/// call carries `X-API-Key` or `Authorization`, so a browser preflights it, and the
/// preflight, which carries neither, is refused before any handler runs; CORS on the
/// shared origin is the edge's to decide.
pub const HANDLER_HEADERS: [&str; 15] = [
    "content-type",
    "content-language",
    "content-disposition",
    "content-encoding",
    "content-range",
    "accept-ranges",
    "cache-control",
    "expires",
    "etag",
    "last-modified",
    "vary",
    "location",
    "retry-after",
    "link",
    "allow",
];

/// `x-` headers the edge sets itself, which a handler may not forge: the request id, and
/// `nosniff`.
pub const EDGE_X_HEADERS: [&str; 2] = ["x-request-id", "x-content-type-options"];

/// `x-` prefixes a handler may not use: look-alikes of the edge's `RateLimit-*` answer,
/// and the forwarding headers of proxies.
pub const EDGE_X_PREFIXES: [&str; 2] = ["x-ratelimit-", "x-forwarded-"];

/// Whether a handler may set the header `name` (lowercase, as [`HeaderName`] has it); see
/// [`HANDLER_HEADERS`].
pub fn handler_may_set(name: &str) -> bool {
    HANDLER_HEADERS.contains(&name)
        || (name.starts_with("x-")
            && !EDGE_X_HEADERS.contains(&name)
            && !EDGE_X_PREFIXES.iter().any(|p| name.starts_with(p)))
}

fn handler_error(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "handler-error", detail)
}

/// The HTTP answer of a handler's result. A JSON answer over [`INLINE_READ_BYTES`] is
/// read on a blocking thread, at most [`MAX_BLOCKING_READS`] at once.
pub async fn reply(result: InvokeResult) -> Result<Response, ApiError> {
    if result.kind() != ResultKind::Json || result.body.len() <= INLINE_READ_BYTES {
        return reply_now(result);
    }
    // The semaphore is never closed.
    let _turn = BLOCKING_READS.acquire().await.map_err(|_| unreadable())?;
    tokio::task::spawn_blocking(move || json(result.body)).await.unwrap_or_else(|_| Err(unreadable()))
}

fn unreadable() -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "bad-gateway", "the API's answer could not be read")
}

/// [`reply`], on the calling thread.
fn reply_now(result: InvokeResult) -> Result<Response, ApiError> {
    match result.kind() {
        ResultKind::Error => Err(handler_error(capped_text(&result.body, MAX_ERROR_DETAIL))),
        ResultKind::Text => Ok(plain(StatusCode::OK, Some(TEXT), result.body)),
        ResultKind::Json => json(result.body),
        ResultKind::Unspecified => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad-gateway",
            "the API's host answered with a result of no known kind",
        )),
    }
}

/// At most `max` bytes of `bytes` as text, cut at a character boundary.
fn capped_text(bytes: &[u8], max: usize) -> String {
    // Only what can be shown is decoded (a character is at most 4 bytes).
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max + 4)]);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn plain(status: StatusCode, content_type: Option<&'static str>, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

/// A JSON result: the proxy shape when it is one, else the value itself as a 200.
fn json(body: Vec<u8>) -> Result<Response, ApiError> {
    // Only an object can be the proxy shape; anything else passes through unparsed.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(plain(StatusCode::OK, Some(JSON), body));
    }
    match shape::read(&body).map_err(|_| handler_error("the handler's answer is not valid JSON"))? {
        Some(shape) => proxy(shape),
        None => Ok(plain(StatusCode::OK, Some(JSON), body)),
    }
}

fn proxy(shape: Shape) -> Result<Response, ApiError> {
    let Shape { status: code, headers, body, base64 } = shape;
    if code < 200 {
        return Err(handler_error(format!("statusCode {code} is informational and cannot end a call")));
    }
    let status = StatusCode::from_u16(code).map_err(|_| handler_error(format!("statusCode {code} is not valid")))?;
    let (body, default_type) = match body {
        None | Some(Value::Null) => (Vec::new(), None),
        Some(Value::String(s)) if base64 => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|_| handler_error("the handler's body is marked isBase64Encoded but is not valid base64"))?;
            (bytes, Some(BINARY))
        }
        Some(Value::String(s)) => (s.into_bytes(), Some(TEXT)),
        Some(other) => (serde_json::to_vec(&other).unwrap_or_default(), Some(JSON)),
    };
    let mut resp = plain(status, None, body);
    for (name, value) in headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let Ok(value) = HeaderValue::from_str(&value) else {
            continue;
        };
        if handler_may_set(name.as_str()) {
            resp.headers_mut().insert(name, value);
        }
    }
    if let Some(ct) = default_type
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::json;

    use super::*;

    fn result(kind: ResultKind, body: &[u8]) -> InvokeResult {
        InvokeResult { kind: kind as i32, body: body.to_vec(), duration_ms: 1 }
    }

    fn json_result(v: Value) -> InvokeResult {
        result(ResultKind::Json, &serde_json::to_vec(&v).expect("json"))
    }

    async fn parts(resp: Response) -> (u16, Option<String>, Vec<u8>) {
        let status = resp.status().as_u16();
        let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec();
        (status, ct, body)
    }

    #[tokio::test]
    async fn a_plain_value_is_a_200_json() {
        let (s, ct, b) = parts(reply_now(json_result(json!({"hello": "world"}))).expect("ok")).await;
        assert_eq!((s, ct.as_deref()), (200, Some(JSON)));
        assert_eq!(serde_json::from_slice::<Value>(&b).expect("json"), json!({"hello": "world"}));
        let (s, _, b) = parts(reply_now(json_result(json!([1, 2]))).expect("ok")).await;
        assert_eq!((s, b.as_slice()), (200, b"[1,2]".as_slice()));
        // statusCode out of range, or not an integer: an ordinary value.
        for v in [json!({"statusCode": 700}), json!({"statusCode": "201"}), json!({"statusCode": 201.5})] {
            let (s, _, b) = parts(reply_now(json_result(v.clone())).expect("ok")).await;
            assert_eq!(s, 200);
            assert_eq!(serde_json::from_slice::<Value>(&b).expect("json"), v);
        }
    }

    #[tokio::test]
    async fn text_and_errors() {
        let (s, ct, b) = parts(reply_now(result(ResultKind::Text, b"<obj>")).expect("ok")).await;
        assert_eq!((s, ct.as_deref(), b.as_slice()), (200, Some(TEXT), b"<obj>".as_slice()));
        let e = reply_now(result(ResultKind::Error, b"ZeroDivisionError: division by zero")).expect_err("error");
        assert_eq!(
            (e.status, e.kind, e.detail.as_str()),
            (StatusCode::BAD_GATEWAY, "handler-error", "ZeroDivisionError: division by zero")
        );
        let long = "é".repeat(3000);
        let e = reply_now(result(ResultKind::Error, long.as_bytes())).expect_err("error");
        assert!(e.detail.len() <= MAX_ERROR_DETAIL + "…".len());
        assert!(reply_now(result(ResultKind::Unspecified, b"")).is_err());
        assert!(reply_now(result(ResultKind::Json, b"{not json")).is_err());
    }

    #[tokio::test]
    async fn the_proxy_shape_sets_status_headers_and_body() {
        let v = json!({
            "statusCode": 201,
            "headers": {"X-Custom": "yes", "Set-Cookie": "s=1", "Content-Length": "9", "Connection": "close",
                        "x-number": 5, "bad name": "v", "x-request-id": "forged"},
            "body": "created",
        });
        let resp = reply_now(json_result(v)).expect("ok");
        assert_eq!(resp.headers().get("x-custom").and_then(|v| v.to_str().ok()), Some("yes"));
        for absent in ["set-cookie", "connection", "x-number", "x-request-id"] {
            assert!(resp.headers().get(absent).is_none(), "{absent}");
        }
        let (s, ct, b) = parts(resp).await;
        assert_eq!((s, ct.as_deref(), b.as_slice()), (201, Some(TEXT), b"created".as_slice()));
    }

    #[test]
    fn only_allowlisted_headers_pass() {
        let v = json!({
            "statusCode": 200,
            "headers": {
                "Clear-Site-Data": "\"*\"", "Strict-Transport-Security": "max-age=1", "Set-Cookie": "s=1",
                "Alt-Svc": "h3=\":443\"", "NEL": "{}", "Report-To": "{}", "Accept-CH": "Sec-CH-UA",
                "WWW-Authenticate": "Basic", "Service-Worker-Allowed": "/", "Access-Control-Allow-Origin": "*",
                "Content-Security-Policy": "default-src *", "Refresh": "0;url=/", "Transfer-Encoding": "chunked",
                "RateLimit-Remaining": "999", "X-RateLimit-Remaining": "999", "X-Forwarded-For": "1.2.3.4",
                "X-Content-Type-Options": "sniff", "X-Request-Id": "forged",
                "Content-Type": "text/csv", "Content-Language": "ar", "Content-Disposition": "attachment",
                "Content-Encoding": "gzip", "Content-Range": "bytes 0-1/2", "Accept-Ranges": "bytes",
                "Cache-Control": "no-store", "Expires": "0", "ETag": "\"v1\"", "Last-Modified": "Tue, 01 Dec 2026 00:00:00 GMT",
                "Vary": "Accept", "Location": "/next", "Retry-After": "5", "Link": "</a>; rel=next", "Allow": "GET",
                "X-Custom": "kept", "x-frame-options": "DENY",
            },
            "body": "b",
        });
        let resp = reply_now(json_result(v)).expect("ok");
        let mut got: Vec<&str> = resp.headers().keys().map(HeaderName::as_str).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = HANDLER_HEADERS.iter().copied().chain(["x-custom", "x-frame-options"]).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(resp.headers().get("x-custom").and_then(|v| v.to_str().ok()), Some("kept"));
        for name in ["x-anything", "x-api-version", "content-type", "link"] {
            assert!(handler_may_set(name), "{name}");
        }
        for name in ["x-ratelimit-limit", "x-forwarded-host", "x-request-id", "x-content-type-options", "xylophone", "set-cookie"] {
            assert!(!handler_may_set(name), "{name}");
        }
    }

    #[tokio::test]
    async fn large_answers_are_read_off_the_workers_all_the_same() {
        let filler = "f".repeat(2 * INLINE_READ_BYTES);
        // No proxy shape: passed on as it came.
        let plain = json_result(json!({"filler": filler, "n": 1}));
        let sent = plain.body.clone();
        let (s, ct, b) = parts(reply(plain).await.expect("ok")).await;
        assert_eq!((s, ct.as_deref(), b), (200, Some(JSON), sent));
        // The proxy shape, its keys after a large one.
        let v = json!({"filler": filler, "statusCode": 201, "headers": {"x-a": "b"}, "body": "made"});
        let (s, ct, b) = parts(reply(json_result(v)).await.expect("ok")).await;
        assert_eq!((s, ct.as_deref(), b.as_slice()), (201, Some(TEXT), b"made".as_slice()));
        let mut bad = serde_json::to_vec(&json!({"filler": filler})).expect("json");
        bad.push(b'}');
        let e = reply(result(ResultKind::Json, &bad)).await.expect_err("invalid");
        assert_eq!((e.status, e.kind), (StatusCode::BAD_GATEWAY, "handler-error"));
    }

    #[tokio::test]
    async fn proxy_bodies_by_type() {
        let (s, ct, b) =
            parts(reply_now(json_result(json!({"statusCode": 404, "body": {"error": "nope"}}))).expect("ok")).await;
        assert_eq!((s, ct.as_deref()), (404, Some(JSON)));
        assert_eq!(serde_json::from_slice::<Value>(&b).expect("json"), json!({"error": "nope"}));

        let (s, ct, b) = parts(reply_now(json_result(json!({"statusCode": 204}))).expect("ok")).await;
        assert_eq!((s, ct, b.len()), (204, None, 0));

        let v = json!({"statusCode": 200, "body": "/wD+", "isBase64Encoded": true, "headers": {"content-type": "image/png"}});
        let (s, ct, b) = parts(reply_now(json_result(v)).expect("ok")).await;
        assert_eq!((s, ct.as_deref(), b.as_slice()), (200, Some("image/png"), [0xff, 0x00, 0xfe].as_slice()));

        let v = json!({"statusCode": 200, "body": "not base64!", "isBase64Encoded": true});
        assert_eq!(reply_now(json_result(v)).expect_err("bad base64").status, StatusCode::BAD_GATEWAY);

        let v = json!({"statusCode": 100, "body": ""});
        assert_eq!(reply_now(json_result(v)).expect_err("1xx").status, StatusCode::BAD_GATEWAY);

        let v = json!({"statusCode": 302, "headers": {"location": "/elsewhere"}});
        let resp = reply_now(json_result(v)).expect("ok");
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers().get("location").and_then(|v| v.to_str().ok()), Some("/elsewhere"));
    }
}
