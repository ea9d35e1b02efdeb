//! A handler's result as the HTTP answer: a plain value is a 200, the Lambda proxy shape
//! `{statusCode, headers, body, isBase64Encoded}` sets the status, headers and body, and a
//! handler error is a 502 problem. Pure.
use axum::{
    body::Body,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::Response,
};
use base64::Engine;
use serde_json::{Map, Value};
use souq_proto::agent::{InvokeResult, ResultKind};

use super::event::HOP_BY_HOP;
use crate::error::ApiError;

/// Longest handler error message shown to the caller.
pub const MAX_ERROR_DETAIL: usize = 4096;
/// Most headers a handler may set.
const MAX_HEADERS: usize = 100;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

/// Headers a handler may not set:
/// - hop-by-hop ones, and `content-length`, which describe this edge's connection;
/// - `x-request-id`, which is the edge's;
/// - `set-cookie`: every API shares the edge's origin, so one API's cookie would reach
///   every other API (and could fixate their sessions). APIs that need state use tokens.
fn handler_may_set(name: &str) -> bool {
    !(HOP_BY_HOP.contains(&name) || matches!(name, "content-length" | "x-request-id" | "set-cookie"))
}

fn handler_error(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "handler-error", detail)
}

/// The HTTP answer of a handler's result.
pub fn reply(result: InvokeResult) -> Result<Response, ApiError> {
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
    let text = String::from_utf8_lossy(bytes);
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
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| handler_error("the handler's answer is not valid JSON"))?;
    match value {
        Value::Object(obj) if proxy_status(&obj).is_some() => proxy(obj),
        _ => Ok(plain(StatusCode::OK, Some(JSON), body)),
    }
}

/// The integer `statusCode` in 100..=599 that marks the proxy shape.
fn proxy_status(obj: &Map<String, Value>) -> Option<u16> {
    let code = obj.get("statusCode")?.as_u64()?;
    (100..=599).contains(&code).then(|| u16::try_from(code).ok()).flatten()
}

fn proxy(mut obj: Map<String, Value>) -> Result<Response, ApiError> {
    let code = proxy_status(&obj).unwrap_or(200);
    if code < 200 {
        return Err(handler_error(format!("statusCode {code} is informational and cannot end a call")));
    }
    let status = StatusCode::from_u16(code).map_err(|_| handler_error(format!("statusCode {code} is not valid")))?;
    let base64 = obj.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false);
    let (body, default_type) = match obj.remove("body") {
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
    if let Some(Value::Object(headers)) = obj.get("headers") {
        for (name, value) in headers.iter().take(MAX_HEADERS) {
            let Value::String(value) = value else {
                continue;
            };
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let Ok(value) = HeaderValue::from_str(value) else {
                continue;
            };
            if handler_may_set(name.as_str()) {
                resp.headers_mut().insert(name, value);
            }
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
        let (s, ct, b) = parts(reply(json_result(json!({"hello": "world"}))).expect("ok")).await;
        assert_eq!((s, ct.as_deref()), (200, Some(JSON)));
        assert_eq!(serde_json::from_slice::<Value>(&b).expect("json"), json!({"hello": "world"}));
        let (s, _, b) = parts(reply(json_result(json!([1, 2]))).expect("ok")).await;
        assert_eq!((s, b.as_slice()), (200, b"[1,2]".as_slice()));
        // statusCode out of range, or not an integer: an ordinary value.
        for v in [json!({"statusCode": 700}), json!({"statusCode": "201"}), json!({"statusCode": 201.5})] {
            let (s, _, b) = parts(reply(json_result(v.clone())).expect("ok")).await;
            assert_eq!(s, 200);
            assert_eq!(serde_json::from_slice::<Value>(&b).expect("json"), v);
        }
    }

    #[tokio::test]
    async fn text_and_errors() {
        let (s, ct, b) = parts(reply(result(ResultKind::Text, b"<obj>")).expect("ok")).await;
        assert_eq!((s, ct.as_deref(), b.as_slice()), (200, Some(TEXT), b"<obj>".as_slice()));
        let e = reply(result(ResultKind::Error, b"ZeroDivisionError: division by zero")).expect_err("error");
        assert_eq!(
            (e.status, e.kind, e.detail.as_str()),
            (StatusCode::BAD_GATEWAY, "handler-error", "ZeroDivisionError: division by zero")
        );
        let long = "é".repeat(3000);
        let e = reply(result(ResultKind::Error, long.as_bytes())).expect_err("error");
        assert!(e.detail.len() <= MAX_ERROR_DETAIL + "…".len());
        assert!(reply(result(ResultKind::Unspecified, b"")).is_err());
        assert!(reply(result(ResultKind::Json, b"{not json")).is_err());
    }

    #[tokio::test]
    async fn the_proxy_shape_sets_status_headers_and_body() {
        let v = json!({
            "statusCode": 201,
            "headers": {"X-Custom": "yes", "Set-Cookie": "s=1", "Content-Length": "9", "Connection": "close",
                        "x-number": 5, "bad name": "v", "x-request-id": "forged"},
            "body": "created",
        });
        let resp = reply(json_result(v)).expect("ok");
        assert_eq!(resp.headers().get("x-custom").and_then(|v| v.to_str().ok()), Some("yes"));
        for absent in ["set-cookie", "connection", "x-number", "x-request-id"] {
            assert!(resp.headers().get(absent).is_none(), "{absent}");
        }
        let (s, ct, b) = parts(resp).await;
        assert_eq!((s, ct.as_deref(), b.as_slice()), (201, Some(TEXT), b"created".as_slice()));
    }

    #[tokio::test]
    async fn proxy_bodies_by_type() {
        let (s, ct, b) =
            parts(reply(json_result(json!({"statusCode": 404, "body": {"error": "nope"}}))).expect("ok")).await;
        assert_eq!((s, ct.as_deref()), (404, Some(JSON)));
        assert_eq!(serde_json::from_slice::<Value>(&b).expect("json"), json!({"error": "nope"}));

        let (s, ct, b) = parts(reply(json_result(json!({"statusCode": 204}))).expect("ok")).await;
        assert_eq!((s, ct, b.len()), (204, None, 0));

        let v = json!({"statusCode": 200, "body": "/wD+", "isBase64Encoded": true, "headers": {"content-type": "image/png"}});
        let (s, ct, b) = parts(reply(json_result(v)).expect("ok")).await;
        assert_eq!((s, ct.as_deref(), b.as_slice()), (200, Some("image/png"), [0xff, 0x00, 0xfe].as_slice()));

        let v = json!({"statusCode": 200, "body": "not base64!", "isBase64Encoded": true});
        assert_eq!(reply(json_result(v)).expect_err("bad base64").status, StatusCode::BAD_GATEWAY);

        let v = json!({"statusCode": 100, "body": ""});
        assert_eq!(reply(json_result(v)).expect_err("1xx").status, StatusCode::BAD_GATEWAY);

        let v = json!({"statusCode": 302, "headers": {"location": "/elsewhere"}});
        let resp = reply(json_result(v)).expect("ok");
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers().get("location").and_then(|v| v.to_str().ok()), Some("/elsewhere"));
    }
}
