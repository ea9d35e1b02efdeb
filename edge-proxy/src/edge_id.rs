//! The edge's id: the name of its metering stream. Given by the operator, or derived from
//! the host's name and the edge's listen address, which stay the same across restarts
//! of the same edge (so a restarted edge flushes what the last one left).
use std::net::SocketAddr;

/// Longest edge id.
pub const MAX_LEN: usize = 100;

/// Whether `c` may appear in an edge id: it names a Redis key and prefixes batch ids
/// (`<id>/<position>`), so no `/`, no spaces.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// Checks an operator's edge id; the error says what it must be.
pub fn validate(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_LEN || !id.chars().all(allowed) {
        return Err(format!("must be 1 to {MAX_LEN} characters of letters, digits, '.', '_', ':' and '-'"));
    }
    Ok(())
}

/// `<hostname>-<addr>`, with anything not allowed replaced by `_`.
pub fn derive(hostname: &str, addr: Option<SocketAddr>) -> String {
    let host = if hostname.trim().is_empty() { "edge" } else { hostname.trim() };
    let raw = match addr {
        Some(a) => format!("{host}-{a}"),
        None => host.to_owned(),
    };
    raw.chars().map(|c| if allowed(c) { c } else { '_' }).take(MAX_LEN).collect()
}

/// This host's name, as the kernel has it; empty when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_valid_and_stable() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(derive("web-1", Some(addr)), "web-1-127.0.0.1:8080");
        assert_eq!(derive("", None), "edge");
        let v6: SocketAddr = "[::1]:80".parse().expect("addr");
        let id = derive("a b/c", Some(v6));
        assert_eq!(id, "a_b_c-_::1_:80");
        assert!(validate(&id).is_ok());
        assert_eq!(derive(&"h".repeat(300), None).len(), MAX_LEN);
    }

    #[test]
    fn operator_ids_are_checked() {
        assert!(validate("edge-eu-1").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(MAX_LEN + 1)] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
