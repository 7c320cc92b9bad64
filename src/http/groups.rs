//! Group routes. A membership change takes effect on the member's live sockets
//! at once: they join or leave the group's room.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::error::ApiError;
use super::extract::{CurrentUser, JsonObject};
use crate::domain::{GroupId, GroupName, UserId};
use crate::error::{ClientError, ErrorCode};
use crate::signaling::rooms;
use crate::store::{Group, NewGroup};

/// Most members a group can be created with in one request.
pub const MAX_MEMBERS_PER_REQUEST: usize = 256;

/// A group as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    id: GroupId,
    name: GroupName,
    owner: Option<UserId>,
    members: Vec<UserId>,
}

impl From<Group> for GroupView {
    fn from(g: Group) -> Self {
        Self {
            id: g.id,
            name: g.name,
            owner: g.owner,
            members: g.members,
        }
    }
}

fn parse_group_id(raw: &str) -> Result<GroupId, ClientError> {
    // An id that cannot exist is simply not found.
    GroupId::parse(raw).map_err(|_| ClientError::new(ErrorCode::NotFound))
}

/// The group if `user` is a member; `not_found` otherwise (a group that is not
/// yours looks the same as one that does not exist).
async fn group_for_member(
    state: &ApiState,
    id: &GroupId,
    user: &UserId,
) -> Result<Group, ApiError> {
    match state.store.group(id).await? {
        Some(g) if g.has_member(user) => Ok(g),
        _ => Err(ClientError::new(ErrorCode::NotFound).into()),
    }
}

/// `GET /groups`: the caller's groups.
pub async fn list(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let groups = state.store.groups_of(&me.id).await?;
    Ok(Json(groups.into_iter().map(GroupView::from).collect()))
}

/// `POST /groups {name, memberIds}`: the caller becomes owner and member.
pub async fn create(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
    body: JsonObject,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let name = body.field("name", GroupName::parse)?;
    let members = body.list("memberIds", MAX_MEMBERS_PER_REQUEST, UserId::parse)?;
    let existing = state.store.existing_users(&members).await?;
    if members.iter().any(|m| !existing.contains(m)) {
        return Err(ClientError::bad_field("memberIds", "names a user that does not exist").into());
    }
    let group = state
        .store
        .create_group(NewGroup {
            name,
            owner: me.id.clone(),
            members,
        })
        .await?;
    for member in &group.members {
        rooms::join_group(&state.io, member, &group.id).await;
    }
    tracing::info!(user_id = %me.id, group_id = %group.id, "group created");
    Ok((StatusCode::CREATED, Json(group.into())))
}

/// `GET /groups/{id}`: members only.
pub async fn show(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    let id = parse_group_id(&id)?;
    Ok(Json(group_for_member(&state, &id, &me.id).await?.into()))
}

/// `POST /groups/{id}/members {userId}`: owner only.
pub async fn add_member(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<String>,
    body: JsonObject,
) -> Result<Json<GroupView>, ApiError> {
    let id = parse_group_id(&id)?;
    let user = body.field("userId", UserId::parse)?;
    let group = group_for_member(&state, &id, &me.id).await?;
    if group.owner.as_ref() != Some(&me.id) {
        return Err(ClientError::with_message(
            ErrorCode::Forbidden,
            "only the owner can add members",
        )
        .into());
    }
    if state.store.user(&user).await?.is_none() {
        return Err(ClientError::bad_field("userId", "names a user that does not exist").into());
    }
    state.store.add_member(&id, &user).await?;
    rooms::join_group(&state.io, &user, &id).await;
    tracing::info!(user_id = %me.id, group_id = %id, member = %user, "member added");
    Ok(Json(group_for_member(&state, &id, &me.id).await?.into()))
}

/// `DELETE /groups/{id}/members/{userId}`: the owner, or the member leaving.
pub async fn remove_member(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_group_id(&id)?;
    let user = UserId::parse(&user).map_err(|_| ClientError::new(ErrorCode::NotFound))?;
    let group = group_for_member(&state, &id, &me.id).await?;
    let is_owner = group.owner.as_ref() == Some(&me.id);
    if !is_owner && user != me.id {
        return Err(ClientError::with_message(
            ErrorCode::Forbidden,
            "only the owner can remove others",
        )
        .into());
    }
    if !state.store.remove_member(&id, &user).await? {
        return Err(ClientError::new(ErrorCode::NotFound).into());
    }
    rooms::leave_group(&state.io, &user, &id).await;
    tracing::info!(user_id = %me.id, group_id = %id, member = %user, "member removed");
    Ok(StatusCode::NO_CONTENT)
}
