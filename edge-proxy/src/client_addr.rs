//! Who the client is: the TCP peer, or, when the peer is a trusted proxy, the right-most
//! untrusted hop of `X-Forwarded-For`; and the key a client is counted by (an IPv6
//! client's /64, since one host commonly holds a whole /64).
use std::{
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use axum::http::{HeaderMap, header::HeaderName};

/// Most `X-Forwarded-For` hops looked at, from the right; a longer chain of trusted
/// proxies than this ends at the last hop looked at.
pub const MAX_HOPS: usize = 32;
/// Most entries in `--trusted-proxies`.
pub const MAX_TRUSTED: usize = 1024;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address as [`TrustedProxies::client`] settled it; the edge's accept loop
/// puts it in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or a CIDR such as 10.0.0.0/8 or 2001:db8::/32");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { net: mask(net, prefix), prefix })
    }
}

impl Cidr {
    /// Whether `ip` (IPv4-mapped IPv6 counting as IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

/// The peers whose `X-Forwarded-For` is believed (`--trusted-proxies`). Empty: none,
/// and the client is always the TCP peer.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses `--trusted-proxies`; the error names the bad entry.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        if list.len() > MAX_TRUSTED {
            return Err(format!("--trusted-proxies takes at most {MAX_TRUSTED} entries"));
        }
        let cidrs = list.iter().map(|s| s.parse::<Cidr>()).collect::<Result<Vec<_>, _>>();
        cidrs.map(TrustedProxies).map_err(|e| format!("--trusted-proxies {e}"))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers`. From an untrusted
    /// peer, the peer. From a trusted one, the right-most `X-Forwarded-For` hop that is
    /// not itself trusted (the hops left of it are whatever the client wrote); when
    /// every hop is trusted, the left-most one looked at. A header that is missing or
    /// malformed where it is read gives the peer.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Several header lines are one list, in order.
        let mut values = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            match value.to_str() {
                Ok(v) => values.push(v),
                Err(_) => return peer,
            }
        }
        let mut client = peer;
        for hop in values.iter().rev().flat_map(|v| v.rsplit(',')).take(MAX_HOPS) {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { return peer };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The key a client is counted by (throttles, audit): an IPv4 address as it is, an
/// IPv6 address's /64 as `2001:db8:1:2::/64`, and IPv4-mapped IPv6 as IPv4.
pub fn key(ip: IpAddr) -> String {
    match canonical(ip) {
        v4 @ IpAddr::V4(_) => v4.to_string(),
        v6 @ IpAddr::V6(_) => format!("{}/64", mask(v6, 64)),
    }
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `ip` with every bit past `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("valid")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, v.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.2.3/8".parse().expect("cidr");
        assert!(c.contains(ip("10.255.0.1")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.9")), "IPv4-mapped IPv6 is IPv4");
        let one: Cidr = "192.0.2.7".parse().expect("host");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        assert!("::/0".parse::<Cidr>().expect("all v6").contains(ip("2001:db8::1")));
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "example.com", "10.0.0/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        let e = TrustedProxies::parse(&["10.0.0.0/8".into(), "nope".into()]).expect_err("bad entry");
        assert!(e.starts_with("--trusted-proxies") && e.contains("nope"), "{e}");
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("127.0.0.1"), &xff(&["203.0.113.9"])), ip("127.0.0.1"));
        let some = trusted(&["10.0.0.0/8"]);
        assert_eq!(some.client(ip("192.0.2.1"), &xff(&["203.0.113.9"])), ip("192.0.2.1"), "untrusted peer");
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let peer = ip("10.0.0.1");
        assert_eq!(t.client(peer, &xff(&["203.0.113.9"])), ip("203.0.113.9"));
        // Spoofed hops left of the real client are never looked at, even malformed.
        assert_eq!(t.client(peer, &xff(&["1.1.1.1, garbage, 203.0.113.9"])), ip("203.0.113.9"));
        // Trusted hops on the right are skipped.
        assert_eq!(t.client(peer, &xff(&["6.6.6.6, 203.0.113.9, 10.0.0.2, 10.9.9.9"])), ip("203.0.113.9"));
        // Several header lines read as one list.
        assert_eq!(t.client(peer, &xff(&["6.6.6.6", "203.0.113.9, 10.0.0.2"])), ip("203.0.113.9"));
        assert_eq!(t.client(ip("2001:db8:ffff::1"), &xff(&["2001:db8:1:2::5"])), ip("2001:db8:1:2::5"));
        assert_eq!(t.client(peer, &xff(&["::ffff:203.0.113.9"])), ip("203.0.113.9"));
        // Every hop trusted: the left-most.
        assert_eq!(t.client(peer, &xff(&["10.0.0.3, 10.0.0.2"])), ip("10.0.0.3"));
    }

    #[test]
    fn a_missing_or_malformed_header_gives_the_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        for bad in ["", "garbage", "203.0.113.9:443", "203.0.113.9, ", "[2001:db8::1]"] {
            assert_eq!(t.client(peer, &xff(&[bad])), peer, "{bad:?}");
        }
        assert_eq!(t.client(peer, &HeaderMap::new()), peer);
        let mut opaque = HeaderMap::new();
        opaque.insert(&X_FORWARDED_FOR, axum::http::HeaderValue::from_bytes(b"\xff1.2.3.4").expect("opaque"));
        assert_eq!(t.client(peer, &opaque), peer);
        // A chain longer than MAX_HOPS of trusted hops ends at the last looked at.
        let long = vec!["10.0.0.9"; MAX_HOPS + 5].join(",");
        assert_eq!(t.client(peer, &xff(&[&format!("203.0.113.9,{long}")])), ip("10.0.0.9"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(key(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(key(ip("::ffff:203.0.113.9")), "203.0.113.9");
        assert_eq!(key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), "2001:db8:1:2::/64");
        assert_eq!(key(ip("2001:db8:1:2::1")), key(ip("2001:db8:1:2:ffff::1")));
        assert_ne!(key(ip("2001:db8:1:2::1")), key(ip("2001:db8:1:3::1")));
        assert_eq!(key(ip("::1")), "::/64");
    }
}
