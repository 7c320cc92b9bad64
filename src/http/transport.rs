//! The gate in front of the Socket.IO transport: every request that
//! engineioxide would answer passes here first.
//!
//! - Path: the transport answers on exactly `socketio.path`, with or without
//!   a trailing slash (`/socket.io` and `/socket.io/`). engineioxide would
//!   also answer anything below it (`/socket.io/x`): that is 404 here, so no
//!   spelling of the path can skip the checks below.
//! - Size: a request head (URI and headers) larger than
//!   `server.max_socketio_header_bytes` gets 431: Engine.IO keeps the head of
//!   each session's opening request for the session's life.
//! - Origin: a browser `Origin` not in `server.allowed_origins` gets 403 (see
//!   [`super::origin`]).
//! - Opens: a request without a session id opens an Engine.IO session, which
//!   costs memory until `socketio.connect_timeout_secs` even if no CONNECT
//!   follows; opens are limited per client IP
//!   (`rate_limits.session_open_per_ip`), answered 429 with `Retry-After`.
//! - Kept headers: only those callgate or the transport reads
//!   ([`KEPT_HEADERS`]) are kept, copied out of hyper's read buffer (see
//!   [`super::head`]); the client address is worked out here, once, and
//!   stored as a [`ClientAddr`] extension.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip::{ClientAddr, TrustedProxies, client_ip};
use super::error::ApiError;
use super::head::detach_head;
use super::origin::AllowedOrigins;
use crate::error::{ClientError, ErrorCode};
use crate::limits::Limits;

/// The request headers a Socket.IO session keeps: the token fallback
/// (`Authorization`), the polling body's `Content-Type`, and what the
/// websocket upgrade reads. Everything else is dropped before engineioxide
/// stores the request head.
pub const KEPT_HEADERS: [header::HeaderName; 9] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_PROTOCOL,
];

/// What the gate checks against.
#[derive(Debug, Clone)]
pub struct TransportGate {
    path: Arc<str>,
    origins: AllowedOrigins,
    trusted: TrustedProxies,
    limits: Arc<Limits>,
    max_head_bytes: usize,
}

impl TransportGate {
    /// A gate for the transport at `path` (no trailing slash).
    pub fn new(
        path: &str,
        origins: AllowedOrigins,
        trusted: TrustedProxies,
        limits: Arc<Limits>,
        max_head_bytes: usize,
    ) -> Self {
        Self {
            path: path.trim_end_matches('/').into(),
            origins,
            trusted,
            limits,
            max_head_bytes,
        }
    }
}

/// How a request path relates to the transport path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// Exactly the path, with or without a trailing slash.
    Transport,
    /// Below it (`/socket.io/x`): engineioxide would answer; we do not.
    Below,
    /// Anything else: not the transport's.
    Other,
}

/// Classifies `path` against the transport path `base` (no trailing slash),
/// with the same prefix rule engineioxide uses to claim a request.
pub fn classify(path: &str, base: &str) -> PathMatch {
    match path.strip_prefix(base) {
        Some("" | "/") => PathMatch::Transport,
        Some(rest) if rest.starts_with('/') => PathMatch::Below,
        _ => PathMatch::Other,
    }
}

/// The size of a request head as counted against the cap: the URI, and each
/// header's name and value with their `": "` and CRLF.
pub fn head_size(uri_len: usize, headers: &HeaderMap) -> usize {
    uri_len
        + headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

/// Whether the query opens a session (carries no `sid`).
fn opens_session(query: Option<&str>) -> bool {
    !query.is_some_and(|q| q.split('&').any(|p| p.starts_with("sid=")))
}

/// Only [`KEPT_HEADERS`], in order.
pub fn kept(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(KEPT_HEADERS.len());
    for name in &KEPT_HEADERS {
        for value in headers.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn refuse(error: ClientError, reason: &'static str, ip: Option<IpAddr>) -> Response {
    match ip {
        Some(ip) => tracing::warn!(reason, %ip, "transport request refused"),
        None => tracing::warn!(reason, "transport request refused"),
    }
    ApiError::from(error).into_response()
}

/// Middleware: the checks in the module docs, then the transport.
pub async fn gate(State(gate): State<TransportGate>, mut request: Request, next: Next) -> Response {
    match classify(request.uri().path(), &gate.path) {
        PathMatch::Other => return next.run(request).await,
        PathMatch::Below => {
            return refuse(ClientError::new(ErrorCode::NotFound), "below_path", None);
        }
        PathMatch::Transport => {}
    }
    let size = head_size(request.uri().to_string().len(), request.headers());
    if size > gate.max_head_bytes {
        return refuse(
            ClientError::new(ErrorCode::HeadersTooLarge),
            "headers_too_large",
            None,
        );
    }
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !gate.origins.allows(origin)
    {
        return refuse(
            ClientError::with_message(ErrorCode::Forbidden, "this origin is not allowed"),
            "origin_not_allowed",
            None,
        );
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let ip = client_ip(peer, request.headers(), &gate.trusted);
    if opens_session(request.uri().query())
        && let Err(wait) = gate.limits.rates().session_open(gate.limits.ip_key(ip))
    {
        tracing::warn!(reason = "session_open_rate_limited", %ip, "transport request refused");
        return ApiError::rate_limited(wait).into_response();
    }
    let (uri, headers) = detach_head(request.uri(), &kept(request.headers()));
    // The router keeps a clone of the URI as it arrived: a slice too.
    if request.extensions().get::<OriginalUri>().is_some() {
        request.extensions_mut().insert(OriginalUri(uri.clone()));
    }
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(ClientAddr(ip));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_path_is_the_transport() {
        let base = "/socket.io";
        assert_eq!(classify("/socket.io", base), PathMatch::Transport);
        assert_eq!(classify("/socket.io/", base), PathMatch::Transport);
        assert_eq!(classify("/socket.io/x", base), PathMatch::Below);
        assert_eq!(classify("/socket.io//", base), PathMatch::Below);
        assert_eq!(classify("/socket.iox", base), PathMatch::Other);
        assert_eq!(classify("/auth/login", base), PathMatch::Other);
        assert_eq!(classify("/", base), PathMatch::Other);
    }

    #[test]
    fn opens_are_requests_without_a_sid() {
        assert!(opens_session(None));
        assert!(opens_session(Some("EIO=4&transport=polling&t=x")));
        assert!(!opens_session(Some("EIO=4&transport=websocket&sid=abc")));
        assert!(opens_session(Some("EIO=4&xsid=abc")));
    }

    #[test]
    fn only_needed_headers_are_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer t".parse().expect("v"));
        h.insert(header::COOKIE, "big=1".parse().expect("v"));
        h.insert(header::USER_AGENT, "ua".parse().expect("v"));
        h.insert(header::SEC_WEBSOCKET_KEY, "k".parse().expect("v"));
        h.append("x-junk", "1".parse().expect("v"));
        let k = kept(&h);
        assert_eq!(k.len(), 2);
        assert!(k.contains_key(header::AUTHORIZATION) && k.contains_key(header::SEC_WEBSOCKET_KEY));
        assert_eq!(head_size(10, &k), 10 + (13 + 8 + 4) + (17 + 1 + 4));
    }
}
