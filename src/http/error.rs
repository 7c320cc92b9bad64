//! HTTP error responses: `{"error": {"code", "message"}}` with a status per code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ClientError, ErrorCode};
use crate::limits::RetryAfter;

/// A [`ClientError`] on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ClientError, pub Option<RetryAfter>);

impl<E: Into<ClientError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(e.into(), None)
    }
}

impl ApiError {
    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(wait: RetryAfter) -> Self {
        Self(ClientError::new(ErrorCode::RateLimited), Some(wait))
    }
}

/// The status that goes with each code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::InvalidCredentials => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden | ErrorCode::RegistrationClosed => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::UsernameTaken
        | ErrorCode::Offline
        | ErrorCode::Busy
        | ErrorCode::Glare
        | ErrorCode::RoomInUse
        | ErrorCode::InvalidState => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorCode::LimitReached | ErrorCode::ReadOnly => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ServerBusy | ErrorCode::Unavailable | ErrorCode::StoreUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `Retry-After` of a 503 `store_unavailable`: about the time the MongoDB
/// driver takes to notice that the database is back (its heartbeat).
const STORE_RETRY_AFTER: RetryAfter = RetryAfter(std::time::Duration::from_secs(2));

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        self.0.code = self.0.code.for_http();
        if self.0.code == ErrorCode::StoreUnavailable && self.1.is_none() {
            self.1 = Some(STORE_RETRY_AFTER);
        }
        let body = Json(json!({ "error": { "code": self.0.code, "message": self.0.message } }));
        let mut response = (status_of(self.0.code), body).into_response();
        if matches!(
            self.0.code,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired
        ) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(wait) = self.1 {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(wait.as_secs_ceil()),
            );
        }
        response
    }
}
