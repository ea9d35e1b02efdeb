//! Who calls on the data path: an API key in `X-API-Key` (and only there), or a bearer
//! token. A key in the URL is refused before anything else, so it never reaches a
//! handler or a log. Keys are looked up by their SHA-256; the key itself is never kept.
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::AccessTable;
use crate::{
    error::{ApiError, Result},
    extract::bearer,
    followed::Followed,
    verifier::Verifier,
};

/// The prefix of every API key: `souq_<prefix>_<secret>`.
pub const KEY_PREFIX: &str = "souq_";
/// Characters after [`KEY_PREFIX`] that make a value look like a key: shorter runs (say,
/// `souq_is_great`) are ordinary text.
const KEY_LOOKALIKE_TAIL: usize = 20;
/// Longest `X-API-Key` value considered.
const MAX_KEY_LEN: usize = 256;

/// The name of the API-key header.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The authenticated caller of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCaller {
    /// The user: the key's owner, or the token's subject.
    pub user_id: String,
    /// The key used, if one was.
    pub key_id: Option<String>,
}

/// The credential a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `X-API-Key: <key>`.
    Key(&'a str),
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
}

/// Whether `s` holds something shaped like an API key.
pub fn looks_like_key(s: &str) -> bool {
    s.match_indices(KEY_PREFIX).any(|(i, _)| {
        s[i + KEY_PREFIX.len()..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .nth(KEY_LOOKALIKE_TAIL - 1)
            .is_some()
    })
}

/// A 400 when any name or value of the query string (decoded) looks like an API key.
pub fn refuse_key_in_query(raw_query: Option<&str>) -> Result<()> {
    let Some(raw) = raw_query.filter(|q| !q.is_empty()) else {
        return Ok(());
    };
    let leaked = looks_like_key(raw)
        || crate::query::parse_query(raw).iter().any(|(k, v)| looks_like_key(k) || looks_like_key(v));
    if leaked {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "api-key-in-url",
            "API keys go in the X-API-Key header, never in the URL",
        ));
    }
    Ok(())
}

/// The credential of `headers`: one `X-API-Key`, or a bearer token; never both.
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>> {
    let mut keys = headers.get_all(API_KEY_HEADER).iter();
    let Some(key) = keys.next() else {
        if !headers.contains_key(axum::http::header::AUTHORIZATION) {
            return Err(ApiError::unauthenticated(
                "missing credentials: send your API key in X-API-Key (or, as the API's owner, Authorization: Bearer <token>)",
            ));
        }
        return bearer(headers).map(Credential::Bearer);
    };
    if keys.next().is_some() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "send one X-API-Key header"));
    }
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "send either X-API-Key or Authorization, not both",
        ));
    }
    key.to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .map(Credential::Key)
        .ok_or_else(invalid_key)
}

fn invalid_key() -> ApiError {
    ApiError::unauthenticated("invalid or revoked API key")
}

/// The SHA-256 of a whole key, as the access table indexes keys.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The caller of a call: 401 for an unknown or revoked key or a bad token; 503 while the
/// edge has not yet received an access table (it cannot tell a key from a forgery).
pub fn authenticate(access: &Followed<AccessTable>, verifier: &Verifier, headers: &HeaderMap) -> Result<CallCaller> {
    match credential(headers)? {
        Credential::Bearer(token) => Ok(CallCaller { user_id: verifier.verify(token)?, key_id: None }),
        Credential::Key(key) => {
            if !key.starts_with(KEY_PREFIX) {
                return Err(invalid_key());
            }
            if !access.has_table() {
                return Err(ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the edge is not ready for API keys yet",
                    )
                });
            }
            let table = access.snapshot();
            let owner = table.key(&key_hash(key)).ok_or_else(invalid_key)?;
            Ok(CallCaller { user_id: owner.user_id.clone(), key_id: Some(owner.key_id.clone()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use souq_proto::metering::{AccessTable as WireTable, KeyEntry};

    use super::*;

    const KEY: &str = "souq_ab12cd34_0123456789abcdefghijklmn";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn keys_come_only_from_the_header() {
        assert_eq!(credential(&headers(&[("x-api-key", KEY)])).expect("key"), Credential::Key(KEY));
        assert_eq!(credential(&headers(&[("x-api-key", &format!(" {KEY} "))])).expect("key"), Credential::Key(KEY));
        assert_eq!(credential(&headers(&[("authorization", "Bearer t")])).expect("bearer"), Credential::Bearer("t"));
        let e = credential(&headers(&[])).expect_err("none");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        // Other headers never carry a key.
        let e = credential(&headers(&[("api-key", KEY), ("x-forwarded-for", "1.2.3.4")])).expect_err("none");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = credential(&headers(&[("x-api-key", KEY), ("x-api-key", KEY)])).expect_err("two");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = credential(&headers(&[("x-api-key", KEY), ("authorization", "Bearer t")])).expect_err("both");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = credential(&headers(&[("x-api-key", "  ")])).expect_err("blank");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn a_key_in_the_url_is_refused() {
        for q in [
            format!("api_key={KEY}"),
            format!("a=1&key={KEY}&b=2"),
            KEY.to_owned(),
            // Encoded, it is still a key.
            format!("k={}", KEY.replace('_', "%5F")),
        ] {
            let e = refuse_key_in_query(Some(&q)).expect_err(&q);
            assert_eq!((e.status, e.kind), (StatusCode::BAD_REQUEST, "api-key-in-url"), "{q}");
            assert_eq!(e.detail, "API keys go in the X-API-Key header, never in the URL");
        }
        for q in [None, Some(""), Some("q=souq_is_great"), Some("a=1&b=souq_"), Some("souq=1")] {
            assert!(refuse_key_in_query(q).is_ok(), "{q:?}");
        }
    }

    #[test]
    fn keys_are_looked_up_by_hash() {
        let access = Followed::<AccessTable>::default();
        let verifier = Verifier::default();
        let h = headers(&[("x-api-key", KEY)]);
        // No table yet: not ready, rather than a misleading 401.
        assert_eq!(authenticate(&access, &verifier, &h).expect_err("no table").status, StatusCode::SERVICE_UNAVAILABLE);
        access.install(WireTable {
            generation: 1,
            keys: vec![KeyEntry { sha256: key_hash(KEY).to_vec(), key_id: "k1".into(), user_id: "u1".into() }],
            grants: vec![],
        });
        assert_eq!(
            authenticate(&access, &verifier, &h).expect("known"),
            CallCaller { user_id: "u1".into(), key_id: Some("k1".into()) }
        );
        let other = headers(&[("x-api-key", "souq_ab12cd34_someotherkeyxxxxxxxxxxxxxx")]);
        assert_eq!(authenticate(&access, &verifier, &other).expect_err("unknown").status, StatusCode::UNAUTHORIZED);
        let junk = headers(&[("x-api-key", "sk_live_123")]);
        assert_eq!(authenticate(&access, &verifier, &junk).expect_err("junk").status, StatusCode::UNAUTHORIZED);
        // Revoked: gone from the next table.
        access.install(WireTable { generation: 2, keys: vec![], grants: vec![] });
        assert_eq!(authenticate(&access, &verifier, &h).expect_err("revoked").status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn the_hash_is_sha256_of_the_whole_key() {
        // sha256("abc")
        assert_eq!(key_hash("abc")[..4], [0xba, 0x78, 0x16, 0xbf],);
    }
}
