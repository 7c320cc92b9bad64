//! What a node checks, cluster-wide, before it admits a socket or an event:
//! its own liveness ([`Nodes`]), presence and connection caps
//! ([`Presence`]) and rate limits ([`ClusterRates`]). The signaling layer
//! holds one [`Admission`] in cluster mode and none in one process.
//!
//! Redis: one server (or a primary with replicas), version 7 or later, not
//! Redis Cluster: the scripts read keys they compute (other nodes' leases,
//! the hashes a cleanup walks), which a sharded Redis does not allow.
//!
//! Redis round trips: a handshake 2 (handshake rate, slot), an admitted
//! event 1 (its rate), a disconnect 1 (release). A call event (initiate,
//! accept, reject, end) takes its rate charge, and an initiate whether the
//! callee is online, in its transition's first read: no round trip of their
//! own ([`crate::signaling::call_store::Gate`]). A fenced node answers every
//! check from memory.

use std::sync::Arc;

use super::Redis;
use super::nodes::{Hooks, NodeTimes, Nodes, StartError};
use super::presence::Presence;
use super::rates::ClusterRates;
use crate::config::ClusterConfig;
use crate::limits::Limits;
use crate::policy::RateLimitPolicy;

/// The cluster-wide admission checks of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    /// This node's lease and the dead-node sweep.
    pub nodes: Arc<Nodes>,
    /// Presence and connection caps.
    pub presence: Presence,
    /// Rate limits.
    pub rates: ClusterRates,
    /// Whether the adapter hears the other nodes (false while its
    /// subscriber reconnects after a Redis outage).
    pub subscribed: super::Subscribed,
}

impl Admission {
    /// Registers this node (see [`Nodes::start`]), builds the checks and
    /// adds the cluster rate limits to `limits` (checked after its local
    /// ones, and following its policy reloads). Call
    /// [`Admission::set_hooks`] once the Socket.IO server exists.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn start(
        redis: Redis,
        cfg: &ClusterConfig,
        rates: &RateLimitPolicy,
        limits: &Limits,
    ) -> Result<Self, StartError> {
        let nodes = Nodes::start(redis.clone(), NodeTimes::from(cfg)).await?;
        let rates = ClusterRates::new(redis, rates);
        limits.set_cluster(rates.clone());
        Ok(Self {
            presence: Presence::new(nodes.clone()),
            rates,
            nodes,
            subscribed: super::Subscribed::new(),
        })
    }

    /// Installs what the node does when fenced and when a user goes offline
    /// cluster-wide. Dead nodes are swept only once hooks are set.
    pub fn set_hooks(&self, hooks: Arc<dyn Hooks>) {
        self.nodes.set_hooks(hooks);
    }

    /// Whether this node may admit sockets: it holds its lease (not fenced)
    /// and its adapter hears the other nodes. A node back from a Redis outage
    /// re-registers before its subscriber has resubscribed; in between, a
    /// ring sent to its users would be lost, so it is not ready yet.
    pub fn serving(&self) -> bool {
        !self.nodes.is_fenced() && self.subscribed.is_ready()
    }

    /// Graceful shutdown: see [`Nodes::shutdown`]. Call it after the local
    /// sockets were closed, before the process exits.
    pub async fn shutdown(&self) {
        self.nodes.shutdown().await;
    }
}
