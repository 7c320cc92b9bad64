//! Socket.IO rooms and the events that manage them: `userOnline`,
//! `joinVideoRoom`, `joinGroup`, `leaveGroup`, `groupCreated`.
//!
//! Rooms are namespaced (`user:`, `group:`, `call:`) and built only from parsed
//! ids, so no id a client sends can name another kind of room. Every join is
//! decided by the directory, never by the payload.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};

use super::reply::{self, Channel};
use super::{Hub, events, payload, session};
use crate::domain::{GroupId, UserId};
use crate::error::{ClientError, ErrorCode};
use crate::limits::EventClass;

const USER_PREFIX: &str = "user:";
const GROUP_PREFIX: &str = "group:";

/// The room holding every socket of `user`.
pub fn user_room(user: &UserId) -> String {
    format!("{USER_PREFIX}{user}")
}

/// The room for members of `group`.
pub fn group_room(group: &GroupId) -> String {
    format!("{GROUP_PREFIX}{group}")
}

/// The default namespace, or `None` once the server has closed it
/// (socketioxide's `io.to`, `io.within` and `io.get_socket` panic then, and
/// disconnects can still be running during a shutdown).
pub fn namespace<A: Adapter>(
    io: &SocketIo<A>,
) -> Option<socketioxide::operators::BroadcastOperators<A>> {
    io.of("/")
}

/// Every live socket of `user`.
pub fn user_sockets<A: Adapter>(
    io: &SocketIo<A>,
    user: &UserId,
) -> Vec<socketioxide::extract::SocketRef<A>> {
    namespace(io)
        .map(|ns| ns.within(user_room(user)).sockets())
        .unwrap_or_default()
}

/// Joins every live socket of `user` to the group's room.
pub async fn join_group<A: Adapter>(io: &SocketIo<A>, user: &UserId, group: &GroupId) {
    let Some(ns) = namespace(io) else { return };
    if let Err(e) = ns.to(user_room(user)).join(group_room(group)).await {
        tracing::warn!(error = ?e, "could not join sockets to group room");
    }
}

/// Removes every live socket of `user` from the group's room.
pub async fn leave_group<A: Adapter>(io: &SocketIo<A>, user: &UserId, group: &GroupId) {
    let Some(ns) = namespace(io) else { return };
    if let Err(e) = ns.to(user_room(user)).leave(group_room(group)).await {
        tracing::warn!(error = ?e, "could not remove sockets from group room");
    }
}

fn fail<A: Adapter>(
    hub: &Hub,
    socket: &SocketRef<A>,
    ack: AckSender<A>,
    event: &'static str,
    error: &ClientError,
) {
    reply::fail(
        &hub.metrics,
        socket,
        ack,
        event,
        Channel::General,
        error,
        Map::new(),
    );
}

/// A user id in a payload may only be the sender's own.
fn must_be_self(
    claimed: Option<UserId>,
    me: &UserId,
    event: &'static str,
) -> Result<(), ClientError> {
    match claimed {
        Some(id) if &id != me => {
            tracing::warn!(user_id = %me, event, reason = "foreign_user_id", "forbidden attempt");
            Err(ClientError::with_message(
                ErrorCode::Forbidden,
                "you can only act as yourself",
            ))
        }
        _ => Ok(()),
    }
}

/// `userOnline(userId)`: own id (or none) only; re-syncs the socket's group
/// rooms from the directory. Ack `{ok, groups: [ids]}`.
pub async fn user_online<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(hub): State<Arc<Hub>>,
) {
    let Some((me, ack)) = session::admitted(
        &socket,
        &hub,
        EventClass::Rooms,
        events::USER_ONLINE,
        Channel::General,
        ack,
    )
    .await
    else {
        return;
    };
    let result = async {
        let claimed = payload::own_user_id(data)?;
        must_be_self(claimed, &me.user_id, events::USER_ONLINE)?;
        let groups = hub.store.groups_of(&me.user_id).await?;
        let wanted: HashSet<String> = groups.iter().map(|g| group_room(&g.id)).collect();
        let stale: Vec<String> = socket
            .rooms()
            .into_iter()
            .map(|r| r.to_string())
            .filter(|r| r.starts_with(GROUP_PREFIX) && !wanted.contains(r))
            .collect();
        socket.leave(stale);
        socket.join(wanted.into_iter().collect::<Vec<_>>());
        Ok::<_, ClientError>(groups.into_iter().map(|g| g.id).collect::<Vec<_>>())
    }
    .await;
    match result {
        Ok(groups) => reply::ok(
            &hub.metrics,
            events::USER_ONLINE,
            ack,
            json!({ "groups": groups }),
        ),
        Err(e) => fail(&hub, &socket, ack, events::USER_ONLINE, &e),
    }
}

/// `joinVideoRoom({userId})`: own id only. The socket is already in its user
/// room since the handshake, so there is nothing else to do.
pub async fn join_video_room<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(hub): State<Arc<Hub>>,
) {
    let Some((me, ack)) = session::admitted(
        &socket,
        &hub,
        EventClass::Rooms,
        events::JOIN_VIDEO_ROOM,
        Channel::General,
        ack,
    )
    .await
    else {
        return;
    };
    let result = (|| {
        let claimed = payload::own_user_id(data)?;
        must_be_self(claimed, &me.user_id, events::JOIN_VIDEO_ROOM)
    })();
    match result {
        Ok(()) => reply::ok(&hub.metrics, events::JOIN_VIDEO_ROOM, ack, Map::new()),
        Err(e) => fail(&hub, &socket, ack, events::JOIN_VIDEO_ROOM, &e),
    }
}

/// `joinGroup(groupId)`: joins the group's room if the directory says the
/// sender is a member; `not_found` otherwise.
pub async fn join_group_event<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(hub): State<Arc<Hub>>,
) {
    let Some((me, ack)) = session::admitted(
        &socket,
        &hub,
        EventClass::Rooms,
        events::JOIN_GROUP,
        Channel::General,
        ack,
    )
    .await
    else {
        return;
    };
    let result = async {
        let group = payload::group_id(data)?;
        match hub.store.group(&group).await? {
            Some(g) if g.has_member(&me.user_id) => {
                socket.join(group_room(&group));
                Ok(group)
            }
            _ => {
                tracing::warn!(user_id = %me.user_id, event = events::JOIN_GROUP, reason = "not_a_member", "forbidden attempt");
                Err(ClientError::new(ErrorCode::NotFound))
            }
        }
    }
    .await;
    match result {
        Ok(group) => reply::ok(
            &hub.metrics,
            events::JOIN_GROUP,
            ack,
            json!({ "groupId": group }),
        ),
        Err(e) => fail(&hub, &socket, ack, events::JOIN_GROUP, &e),
    }
}

/// `leaveGroup(groupId)`: leaves the group's room (harmless if not in it).
pub async fn leave_group_event<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(hub): State<Arc<Hub>>,
) {
    let Some((_, ack)) = session::admitted(
        &socket,
        &hub,
        EventClass::Rooms,
        events::LEAVE_GROUP,
        Channel::General,
        ack,
    )
    .await
    else {
        return;
    };
    let result = payload::group_id(data);
    match result {
        Ok(group) => {
            socket.leave(group_room(&group));
            reply::ok(
                &hub.metrics,
                events::LEAVE_GROUP,
                ack,
                json!({ "groupId": group }),
            );
        }
        Err(e) => fail(&hub, &socket, ack, events::LEAVE_GROUP, &e),
    }
}

/// `groupCreated({groupId, memberIds})`: the sender must be a member; every
/// online member (from the directory, not the payload) joins the group's room.
pub async fn group_created<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    io: SocketIo<A>,
    State(hub): State<Arc<Hub>>,
) {
    let Some((me, ack)) = session::admitted(
        &socket,
        &hub,
        EventClass::Rooms,
        events::GROUP_CREATED,
        Channel::General,
        ack,
    )
    .await
    else {
        return;
    };
    let result = async {
        let group = payload::group_id(data)?;
        match hub.store.group(&group).await? {
            Some(g) if g.has_member(&me.user_id) => {
                for member in &g.members {
                    join_group(&io, member, &g.id).await;
                }
                Ok(g)
            }
            _ => {
                tracing::warn!(user_id = %me.user_id, event = events::GROUP_CREATED, reason = "not_a_member", "forbidden attempt");
                Err(ClientError::new(ErrorCode::NotFound))
            }
        }
    }
    .await;
    match result {
        Ok(g) => reply::ok(
            &hub.metrics,
            events::GROUP_CREATED,
            ack,
            json!({ "groupId": g.id, "members": g.members.len() }),
        ),
        Err(e) => fail(&hub, &socket, ack, events::GROUP_CREATED, &e),
    }
}
