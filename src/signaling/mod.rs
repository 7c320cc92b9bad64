//! Socket.IO signaling: the handshake ([`session`]), rooms ([`rooms`]), event
//! names ([`events`]), payload reading ([`payload`]) and replies ([`reply`]).

pub mod events;
pub mod payload;
pub mod reply;
pub mod rooms;
pub mod session;

use std::sync::Arc;

use serde_json::{Map, Value};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::ConnectHandler;

use crate::auth::TokenKeys;
use crate::error::ClientError;
use crate::store::Store;

/// What every signaling handler shares (socketioxide state).
#[derive(Debug)]
pub struct Hub {
    /// The directory.
    pub store: Store,
    /// Token verification.
    pub keys: Arc<TokenKeys>,
}

/// Registers the default namespace with its handshake middleware.
pub fn attach(io: &SocketIo) {
    io.ns("/", on_connect.with(session::authenticate));
}

/// Runs after the handshake was accepted and CONNECT was sent. Handlers are
/// already registered by then (see [`session`]).
async fn on_connect(socket: SocketRef) {
    if let Ok(s) = session::current(&socket) {
        tracing::debug!(user_id = %s.user_id, "socket connected");
    }
}

/// Registers every event handler on a socket that passed the handshake.
pub(crate) fn register_handlers(socket: &SocketRef) {
    socket.on(events::USER_ONLINE, rooms::user_online);
    socket.on(events::JOIN_VIDEO_ROOM, rooms::join_video_room);
    socket.on(events::JOIN_GROUP, rooms::join_group_event);
    socket.on(events::LEAVE_GROUP, rooms::leave_group_event);
    socket.on(events::GROUP_CREATED, rooms::group_created);
    socket.on_fallback(unknown_event);
}

/// Any other event: `bad_request` by ack and `error` event, so a client that
/// waits for an ack is not left hanging.
async fn unknown_event(socket: SocketRef, ack: AckSender) {
    let error = ClientError::bad_field("event", "is not one callgate handles");
    reply::fail(
        &socket,
        ack,
        "unknown",
        reply::Channel::General,
        &error,
        Map::<String, Value>::new(),
    );
}
