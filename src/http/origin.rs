//! The Origin allowlist for the Socket.IO transport.
//!
//! socketioxide checks no `Origin`, so any web page could open a socket with
//! a victim's cookies or tokens in reach. Transport requests (see
//! [`super::transport`], on every spelling of the path) that carry an
//! `Origin` not in `server.allowed_origins` (exact `scheme://host[:port]`)
//! get 403 before the transport sees them, on the websocket upgrade and on
//! polling alike. Requests with no `Origin` (non-browser clients) go on to
//! the JWT check.

use std::sync::Arc;

use axum::http::HeaderValue;

/// Allowed browser origins.
#[derive(Debug, Clone)]
pub struct AllowedOrigins {
    any: bool,
    exact: Arc<[String]>,
}

impl AllowedOrigins {
    /// From `server.allowed_origins` (`"*"` allows any).
    pub fn new(origins: &[String]) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            exact: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request's `Origin` header value is allowed. Comparison is
    /// exact (after lower-casing): `https://app.example.com.evil.net` and
    /// `null` do not match `https://app.example.com`.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        if self.any {
            return true;
        }
        origin.to_str().is_ok_and(|o| {
            self.exact
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(o))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_origins_match() {
        let allowed = AllowedOrigins::new(&[
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ]);
        let h = |s: &str| HeaderValue::from_str(s).expect("header");
        assert!(allowed.allows(&h("https://app.example.com")));
        assert!(allowed.allows(&h("HTTPS://APP.EXAMPLE.COM")));
        assert!(allowed.allows(&h("http://localhost:3000")));
        for bad in [
            "https://app.example.com.evil.net",
            "null",
            "https://evil.example",
            "http://app.example.com",
            "http://localhost:3001",
            "https://app.example.com/",
        ] {
            assert!(!allowed.allows(&h(bad)), "{bad}");
        }
        assert!(AllowedOrigins::new(&["*".into()]).allows(&h("https://anything.example")));
    }
}
