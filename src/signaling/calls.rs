//! The call events: `initiateVideoCall`, `initiateGroupVideoCall`,
//! `acceptVideoCall`, `rejectVideoCall`, `endVideoCall`, plus presence hooks
//! (connect, disconnect) and timers.
//!
//! Handlers are thin: parse the payload, ask the directory (async, no lock
//! held), then run one registry transition under the lock, then deliver what
//! it returned. Names, ids and timestamps in outgoing events always come from
//! the directory and the server, never from the sender's payload.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;

use super::call_store::{Effects, Gate, Scope};
use super::payload::{InitiateDirect, InitiateGroup};
use super::registry::{Body, Emit, Origin, Outcome, Refusal, Timer, To, Transition};
use super::reply::{self, Channel, WantsAck};
use super::{Hub, events, payload, rooms, session};
use crate::cluster::ClusterError;
use crate::domain::call::Party;
use crate::domain::{CallId, GroupId, RoomName, UserId};
use crate::error::{ClientError, ErrorCode};
use crate::limits::EventClass;
use crate::policy::OneToOne;

fn me_party(s: &session::Session) -> Party {
    Party {
        id: s.user_id.clone(),
        name: s.display_name.clone(),
    }
}

/// The call state did not answer (cluster mode): nothing changed.
fn unavailable(e: ClusterError) -> Refusal {
    ClientError::from(e).into()
}

fn forbidden_attempt(user: &UserId, event: &'static str, reason: &'static str) -> ClientError {
    tracing::warn!(user_id = %user, event, reason, "forbidden attempt");
    ClientError::with_message(ErrorCode::Forbidden, "you can only act as yourself")
}

/// Delivers a transition's events and starts its timers.
pub async fn apply<A: Adapter>(io: &SocketIo<A>, hub: &Arc<Hub>, outcome: Outcome) {
    deliver(io, outcome.emits, &outcome.here_only).await;
    for (after, timer) in outcome.timers {
        spawn_timer(io.clone(), hub.clone(), after, timer);
    }
}

/// Delivers `emits`; those to a user in `here_only` stay on this node (no
/// publish: the commit saw no socket of theirs on another live node).
async fn deliver<A: Adapter>(io: &SocketIo<A>, emits: Vec<Emit>, here_only: &BTreeSet<UserId>) {
    for emit in emits {
        match emit.to {
            To::User(user) => {
                let Some(ns) = rooms::namespace(io) else {
                    return;
                };
                let to = ns.to(rooms::user_room(&user));
                let to = if here_only.contains(&user) {
                    to.local()
                } else {
                    to
                };
                if let Err(e) = to.emit(emit.event, &emit.payload).await {
                    tracing::debug!(error = %e, event = emit.event, "broadcast failed");
                }
            }
            To::UserExcept(user, sid) => {
                let Some(ns) = rooms::namespace(io) else {
                    return;
                };
                // The acting socket is on this node. Broadcasting from it
                // excludes it on every node (its id travels with the
                // broadcast); without it, nobody is left to exclude.
                let to = match ns.get_socket(sid) {
                    Some(socket) => socket.to(rooms::user_room(&user)),
                    None => ns.to(rooms::user_room(&user)),
                };
                let to = if here_only.contains(&user) {
                    to.local()
                } else {
                    to
                };
                let sent = to.emit(emit.event, &emit.payload).await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, event = emit.event, "broadcast failed");
                }
            }
            To::Socket(sid) => {
                if let Some(socket) = rooms::namespace(io).and_then(|ns| ns.get_socket(sid)) {
                    let _ = socket.emit(emit.event, &emit.payload);
                }
            }
        }
    }
}

/// Whether `user` has a connected socket on this node.
pub fn is_online<A: Adapter>(io: &SocketIo<A>, user: &UserId) -> bool {
    !rooms::user_sockets(io, user).is_empty()
}

fn spawn_timer<A: Adapter>(
    io: SocketIo<A>,
    hub: Arc<Hub>,
    after: std::time::Duration,
    timer: Timer,
) {
    let ring = match timer {
        Timer::RingTimeout(call) => Some(call),
        _ => None,
    };
    let task = tokio::spawn({
        let hub = hub.clone();
        async move {
            tokio::time::sleep(after).await;
            if let Some(call) = ring {
                // Out of the abort map first: ending the call below must not
                // abort this very task before it delivers the outcome.
                hub.ring_timer_fired(call);
            }
            let online = timer.user().is_some_and(|u| is_online(&io, u));
            let scope = Scope::default().and_call(Some(timer.call()));
            match hub
                .with_calls(scope, |calls| calls.fire(&timer, online))
                .await
            {
                Ok(outcome) => apply(&io, &hub, outcome).await,
                Err(e) => tracing::warn!(error = %e, "timer not fired"),
            }
        }
    });
    // A call that ends between its transition and this line finds no handle
    // to abort: its timer sleeps out the ring time and fires as a no-op.
    if let Some(call) = ring {
        hub.track_ring_timer(call, task.abort_handle());
    }
}

/// Adds the room (and token) `grant` entitles the sender to: into the ack
/// when the socket asked for one, else as `jitsiToken` to that socket alone.
/// Never to a room, never to another socket. An RSA signature (about a
/// millisecond) runs on the blocking pool, not on a runtime thread.
async fn hand_over<A: Adapter>(
    hub: &Hub,
    socket: &SocketRef<A>,
    wants_ack: bool,
    body: Body,
    grant: Option<crate::jitsi::Grant>,
) -> Body {
    let (Some(jitsi), Some(grant)) = (hub.jitsi.clone(), grant) else {
        return body;
    };
    let call_id = grant.call_id;
    let room = grant.room.clone();
    let minted = if jitsi.signs_slowly() {
        tokio::task::spawn_blocking(move || jitsi.access(&grant))
            .await
            .unwrap_or(Err(crate::jitsi::MintError))
    } else {
        jitsi.access(&grant)
    };
    let access = match minted {
        Ok(access) => access,
        Err(e) => {
            tracing::error!(call_id = %call_id, error = %e, "no Jitsi room token");
            return body;
        }
    };
    if wants_ack {
        return body.with_jitsi(access);
    }
    let event = serde_json::json!({ "callId": call_id, "roomName": room, "jitsi": access });
    let _ = socket.emit(events::JITSI_TOKEN, &event);
    body
}

/// Answers the sender and delivers the outcome.
#[allow(clippy::too_many_arguments)]
async fn conclude<A: Adapter>(
    socket: &SocketRef<A>,
    ack: AckSender<A>,
    wants_ack: bool,
    io: &SocketIo<A>,
    hub: &Arc<Hub>,
    event: &'static str,
    result: Transition,
    mut ctx: Map<String, Value>,
) {
    match result {
        Ok(mut outcome) => {
            // Deliver first: when the sender holds its ack, everyone the
            // transition concerns has been sent their event.
            let body = std::mem::take(&mut outcome.ack);
            let grant = outcome.grant.take();
            apply(io, hub, outcome).await;
            let body = hand_over(hub, socket, wants_ack, body, grant).await;
            reply::ok(&hub.metrics, event, ack, body);
        }
        Err(refusal) => {
            ctx.extend(refusal.context);
            reply::fail(
                &hub.metrics,
                socket,
                ack,
                event,
                Channel::Call,
                &refusal.error,
                ctx,
            );
        }
    }
}

/// `initiateVideoCall({receiverId, roomName?, callerId?, ...})`.
pub async fn initiate_video_call<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    WantsAck(wants_ack): WantsAck,
    io: SocketIo<A>,
    State(hub): State<Arc<Hub>>,
) {
    let Some((mut pending, ack)) = session::admitted_pending(
        &socket,
        &hub,
        EventClass::CallInitiate,
        events::INITIATE_VIDEO_CALL,
        Channel::Call,
        ack,
    ) else {
        return;
    };
    let mut ctx = Map::new();
    let origin = Origin {
        socket: socket.id,
        wants_ack,
    };
    let me = pending.session().clone();
    let result = initiate_direct(me, data, &io, &hub, origin, &mut ctx, &mut pending).await;
    let Some((result, ack)) = pending.settled(&hub, result, &socket, ack).await else {
        return;
    };
    conclude(
        &socket,
        ack,
        wants_ack,
        &io,
        &hub,
        events::INITIATE_VIDEO_CALL,
        result,
        ctx,
    )
    .await;
}

async fn initiate_direct<A: Adapter>(
    me: Arc<session::Session>,
    data: Result<Value, impl std::fmt::Display>,
    io: &SocketIo<A>,
    hub: &Arc<Hub>,
    origin: Origin,
    ctx: &mut Map<String, Value>,
    pending: &mut session::Pending,
) -> Transition {
    let InitiateDirect {
        receiver,
        room,
        claimed_caller,
    } = payload::initiate_direct(data, ctx)?;
    if claimed_caller.is_some_and(|c| c != me.user_id) {
        return Err(forbidden_attempt(
            &me.user_id,
            events::INITIATE_VIDEO_CALL,
            "spoofed_caller_id",
        )
        .into());
    }
    if receiver == me.user_id {
        return Err(ClientError::bad_field("receiverId", "must not be yourself").into());
    }
    let one_to_one = hub.calls().policy().one_to_one;
    let not_shared = || {
        ClientError::with_message(
            ErrorCode::Forbidden,
            "you can only call people you share a group with",
        )
    };
    let callee = match hub.store.user(&receiver).await.map_err(ClientError::from)? {
        Some(user) => user,
        // Under shared_group an unknown id answers like a stranger's, so
        // initiates cannot tell which ids exist.
        None if one_to_one == OneToOne::SharedGroup => return Err(not_shared().into()),
        None => return Err(ErrorCode::NotFound.into()),
    };
    if one_to_one == OneToOne::SharedGroup {
        let mine: HashSet<GroupId> = hub
            .store
            .groups_of(&me.user_id)
            .await
            .map_err(ClientError::from)?
            .into_iter()
            .map(|g| g.id)
            .collect();
        let theirs = hub
            .store
            .groups_of(&callee.id)
            .await
            .map_err(ClientError::from)?;
        if !theirs.iter().any(|g| mine.contains(&g.id)) {
            return Err(not_shared().into());
        }
    }
    // The cluster-wide charge, and whether a callee on another node is
    // online, go with the transition's commit (or its first read, when it
    // has to read): one round trip.
    let mut gate = Gate {
        charge: pending.take_charge(),
        online: None,
    };
    if !is_online(io, &callee.id) {
        if hub.cluster().is_none() {
            return Err(ErrorCode::Offline.into());
        }
        gate.online = Some(callee.id.clone());
    }
    let callee = Party {
        id: callee.id,
        name: callee.display_name,
    };
    let caller = me_party(&me);
    // A new call: in cluster mode it commits first and reads only when a
    // record it would touch exists.
    let scope = Scope::user(&caller.id)
        .and_user(&callee.id)
        .and_room(room.as_ref())
        .likely_new();
    hub.with_calls_gated(scope, gate, |calls| {
        calls.initiate_direct(caller.clone(), callee.clone(), room.clone(), origin)
    })
    .await
    .map_err(|e| pending.gate_refusal(e))?
}

/// `initiateGroupVideoCall({groupId, roomName?})`.
pub async fn initiate_group_video_call<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    WantsAck(wants_ack): WantsAck,
    io: SocketIo<A>,
    State(hub): State<Arc<Hub>>,
) {
    let Some((me, ack)) = session::admitted(
        &socket,
        &hub,
        EventClass::CallInitiate,
        events::INITIATE_GROUP_VIDEO_CALL,
        Channel::Call,
        ack,
    )
    .await
    else {
        return;
    };
    let mut ctx = Map::new();
    let origin = Origin {
        socket: socket.id,
        wants_ack,
    };
    let result = initiate_group(me, data, &hub, origin, &mut ctx).await;
    conclude(
        &socket,
        ack,
        wants_ack,
        &io,
        &hub,
        events::INITIATE_GROUP_VIDEO_CALL,
        result,
        ctx,
    )
    .await;
}

async fn initiate_group(
    me: Arc<session::Session>,
    data: Result<Value, impl std::fmt::Display>,
    hub: &Arc<Hub>,
    origin: Origin,
    ctx: &mut Map<String, Value>,
) -> Transition {
    let InitiateGroup {
        group,
        room,
        claimed_caller,
    } = payload::initiate_group(data, ctx)?;
    if claimed_caller.is_some_and(|c| c != me.user_id) {
        return Err(forbidden_attempt(
            &me.user_id,
            events::INITIATE_GROUP_VIDEO_CALL,
            "spoofed_caller_id",
        )
        .into());
    }
    let group = match hub.store.group(&group).await.map_err(ClientError::from)? {
        Some(g) if g.has_member(&me.user_id) => g,
        _ => {
            tracing::warn!(user_id = %me.user_id, event = events::INITIATE_GROUP_VIDEO_CALL, reason = "not_a_member", "forbidden attempt");
            return Err(ErrorCode::NotFound.into());
        }
    };
    let max = hub.calls().policy().max_group_invitees;
    let others: Vec<UserId> = group
        .members
        .iter()
        .filter(|m| **m != me.user_id)
        .cloned()
        .collect();
    if others.len() > max {
        return Err(ClientError::with_message(
            ErrorCode::Forbidden,
            "the group has more members than a group call may ring",
        )
        .into());
    }
    // One round trip for every member (bounded by max_group_invitees);
    // members the directory no longer knows are skipped.
    let invitees: Vec<Party> = hub
        .store
        .users(&others)
        .await
        .map_err(ClientError::from)?
        .into_iter()
        .map(|user| Party {
            id: user.id,
            name: user.display_name,
        })
        .collect();
    let caller = me_party(&me);
    let scope = Scope::user(&caller.id)
        .and_group(&group.id)
        .and_room(room.as_ref())
        .and_parties(invitees.iter().map(|p| p.id.clone()))
        .likely_new();
    let group = (group.id, group.name, group.owner);
    hub.with_calls(scope, |calls| {
        calls.initiate_group(
            caller.clone(),
            group.clone(),
            invitees.clone(),
            room.clone(),
            origin,
        )
    })
    .await
    .map_err(unavailable)?
}

/// Which call-control transition to run.
#[derive(Clone, Copy)]
enum Control {
    Accept,
    Reject,
    End,
}

/// What one run of a call control decided. Returned once per control and
/// moved straight out: boxing the transition would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// The transition ran (or was refused).
    Done(Transition),
    /// Accepting a group call needs the directory first: is the sender still
    /// a member of the group?
    CheckMembership(CallId, GroupId),
}

impl Effects for Step {
    fn take_timers(&mut self) -> Vec<(std::time::Duration, Timer)> {
        match self {
            Self::Done(t) => t.take_timers(),
            Self::CheckMembership(..) => Vec::new(),
        }
    }

    fn recipients(&self) -> BTreeSet<UserId> {
        match self {
            Self::Done(t) => t.recipients(),
            Self::CheckMembership(..) => BTreeSet::new(),
        }
    }

    fn here_only(&mut self, users: BTreeSet<UserId>) {
        if let Self::Done(t) = self {
            t.here_only(users);
        }
    }

    fn emits(&self) -> &[Emit] {
        match self {
            Self::Done(t) => t.emits(),
            Self::CheckMembership(..) => &[],
        }
    }
}

/// The call control as one transition. An accept of a group call whose
/// membership has not been checked (`checked`) stops at
/// [`Step::CheckMembership`]; everything else runs at once.
#[allow(clippy::too_many_arguments)]
async fn control_step(
    hub: &Hub,
    me: &Party,
    which: Control,
    call_id: Option<CallId>,
    room: Option<&RoomName>,
    end_for_all: bool,
    checked: Option<CallId>,
    sender: socketioxide::socket::Sid,
    hints: &[UserId],
    pending: &mut session::Pending,
) -> Result<Step, Refusal> {
    let scope = Scope::user(&me.id)
        .and_call(call_id)
        .and_room(room)
        .and_parties(hints.iter().filter(|u| **u != me.id).cloned());
    let gate = Gate {
        charge: pending.take_charge(),
        online: None,
    };
    hub.with_calls_gated(scope, gate, |calls| {
        let id = match calls.find(&me.id, call_id, room) {
            Ok(id) => id,
            Err(refusal) => return Step::Done(Err(refusal)),
        };
        if matches!(which, Control::Accept)
            && checked != Some(id)
            && let Some(group) = calls.group_of(id)
        {
            return Step::CheckMembership(id, group);
        }
        Step::Done(match which {
            Control::Accept => calls.accept(me, id, sender),
            Control::Reject => calls.reject(me, id, sender),
            Control::End => calls.end(me, id, end_for_all, sender),
        })
    })
    .await
    .map_err(|e| pending.gate_refusal(e))
}

async fn control<A: Adapter>(
    socket: SocketRef<A>,
    data: Result<Value, impl std::fmt::Display>,
    ack: AckSender<A>,
    wants_ack: bool,
    io: SocketIo<A>,
    hub: Arc<Hub>,
    which: Control,
) {
    let event = match which {
        Control::Accept => events::ACCEPT_VIDEO_CALL,
        Control::Reject => events::REJECT_VIDEO_CALL,
        Control::End => events::END_VIDEO_CALL,
    };
    let Some((mut pending, ack)) = session::admitted_pending(
        &socket,
        &hub,
        EventClass::CallControl,
        event,
        Channel::Call,
        ack,
    ) else {
        return;
    };
    let me = pending.session().clone();
    let user_id = me.user_id.clone();
    let mut ctx = Map::new();
    let result = async {
        let r = payload::call_ref(data, &mut ctx)?;
        let me = me_party(&me);
        let (call_id, room, all) = (r.call_id, r.room.as_ref(), r.end_for_all);
        let (sid, hints) = (socket.id, &r.hints);
        let first = control_step(
            &hub,
            &me,
            which,
            call_id,
            room,
            all,
            None,
            sid,
            hints,
            &mut pending,
        )
        .await?;
        let (id, group) = match first {
            Step::Done(t) => return t,
            Step::CheckMembership(id, group) => (id, group),
        };
        still_member(&hub, &group, &me.id).await?;
        // The call may have ended while the directory answered: found again,
        // by its id, in the transition itself.
        let again = Some(id);
        match control_step(
            &hub,
            &me,
            which,
            again,
            None,
            all,
            again,
            sid,
            hints,
            &mut pending,
        )
        .await?
        {
            Step::Done(t) => t,
            Step::CheckMembership(..) => Err(ErrorCode::NotFound.into()),
        }
    }
    .await;
    let Some((result, ack)) = pending.settled(&hub, result, &socket, ack).await else {
        return;
    };
    if let Err(Refusal { error, .. }) = &result
        && error.code == ErrorCode::NotFound
    {
        tracing::warn!(user_id = %user_id, event, reason = "unknown_or_foreign_call", "refused call control");
    }
    conclude(&socket, ack, wants_ack, &io, &hub, event, result, ctx).await;
}

/// Accepting (or rejoining) a group call takes current membership: the
/// directory is asked now, not when the call rang, so a member removed since
/// cannot get back in. A refusal is `not_found`, like a call that is not
/// yours.
async fn still_member(hub: &Hub, group: &GroupId, user: &UserId) -> Result<(), Refusal> {
    let member = hub
        .store
        .group(group)
        .await
        .map_err(ClientError::from)?
        .is_some_and(|g| g.has_member(user));
    if member {
        Ok(())
    } else {
        tracing::warn!(user_id = %user, event = events::ACCEPT_VIDEO_CALL, reason = "no_longer_a_member", "forbidden attempt");
        Err(ErrorCode::NotFound.into())
    }
}

/// `acceptVideoCall({callId? | roomName?})`.
pub async fn accept_video_call<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    WantsAck(wants_ack): WantsAck,
    io: SocketIo<A>,
    State(hub): State<Arc<Hub>>,
) {
    control(socket, data, ack, wants_ack, io, hub, Control::Accept).await;
}

/// `rejectVideoCall({callId? | roomName?})`.
pub async fn reject_video_call<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    WantsAck(wants_ack): WantsAck,
    io: SocketIo<A>,
    State(hub): State<Arc<Hub>>,
) {
    control(socket, data, ack, wants_ack, io, hub, Control::Reject).await;
}

/// `endVideoCall({callId? | roomName?, endForAll?})`.
pub async fn end_video_call<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    WantsAck(wants_ack): WantsAck,
    io: SocketIo<A>,
    State(hub): State<Arc<Hub>>,
) {
    control(socket, data, ack, wants_ack, io, hub, Control::End).await;
}

/// `refreshJitsiToken({callId})`: the sender's own room token for a live call
/// they are in (after a page reload), in the ack or as `jitsiToken`.
/// `not_found` for anyone else, exactly as for a call that does not exist.
pub async fn refresh_jitsi_token<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    WantsAck(wants_ack): WantsAck,
    State(hub): State<Arc<Hub>>,
) {
    let event = events::REFRESH_JITSI_TOKEN;
    let Some((me, ack)) = session::admitted(
        &socket,
        &hub,
        EventClass::CallControl,
        event,
        Channel::Call,
        ack,
    )
    .await
    else {
        return;
    };
    let mut ctx = Map::new();
    let result = match payload::call_id(data, &mut ctx) {
        Ok(id) => hub
            .with_calls(Scope::user(&me.user_id).and_call(Some(id)), |calls| {
                calls.refresh(&me.user_id, id)
            })
            .await
            .unwrap_or_else(|e| Err(unavailable(e))),
        Err(e) => Err(Refusal::from(e)),
    };
    match result {
        Ok((body, grant)) => {
            let body = hand_over(&hub, &socket, wants_ack, body, Some(grant)).await;
            reply::ok(&hub.metrics, event, ack, body);
        }
        Err(refusal) => {
            if refusal.error.code != ErrorCode::Unavailable {
                tracing::warn!(user_id = %me.user_id, event, reason = "not_a_participant", "refused token refresh");
            }
            ctx.extend(refusal.context);
            reply::fail(
                &hub.metrics,
                &socket,
                ack,
                event,
                Channel::Call,
                &refusal.error,
                ctx,
            );
        }
    }
}

/// After the handshake: a user with live calls gets `activeVideoCalls`, and
/// pending grace timers for them stand down.
pub async fn on_connected<A: Adapter>(socket: &SocketRef<A>, hub: &Arc<Hub>) {
    let Ok(me) = session::current(socket) else {
        return;
    };
    let user = &me.user_id;
    let calls = match hub
        .with_calls(Scope::user(user), |calls| calls.user_connected(user))
        .await
    {
        Ok(calls) => calls,
        Err(e) => {
            // The socket stays; its grace timers (if any) re-check presence
            // when they fire.
            tracing::warn!(user_id = %user, error = %e, "activeVideoCalls not sent");
            return;
        }
    };
    if !calls.is_empty() {
        let _ = socket.emit(events::ACTIVE_VIDEO_CALLS, &calls);
    }
}

/// A socket went away: if it was the user's last, their calls' grace timers start.
pub async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    reason: DisconnectReason,
    State(hub): State<Arc<Hub>>,
) {
    let Some(me) = session::of(&socket) else {
        return;
    };
    tracing::debug!(user_id = %me.user_id, ?reason, "socket disconnected");
    if hub.cluster().is_some() {
        // Cluster mode: the release says whether this was the user's last
        // socket anywhere, and then reports them offline (signaling::liveness).
        me.release_presence().await;
        return;
    }
    // The disconnecting socket is still in its rooms while this runs.
    let others = rooms::user_sockets(&io, &me.user_id)
        .into_iter()
        .filter(|s| s.id != socket.id)
        .count();
    if others == 0
        && let Err(e) = user_went_offline(&io, &hub, &me.user_id).await
    {
        tracing::warn!(user_id = %me.user_id, error = %e, "grace timers not started");
    }
}

/// `user` has no socket left: their calls' grace timers start (ringing
/// grace, reconnect grace; each re-checks presence when it fires). Called on
/// a last local disconnect, and by the cluster's dead-node cleanup for users
/// left with no socket anywhere.
///
/// # Errors
/// [`ClusterError`] (cluster mode): no timer was started.
pub async fn user_went_offline<A: Adapter>(
    io: &SocketIo<A>,
    hub: &Arc<Hub>,
    user: &UserId,
) -> Result<(), ClusterError> {
    let timers = hub
        .with_calls(Scope::user(user), |calls| calls.user_went_offline(user))
        .await?;
    apply(
        io,
        hub,
        Outcome {
            timers,
            ..Outcome::default()
        },
    )
    .await;
    Ok(())
}
