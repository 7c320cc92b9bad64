//! `GET /healthz` (the process serves) and `GET /readyz` (the store answers).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;

/// Always 200 while the process serves requests, with this node's id and
/// whether it runs as a cluster node.
pub async fn healthz(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "node": state.node.id,
        "cluster": state.node.redis.is_some(),
    }))
}

/// Prometheus metrics in the text exposition format.
pub async fn metrics(State(state): State<ApiState>) -> impl axum::response::IntoResponse {
    // This process's calls; a cluster node's live calls are in Redis, not
    // counted here (no series).
    let calls = state.hub.calls().local(|c| c.counts());
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

/// 200 when the directory answers a ping (and, on a cluster node, Redis
/// too); 503 `store_unavailable` (with `Retry-After`) when the directory does
/// not answer within `store.mongodb.readyz_timeout_ms`, 503 `unavailable`
/// when Redis does not answer within `cluster.redis_timeout_ms`, this node
/// is fenced (its lease lost, rejoining), or its adapter is not subscribed
/// to the other nodes yet.
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    if let Some(redis) = &state.node.redis
        && !redis.ping().await
    {
        return Err(crate::cluster::ClusterError::Unavailable.into());
    }
    // A fenced node (lease lost) refuses every socket until it has rejoined,
    // and a node whose adapter is resubscribing would not hear other nodes.
    if state.hub.cluster().is_some_and(|c| !c.serving()) {
        return Err(crate::cluster::ClusterError::Fenced.into());
    }
    Ok(Json(json!({ "status": "ready", "node": state.node.id })))
}
