//! The Lambda proxy shape read out of a handler's JSON answer: only its four keys, each
//! only as far as the answer uses it, every other key skipped without being built. No
//! `serde_json::Value` of the whole answer is made; only a proxy answer's `body`, when it
//! is not a string, becomes one. Pure; `reply` runs it off the async workers when the
//! answer is large.
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Most headers a handler may set; the rest are skipped unread.
pub const MAX_HEADERS: usize = 100;

/// A proxy answer's keys, as far as they are usable.
#[derive(Debug, Default, PartialEq)]
pub struct Shape {
    /// `statusCode`, an integer in 100..=599.
    pub status: u16,
    /// The first [`MAX_HEADERS`] entries of `headers` whose value is a string.
    pub headers: Vec<(String, String)>,
    /// `body`, when present and not null.
    pub body: Option<Value>,
    /// `isBase64Encoded` is `true`.
    pub base64: bool,
}

/// The proxy shape of `answer`, a JSON object: `None` when its `statusCode` is missing or
/// not an integer in 100..=599 (the answer is then an ordinary value). An error when
/// `answer` is not valid JSON.
pub fn read(answer: &[u8]) -> Result<Option<Shape>, serde_json::Error> {
    // First only `statusCode`, skipping all else (but checking it all: trailing bytes
    // make it invalid): most answers are no proxy shape, and theirs are not built at all.
    let mut de = serde_json::Deserializer::from_slice(answer);
    let first = ShapeSeed { full: false }.deserialize(&mut de)?;
    de.end()?;
    if first.status.is_none() {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_slice(answer);
    let found = ShapeSeed { full: true }.deserialize(&mut de)?;
    de.end()?;
    Ok(found.status.map(|status| Shape {
        status,
        headers: found.headers,
        body: found.body.filter(|b| !b.is_null()),
        base64: found.base64,
    }))
}

#[derive(Default)]
struct Found {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    base64: bool,
}

/// The top-level object; with `full` false, only `statusCode` is read.
struct ShapeSeed {
    full: bool,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Found;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    // A key given twice counts as its last value, as in a parsed object.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Status => {
                    found.status = match map.next_value_seed(Scalar { keep_str: false })? {
                        Lenient::Uint(n @ 100..=599) => u16::try_from(n).ok(),
                        _ => None,
                    };
                }
                Key::Headers if self.full => found.headers = map.next_value_seed(HeadersSeed)?,
                Key::Body if self.full => found.body = Some(map.next_value()?),
                Key::Base64 if self.full => {
                    found.base64 = matches!(map.next_value_seed(Scalar { keep_str: false })?, Lenient::Bool(true));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

enum Key {
    Status,
    Headers,
    Body,
    Base64,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "statusCode" => Key::Status,
            "headers" => Key::Headers,
            "body" => Key::Body,
            "isBase64Encoded" => Key::Base64,
            _ => Key::Other,
        })
    }
}

/// Any JSON value, kept only when it is an unsigned integer, a boolean, or (when asked)
/// a string; arrays and objects are skipped.
enum Lenient {
    Uint(u64),
    Bool(bool),
    Str(String),
    Other,
}

struct Scalar {
    keep_str: bool,
}

impl<'de> DeserializeSeed<'de> for Scalar {
    type Value = Lenient;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Lenient, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar {
    type Value = Lenient;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Lenient, E> {
        Ok(Lenient::Uint(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Lenient, E> {
        Ok(u64::try_from(n).map_or(Lenient::Other, Lenient::Uint))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lenient, E> {
        Ok(Lenient::Other)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Lenient, E> {
        Ok(Lenient::Bool(b))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Lenient, E> {
        Ok(if self.keep_str { Lenient::Str(s.to_owned()) } else { Lenient::Other })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Lenient, E> {
        Ok(Lenient::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Lenient::Other)
    }
}

/// `headers`: the string values among its first [`MAX_HEADERS`] entries; anything but
/// an object is no headers.
struct HeadersSeed;

impl<'de> DeserializeSeed<'de> for HeadersSeed {
    type Value = Vec<(String, String)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeadersSeed {
    type Value = Vec<(String, String)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of headers")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut headers = Vec::new();
        let mut seen = 0;
        while let Some(name) = map.next_key::<String>()? {
            seen += 1;
            if seen > MAX_HEADERS {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if let Lenient::Str(value) = map.next_value_seed(Scalar { keep_str: true })? {
                headers.push((name, value));
            }
        }
        Ok(headers)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Scalar { keep_str: false }.visit_seq(seq).map(|_| Vec::new())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape(v: &Value) -> Option<Shape> {
        read(&serde_json::to_vec(v).expect("json")).expect("valid")
    }

    #[test]
    fn only_a_valid_status_code_makes_the_shape() {
        for v in [
            json!({}),
            json!({"statusCode": 700}),
            json!({"statusCode": 99}),
            json!({"statusCode": -200}),
            json!({"statusCode": "201"}),
            json!({"statusCode": 201.5}),
            json!({"statusCode": [201]}),
            json!({"statusCode": {"code": 201}}),
            json!({"statusCode": null, "body": "x"}),
        ] {
            assert_eq!(shape(&v), None, "{v}");
        }
        let s = shape(&json!({"statusCode": 201, "other": {"deep": [1, 2, {"x": "y"}]}})).expect("shape");
        assert_eq!(s, Shape { status: 201, ..Shape::default() });
        // A key given twice counts as its last value, as a parsed object has it.
        assert_eq!(read(br#"{"statusCode":200,"statusCode":"no"}"#).expect("valid"), None);
        assert_eq!(read(br#"{"statusCode":"no","statusCode":204}"#).expect("valid").map(|s| s.status), Some(204));
    }

    #[test]
    fn the_keys_are_read_leniently_and_headers_are_bounded() {
        let mut headers = serde_json::Map::new();
        for i in 0..150 {
            headers.insert(format!("x-h{i:03}"), json!("v"));
        }
        headers.insert("x-000-number".into(), json!(5));
        let s = shape(&json!({"statusCode": 200, "headers": headers, "body": {"a": [1]}, "isBase64Encoded": "yes"}))
            .expect("shape");
        assert_eq!(s.headers.len(), MAX_HEADERS - 1, "the first 100 entries, less the one that is no string");
        assert_eq!((s.body, s.base64), (Some(json!({"a": [1]})), false));
        for headers in [json!(null), json!([["a", "b"]]), json!("a: b"), json!(1)] {
            let s = shape(&json!({"statusCode": 200, "headers": headers, "body": null, "isBase64Encoded": true}))
                .expect("shape");
            assert_eq!((s.headers.len(), s.body, s.base64), (0, None, true));
        }
    }

    #[test]
    fn invalid_json_is_an_error_either_way() {
        for bad in [&b"{not json"[..], b"{\"a\":1} trailing", b"{\"statusCode\":200,", b"{\"statusCode\":200} x"] {
            assert!(read(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
