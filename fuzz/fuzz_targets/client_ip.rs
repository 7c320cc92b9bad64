//! `http::client_ip::client_ip(peer, headers, trusted)` with arbitrary
//! forwarding headers and peers, trusted proxies fixed to `10.0.0.0/8` and
//! `127.0.0.1`.
//!
//! Input layout (see docs/fuzzing.md), text-friendly so seeds are readable:
//! the first line is the peer address (parsed as an IP; if it does not parse,
//! its bytes are used: up to 4 bytes make an IPv4 address, more make an IPv6
//! one). Every further line is a header: `x:VALUE` is `X-Forwarded-For`,
//! `f:VALUE` is `Forwarded`, `X:`/`F:` the same names in other spellings, any
//! other line a header callgate ignores. Values `HeaderValue` refuses are
//! skipped.
//!
//! Invariants: an untrusted peer is the answer, whatever the headers say;
//! the answer is the peer or an address written in a forwarding header; the
//! answer does not depend on headers callgate does not read; callgate's trust
//! test agrees with an independent one.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use callgate::http::client_ip::{TrustedProxies, client_ip};
use libfuzzer_sys::fuzz_target;

fn trusted() -> &'static TrustedProxies {
    static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).expect("cidrs")
    })
}

/// Independent of callgate: IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Independent of callgate: is `ip` in 10.0.0.0/8 or 127.0.0.1?
fn is_trusted(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.octets()[0] == 10 || v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(_) => false,
    }
}

fn peer_from(line: &[u8]) -> IpAddr {
    if let Ok(ip) = std::str::from_utf8(line)
        .unwrap_or("")
        .trim()
        .parse::<IpAddr>()
    {
        return ip;
    }
    if line.len() <= 4 {
        let mut b = [0u8; 4];
        b[..line.len()].copy_from_slice(line);
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let mut b = [0u8; 16];
        let n = line.len().min(16);
        b[..n].copy_from_slice(&line[..n]);
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

/// Every address written anywhere in `value`: each run of characters that can
/// make up an IP address is searched for every substring (at most 45 bytes,
/// the longest IP text Rust parses) that parses as one.
fn addresses_in(value: &[u8], out: &mut Vec<IpAddr>) {
    let ip_char = |b: &u8| b.is_ascii_hexdigit() || *b == b'.' || *b == b':';
    for run in value.split(|b| !ip_char(b)) {
        for i in 0..run.len() {
            for j in i + 1..=run.len().min(i + 45) {
                if let Some(ip) = std::str::from_utf8(&run[i..j])
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                {
                    out.push(canonical(ip));
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let peer = peer_from(lines.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    let mut forwarding_values: Vec<Vec<u8>> = Vec::new();
    let mut ignored = HeaderMap::new();
    for line in lines {
        let (name, value, forwarding) = match line {
            [b'x', b':', v @ ..] => ("x-forwarded-for", v, true),
            [b'X', b':', v @ ..] => ("X-Forwarded-For", v, true),
            [b'f', b':', v @ ..] => ("forwarded", v, true),
            [b'F', b':', v @ ..] => ("Forwarded", v, true),
            [b'r', b':', v @ ..] => ("x-real-ip", v, false),
            v => ("x-forwarded-host", v, false),
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = HeaderName::from_bytes(name.as_bytes()).expect("static header name");
        if forwarding {
            forwarding_values.push(value.as_bytes().to_vec());
        } else {
            ignored.append(name.clone(), value.clone());
        }
        headers.append(name, value);
    }

    let trusted = trusted();
    assert_eq!(trusted.contains(peer), is_trusted(peer), "trust of {peer}");
    let answer = client_ip(peer, &headers, trusted);
    let peer_c = canonical(peer);

    if !is_trusted(peer) {
        assert_eq!(answer, peer_c, "an untrusted peer's headers were believed");
    }
    if answer != peer_c {
        let mut written = Vec::new();
        for v in &forwarding_values {
            addresses_in(v, &mut written);
        }
        assert!(
            written.contains(&answer),
            "answer {answer} is neither the peer {peer} nor in the headers"
        );
    }
    // Only the forwarding headers count: the same request without them
    // answers the peer, and other headers alone change nothing.
    let mut only_forwarding = headers.clone();
    for name in ignored.keys() {
        only_forwarding.remove(name);
    }
    assert_eq!(client_ip(peer, &only_forwarding, trusted), answer);
    assert_eq!(client_ip(peer, &ignored, trusted), peer_c);
    // Deterministic.
    assert_eq!(client_ip(peer, &headers, trusted), answer);
});
