//! The event a handler receives for one call, in the Lambda proxy shape:
//! `{method, path, query, rawQuery, headers, body, isBase64Encoded}`. Pure.
use std::{borrow::Cow, collections::BTreeMap};

use axum::http::{HeaderMap, header};
use base64::Engine;
use serde::Serialize;

/// Headers that describe one hop, not the call (RFC 9110 §7.6.1), and never reach a handler.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Credentials meant for the edge; a handler never sees them.
const EDGE_CREDENTIALS: [&str; 2] = ["authorization", "x-api-key"];

/// The parts of a request that make an event.
pub struct CallRequest<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path after the slug, starting with `/`, still percent-encoded.
    pub path: &'a str,
    /// The query string without `?`; empty when none.
    pub raw_query: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The request's body.
    pub body: &'a [u8],
    /// The edge's id of this request, passed on as `x-request-id`.
    pub request_id: &'a str,
}

#[derive(Serialize)]
struct Event<'a> {
    method: &'a str,
    path: &'a str,
    query: BTreeMap<String, String>,
    #[serde(rename = "rawQuery")]
    raw_query: &'a str,
    headers: BTreeMap<&'a str, String>,
    body: Cow<'a, str>,
    #[serde(rename = "isBase64Encoded")]
    is_base64_encoded: bool,
}

/// The event as JSON bytes.
pub fn build(req: &CallRequest<'_>) -> Vec<u8> {
    let (body, is_base64_encoded) = match std::str::from_utf8(req.body) {
        Ok(text) => (Cow::Borrowed(text), false),
        Err(_) => (Cow::Owned(base64::engine::general_purpose::STANDARD.encode(req.body)), true),
    };
    let event = Event {
        method: req.method,
        path: req.path,
        query: crate::query::parse_query(req.raw_query),
        raw_query: req.raw_query,
        headers: forwarded_headers(req.headers, req.request_id),
        body,
        is_base64_encoded,
    };
    // Serialising maps of strings cannot fail; an empty object would be the only outcome.
    serde_json::to_vec(&event).unwrap_or_else(|_| b"{}".to_vec())
}

/// The headers a handler sees: lowercase names, repeated values joined with `, `, without
/// hop-by-hop headers (including those `Connection` names) or the edge's credentials,
/// and with the edge's `x-request-id`.
fn forwarded_headers<'a>(headers: &'a HeaderMap, request_id: &str) -> BTreeMap<&'a str, String> {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let mut out = BTreeMap::new();
    for name in headers.keys() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || EDGE_CREDENTIALS.contains(&n) || named_by_connection.iter().any(|c| c == n) {
            continue;
        }
        let joined =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect::<Vec<_>>().join(", ");
        out.insert(n, joined);
    }
    out.insert("x-request-id", request_id.to_owned());
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::{Value, json};

    use super::*;

    fn event(method: &str, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> Value {
        let req = CallRequest { method, path, raw_query: query, headers, body, request_id: "req-1" };
        serde_json::from_slice(&build(&req)).expect("event is JSON")
    }

    #[test]
    fn a_text_call_makes_a_plain_event() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let e = event("POST", "/users/7", "a=1&b=two", &h, br#"{"x":1}"#);
        assert_eq!(
            e,
            json!({
                "method": "POST",
                "path": "/users/7",
                "query": {"a": "1", "b": "two"},
                "rawQuery": "a=1&b=two",
                "headers": {"content-type": "application/json", "x-request-id": "req-1"},
                "body": "{\"x\":1}",
                "isBase64Encoded": false,
            })
        );
    }

    #[test]
    fn a_binary_body_is_base64() {
        let e = event("PUT", "/", "", &HeaderMap::new(), &[0xff, 0x00, 0xfe]);
        assert_eq!(e["body"], "/wD+");
        assert_eq!(e["isBase64Encoded"], true);
        let e = event("GET", "/", "", &HeaderMap::new(), b"");
        assert_eq!((e["body"].as_str(), e["isBase64Encoded"].as_bool()), (Some(""), Some(false)));
    }

    #[test]
    fn hop_by_hop_and_credentials_are_removed() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("authorization", "Bearer secret"),
            ("x-api-key", "sk_live"),
            ("cookie", "a=1"),
            ("x-request-id", "client-chosen"),
        ] {
            h.insert(axum::http::HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h.append("accept", HeaderValue::from_static("text/html"));
        h.append("accept", HeaderValue::from_static("application/json"));
        let e = event("GET", "/", "", &h, b"");
        assert_eq!(
            e["headers"],
            json!({"accept": "text/html, application/json", "cookie": "a=1", "x-request-id": "req-1"})
        );
    }
}
