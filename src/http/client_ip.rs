//! The client's IP address, for rate limits, caps and logs.
//!
//! Exactly one forwarding header is believed, the one named by
//! `server.forwarded_header` (`X-Forwarded-For` by default, or `Forwarded`):
//! the one the proxy overwrites. The other is ignored whatever it says, since
//! a proxy that does not know it passes a client's own copy through untouched.
//! The header is trusted only when the TCP peer is a trusted proxy
//! (`server.trusted_proxies`); then the chain is walked from the right and
//! the first address that is not a trusted proxy is the client. A spoofed
//! header from anyone else changes nothing.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

pub use crate::config::ForwardedHeader;

/// The client address of a Socket.IO transport request, worked out once by
/// the transport gate and kept in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The proxies whose forwarding header is believed, and which header.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        Self {
            nets: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
        }
    }
}

impl TrustedProxies {
    /// Parses CIDRs or plain addresses; `X-Forwarded-For` is the header
    /// believed (see [`TrustedProxies::with_header`]).
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
            .map(|nets| Self {
                nets,
                header: ForwardedHeader::XForwardedFor,
            })
    }

    /// The same proxies, believing `header` only.
    #[must_use]
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The header believed.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
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
/// the rightmost address in the configured forwarding header that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut current = canonical(peer);
    if !trusted.contains(current) {
        return current;
    }
    let chain = match trusted.header {
        ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
        ForwardedHeader::Forwarded => forwarded_for(headers),
    };
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
        let rfc = trusted().with_header(ForwardedHeader::Forwarded);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &rfc), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_hops_stop_the_walk_at_the_last_trusted_address() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.2"));
        let h = headers(&[("forwarded", "for=unknown")]);
        let rfc = trusted().with_header(ForwardedHeader::Forwarded);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &rfc), ip("10.0.0.2"));
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert!(trusted().contains(ip("::ffff:10.9.9.9")));
        assert_eq!(parse_hop("1.2.3.4:80"), Some(ip("1.2.3.4")));
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        // nginx overwrites X-Forwarded-For and passes the client's Forwarded on.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=203.0.113.66"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted()),
            ip("198.51.100.7")
        );
        // A proxy that writes Forwarded: a client's X-Forwarded-For is ignored.
        let rfc = trusted().with_header(ForwardedHeader::Forwarded);
        let h = headers(&[
            ("forwarded", "for=198.51.100.7"),
            ("x-forwarded-for", "203.0.113.66"),
        ]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &rfc), ip("198.51.100.7"));
        let h = headers(&[("x-forwarded-for", "203.0.113.66")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &rfc), ip("127.0.0.1"));
    }
}
