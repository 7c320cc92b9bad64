//! What a cluster node does when the cluster tells it to: the
//! [`Hooks`] of [`crate::cluster::nodes`].
//!
//! - Fenced (its lease lost): every local socket gets `serverShutdown` (as
//!   in a rolling restart) and is disconnected, so its client reconnects,
//!   to a live node (a fenced node refuses handshakes and answers 503 on
//!   `/readyz` until it has rejoined).
//! - A user has no socket left anywhere (their last socket's release, or a
//!   dead node's cleanup): the call state's "went offline" transition runs,
//!   which starts the ringing and reconnect graces of their calls.

use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use super::{Hub, calls, events, rooms};
use crate::cluster::nodes::Hooks;
use crate::cluster::presence::Presence;
use crate::domain::UserId;

/// The hooks of this node's Socket.IO server.
pub struct NodeHooks<A: Adapter> {
    io: SocketIo<A>,
    hub: Weak<Hub>,
}

impl<A: Adapter> NodeHooks<A> {
    /// Hooks acting on `io` and `hub` (held weakly: the hub owns the hooks).
    pub fn new(io: SocketIo<A>, hub: &Arc<Hub>) -> Arc<Self> {
        Arc::new(Self {
            io,
            hub: Arc::downgrade(hub),
        })
    }
}

impl<A: Adapter> Hooks for NodeHooks<A> {
    fn disconnect_local(&self) -> BoxFuture<'static, ()> {
        let io = self.io.clone();
        Box::pin(async move {
            let Some(ns) = rooms::namespace(&io) else {
                return;
            };
            // `sockets()` is this node's only, on every adapter.
            let sockets = ns.sockets();
            tracing::warn!(
                sockets = sockets.len(),
                "fenced: disconnecting every local socket"
            );
            // The rolling-restart notice first: clients reconnect on it (a
            // server-side disconnect alone tells socket.io-client not to).
            let notice = serde_json::json!({
                "code": "server_shutdown",
                "message": "this server is rejoining the cluster; reconnect shortly",
            });
            for socket in sockets {
                let _ = socket.emit(events::SERVER_SHUTDOWN, &notice);
                let _ = socket.disconnect();
            }
        })
    }

    fn user_offline(&self, user: UserId) -> BoxFuture<'static, ()> {
        let io = self.io.clone();
        let hub = self.hub.clone();
        Box::pin(async move {
            let Some(hub) = hub.upgrade() else {
                return;
            };
            if let Err(e) = calls::user_went_offline(&io, &hub, &user).await {
                tracing::warn!(user_id = %user, error = %e, "went offline: grace timers not started");
            }
        })
    }
}

/// Cluster presence for the cluster timers ([`super::timers`]): whether the
/// timer's user has a socket on any live node.
pub fn presence(presence: Presence) -> super::timers::Presence {
    Arc::new(move |user: UserId| {
        let presence = presence.clone();
        Box::pin(async move { presence.online(&user).await })
    })
}
