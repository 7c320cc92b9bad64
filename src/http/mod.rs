//! The HTTP API (axum) and its tower stack.
//!
//! Routes: `/auth/register`, `/auth/login`, `/auth/me`, `/groups...`,
//! `/contacts`, `/healthz`, `/readyz`, `/metrics`, `/jitsi/keys/<hash>.pem`, and the demo page (`/demo/`, see
//! [`demo`]). Every error is `{"error": {"code", "message"}}`.

pub mod auth;
pub mod client_ip;
pub mod contacts;
pub mod demo;
pub mod error;
pub mod extract;
pub mod groups;
pub mod head;
pub mod health;
pub mod jitsi;
pub mod origin;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::routing::{delete, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::auth::{PasswordHasher, TokenKeys};
use crate::error::{ClientError, ErrorCode};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::signaling::Hub;
use crate::store::Store;
use error::ApiError;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The directory.
    pub store: Store,
    /// Token keys.
    pub keys: Arc<TokenKeys>,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// The Socket.IO server, to move live sockets between group rooms.
    pub io: crate::signaling::io::Io,
    /// `auth.registration_open`.
    pub registration_open: bool,
    /// Rate limits.
    pub limits: Arc<Limits>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: client_ip::TrustedProxies,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The signaling hub (live calls, for metrics).
    pub hub: Arc<Hub>,
    /// This node: its id, and Redis in cluster mode.
    pub node: NodeInfo,
}

/// What the HTTP API knows of the node it runs on.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node id (`cluster.node_id`, or random at start).
    pub id: Arc<str>,
    /// Redis, in cluster mode.
    pub redis: Option<crate::cluster::Redis>,
}

/// How long an API request may take before 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The API routes with their body limit and timeout (not the Socket.IO
/// transport, whose long-polling requests are legitimately long).
pub fn api_router(state: ApiState, body_limit: usize) -> Router {
    Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/me", get(auth::me))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{id}", get(groups::show))
        .route("/groups/{id}/members", post(groups::add_member))
        .route("/groups/{id}/owner", post(groups::set_owner))
        .route(
            "/groups/{id}/members/{user_id}",
            delete(groups::remove_member),
        )
        .route("/contacts", get(contacts::list))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/jitsi/keys/{file}", get(jitsi::public_key))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ClientError::new(ErrorCode::NotFound).into()
}

async fn method_not_allowed() -> (StatusCode, axum::Json<serde_json::Value>) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({
            "error": { "code": "method_not_allowed", "message": "method not allowed" }
        })),
    )
}

/// CORS for the API and Socket.IO polling, from `server.allowed_origins`.
pub fn cors(allowed_origins: &[String]) -> CorsLayer {
    let origin = if allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// The request-tracing layer built by [`trace_layer`].
pub type HttpTraceLayer = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&axum::http::Request<axum::body::Body>) -> tracing::Span,
>;

fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
}

/// Request tracing: method, path (never the query string, which for Socket.IO
/// carries the Engine.IO session id) and status.
pub fn trace_layer() -> HttpTraceLayer {
    tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span as fn(&_) -> _)
}
