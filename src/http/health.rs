//! `GET /healthz` (the process serves) and `GET /readyz` (the store answers).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;

/// Always 200 while the process serves requests.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus metrics in the text exposition format.
pub async fn metrics(State(state): State<ApiState>) -> impl axum::response::IntoResponse {
    let calls = state.hub.with_calls(|c| c.counts());
    let body = state.metrics.render(
        state.limits.connections.total(),
        calls,
        state.limits.rates().len(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// 200 when the directory answers a ping, 503 `store_unavailable` (with
/// `Retry-After`) when it does not answer within
/// `store.mongodb.readyz_timeout_ms`.
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}
