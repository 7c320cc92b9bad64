//! The demo page at `/demo/`: a small browser client (our own Engine.IO v4 /
//! Socket.IO v5 websocket client, no third-party code) in which two tabs can
//! log in and call each other. Its files are compiled into the binary, so the
//! README's run command serves it with no build step.
//!
//! It is served only when `server.demo` says so (`"auto"`: development only),
//! with a strict Content-Security-Policy ([`content_security_policy`]): scripts
//! from this origin and the configured Jitsi domain only, nothing inline.
//! The page uses the same login, token and Origin rules as any other client;
//! nothing here bypasses them.
//!
//! `GET /demo/accounts.json` lists the seed's users with their plain-text
//! passwords for one-click login, and exists only in development when the
//! embedded seed marks itself `"demo": true` ([`DemoAccount::from_seed`]).
//! Any other deployment answers 404 there, so no real password can leak.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

use super::error::ApiError;
use crate::error::{ClientError, ErrorCode};
use crate::store::seed::Seed;

/// The page's files, embedded at compile time.
const INDEX_HTML: &str = include_str!("../../demo/web/index.html");
const APP_JS: &str = include_str!("../../demo/web/app.js");
const SOCKETIO_JS: &str = include_str!("../../demo/web/socketio.js");
const STYLE_CSS: &str = include_str!("../../demo/web/style.css");

/// A demo user the page offers for one-click login.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoAccount {
    username: String,
    display_name: String,
    password: String,
}

impl std::fmt::Debug for DemoAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoAccount")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl DemoAccount {
    /// The users of a seed that marks itself `"demo": true` and gives their
    /// passwords in plain text; nothing for any other seed (users with only a
    /// `passwordHash` are never listed).
    pub fn from_seed(seed: &Seed) -> Vec<Self> {
        if !seed.demo {
            return Vec::new();
        }
        seed.users
            .iter()
            .filter_map(|u| {
                u.password.as_ref().map(|p| Self {
                    username: u.username.to_string(),
                    display_name: u.display_name.to_string(),
                    password: p.expose().to_string(),
                })
            })
            .collect()
    }
}

/// What the demo routes serve.
#[derive(Debug, Clone)]
pub struct DemoPage {
    csp: HeaderValue,
    /// `index.html` with the Socket.IO path filled in.
    index: Arc<str>,
    accounts: Option<Arc<[DemoAccount]>>,
}

impl DemoPage {
    /// The page with its CSP for `jitsi_domain`, the Socket.IO path it
    /// connects to (`socketio.path`), and the one-click accounts (pass an
    /// empty list outside a development demo seed: the route then answers
    /// 404).
    pub fn new(
        jitsi_domain: Option<&str>,
        socketio_path: &str,
        accounts: Vec<DemoAccount>,
    ) -> Self {
        let csp = HeaderValue::from_str(&content_security_policy(jitsi_domain))
            .unwrap_or_else(|_| HeaderValue::from_static(LOCKED_DOWN));
        Self {
            csp,
            index: INDEX_HTML
                .replace("{{SOCKETIO_PATH}}", &html_attribute(socketio_path))
                .into(),
            accounts: (!accounts.is_empty()).then(|| accounts.into()),
        }
    }
}

/// A policy that allows nothing at all: the fallback should the built one
/// ever fail to be a header value (it cannot: every part is checked ASCII).
const LOCKED_DOWN: &str = "default-src 'none'";

/// The Content-Security-Policy of every `/demo/` response.
///
/// Scripts, styles and connections (fetch and the websocket, which `'self'`
/// covers in CSP 3) come from this origin only; with a Jitsi domain, its
/// `external_api.js` and its meeting iframe are allowed from `https://` that
/// domain, and nothing else. No inline script or style, no `eval`, no plugins,
/// no `<base>`, no form posts, and the page cannot be framed. A domain that is
/// not a plain `host[:port]` is left out rather than pasted into the policy.
pub fn content_security_policy(jitsi_domain: Option<&str>) -> String {
    let jitsi = jitsi_domain.and_then(jitsi_source);
    let (script, frame) = match &jitsi {
        Some(src) => (format!("'self' {src}"), src.clone()),
        None => ("'self'".to_string(), "'none'".to_string()),
    };
    format!(
        "default-src 'none'; script-src {script}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-src {frame}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// `https://host[:port]` for a bare DNS name with an optional port, else None.
fn jitsi_source(domain: &str) -> Option<String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host_ok = (1..=253).contains(&host.len()) && host.split('.').all(label_ok);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok_and(|n| n > 0));
    (host_ok && port_ok).then(|| format!("https://{}", domain.to_ascii_lowercase()))
}

/// `text` escaped for a double-quoted HTML attribute.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn index(axum::extract::State(page): axum::extract::State<DemoPage>) -> Response {
    let mut response = (StatusCode::OK, page.index.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    with_headers(&page, response)
}

/// The `/demo/` routes.
pub fn router(page: DemoPage) -> Router {
    let file = |content_type: &'static str, body: &'static str| {
        move |axum::extract::State(page): axum::extract::State<DemoPage>| async move {
            respond(&page, content_type, body)
        }
    };
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(index))
        .route("/demo/index.html", get(index))
        .route(
            "/demo/app.js",
            get(file("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/demo/socketio.js",
            get(file("text/javascript; charset=utf-8", SOCKETIO_JS)),
        )
        .route(
            "/demo/style.css",
            get(file("text/css; charset=utf-8", STYLE_CSS)),
        )
        .route("/demo/accounts.json", get(accounts))
        .with_state(page)
}

async fn accounts(axum::extract::State(page): axum::extract::State<DemoPage>) -> Response {
    match &page.accounts {
        Some(list) => {
            let mut response = with_headers(&page, axum::Json(&**list).into_response());
            // Passwords, even demo ones, are not kept in any cache.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        None => ApiError::from(ClientError::new(ErrorCode::NotFound)).into_response(),
    }
}

fn respond(page: &DemoPage, content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_headers(page, response)
}

/// Adds the security headers every demo response carries.
fn with_headers(page: &DemoPage, mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, page.csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Always revalidated: a rebuilt binary's page is picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive<'a>(csp: &'a str, name: &str) -> &'a str {
        csp.split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(name).map(str::trim))
            .unwrap_or_else(|| panic!("{name} missing from {csp}"))
    }

    #[test]
    fn without_jitsi_scripts_come_from_self_only_and_nothing_is_framed() {
        let csp = content_security_policy(None);
        assert_eq!(directive(&csp, "default-src"), "'none'");
        assert_eq!(directive(&csp, "script-src"), "'self'");
        assert_eq!(directive(&csp, "frame-src"), "'none'");
        assert_eq!(directive(&csp, "connect-src"), "'self'");
        assert_eq!(directive(&csp, "frame-ancestors"), "'none'");
        assert_eq!(directive(&csp, "base-uri"), "'none'");
        assert!(!csp.contains("unsafe"), "{csp}");
    }

    #[test]
    fn a_jitsi_domain_is_allowed_for_scripts_and_frames_over_https_only() {
        let csp = content_security_policy(Some("meet.example.com"));
        assert_eq!(
            directive(&csp, "script-src"),
            "'self' https://meet.example.com"
        );
        assert_eq!(directive(&csp, "frame-src"), "https://meet.example.com");
        assert_eq!(directive(&csp, "connect-src"), "'self'");
        let with_port = content_security_policy(Some("Meet.Example.com:8443"));
        assert_eq!(
            directive(&with_port, "script-src"),
            "'self' https://meet.example.com:8443"
        );
    }

    #[test]
    fn a_domain_that_is_not_a_plain_host_cannot_inject_directives() {
        for bad in [
            "",
            "meet.example.com; script-src *",
            "meet.example.com 'unsafe-inline'",
            "*",
            "https://meet.example.com",
            "meet.example.com/path",
            "meet..example.com",
            "-meet.example.com",
            "meet.example.com:0",
            "meet.example.com:99999",
            "meet.example.com:",
            "meet\u{0}.example.com",
        ] {
            let csp = content_security_policy(Some(bad));
            assert_eq!(csp, content_security_policy(None), "{bad:?}");
        }
    }

    #[test]
    fn the_policy_is_a_valid_header_value() {
        for domain in [None, Some("meet.jit.si"), Some("meet.example.com:8443")] {
            let page = DemoPage::new(domain, "/socket.io", Vec::new());
            assert_ne!(page.csp, HeaderValue::from_static(LOCKED_DOWN));
        }
    }

    #[test]
    fn the_page_connects_to_the_configured_socketio_path_escaped() {
        let page = DemoPage::new(None, "/rt", Vec::new());
        assert!(page.index.contains(r#"content="/rt""#));
        assert!(!page.index.contains("{{SOCKETIO_PATH}}"));
        let odd = DemoPage::new(None, "/a\"><script>", Vec::new());
        assert!(
            odd.index
                .contains(r#"content="/a&quot;&gt;&lt;script&gt;""#)
        );
    }

    #[test]
    fn only_a_seed_marked_demo_offers_its_accounts() {
        let users = r#""users":[
            {"id":"u1","username":"alice","displayName":"Alice","password":"alice-demo-pass"},
            {"id":"u2","username":"bob","displayName":"Bob",
             "passwordHash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}]"#;
        let plain = Seed::parse(&format!("{{{users}}}")).expect("seed");
        assert!(DemoAccount::from_seed(&plain).is_empty());
        let demo = Seed::parse(&format!("{{\"demo\":true,{users}}}")).expect("seed");
        let accounts = DemoAccount::from_seed(&demo);
        assert_eq!(accounts.len(), 1, "hash-only users are never listed");
        assert_eq!(accounts[0].username, "alice");
        assert!(!format!("{accounts:?}").contains("alice-demo-pass"));
    }
}
