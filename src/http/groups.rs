//! Group routes. A membership change takes effect on the member's live sockets
//! at once: they join or leave the group's room, and a removed member leaves
//! the group's live call.
//!
//! Who can be added: only users the caller already shares a group with
//! (their co-members). A user id that does not exist and one the caller may
//! not add get the same answer, so the routes cannot be used to find out
//! which ids exist. Groups come first from the directory (a seed, or the chat
//! app's own MongoDB), and grow through members who know each other.
//! Creating groups and changing membership are rate-limited per user
//! (`rate_limits.group_changes`), and the groups a user belongs to are capped
//! (`groups.max_per_user`, answered `limit_reached`). A group's owner cannot
//! leave or be removed while others remain: they hand it over first
//! (`POST /groups/{id}/owner`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::error::ApiError;
use super::extract::{CurrentUser, JsonObject};
use std::collections::HashSet;

use crate::cluster::rates::Limited;
use crate::domain::{GroupId, GroupName, UserId};
use crate::error::{ClientError, ErrorCode};
use crate::signaling::call_store::Scope;
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

/// Charges the caller's `group_changes` bucket (in cluster mode, then the
/// cluster-wide one).
async fn charge(state: &ApiState, me: &UserId) -> Result<(), ApiError> {
    let limited = |wait| {
        tracing::warn!(user_id = %me, route = "groups", "rate limited");
        ApiError::rate_limited(wait)
    };
    state.limits.rates().group_change(me).map_err(limited)?;
    if let Some(cluster) = state.limits.cluster() {
        cluster.group_change(me).await.map_err(|e| match e {
            Limited::Wait(wait) => limited(wait),
            Limited::Cluster(e) => e.into(),
        })?;
    }
    Ok(())
}

/// The same answer for an id that does not exist and one the caller may not
/// add.
fn cannot_add(field: &'static str) -> ApiError {
    ClientError::bad_field(field, "names a user you cannot add").into()
}

/// Every user who shares a group with `me` and is still in the directory.
async fn co_members(state: &ApiState, me: &UserId) -> Result<HashSet<UserId>, ApiError> {
    let mut ids: HashSet<UserId> = state
        .store
        .groups_of(me)
        .await?
        .into_iter()
        .flat_map(|g| g.members)
        .filter(|m| m != me)
        .collect();
    let wanted: Vec<UserId> = ids.iter().cloned().collect();
    let existing: HashSet<UserId> = state
        .store
        .existing_users(&wanted)
        .await?
        .into_iter()
        .collect();
    ids.retain(|id| existing.contains(id));
    Ok(ids)
}

/// `limit_reached` when `user` already belongs to `groups.max_per_user` groups.
async fn has_room_for_one_more(state: &ApiState, user: &UserId) -> Result<(), ApiError> {
    let max = state.limits.groups().max_per_user;
    if state.store.groups_of(user).await?.len() >= max {
        return Err(ClientError::with_message(
            ErrorCode::LimitReached,
            "a member would be in more groups than the policy allows",
        )
        .into());
    }
    Ok(())
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
    charge(&state, &me.id).await?;
    let name = body.field("name", GroupName::parse)?;
    let members = body.list("memberIds", MAX_MEMBERS_PER_REQUEST, UserId::parse)?;
    let allowed = co_members(&state, &me.id).await?;
    if members.iter().any(|m| *m != me.id && !allowed.contains(m)) {
        tracing::warn!(user_id = %me.id, reason = "not_a_co_member", "group creation refused");
        return Err(cannot_add("memberIds"));
    }
    let mut everyone: Vec<UserId> = vec![me.id.clone()];
    for m in &members {
        if !everyone.contains(m) {
            everyone.push(m.clone());
        }
    }
    for user in &everyone {
        has_room_for_one_more(&state, user).await?;
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
        state.io.join_group(member, &group.id).await;
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

/// `forbidden` with `message` unless `me` owns `group`.
fn require_owner(group: &Group, me: &UserId, message: &'static str) -> Result<(), ApiError> {
    if group.owner.as_ref() == Some(me) {
        Ok(())
    } else {
        Err(ClientError::with_message(ErrorCode::Forbidden, message).into())
    }
}

/// `POST /groups/{id}/members {userId}`: owner only.
pub async fn add_member(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<String>,
    body: JsonObject,
) -> Result<Json<GroupView>, ApiError> {
    charge(&state, &me.id).await?;
    let id = parse_group_id(&id)?;
    let user = body.field("userId", UserId::parse)?;
    let group = group_for_member(&state, &id, &me.id).await?;
    require_owner(&group, &me.id, "only the owner can add members")?;
    if group.has_member(&user) {
        return Ok(Json(group.into()));
    }
    if !co_members(&state, &me.id).await?.contains(&user) {
        tracing::warn!(user_id = %me.id, group_id = %id, reason = "not_a_co_member", "member add refused");
        return Err(cannot_add("userId"));
    }
    has_room_for_one_more(&state, &user).await?;
    state.store.add_member(&id, &user).await?;
    state.io.join_group(&user, &id).await;
    tracing::info!(user_id = %me.id, group_id = %id, member = %user, "member added");
    Ok(Json(group_for_member(&state, &id, &me.id).await?.into()))
}

/// `DELETE /groups/{id}/members/{userId}`: the owner, or the member leaving.
/// The owner cannot leave (or remove themselves) while others remain.
pub async fn remove_member(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    charge(&state, &me.id).await?;
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
    if group.owner.as_ref() == Some(&user) && group.members.iter().any(|m| *m != user) {
        return Err(ClientError::with_message(
            ErrorCode::Forbidden,
            "the owner must hand the group over before leaving",
        )
        .into());
    }
    if !state.store.remove_member(&id, &user).await? {
        return Err(ClientError::new(ErrorCode::NotFound).into());
    }
    state.io.leave_group(&user, &id).await;
    let scope = Scope::user(&user).and_group(&id);
    match state
        .hub
        .with_calls(scope, |c| c.member_removed(&id, &user))
        .await
    {
        Ok(outcome) => state.io.apply(&state.hub, outcome).await,
        // The directory changed; the call keeps them until it ends, but the
        // accept rule asks the directory, so they cannot rejoin it.
        Err(e) => {
            tracing::warn!(group_id = %id, error = %e, "removed member not taken out of the group call")
        }
    }
    tracing::info!(user_id = %me.id, group_id = %id, member = %user, "member removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /groups/{id}/owner {userId}`: the owner hands the group to another
/// member.
pub async fn set_owner(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<String>,
    body: JsonObject,
) -> Result<Json<GroupView>, ApiError> {
    charge(&state, &me.id).await?;
    let id = parse_group_id(&id)?;
    let user = body.field("userId", UserId::parse)?;
    let group = group_for_member(&state, &id, &me.id).await?;
    require_owner(&group, &me.id, "only the owner can hand the group over")?;
    if !state.store.set_owner(&id, &user).await? {
        return Err(ClientError::bad_field("userId", "must be a member of the group").into());
    }
    tracing::info!(user_id = %me.id, group_id = %id, new_owner = %user, "group handed over");
    Ok(Json(group_for_member(&state, &id, &me.id).await?.into()))
}
