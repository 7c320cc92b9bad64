//! `GET /jitsi/keys/<hex(sha256(kid))>.pem`: the public half of the room-token
//! key, for Prosody's `asap_key_server` (RS256 and JaaS modes). Anything else
//! under the path, or any other mode, is 404.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiState;
use super::error::ApiError;
use crate::error::{ClientError, ErrorCode};

/// The PEM public key, when `file` names the configured key.
pub async fn public_key(
    State(state): State<ApiState>,
    Path(file): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let pem = state
        .hub
        .jitsi
        .as_deref()
        .and_then(|j| j.public_key(&file))
        .ok_or_else(|| ClientError::new(ErrorCode::NotFound))?
        .to_string();
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        pem,
    ))
}
