//! The client's IP address, for rate limits, caps and logs.
//!
//! `X-Forwarded-For` and `Forwarded` are trusted only when the TCP peer is a
//! trusted proxy (`server.trusted_proxies`); then the chain is walked from
//! the right and the first address that is not a trusted proxy is the
//! client. A spoofed header from anyone else changes nothing.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs or plain addresses.
    ///
    /// # Errors
    /// The first entry that is neither.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| e.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses count as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One hop of a forwarding header: an address, with or without port, IPv6
/// possibly in brackets. `None` for `unknown`, obfuscated ids and garbage.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"');
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    raw.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
        .map(canonical)
}

/// The hops of `X-Forwarded-For` headers, left to right.
pub fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(parse_hop)
        .collect()
}

/// The `for=` hops of `Forwarded` headers (RFC 7239), left to right.
pub fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(axum::http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| parse_hop(v))?
            })
        })
        .collect()
}

/// The client address: the TCP peer, or, when the peer is a trusted proxy,
/// the rightmost forwarded address that is not one (`Forwarded` first, then
/// `X-Forwarded-For`).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut current = canonical(peer);
    if !trusted.contains(current) {
        return current;
    }
    let mut chain = forwarded_for(headers);
    if chain.is_empty() {
        chain = x_forwarded_for(headers);
    }
    for hop in chain.into_iter().rev() {
        if !trusted.contains(current) {
            break;
        }
        match hop {
            Some(ip) => current = ip,
            None => break,
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).expect("cidrs")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn through_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted()),
            ip("198.51.100.7")
        );
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::1]:4711";proto=https"#,
        )]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_hops_stop_the_walk_at_the_last_trusted_address() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.2"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.2"));
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert!(trusted().contains(ip("::ffff:10.9.9.9")));
        assert_eq!(parse_hop("1.2.3.4:80"), Some(ip("1.2.3.4")));
    }
}
