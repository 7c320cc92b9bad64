//! Client-visible errors: stable snake_case codes with fixed messages, and the
//! one place where lower layers' errors are mapped to them. Internals are
//! logged here and never sent.

use std::borrow::Cow;

use serde::Serialize;

use crate::auth::{PasswordError, TokenError};
use crate::domain::ParseError;
use crate::store::StoreError;

/// Every error code a client can receive (HTTP `error.code`, Socket.IO ack
/// `error.code`, `videoCallFailed.code`, `error.code`, `connect_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A payload or body that does not parse, or a field that breaks its rule.
    BadRequest,
    /// No valid credentials (token or session).
    Unauthorized,
    /// The token was genuine but has expired.
    TokenExpired,
    /// Login failed (unknown user and wrong password look the same).
    InvalidCredentials,
    /// The caller may not do this (e.g. acting as another user).
    Forbidden,
    /// No such thing, or one that is not the caller's.
    NotFound,
    /// Registration with a username that exists.
    UsernameTaken,
    /// Registration is closed by configuration.
    RegistrationClosed,
    /// The callee has no connected socket.
    Offline,
    /// The callee is in another call.
    Busy,
    /// A call between the same two users is already ringing.
    Glare,
    /// The room name belongs to another live call.
    RoomInUse,
    /// The call is not in a state that allows this.
    InvalidState,
    /// Too many requests or events.
    RateLimited,
    /// A bounded resource (password hashing) is saturated.
    ServerBusy,
    /// Body too large.
    PayloadTooLarge,
    /// The directory (users and groups) did not answer in time; retry later.
    /// Socket.IO acks, `videoCallFailed` and `error` carry this code.
    Unavailable,
    /// HTTP's name for [`ErrorCode::Unavailable`] (503 with `Retry-After`):
    /// it names the dependency for operators reading access logs.
    StoreUnavailable,
    /// Request headers too large (431).
    HeadersTooLarge,
    /// A policy cap is full (e.g. groups per user).
    LimitReached,
    /// The directory cannot be changed through this server: the embedded
    /// store of a cluster node (409).
    ReadOnly,
    /// Something failed inside; details are in the server log only.
    Internal,
}

impl ErrorCode {
    /// The wire form, e.g. `bad_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::UsernameTaken => "username_taken",
            Self::RegistrationClosed => "registration_closed",
            Self::Offline => "offline",
            Self::Busy => "busy",
            Self::Glare => "glare",
            Self::RoomInUse => "room_in_use",
            Self::InvalidState => "invalid_state",
            Self::RateLimited => "rate_limited",
            Self::ServerBusy => "server_busy",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unavailable => "unavailable",
            Self::StoreUnavailable => "store_unavailable",
            Self::HeadersTooLarge => "headers_too_large",
            Self::LimitReached => "limit_reached",
            Self::ReadOnly => "read_only",
            Self::Internal => "internal",
        }
    }

    /// The code as HTTP sends it: [`ErrorCode::Unavailable`] becomes
    /// `store_unavailable`; every other code is the same on both surfaces.
    pub fn for_http(self) -> Self {
        match self {
            Self::Unavailable => Self::StoreUnavailable,
            other => other,
        }
    }

    /// The fixed message that goes with the code when there is nothing more specific.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::BadRequest => "the request is malformed",
            Self::Unauthorized => "a valid token is required",
            Self::TokenExpired => "the token has expired",
            Self::InvalidCredentials => "invalid username or password",
            Self::Forbidden => "not allowed",
            Self::NotFound => "not found",
            Self::UsernameTaken => "this username is taken",
            Self::RegistrationClosed => "registration is closed",
            Self::Offline => "the user is not online",
            Self::Busy => "the user is in another call",
            Self::Glare => "a call between you is already ringing",
            Self::RoomInUse => "this room belongs to another call",
            Self::InvalidState => "the call does not allow this now",
            Self::RateLimited => "too many requests",
            Self::ServerBusy => "the server is busy, try again",
            Self::PayloadTooLarge => "the request is too large",
            Self::Unavailable | Self::StoreUnavailable => {
                "the directory is not answering, try again shortly"
            }
            Self::HeadersTooLarge => "the request headers are too large",
            Self::LimitReached => "a limit of the policy is reached",
            Self::ReadOnly => {
                "this cluster's directory is read-only: change users and groups in the seed file of every node, or run the cluster on MongoDB"
            }
            Self::Internal => "internal error",
        }
    }
}

/// An error as a client sees it: `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ClientError {
    /// Stable code.
    pub code: ErrorCode,
    /// Fixed, human-readable text (never echoes input or internals).
    pub message: Cow<'static, str>,
}

impl ClientError {
    /// The code with its default message.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: Cow::Borrowed(code.default_message()),
        }
    }

    /// The code with a specific fixed message.
    pub fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `bad_request` naming the field and its rule.
    pub fn bad_field(field: &str, rule: &str) -> Self {
        Self::with_message(ErrorCode::BadRequest, format!("{field} {rule}"))
    }
}

impl From<ErrorCode> for ClientError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

impl From<ParseError> for ClientError {
    fn from(e: ParseError) -> Self {
        Self::with_message(ErrorCode::BadRequest, e.to_string())
    }
}

impl From<StoreError> for ClientError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Self::new(ErrorCode::UsernameTaken),
            StoreError::GroupNotFound => Self::new(ErrorCode::NotFound),
            StoreError::ReadOnly => Self::new(ErrorCode::ReadOnly),
            StoreError::Unavailable(detail) => {
                // A dependency outage, not a bug: a warning, and a code that
                // tells the client to retry.
                tracing::warn!(%detail, "store unavailable");
                Self::new(ErrorCode::Unavailable)
            }
        }
    }
}

impl From<PasswordError> for ClientError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => Self::new(ErrorCode::ServerBusy),
            PasswordError::Internal => {
                tracing::error!("password hashing task failed");
                Self::new(ErrorCode::Internal)
            }
        }
    }
}

impl From<TokenError> for ClientError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => Self::new(ErrorCode::TokenExpired),
            TokenError::Invalid(_) => Self::new(ErrorCode::Unauthorized),
        }
    }
}
