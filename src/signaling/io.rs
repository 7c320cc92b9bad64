//! The Socket.IO server of this node, whichever adapter it runs on: the local
//! one (one process) or socketioxide's Redis adapter (cluster mode).
//!
//! Signaling handlers are generic over the adapter (`SocketRef<A>`,
//! `SocketIo<A>`). What is not a handler (the HTTP API moving sockets between
//! group rooms, shutdown, the session recheck) goes through [`Io`], which
//! names the two cases once.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;

use super::registry::Outcome;
use super::{Hub, calls, rooms, session};
use crate::cluster::ClusterAdapter;
use crate::domain::{GroupId, UserId};

/// This node's Socket.IO server.
#[derive(Debug, Clone)]
pub enum Io {
    /// One process, no Redis.
    Local(SocketIo),
    /// A cluster node: rooms and emits reach every node through Redis.
    Cluster(SocketIo<ClusterAdapter>),
}

macro_rules! each {
    ($io:expr, $s:ident => $e:expr) => {
        match $io {
            Io::Local($s) => $e,
            Io::Cluster($s) => $e,
        }
    };
}

impl Io {
    /// The single-process server (tests inspect its local sockets).
    pub fn local(&self) -> Option<&SocketIo> {
        match self {
            Io::Local(io) => Some(io),
            Io::Cluster(_) => None,
        }
    }

    /// Joins every socket of `user`, on every node, to the group's room.
    pub async fn join_group(&self, user: &UserId, group: &GroupId) {
        each!(self, io => rooms::join_group(io, user, group).await);
    }

    /// Takes every socket of `user`, on every node, out of the group's room.
    pub async fn leave_group(&self, user: &UserId, group: &GroupId) {
        each!(self, io => rooms::leave_group(io, user, group).await);
    }

    /// Delivers a transition's events and starts its timers.
    pub async fn apply(&self, hub: &Arc<Hub>, outcome: Outcome) {
        each!(self, io => calls::apply(io, hub, outcome).await);
    }

    /// `user` has no socket left anywhere: their calls' grace timers start
    /// (the hook of the cluster's dead-node cleanup; see
    /// [`calls::user_went_offline`]).
    ///
    /// # Errors
    /// [`crate::cluster::ClusterError`]: no timer was started.
    pub async fn user_went_offline(
        &self,
        hub: &Arc<Hub>,
        user: &UserId,
    ) -> Result<(), crate::cluster::ClusterError> {
        each!(self, io => calls::user_went_offline(io, hub, user).await)
    }

    /// Starts this node's cluster timer poller (see [`super::timers`]),
    /// with `online` as the cluster-wide presence; `None` asks the
    /// Socket.IO adapter ([`super::timers::adapter_presence`]).
    pub fn spawn_cluster_timers(
        &self,
        hub: &Arc<Hub>,
        every: Duration,
        online: Option<super::timers::Presence>,
    ) -> tokio::task::JoinHandle<()> {
        each!(self, io => {
            let online = online.unwrap_or_else(|| super::timers::adapter_presence(io.clone()));
            super::timers::spawn(io.clone(), hub.clone(), every, online)
        })
    }

    /// Whether `user` has a socket on this node.
    pub fn is_online_here(&self, user: &UserId) -> bool {
        each!(self, io => calls::is_online(io, user))
    }

    /// `serverShutdown` to this node's sockets, then closes them.
    pub async fn shutdown(&self) {
        each!(self, io => super::shutdown(io).await);
    }

    /// Starts the periodic check of live sessions against the directory.
    pub fn spawn_recheck(&self, store: crate::store::Store, period: Duration) {
        each!(self, io => session::spawn_recheck(io.clone(), store, period));
    }
}
