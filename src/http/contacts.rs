//! `GET /contacts`: the people a user can see, namely everyone who shares a
//! group with them, with their names and whether they are online now. A
//! frontend needs it to show whom it can call (and the demo page uses it).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::ApiState;
use super::error::ApiError;
use super::extract::CurrentUser;
use crate::domain::{DisplayName, UserId, Username};

/// Most contacts one answer lists (the first by id; they are looked up in one
/// directory query, whose size this bounds however large the groups are).
pub const MAX_CONTACTS: usize = 500;

/// A contact as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactView {
    id: UserId,
    username: Username,
    display_name: DisplayName,
    /// Whether the user has a connected socket right now.
    online: bool,
}

/// `GET /contacts`: members of the caller's groups (not the caller), sorted by
/// display name, at most [`MAX_CONTACTS`].
pub async fn list(
    State(state): State<ApiState>,
    CurrentUser(me): CurrentUser,
) -> Result<Json<Vec<ContactView>>, ApiError> {
    let groups = state.store.groups_of(&me.id).await?;
    let ids: BTreeSet<UserId> = groups
        .into_iter()
        .flat_map(|g| g.members)
        .filter(|id| *id != me.id)
        .collect();
    let ids: Vec<UserId> = ids.into_iter().take(MAX_CONTACTS).collect();
    // One directory query for them all. A member id with no user behind it
    // (deleted elsewhere) is not in the answer, so it is skipped.
    let mut contacts: Vec<ContactView> = state
        .store
        .users(&ids)
        .await?
        .into_iter()
        .map(|user| ContactView {
            online: state.io.is_online_here(&user.id),
            id: user.id,
            username: user.username,
            display_name: user.display_name,
        })
        .collect();
    // Cluster mode: online on any node, one Redis round trip for them all.
    if let Some(cluster) = state.hub.cluster() {
        let ids: Vec<UserId> = contacts.iter().map(|c| c.id.clone()).collect();
        let online = cluster.presence.online_many(&ids).await?;
        for (contact, online) in contacts.iter_mut().zip(online) {
            contact.online |= online;
        }
    }
    contacts.sort_by(|a, b| {
        (a.display_name.as_str(), a.username.as_str())
            .cmp(&(b.display_name.as_str(), b.username.as_str()))
    });
    Ok(Json(contacts))
}
