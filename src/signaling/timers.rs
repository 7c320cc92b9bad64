//! Cluster timers: every node polls the shared timer set (`p:timers`) every
//! `cluster.timer_poll_ms`, claims what is due (each timer goes to one node
//! only) and fires it as a transition, then delivers its events. A timer
//! whose node died fires on another node. In one process, timers are tokio
//! tasks instead (see [`super::calls`]) and this poller is not started.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{Hub, calls, rooms};
use crate::cluster::ClusterError;
use crate::domain::UserId;

/// Whether a user has a socket anywhere in the cluster (part B's presence).
/// An error leaves the timer claimed: it fires again once its claim lapses.
pub type Presence =
    Arc<dyn Fn(UserId) -> BoxFuture<'static, Result<bool, ClusterError>> + Send + Sync>;

/// Presence through the Socket.IO adapter: whether any node has a socket in
/// the user's room (a remote `fetch_sockets`, bounded by
/// `cluster.adapter_request_timeout_ms`). Cluster presence in Redis (part B)
/// replaces it where available.
pub fn adapter_presence<A: Adapter>(io: SocketIo<A>) -> Presence {
    Arc::new(move |user: UserId| {
        let io = io.clone();
        Box::pin(async move {
            let Some(ns) = rooms::namespace(&io) else {
                return Ok(false);
            };
            ns.within(rooms::user_room(&user))
                .fetch_sockets()
                .await
                .map(|sockets| !sockets.is_empty())
                .map_err(|_| ClusterError::Unavailable)
        })
    })
}

/// Starts this node's timer poller (cluster mode). Abort the handle to stop it.
pub fn spawn<A: Adapter>(
    io: SocketIo<A>,
    hub: Arc<Hub>,
    every: Duration,
    online: Presence,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            poll(&io, &hub, &online).await;
        }
    })
}

/// One poll: claim what is due, fire each, deliver.
pub async fn poll<A: Adapter>(io: &SocketIo<A>, hub: &Arc<Hub>, online: &Presence) {
    let claimed = match hub.calls().claim_due().await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::debug!(error = %e, "timer poll skipped");
            return;
        }
    };
    for timer in claimed {
        let user_online = match timer.timer.user() {
            None => false,
            Some(user) => match online(user.clone()).await {
                Ok(online) => online,
                Err(e) => {
                    tracing::debug!(error = %e, "presence unknown; the timer fires later");
                    continue;
                }
            },
        };
        match hub.fire_claimed(&timer, user_online).await {
            Ok(outcome) => calls::apply(io, hub, outcome).await,
            Err(e) => {
                tracing::debug!(error = %e, "timer not fired; it fires again when its claim lapses")
            }
        }
    }
}
