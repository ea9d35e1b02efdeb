//! Query strings as the edge reads them: form-decoded name → value pairs. Pure.
use std::collections::BTreeMap;

/// A query string as name → value, form-decoded (`+` is a space); the last of a repeated
/// name wins. Bytes that are not UTF-8 after decoding are replaced.
pub fn parse_query(raw: &str) -> BTreeMap<String, String> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space.
fn form_decode(s: &str) -> String {
    percent_decode(s, true)
}

/// `s` with every `%XX` decoded (a `%` not followed by two hex digits is kept as it is);
/// with `plus_is_space` a `+` becomes a space, as in a form, otherwise it stays, as in a
/// path. Bytes that are not UTF-8 after decoding are replaced.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_decoded_and_the_last_value_wins() {
        let q = parse_query("a=1&a=2&name=J%C3%B6rg+M&flag&=empty&bad=%zz%4&&enc%20key=v");
        let get = |k: &str| q.get(k).map(String::as_str);
        assert_eq!(get("a"), Some("2"));
        assert_eq!(get("name"), Some("Jörg M"));
        assert_eq!(get("flag"), Some(""));
        assert_eq!(get(""), Some("empty"));
        assert_eq!(get("bad"), Some("%zz%4"));
        assert_eq!(get("enc key"), Some("v"));
        assert!(parse_query("").is_empty());
        assert_eq!(parse_query("x=%FF").get("x").map(String::as_str), Some("\u{fffd}"));
    }
}
