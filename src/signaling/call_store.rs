//! The call state behind one interface, with two backends.
//!
//! - [`CallStore::memory`]: one process (no Redis). The [`Registry`] under a
//!   `std::sync::Mutex` held for the transition only; timers are tokio tasks
//!   the signaling layer starts from each outcome. This is callgate as it
//!   always ran, with the same cost per transition.
//! - [`CallStore::redis`]: cluster mode. Each transition loads the records
//!   it may touch from Redis into a fresh [`Registry`], runs the same rule,
//!   and commits what changed with one compare-and-set script; the timers it
//!   asked for are written in that same commit and fire on whichever node
//!   claims them first (see [`crate::cluster::call_state`]).
//!
//! Either way the rules are the ones in [`super::registry`], and a handler
//! names what a transition is about with a [`Scope`] (ignored in memory).

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::registry::{Body, Emit, Outcome, Reason, Registry, Timer};
use crate::cluster::call_state::{ClaimedTimer, RedisCalls, RoundTrips};
use crate::cluster::rates::Charge;
use crate::cluster::{ClusterError, Redis};
use crate::domain::{CallId, GroupId, RoomName, UserId};
use crate::jitsi::Grant;
use crate::limits::RetryAfter;
use crate::policy::CallPolicy;

/// What a transition is about: the records a store loads before running it.
///
/// `users` are the acting users (their record and every call it names are
/// loaded); `parties` are users whose record a new call will name (loaded,
/// their calls not followed); `calls`, `rooms` and `groups` are named by the
/// event. A store loads whatever else the transition turns out to need.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    /// Acting users.
    pub users: Vec<UserId>,
    /// Users a new call will involve.
    pub parties: Vec<UserId>,
    /// Calls named by id.
    pub calls: Vec<CallId>,
    /// Rooms named.
    pub rooms: Vec<RoomName>,
    /// Groups named.
    pub groups: Vec<GroupId>,
    /// The transition most likely creates a call that touches nothing live
    /// (an initiate): a store may commit it first against absent records,
    /// and read only when that commit finds one (see
    /// [`crate::cluster::call_state`]). The outcome is the same either way.
    pub likely_new: bool,
}

impl Scope {
    /// A transition by (or about) `user`.
    pub fn user(user: &UserId) -> Self {
        Self {
            users: vec![user.clone()],
            ..Self::default()
        }
    }

    /// Also about `user`.
    #[must_use]
    pub fn and_user(mut self, user: &UserId) -> Self {
        self.users.push(user.clone());
        self
    }

    /// Also about the call `id`, when named.
    #[must_use]
    pub fn and_call(mut self, id: Option<CallId>) -> Self {
        self.calls.extend(id);
        self
    }

    /// Also about `room`, when named.
    #[must_use]
    pub fn and_room(mut self, room: Option<&RoomName>) -> Self {
        self.rooms.extend(room.cloned());
        self
    }

    /// Also about `group`.
    #[must_use]
    pub fn and_group(mut self, group: &GroupId) -> Self {
        self.groups.push(group.clone());
        self
    }

    /// Most likely a new call over absent records (the `likely_new` field).
    #[must_use]
    pub fn likely_new(mut self) -> Self {
        self.likely_new = true;
        self
    }

    /// A new call will also involve `users`.
    #[must_use]
    pub fn and_parties(mut self, users: impl IntoIterator<Item = UserId>) -> Self {
        self.parties.extend(users);
        self
    }
}

/// What a transition's first read also checks in cluster mode, in the same
/// round trip ([`crate::cluster::call_state::GATE`]): the event's
/// cluster-wide rate charge and a user who must be online. One process
/// checks both before the transition, from memory, so its gate is empty.
#[derive(Debug, Default, Clone)]
pub struct Gate {
    /// The event's cluster-wide rate charge, taken before anything is read.
    pub charge: Option<Charge>,
    /// A user who must have a socket on a live node (an initiate's callee).
    pub online: Option<UserId>,
}

impl Gate {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.charge.is_none() && self.online.is_none()
    }
}

/// Why a gated transition did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The charge was refused: wait this long. Nothing was read.
    #[error("rate limited")]
    Limited(RetryAfter),
    /// The user required online has no socket on a live node.
    #[error("offline")]
    Offline,
    /// Redis failed, or this node is fenced: nothing changed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A transition's result that may carry timers to start.
///
/// In memory the timers stay in the result (the signaling layer starts tokio
/// tasks); the Redis store moves them out and writes them in the same commit
/// as the transition.
pub trait Effects {
    /// Moves the timers out.
    fn take_timers(&mut self) -> Vec<(Duration, Timer)>;

    /// The users its events go to (see [`Outcome::recipients`]): the Redis
    /// store's commit asks, in the same script, which of them have a socket
    /// on another live node.
    fn recipients(&self) -> BTreeSet<UserId> {
        BTreeSet::new()
    }

    /// Records the recipients the commit found on no other live node (see
    /// [`Outcome::here_only`]).
    fn here_only(&mut self, _users: BTreeSet<UserId>) {}

    /// Its events, in order: the Redis store's commit publishes those for
    /// recipients on other nodes ([`crate::cluster::relay`]).
    fn emits(&self) -> &[Emit] {
        &[]
    }
}

impl Effects for Outcome {
    fn take_timers(&mut self) -> Vec<(Duration, Timer)> {
        std::mem::take(&mut self.timers)
    }

    fn recipients(&self) -> BTreeSet<UserId> {
        Outcome::recipients(self)
    }

    fn here_only(&mut self, users: BTreeSet<UserId>) {
        self.here_only = users;
    }

    fn emits(&self) -> &[Emit] {
        &self.emits
    }
}

impl Effects for Vec<(Duration, Timer)> {
    fn take_timers(&mut self) -> Vec<(Duration, Timer)> {
        std::mem::take(self)
    }
}

impl<T: Effects, E> Effects for Result<T, E> {
    fn take_timers(&mut self) -> Vec<(Duration, Timer)> {
        match self {
            Ok(t) => t.take_timers(),
            Err(_) => Vec::new(),
        }
    }

    fn recipients(&self) -> BTreeSet<UserId> {
        self.as_ref().map(Effects::recipients).unwrap_or_default()
    }

    fn here_only(&mut self, users: BTreeSet<UserId>) {
        if let Ok(t) = self {
            t.here_only(users);
        }
    }

    fn emits(&self) -> &[Emit] {
        self.as_ref().map_or(&[], Effects::emits)
    }
}

impl<T: Effects> Effects for Option<T> {
    fn take_timers(&mut self) -> Vec<(Duration, Timer)> {
        self.as_mut().map(Effects::take_timers).unwrap_or_default()
    }

    fn recipients(&self) -> BTreeSet<UserId> {
        self.as_ref().map(Effects::recipients).unwrap_or_default()
    }

    fn here_only(&mut self, users: BTreeSet<UserId>) {
        if let Some(t) = self {
            t.here_only(users);
        }
    }

    fn emits(&self) -> &[Emit] {
        self.as_ref().map_or(&[], Effects::emits)
    }
}

/// Results that never start a timer.
macro_rules! no_timers {
    ($($t:ty),*) => {$(
        impl Effects for $t {
            fn take_timers(&mut self) -> Vec<(Duration, Timer)> {
                Vec::new()
            }
        }
    )*};
}
no_timers!(
    (),
    bool,
    usize,
    CallId,
    GroupId,
    Vec<Body>,
    (Body, Grant),
    (usize, usize, usize, usize),
    (usize, usize, usize, usize, usize)
);

/// A transition that happened.
#[derive(Debug)]
pub struct Done<T> {
    /// What the transition returned (without its timers in cluster mode).
    pub value: T,
    /// Calls it ended, and why.
    pub ended: Vec<(CallId, Reason)>,
}

/// One process's call state: today's registry under a lock.
#[derive(Debug)]
pub struct MemoryCalls {
    registry: Mutex<Registry>,
}

impl MemoryCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A poisoned lock (a panic inside a transition) is recovered: every
        // transition leaves the registry whole before it can fail.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> Done<T> {
        let mut guard = self.lock();
        let value = f(&mut guard);
        let ended = guard.take_ended();
        drop(guard);
        Done { value, ended }
    }
}

/// The call state (see the module docs).
#[derive(Debug)]
pub enum CallStore {
    /// One process.
    Memory(MemoryCalls),
    /// Cluster mode, in Redis.
    Redis(RedisCalls),
}

impl CallStore {
    /// One process's call state, empty, under `policy`.
    pub fn memory(policy: CallPolicy) -> Self {
        Self::Memory(MemoryCalls {
            registry: Mutex::new(Registry::new(policy)),
        })
    }

    /// The cluster's call state in Redis (this node is `redis.node()`), under
    /// `policy`. Commits are refused while the node's lease key is missing.
    pub fn redis(redis: Redis, policy: CallPolicy) -> Self {
        Self::Redis(RedisCalls::new(redis, policy))
    }

    /// Whether the call state is shared with other nodes.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Runs one transition. `f` is synchronous and pure: in cluster mode it
    /// may run more than once (on a wider load, or again after a conflicting
    /// commit by another node); only the last run's result is returned, and
    /// only its changes are stored.
    ///
    /// # Errors
    /// Cluster mode only: [`ClusterError::Unavailable`] (Redis down, or
    /// conflicts past the retry bound), [`ClusterError::Fenced`]. Nothing
    /// was changed then.
    pub async fn run<T: Effects>(
        &self,
        scope: Scope,
        f: impl Fn(&mut Registry) -> T,
    ) -> Result<Done<T>, ClusterError> {
        match self {
            Self::Memory(m) => Ok(m.run(f)),
            // Boxed: the Redis path's future (loads, commit, retries) is
            // large, and inline it would be moved with every handler's
            // future in one process too.
            Self::Redis(r) => Box::pin(r.run(&scope, f, None)).await,
        }
    }

    /// [`CallStore::run`] behind `gate`: in cluster mode the first read also
    /// takes the charge and counts the presence (one round trip); nothing
    /// runs when either refuses. In memory the gate must be empty (one
    /// process checked both already).
    ///
    /// # Errors
    /// [`GateError`]: nothing was changed.
    pub async fn run_gated<T: Effects>(
        &self,
        scope: Scope,
        gate: Gate,
        f: impl Fn(&mut Registry) -> T,
    ) -> Result<Done<T>, GateError> {
        match self {
            Self::Memory(m) => {
                debug_assert!(gate.is_empty(), "one process has no cluster gate");
                Ok(m.run(f))
            }
            Self::Redis(r) => Box::pin(r.run_gated(&scope, f, None, Some(&gate))).await,
        }
    }

    /// The call policy in force.
    pub fn policy(&self) -> CallPolicy {
        match self {
            Self::Memory(m) => m.lock().policy().clone(),
            Self::Redis(r) => r.policy(),
        }
    }

    /// Replaces the call policy (new calls and timers use it).
    pub fn set_policy(&self, policy: CallPolicy) {
        match self {
            Self::Memory(m) => m.lock().set_policy(policy),
            Self::Redis(r) => r.set_policy(policy),
        }
    }

    /// Runs `f` on this process's registry: `None` in cluster mode, where
    /// the state is not in this process (metrics and tests that look at the
    /// whole registry).
    pub fn local<T>(&self, f: impl FnOnce(&Registry) -> T) -> Option<T> {
        match self {
            Self::Memory(m) => Some(f(&m.lock())),
            Self::Redis(_) => None,
        }
    }

    /// Cluster mode: claims the timers that are due (each is handed to one
    /// node only; see [`crate::cluster::call_state`]). Empty in memory, where
    /// timers are tokio tasks.
    ///
    /// # Errors
    /// [`ClusterError`]: nothing was claimed.
    pub async fn claim_due(&self) -> Result<Vec<ClaimedTimer>, ClusterError> {
        match self {
            Self::Memory(_) => Ok(Vec::new()),
            Self::Redis(r) => r.claim_due().await,
        }
    }

    /// Fires a claimed timer: `Registry::fire` as a transition, committed
    /// with the timer's removal. `user_online` is the timer user's presence
    /// across the cluster.
    ///
    /// # Errors
    /// [`ClusterError`]: the timer stays claimed and fires again once the
    /// claim lapses.
    pub async fn fire_claimed(
        &self,
        timer: &ClaimedTimer,
        user_online: bool,
    ) -> Result<Done<Outcome>, ClusterError> {
        match self {
            Self::Memory(m) => Ok(m.run(|r| r.fire(&timer.timer, user_online))),
            Self::Redis(r) => Box::pin(r.fire(timer, user_online)).await,
        }
    }

    /// Cluster mode: from now on, commits publish the adapter's broadcasts
    /// of their events for recipients on other nodes themselves
    /// ([`crate::cluster::relay`]). Nothing in memory.
    pub fn relay_through(&self, relay: crate::cluster::relay::Relay) {
        if let Self::Redis(r) = self {
            r.relay_through(relay);
        }
    }

    /// Cluster mode: Redis round trips made so far (None in memory).
    pub fn round_trips(&self) -> Option<RoundTrips> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(r) => Some(r.round_trips()),
        }
    }
}
