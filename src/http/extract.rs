//! Request extractors: the bearer-token user and JSON object bodies whose
//! fields are parsed into domain types with fixed error messages (a rejected
//! value is never echoed back).

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde_json::{Map, Value};

use super::ApiState;
use super::error::ApiError;
use crate::error::{ClientError, ErrorCode};
use crate::store::User;

/// The user named by a valid `Authorization: Bearer` token who still exists.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S> FromRequestParts<S> for CurrentUser
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = ApiState::from_ref(state);
        let token =
            bearer_token(&parts.headers).ok_or(ClientError::new(ErrorCode::Unauthorized))?;
        let verified = state.keys.verify(token)?;
        let user = state
            .store
            .user(&verified.user_id)
            .await?
            .ok_or(ClientError::new(ErrorCode::Unauthorized))?;
        Ok(Self(user))
    }
}

/// The client's address, through trusted proxies (see [`super::client_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = ApiState::from_ref(state);
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| {
                c.0.ip()
            });
        Ok(Self(super::client_ip::client_ip(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// A JSON object body (size-capped by the router's body limit).
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ClientError::new(ErrorCode::PayloadTooLarge)
            } else {
                ClientError::with_message(ErrorCode::BadRequest, "the body could not be read")
            }
        })?;
        Ok(Self::from_bytes(&bytes)?)
    }
}

impl JsonObject {
    /// Parses a body that must be one JSON object.
    ///
    /// # Errors
    /// `bad_request` when it is not valid JSON or not an object.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ClientError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ClientError::with_message(
                ErrorCode::BadRequest,
                "the body must be a JSON object",
            )),
            Err(_) => Err(ClientError::with_message(
                ErrorCode::BadRequest,
                "the body is not valid JSON",
            )),
        }
    }

    /// The string field `name`, parsed with `parse`.
    ///
    /// # Errors
    /// `bad_request` naming the field when it is missing, not a string, or
    /// breaks the rule.
    pub fn field<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, ClientError> {
        match self.0.get(name) {
            Some(Value::String(s)) => parse(s)
                .map_err(|e| ClientError::with_message(ErrorCode::BadRequest, e.to_string())),
            Some(_) => Err(ClientError::bad_field(name, "must be a string")),
            None => Err(ClientError::bad_field(name, "is required")),
        }
    }

    /// The optional array-of-strings field `name`, each parsed with `parse`.
    ///
    /// # Errors
    /// `bad_request` naming the field when it is not an array of valid strings
    /// or has more than `max` items.
    pub fn list<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        max: usize,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Vec<T>, ClientError> {
        match self.0.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) if items.len() <= max => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => parse(s).map_err(|e| {
                        ClientError::with_message(ErrorCode::BadRequest, e.to_string())
                    }),
                    _ => Err(ClientError::bad_field(name, "must hold only strings")),
                })
                .collect(),
            Some(Value::Array(_)) => Err(ClientError::bad_field(name, "has too many items")),
            Some(_) => Err(ClientError::bad_field(name, "must be an array of strings")),
        }
    }
}
