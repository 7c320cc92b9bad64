//! `POST /auth/register`, `POST /auth/login`, `GET /auth/me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::error::ApiError;
use super::extract::{CurrentUser, JsonObject};
use crate::domain::{DisplayName, Password, Username};
use crate::error::{ClientError, ErrorCode};
use crate::store::{NewUser, User};

/// What register and login answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    token: String,
    expires_at: u64,
    user: User,
}

fn session(state: &ApiState, user: User) -> Result<Session, ApiError> {
    let issued = state
        .keys
        .issue(&user.id, &user.display_name)
        .map_err(|_| {
            tracing::error!("token signing failed");
            ClientError::new(ErrorCode::Internal)
        })?;
    Ok(Session {
        token: issued.token,
        expires_at: issued.expires_at,
        user,
    })
}

fn password_field(body: &JsonObject) -> Result<Password, ClientError> {
    body.field("password", |s| Password::parse(s.to_string()))
}

/// Registers a user and logs them in.
#[tracing::instrument(skip_all)]
pub async fn register(
    State(state): State<ApiState>,
    body: JsonObject,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    if !state.registration_open {
        return Err(ClientError::new(ErrorCode::RegistrationClosed).into());
    }
    let username = body.field("username", Username::parse)?;
    let password = password_field(&body)?;
    let display_name = body.field("displayName", DisplayName::parse)?;
    if state.store.credentials(&username).await?.is_some() {
        return Err(ClientError::new(ErrorCode::UsernameTaken).into());
    }
    let password_hash = state.hasher.hash(password).await?;
    let user = state
        .store
        .create_user(NewUser {
            username,
            display_name,
            password_hash,
        })
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((StatusCode::CREATED, Json(session(&state, user)?)))
}

/// Logs a user in. An unknown username and a wrong password give the same
/// answer, byte for byte, after the same work.
#[tracing::instrument(skip_all)]
pub async fn login(
    State(state): State<ApiState>,
    body: JsonObject,
) -> Result<Json<Session>, ApiError> {
    let invalid = || ClientError::new(ErrorCode::InvalidCredentials);
    // A malformed username cannot exist: answer like an unknown one.
    let username = body.field("username", |s| Ok::<_, &str>(Username::parse(s).ok()))?;
    let password = password_field(&body).map_err(|_| invalid())?;
    let credentials = match &username {
        Some(u) => state.store.credentials(u).await?,
        None => None,
    };
    let (user, stored) = match credentials {
        Some(c) => (Some(c.user), c.password_hash),
        None => (None, None),
    };
    let verified = state.hasher.verify(password, stored).await?;
    match user {
        Some(user) if verified => {
            tracing::info!(user_id = %user.id, "login succeeded");
            Ok(Json(session(&state, user)?))
        }
        _ => {
            tracing::info!(reason = "invalid_credentials", "login failed");
            Err(invalid().into())
        }
    }
}

/// The user behind the bearer token.
pub async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}
