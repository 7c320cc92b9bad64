//! The call registry: the single owner of every live call.
//!
//! Every transition is one check-and-set on `&mut Registry`; the hub keeps the
//! registry in a `std::sync::Mutex` that is held for the transition only, never
//! across an `.await` (so two devices accepting the same call at the same
//! instant are serialised, and exactly one wins). A transition returns an
//! [`Outcome`]: the ack for the sender, the events to deliver and the timers
//! to start, all performed by the caller after the lock is released.
//!
//! Ended calls are removed at once, with every index that points at them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};
use socketioxide::socket::Sid;
use time::OffsetDateTime;

use super::events;
use crate::domain::call::{Call, CallRecord, CallState, CallTarget, InviteState, Invitee, Party};
use crate::domain::{CallId, GroupId, GroupName, RoomName, UserId};
use crate::error::{ClientError, ErrorCode};
use crate::jitsi::{Access, Grant, Role};
use crate::policy::{BusyRule, CallPolicy};

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// Every socket of a user.
    User(UserId),
    /// Every socket of a user but one (the one that acted).
    UserExcept(UserId, Sid),
    /// One socket.
    Socket(Sid),
}

/// An event to deliver.
#[derive(Debug, Clone)]
pub struct Emit {
    /// Recipients.
    pub to: To,
    /// Event name.
    pub event: &'static str,
    /// Payload.
    pub payload: Body,
}

/// The body of a call event or ack. Serialised straight into the packet, once
/// per emit: no JSON tree is built, and the emits of one transition share
/// one record.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Body {
    /// A call's record and the fields an event adds to it.
    Call(CallBody),
    /// Any other JSON object (participant events).
    Json(Map<String, Value>),
}

impl Default for Body {
    fn default() -> Self {
        Self::Json(Map::new())
    }
}

/// A call record with the fields one event adds.
#[derive(Debug, Clone, Serialize)]
pub struct CallBody {
    #[serde(flatten)]
    record: Arc<CallRecord>,
    #[serde(flatten)]
    extra: Extra,
}

/// Fields some call events add to the record.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Extra {
    /// Why the call ended or was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Who hung up (`hangup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<UserId>,
    /// Who answered (`videoCallAccepted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<UserId>,
    /// Who is in a group call (group accept ack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<BTreeSet<UserId>>,
    /// The group already had a live call (group initiate ack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_active: Option<bool>,
    /// The callee's own initiate answered this call (crossed calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crossed: Option<bool>,
    /// The room and the acting participant's room token (acks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitsi: Option<Access>,
}

impl Body {
    /// Adds `jitsi: {domain, room, jwt}` (an ack, or `jitsiToken` to one socket).
    pub fn with_jitsi(self, access: Access) -> Self {
        match self {
            Self::Call(mut call) => {
                call.extra.jitsi = Some(access);
                Self::Call(call)
            }
            Self::Json(mut map) => {
                map.insert(
                    "jitsi".into(),
                    serde_json::to_value(access).unwrap_or(Value::Null),
                );
                Self::Json(map)
            }
        }
    }
}

/// A timer a transition asks for. (De)serialised as a member of the
/// cluster's timer set (see `cluster::call_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timer {
    /// Give up ringing.
    RingTimeout(CallId),
    /// A ringing call's caller, or its direct callee, lost every socket.
    RingingGrace {
        /// The call.
        call: CallId,
        /// Who vanished.
        user: UserId,
        /// Their presence epoch when it was scheduled.
        epoch: u64,
    },
    /// An active call's participant lost every socket.
    ReconnectGrace {
        /// The call.
        call: CallId,
        /// Who vanished.
        user: UserId,
        /// Their presence epoch when it was scheduled.
        epoch: u64,
    },
}

impl Timer {
    /// The user whose presence decides the timer, if any.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Self::RingTimeout(_) => None,
            Self::RingingGrace { user, .. } | Self::ReconnectGrace { user, .. } => Some(user),
        }
    }

    /// The call the timer is about.
    pub fn call(&self) -> CallId {
        match self {
            Self::RingTimeout(call)
            | Self::RingingGrace { call, .. }
            | Self::ReconnectGrace { call, .. } => *call,
        }
    }
}

/// What a transition asks the caller to do.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Extra fields for the sender's `{ok: true}` ack.
    pub ack: Body,
    /// The sender is now a participant of this call: the room token they
    /// may have, for their ack (or, without one, for the acting socket only).
    /// Nobody else's token is ever in an outcome.
    pub grant: Option<Grant>,
    /// Events to deliver.
    pub emits: Vec<Emit>,
    /// Timers to start: (delay, timer).
    pub timers: Vec<(Duration, Timer)>,
    /// Recipients with no socket on another live node when the transition
    /// committed (cluster mode, set by the store; see
    /// [`Outcome::recipients`]): their events are delivered on this node
    /// only, without a publish. Empty in one process, where every event is
    /// local anyway, and for every recipient not known to be here only.
    pub here_only: BTreeSet<UserId>,
}

impl Outcome {
    /// The users this outcome's events go to by user (not by socket).
    pub fn recipients(&self) -> BTreeSet<UserId> {
        self.emits
            .iter()
            .filter_map(|e| match &e.to {
                To::User(u) | To::UserExcept(u, _) => Some(u.clone()),
                To::Socket(_) => None,
            })
            .collect()
    }
}

/// A refused transition: the error and extra context fields (e.g. `existingCallId`).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Code and message.
    pub error: ClientError,
    /// Extra fields for the ack and the failure event.
    pub context: Map<String, Value>,
}

impl From<ClientError> for Refusal {
    fn from(error: ClientError) -> Self {
        Self {
            error,
            context: Map::new(),
        }
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Self {
        ClientError::new(code).into()
    }
}

/// Result of a transition.
pub type Transition = Result<Outcome, Refusal>;

/// Why a call ended (the `reason` of `videoCallEnded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The caller hung up before an answer.
    Cancelled,
    /// A party hung up an active direct call.
    Hangup,
    /// A group call ended.
    Ended,
    /// Nobody answered in time.
    Timeout,
    /// Another device of the same user answered.
    AnsweredElsewhere,
    /// Another device of the same user declined.
    RejectedElsewhere,
    /// The caller vanished while ringing.
    CallerDisconnected,
    /// Every callee device vanished while ringing.
    Unavailable,
    /// A participant vanished during the call and did not come back.
    Disconnected,
    /// The callee declined (`videoCallRejected`).
    Declined,
    /// The caller called the same callee again while this call still rang.
    Replaced,
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Reason {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::Hangup => "hangup",
            Self::Ended => "ended",
            Self::Timeout => "timeout",
            Self::AnsweredElsewhere => "answered_elsewhere",
            Self::RejectedElsewhere => "rejected_elsewhere",
            Self::CallerDisconnected => "caller_disconnected",
            Self::Unavailable => "unavailable",
            Self::Disconnected => "disconnected",
            Self::Declined => "declined",
            Self::Replaced => "replaced",
        }
    }
}

/// Every live call and its indexes.
#[derive(Debug)]
pub struct Registry {
    calls: HashMap<CallId, Call>,
    by_room: HashMap<RoomName, CallId>,
    by_user: HashMap<UserId, BTreeSet<CallId>>,
    by_group: HashMap<GroupId, CallId>,
    /// Presence epochs of users with live calls: bumped on every connect and
    /// every loss of the last socket, so a grace timer can tell whether the
    /// user came back (or left again) since it was scheduled.
    epochs: HashMap<UserId, u64>,
    /// Calls ended since the hub last looked, with why (for metrics, and
    /// to cancel their ring timers).
    ended: Vec<(CallId, Reason)>,
    policy: CallPolicy,
}

/// The call's record with `extra`.
fn body(call: &Call, extra: Extra) -> Body {
    Body::Call(CallBody {
        record: Arc::new(call.record()),
        extra,
    })
}

/// The plain record.
fn record(call: &Call) -> Body {
    body(call, Extra::default())
}

fn ended(call: &Call, reason: Reason) -> Body {
    body(
        call,
        Extra {
            reason: Some(reason),
            ..Extra::default()
        },
    )
}

/// What withdraws a call that was announced and then undone (its commit's
/// answer was lost, see [`crate::cluster::call_state`]): `videoCallEnded`
/// (`cancelled`) to each user it rang. Empty when `record` is not a call.
pub fn withdrawal(record: &str) -> Vec<(UserId, Body)> {
    let Ok(call) = serde_json::from_str::<Call>(record) else {
        return Vec::new();
    };
    let rung: Vec<UserId> = match &call.target {
        CallTarget::Direct { callee } => vec![callee.id.clone()],
        CallTarget::Group { invitees, .. } => invitees.keys().cloned().collect(),
    };
    let body = ended(&call, Reason::Cancelled);
    rung.into_iter().map(|u| (u, body.clone())).collect()
}

/// `videoCallRinging` to the initiating socket, when it asked for no ack (the
/// seed's frontend): otherwise the ack already carries the same record.
fn ringing(to: Option<Sid>, record: &Body) -> Option<Emit> {
    to.map(|sid| Emit {
        to: To::Socket(sid),
        event: events::VIDEO_CALL_RINGING,
        payload: record.clone(),
    })
}

/// The socket an initiate came from, and whether it asked for an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The acting socket.
    pub socket: Sid,
    /// Whether it sent an ack id (otherwise success is also an event).
    pub wants_ack: bool,
}

impl Origin {
    /// The socket to send `videoCallRinging`, when it asked for no ack.
    fn ring(self) -> Option<Sid> {
        (!self.wants_ack).then_some(self.socket)
    }
}

/// The room token `user` is entitled to in `call` (the caller decides
/// nothing here: the role comes from the call and the directory).
pub fn grant(call: &Call, user: &Party) -> Grant {
    let (group_call, group_owner) = match &call.target {
        CallTarget::Direct { .. } => (false, false),
        CallTarget::Group { owner, .. } => (true, owner.as_ref() == Some(&user.id)),
    };
    Grant {
        call_id: call.id,
        room: call.room.clone(),
        user: user.id.clone(),
        name: user.name.clone(),
        role: Role {
            caller: call.caller.id == user.id,
            group_owner,
            group_call,
        },
    }
}

/// What a second `initiateVideoCall` between two users means while a direct
/// call between them still rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Nothing rings between them: a new call.
    None,
    /// The same caller calls the same callee again (a reload, a second
    /// press): the new call replaces the ringing one.
    Redial(CallId),
    /// The callee calls the caller back: they both want to talk, so this
    /// initiate answers the ringing call.
    Crossed(CallId),
}

fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn party_event(
    call: &Call,
    group: &GroupId,
    user: &UserId,
    name: &crate::domain::DisplayName,
) -> Body {
    Body::Json(as_map(
        json!({ "callId": call.id, "groupId": group, "userId": user, "userName": name, "roomName": call.room }),
    ))
}

impl Registry {
    /// An empty registry under `policy`.
    pub fn new(policy: CallPolicy) -> Self {
        Self {
            calls: HashMap::new(),
            by_room: HashMap::new(),
            by_user: HashMap::new(),
            by_group: HashMap::new(),
            epochs: HashMap::new(),
            ended: Vec::new(),
            policy,
        }
    }

    /// Replaces the call policy (new calls and timers use it).
    pub fn set_policy(&mut self, policy: CallPolicy) {
        self.policy = policy;
    }

    /// The current call policy.
    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// Number of live calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether there are no live calls.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Sizes of every index, for tests that check nothing leaks:
    /// (calls, rooms, users, groups, epochs).
    pub fn index_sizes(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.calls.len(),
            self.by_room.len(),
            self.by_user.len(),
            self.by_group.len(),
            self.epochs.len(),
        )
    }

    /// Counts of live calls as (direct ringing, direct active, group ringing, group active).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for call in self.calls.values() {
            match (call.is_group(), call.state) {
                (false, CallState::Ringing) => c.0 += 1,
                (false, CallState::Active) => c.1 += 1,
                (true, CallState::Ringing) => c.2 += 1,
                (true, CallState::Active) => c.3 += 1,
            }
        }
        c
    }

    fn calls_of(&self, user: &UserId) -> impl Iterator<Item = &Call> {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.calls.get(id))
    }

    fn is_busy(&self, user: &UserId) -> bool {
        self.calls_of(user).any(|c| c.keeps_busy(user))
    }

    fn fresh_room(&self, wanted: Option<RoomName>) -> Result<RoomName, Refusal> {
        match wanted {
            Some(room) if self.by_room.contains_key(&room) => Err(ErrorCode::RoomInUse.into()),
            Some(room) => Ok(room),
            None => loop {
                let room = RoomName::new_random();
                if !self.by_room.contains_key(&room) {
                    break Ok(room);
                }
            },
        }
    }

    fn fresh_id(&self) -> CallId {
        loop {
            let id = CallId::new_random();
            if !self.calls.contains_key(&id) {
                return id;
            }
        }
    }

    fn insert(&mut self, call: Call) {
        for user in call.parties() {
            self.by_user.entry(user).or_default().insert(call.id);
        }
        self.by_room.insert(call.room.clone(), call.id);
        if let CallTarget::Group { group, .. } = &call.target {
            self.by_group.insert(group.clone(), call.id);
        }
        self.calls.insert(call.id, call);
    }

    /// Ends a call: removes it with every index entry pointing at it and
    /// counts the reason (see [`Registry::take_ended`]).
    fn finish(&mut self, id: CallId, reason: Reason) -> Option<Call> {
        let call = self.remove(id)?;
        self.ended.push((id, reason));
        Some(call)
    }

    /// The calls ended since the last call, and why.
    pub fn take_ended(&mut self) -> Vec<(CallId, Reason)> {
        std::mem::take(&mut self.ended)
    }

    /// Removes a call and every index entry pointing at it.
    fn remove(&mut self, id: CallId) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        self.by_room.remove(&call.room);
        if let CallTarget::Group { group, .. } = &call.target
            && self.by_group.get(group) == Some(&id)
        {
            self.by_group.remove(group);
        }
        for user in call.parties() {
            if let Some(set) = self.by_user.get_mut(&user) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_user.remove(&user);
                    self.epochs.remove(&user);
                }
            }
        }
        Some(call)
    }

    /// Finds the call an event is about: by `callId`, else by `roomName`, else
    /// (seed compatibility) the sender's only live call. A call the sender is
    /// not part of is `not_found`, exactly like one that does not exist.
    ///
    /// # Errors
    /// `not_found`, or `bad_request` when neither is given and the sender has
    /// several live calls.
    pub fn find(
        &self,
        user: &UserId,
        call_id: Option<CallId>,
        room: Option<&RoomName>,
    ) -> Result<CallId, Refusal> {
        let id = match (call_id, room) {
            (Some(id), _) => Some(id),
            (None, Some(room)) => self.by_room.get(room).copied(),
            (None, None) => {
                let mine: Vec<CallId> = self
                    .by_user
                    .get(user)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect();
                match mine.as_slice() {
                    [only] => Some(*only),
                    [] => None,
                    _ => {
                        return Err(ClientError::with_message(
                            ErrorCode::BadRequest,
                            "callId or roomName is required when you have several calls",
                        )
                        .into());
                    }
                }
            }
        };
        match id.and_then(|id| self.calls.get(&id)) {
            Some(call) if call.involves(user) => Ok(call.id),
            _ => Err(ErrorCode::NotFound.into()),
        }
    }

    /// What `caller` initiating a call to `callee` means given the calls that
    /// ring between them (see [`Pending`]).
    pub fn pending_between(&self, caller: &UserId, callee: &UserId) -> Pending {
        self.calls_of(caller)
            .find_map(|c| match &c.target {
                CallTarget::Direct { callee: other } if c.state == CallState::Ringing => {
                    if &c.caller.id == caller && &other.id == callee {
                        Some(Pending::Redial(c.id))
                    } else if &c.caller.id == callee && &other.id == caller {
                        Some(Pending::Crossed(c.id))
                    } else {
                        None
                    }
                }
                _ => None,
            })
            .unwrap_or(Pending::None)
    }

    /// `initiateVideoCall`, after the handler checked the payload, the caller's
    /// identity, that the callee exists, the one-to-one policy and that the
    /// callee is online. A call that already rings between the two is
    /// replaced (redial) or answered (crossed call, see [`Pending`]);
    /// otherwise checks busy and the room, then rings.
    ///
    /// # Errors
    /// `busy`, `room_in_use`; for a crossed call, those of [`Registry::accept`].
    pub fn initiate_direct(
        &mut self,
        caller: Party,
        callee: Party,
        room: Option<RoomName>,
        origin: Origin,
    ) -> Transition {
        let pending = self.pending_between(&caller.id, &callee.id);
        if let Pending::Crossed(id) = pending {
            return self.answer(&caller, id, origin.socket, true);
        }
        if self.policy.busy == BusyRule::Reject && self.is_busy(&callee.id) {
            return Err(ErrorCode::Busy.into());
        }
        let Pending::Redial(old) = pending else {
            let room = self.fresh_room(room)?;
            return Ok(self.ring_direct(caller, callee, room, origin, Vec::new()));
        };
        // The old call's room may be reused by the new one; any other room
        // must be free. Nothing changes until every check passed.
        let room = match room {
            Some(r) if self.calls.get(&old).is_some_and(|c| c.room == r) => r,
            other => self.fresh_room(other)?,
        };
        let Some(old) = self.finish(old, Reason::Replaced) else {
            return Err(ErrorCode::NotFound.into());
        };
        let payload = ended(&old, Reason::Replaced);
        let emits = [caller.id.clone(), callee.id.clone()]
            .into_iter()
            .map(|u| Emit {
                to: To::User(u),
                event: events::VIDEO_CALL_ENDED,
                payload: payload.clone(),
            })
            .collect();
        Ok(self.ring_direct(caller, callee, room, origin, emits))
    }

    /// Creates a ringing direct call after `before` (events that must reach
    /// clients first).
    fn ring_direct(
        &mut self,
        caller: Party,
        callee: Party,
        room: RoomName,
        origin: Origin,
        mut emits: Vec<Emit>,
    ) -> Outcome {
        let callee_id = callee.id.clone();
        let call = Call {
            id: self.fresh_id(),
            room,
            caller,
            state: CallState::Ringing,
            created_at: OffsetDateTime::now_utc(),
            target: CallTarget::Direct { callee },
        };
        let record = record(&call);
        emits.push(Emit {
            to: To::User(callee_id),
            event: events::INCOMING_VIDEO_CALL,
            payload: record.clone(),
        });
        emits.extend(ringing(origin.ring(), &record));
        let out = Outcome {
            ack: record,
            grant: Some(grant(&call, &call.caller)),
            emits,
            timers: vec![(
                secs(self.policy.ring_timeout_secs),
                Timer::RingTimeout(call.id),
            )],
            here_only: BTreeSet::new(),
        };
        self.insert(call);
        out
    }

    /// `initiateGroupVideoCall`, after the handler checked membership. At most
    /// one live call per group: a second initiate returns it with
    /// `alreadyActive: true` and rings nobody.
    ///
    /// # Errors
    /// `forbidden` above `max_group_invitees`, `bad_request` with nobody to
    /// ring, `room_in_use`.
    pub fn initiate_group(
        &mut self,
        caller: Party,
        group: (GroupId, GroupName, Option<UserId>),
        invitees: Vec<Party>,
        room: Option<RoomName>,
        origin: Origin,
    ) -> Transition {
        if let Some(call) = self
            .by_group
            .get(&group.0)
            .and_then(|id| self.calls.get(id))
        {
            let ack = body(
                call,
                Extra {
                    already_active: Some(true),
                    ..Extra::default()
                },
            );
            return Ok(Outcome {
                ack,
                ..Outcome::default()
            });
        }
        if invitees.len() > self.policy.max_group_invitees {
            return Err(ClientError::with_message(
                ErrorCode::Forbidden,
                "the group has more members than a group call may ring",
            )
            .into());
        }
        if invitees.is_empty() {
            return Err(ClientError::with_message(
                ErrorCode::BadRequest,
                "the group has no other members to call",
            )
            .into());
        }
        let room = self.fresh_room(room)?;
        let invitees: BTreeMap<UserId, Invitee> = invitees
            .into_iter()
            .map(|p| {
                (
                    p.id,
                    Invitee {
                        name: p.name,
                        state: InviteState::Ringing,
                    },
                )
            })
            .collect();
        let call = Call {
            id: self.fresh_id(),
            room,
            caller,
            state: CallState::Ringing,
            created_at: OffsetDateTime::now_utc(),
            target: CallTarget::Group {
                group: group.0,
                group_name: group.1,
                invitees,
                caller_present: true,
                owner: group.2,
            },
        };
        let record = record(&call);
        let mut emits: Vec<Emit> = call
            .parties()
            .into_iter()
            .filter(|u| u != &call.caller.id)
            .map(|u| Emit {
                to: To::User(u),
                event: events::INCOMING_VIDEO_CALL,
                payload: record.clone(),
            })
            .collect();
        emits.extend(ringing(origin.ring(), &record));
        let out = Outcome {
            ack: record,
            grant: Some(grant(&call, &call.caller)),
            emits,
            timers: vec![(
                secs(self.policy.ring_timeout_secs),
                Timer::RingTimeout(call.id),
            )],
            here_only: BTreeSet::new(),
        };
        self.insert(call);
        Ok(out)
    }

    /// The call if `user` is a party to it; `not_found` otherwise (checked here
    /// as well as in [`Registry::find`], so no transition can touch a call of
    /// someone else's whatever path leads to it).
    fn party_call_mut(&mut self, id: CallId, user: &UserId) -> Result<&mut Call, Refusal> {
        match self.calls.get_mut(&id) {
            Some(call) if call.involves(user) => Ok(call),
            _ => Err(ErrorCode::NotFound.into()),
        }
    }

    /// `acceptVideoCall` by `user` from socket `sender`.
    ///
    /// # Errors
    /// `not_found`, `forbidden` (the caller accepting a direct call),
    /// `invalid_state`.
    pub fn accept(&mut self, user: &Party, id: CallId, sender: Sid) -> Transition {
        self.answer(user, id, sender, false)
    }

    /// [`Registry::accept`]; `crossed` when the callee's own initiate answers
    /// (both sides' `videoCallAccepted` say so, and the acting socket gets
    /// one too, since it asked to call rather than to answer).
    fn answer(&mut self, user: &Party, id: CallId, sender: Sid, crossed: bool) -> Transition {
        let call = self.party_call_mut(id, &user.id)?;
        let was_ringing = call.state == CallState::Ringing;
        let mut emits = Vec::new();
        match &mut call.target {
            CallTarget::Direct { callee } => {
                if callee.id != user.id {
                    return Err(ClientError::with_message(
                        ErrorCode::Forbidden,
                        "only the callee can accept",
                    )
                    .into());
                }
                if !was_ringing {
                    return Err(ErrorCode::InvalidState.into());
                }
                call.state = CallState::Active;
                let accepted = body(
                    call,
                    Extra {
                        accepted_by: Some(user.id.clone()),
                        crossed: crossed.then_some(true),
                        ..Extra::default()
                    },
                );
                if crossed {
                    emits.push(Emit {
                        to: To::Socket(sender),
                        event: events::VIDEO_CALL_ACCEPTED,
                        payload: accepted.clone(),
                    });
                }
                emits.push(Emit {
                    to: To::User(call.caller.id.clone()),
                    event: events::VIDEO_CALL_ACCEPTED,
                    payload: accepted,
                });
            }
            CallTarget::Group {
                group,
                invitees,
                caller_present,
                ..
            } => {
                let group = group.clone();
                if call.caller.id == user.id {
                    if *caller_present {
                        return Err(ErrorCode::InvalidState.into());
                    }
                    *caller_present = true;
                } else {
                    let invitee = invitees.get_mut(&user.id).ok_or(ErrorCode::NotFound)?;
                    if invitee.state == InviteState::Joined {
                        return Err(ErrorCode::InvalidState.into());
                    }
                    invitee.state = InviteState::Joined;
                }
                call.state = CallState::Active;
                if was_ringing {
                    emits.push(Emit {
                        to: To::User(call.caller.id.clone()),
                        event: events::VIDEO_CALL_ACCEPTED,
                        payload: body(
                            call,
                            Extra {
                                accepted_by: Some(user.id.clone()),
                                ..Extra::default()
                            },
                        ),
                    });
                }
                let joined = party_event(call, &group, &user.id, &user.name);
                for other in call.participants().into_iter().filter(|p| p != &user.id) {
                    emits.push(Emit {
                        to: To::User(other),
                        event: events::GROUP_CALL_PARTICIPANT_JOINED,
                        payload: joined.clone(),
                    });
                }
            }
        }
        emits.push(Emit {
            to: To::UserExcept(user.id.clone(), sender),
            event: events::VIDEO_CALL_ENDED,
            payload: ended(call, Reason::AnsweredElsewhere),
        });
        let ack = body(
            call,
            Extra {
                participants: call.is_group().then(|| call.participants()),
                crossed: crossed.then_some(true),
                ..Extra::default()
            },
        );
        Ok(Outcome {
            ack,
            grant: Some(grant(call, user)),
            emits,
            timers: Vec::new(),
            here_only: BTreeSet::new(),
        })
    }

    /// `refreshJitsiToken`: a participant of a live call (the caller of a
    /// ringing one, anyone in an active one) may have their token again,
    /// e.g. after a page reload. Anyone else, a callee still ringing, one
    /// who declined or left, gets `not_found`, as for a call that does
    /// not exist.
    ///
    /// # Errors
    /// `not_found`.
    pub fn refresh(&self, user: &UserId, id: CallId) -> Result<(Body, Grant), Refusal> {
        let call = self
            .calls
            .get(&id)
            .filter(|c| c.participants().contains(user))
            .ok_or(ErrorCode::NotFound)?;
        let party = if &call.caller.id == user {
            call.caller.clone()
        } else {
            match &call.target {
                CallTarget::Direct { callee } => callee.clone(),
                CallTarget::Group { invitees, .. } => Party {
                    id: user.clone(),
                    name: invitees
                        .get(user)
                        .map(|i| i.name.clone())
                        .ok_or(ErrorCode::NotFound)?,
                },
            }
        };
        Ok((record(call), grant(call, &party)))
    }

    /// `rejectVideoCall` by `user` from socket `sender`.
    ///
    /// # Errors
    /// `not_found`, `forbidden` (the caller), `invalid_state` (not ringing for them).
    pub fn reject(&mut self, user: &Party, id: CallId, sender: Sid) -> Transition {
        let call = self.party_call_mut(id, &user.id)?;
        if call.caller.id == user.id {
            return Err(ClientError::with_message(
                ErrorCode::Forbidden,
                "the caller ends a call with endVideoCall",
            )
            .into());
        }
        let mut emits = vec![Emit {
            to: To::UserExcept(user.id.clone(), sender),
            event: events::VIDEO_CALL_ENDED,
            payload: ended(call, Reason::RejectedElsewhere),
        }];
        let ends = match &mut call.target {
            CallTarget::Direct { .. } => {
                if call.state != CallState::Ringing {
                    return Err(ErrorCode::InvalidState.into());
                }
                true
            }
            CallTarget::Group {
                group, invitees, ..
            } => {
                let group = group.clone();
                let invitee = invitees.get_mut(&user.id).ok_or(ErrorCode::NotFound)?;
                if invitee.state != InviteState::Ringing {
                    return Err(ErrorCode::InvalidState.into());
                }
                invitee.state = InviteState::Declined;
                let all_declined = invitees.values().all(|i| i.state == InviteState::Declined);
                emits.push(Emit {
                    to: To::User(call.caller.id.clone()),
                    event: events::GROUP_CALL_PARTICIPANT_DECLINED,
                    payload: party_event(call, &group, &user.id, &user.name),
                });
                all_declined && call.state == CallState::Ringing
            }
        };
        let ack = record(call);
        if ends {
            emits.push(Emit {
                to: To::User(call.caller.id.clone()),
                event: events::VIDEO_CALL_REJECTED,
                payload: ended(call, Reason::Declined),
            });
            self.finish(id, Reason::Declined);
        }
        Ok(Outcome {
            ack,
            grant: None,
            emits,
            timers: Vec::new(),
            here_only: BTreeSet::new(),
        })
    }

    /// `endVideoCall` by `user` from socket `sender`. A callee or invitee whose
    /// devices are still ringing declines instead.
    ///
    /// # Errors
    /// `not_found`, `forbidden` (`endForAll` by anyone but the caller),
    /// `invalid_state` (not in the call).
    pub fn end(&mut self, user: &Party, id: CallId, end_for_all: bool, sender: Sid) -> Transition {
        let call = &*self.party_call_mut(id, &user.id)?;
        let is_caller = call.caller.id == user.id;
        match &call.target {
            CallTarget::Direct { callee } => {
                let callee_id = callee.id.clone();
                let ringing = call.state == CallState::Ringing;
                if ringing && !is_caller {
                    return self.reject(user, id, sender);
                }
                let mut out = Outcome {
                    ack: record(call),
                    ..Outcome::default()
                };
                if call.state == CallState::Ringing {
                    out.emits.push(Emit {
                        to: To::User(callee_id),
                        event: events::VIDEO_CALL_ENDED,
                        payload: ended(call, Reason::Cancelled),
                    });
                } else {
                    let payload = body(
                        call,
                        Extra {
                            reason: Some(Reason::Hangup),
                            ended_by: Some(user.id.clone()),
                            ..Extra::default()
                        },
                    );
                    for u in [call.caller.id.clone(), callee_id] {
                        out.emits.push(Emit {
                            to: To::User(u),
                            event: events::VIDEO_CALL_ENDED,
                            payload: payload.clone(),
                        });
                    }
                }
                self.finish(
                    id,
                    if ringing {
                        Reason::Cancelled
                    } else {
                        Reason::Hangup
                    },
                );
                Ok(out)
            }
            CallTarget::Group { invitees, .. } => {
                if end_for_all && !is_caller {
                    return Err(ClientError::with_message(
                        ErrorCode::Forbidden,
                        "only the caller can end the call for everyone",
                    )
                    .into());
                }
                if !is_caller {
                    match invitees.get(&user.id).map(|i| i.state) {
                        Some(InviteState::Ringing) => return self.reject(user, id, sender),
                        Some(InviteState::Joined) => {}
                        _ => return Err(ErrorCode::InvalidState.into()),
                    }
                } else if !call.participants().contains(&user.id) && !end_for_all {
                    return Err(ErrorCode::InvalidState.into());
                }
                let ack = record(call);
                let nobody_joined = call.state == CallState::Ringing;
                if end_for_all || (is_caller && nobody_joined) {
                    let mut out = self.end_group(id, Reason::Ended);
                    out.ack = ack;
                    return Ok(out);
                }
                let mut out = self.leave_group(id, &user.id);
                out.ack = ack;
                Ok(out)
            }
        }
    }

    /// A participant leaves a group call; the call ends when nobody is left.
    fn leave_group(&mut self, id: CallId, user: &UserId) -> Outcome {
        let Some(call) = self.calls.get_mut(&id) else {
            return Outcome::default();
        };
        let CallTarget::Group {
            group,
            invitees,
            caller_present,
            ..
        } = &mut call.target
        else {
            return Outcome::default();
        };
        let group = group.clone();
        let name = if &call.caller.id == user {
            *caller_present = false;
            call.caller.name.clone()
        } else if let Some(inv) = invitees.get_mut(user) {
            inv.state = InviteState::Left;
            inv.name.clone()
        } else {
            return Outcome::default();
        };
        let remaining = call.participants();
        if remaining.is_empty() {
            return self.end_group(id, Reason::Ended);
        }
        let payload = party_event(call, &group, user, &name);
        Outcome {
            emits: remaining
                .into_iter()
                .map(|u| Emit {
                    to: To::User(u),
                    event: events::GROUP_CALL_PARTICIPANT_LEFT,
                    payload: payload.clone(),
                })
                .collect(),
            ..Outcome::default()
        }
    }

    /// Ends a group call: every participant and still-ringing invitee gets
    /// `videoCallEnded {reason}`.
    fn end_group(&mut self, id: CallId, reason: Reason) -> Outcome {
        let Some(call) = self.finish(id, reason) else {
            return Outcome::default();
        };
        let mut to: BTreeSet<UserId> = call.participants();
        if let CallTarget::Group { invitees, .. } = &call.target {
            to.extend(
                invitees
                    .iter()
                    .filter(|(_, i)| i.state == InviteState::Ringing)
                    .map(|(u, _)| u.clone()),
            );
        }
        let payload = ended(&call, reason);
        Outcome {
            emits: to
                .into_iter()
                .map(|u| Emit {
                    to: To::User(u),
                    event: events::VIDEO_CALL_ENDED,
                    payload: payload.clone(),
                })
                .collect(),
            ..Outcome::default()
        }
    }

    /// The ring timeout fired.
    pub fn ring_timeout(&mut self, id: CallId) -> Outcome {
        let Some(call) = self.calls.get_mut(&id) else {
            return Outcome::default();
        };
        match &mut call.target {
            CallTarget::Direct { callee } => {
                if call.state != CallState::Ringing {
                    return Outcome::default();
                }
                let callee = callee.id.clone();
                let caller = call.caller.id.clone();
                let payload = ended(call, Reason::Timeout);
                let missed = record(call);
                self.finish(id, Reason::Timeout);
                Outcome {
                    emits: vec![
                        Emit {
                            to: To::User(caller),
                            event: events::VIDEO_CALL_ENDED,
                            payload: payload.clone(),
                        },
                        Emit {
                            to: To::User(callee.clone()),
                            event: events::VIDEO_CALL_ENDED,
                            payload,
                        },
                        Emit {
                            to: To::User(callee),
                            event: events::VIDEO_CALL_MISSED,
                            payload: missed,
                        },
                    ],
                    ..Outcome::default()
                }
            }
            CallTarget::Group { invitees, .. } => {
                if call.state == CallState::Ringing {
                    return self.end_group(id, Reason::Timeout);
                }
                let mut missed = Vec::new();
                for (u, inv) in invitees.iter_mut() {
                    if inv.state == InviteState::Ringing {
                        inv.state = InviteState::Missed;
                        missed.push(u.clone());
                    }
                }
                let payload = ended(call, Reason::Timeout);
                Outcome {
                    emits: missed
                        .into_iter()
                        .map(|u| Emit {
                            to: To::User(u),
                            event: events::VIDEO_CALL_ENDED,
                            payload: payload.clone(),
                        })
                        .collect(),
                    ..Outcome::default()
                }
            }
        }
    }

    /// The group of a live group call; `None` for a direct or unknown call.
    pub fn group_of(&self, id: CallId) -> Option<GroupId> {
        match &self.calls.get(&id)?.target {
            CallTarget::Group { group, .. } => Some(group.clone()),
            CallTarget::Direct { .. } => None,
        }
    }

    /// `user` is no longer a member of `group`: if they are in its live call
    /// they leave it (the others get `groupCallParticipantLeft`), and their
    /// own devices get `videoCallEnded` (ringing or in the call). Accepting
    /// or rejoining it afterwards is refused by the accept rule, which asks
    /// the directory for current membership.
    pub fn member_removed(&mut self, group: &GroupId, user: &UserId) -> Outcome {
        let Some(&id) = self.by_group.get(group) else {
            return Outcome::default();
        };
        let Some(call) = self.calls.get(&id) else {
            return Outcome::default();
        };
        if !call.involves(user) {
            return Outcome::default();
        }
        let notice = Emit {
            to: To::User(user.clone()),
            event: events::VIDEO_CALL_ENDED,
            payload: ended(call, Reason::Ended),
        };
        let in_call = call.participants().contains(user);
        let mut out = if in_call {
            self.leave_group(id, user)
        } else {
            Outcome::default()
        };
        out.emits.push(notice);
        out
    }

    /// A socket of `user` connected: their epoch moves on (pending grace
    /// timers stand down) and their live calls are returned for
    /// `activeVideoCalls`.
    pub fn user_connected(&mut self, user: &UserId) -> Vec<Body> {
        if let Some(epoch) = self.epochs.get_mut(user) {
            *epoch += 1;
        }
        self.calls_of(user).map(record).collect()
    }

    /// `user`'s last socket is gone: schedule the grace timers of their calls.
    pub fn user_went_offline(&mut self, user: &UserId) -> Vec<(Duration, Timer)> {
        let ids: Vec<CallId> = self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let epoch = {
            let e = self.epochs.entry(user.clone()).or_insert(0);
            *e += 1;
            *e
        };
        let mut timers = Vec::new();
        for id in ids {
            let Some(call) = self.calls.get(&id) else {
                continue;
            };
            let is_caller = &call.caller.id == user;
            let is_direct_callee =
                matches!(&call.target, CallTarget::Direct { callee } if &callee.id == user);
            if call.state == CallState::Ringing && (is_caller || is_direct_callee) {
                timers.push((
                    secs(self.policy.ringing_grace_secs),
                    Timer::RingingGrace {
                        call: id,
                        user: user.clone(),
                        epoch,
                    },
                ));
            } else if call.state == CallState::Active && call.participants().contains(user) {
                timers.push((
                    secs(self.policy.reconnect_grace_secs),
                    Timer::ReconnectGrace {
                        call: id,
                        user: user.clone(),
                        epoch,
                    },
                ));
            }
        }
        timers
    }

    /// A timer fired; `user_online` says whether the timer's user has a socket now.
    pub fn fire(&mut self, timer: &Timer, user_online: bool) -> Outcome {
        match timer {
            Timer::RingTimeout(id) => self.ring_timeout(*id),
            Timer::RingingGrace { call, user, epoch }
            | Timer::ReconnectGrace { call, user, epoch } => {
                if user_online || self.epochs.get(user) != Some(epoch) {
                    return Outcome::default();
                }
                let reconnect = matches!(timer, Timer::ReconnectGrace { .. });
                self.vanished(*call, user, reconnect)
            }
        }
    }

    fn vanished(&mut self, id: CallId, user: &UserId, reconnect: bool) -> Outcome {
        let Some(call) = self.calls.get(&id) else {
            return Outcome::default();
        };
        let is_caller = &call.caller.id == user;
        match (&call.target, call.state, reconnect) {
            (CallTarget::Direct { callee }, CallState::Ringing, false) => {
                let (to, reason) = if is_caller {
                    (callee.id.clone(), Reason::CallerDisconnected)
                } else {
                    (call.caller.id.clone(), Reason::Unavailable)
                };
                let payload = ended(call, reason);
                self.finish(id, reason);
                Outcome {
                    emits: vec![Emit {
                        to: To::User(to),
                        event: events::VIDEO_CALL_ENDED,
                        payload,
                    }],
                    ..Outcome::default()
                }
            }
            (CallTarget::Group { .. }, CallState::Ringing, false) if is_caller => {
                self.end_group(id, Reason::CallerDisconnected)
            }
            (CallTarget::Direct { callee }, CallState::Active, true) => {
                let other = if is_caller {
                    callee.id.clone()
                } else {
                    call.caller.id.clone()
                };
                let payload = ended(call, Reason::Disconnected);
                self.finish(id, Reason::Disconnected);
                Outcome {
                    emits: vec![Emit {
                        to: To::User(other),
                        event: events::VIDEO_CALL_ENDED,
                        payload,
                    }],
                    ..Outcome::default()
                }
            }
            (CallTarget::Group { .. }, CallState::Active, true)
                if call.participants().contains(user) =>
            {
                self.leave_group(id, user)
            }
            _ => Outcome::default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Records: the registry as key/value records, for a store that keeps the call
// state outside this process (the cluster's Redis store). The rules above are
// the only rules; a store loads the records a transition may touch into a
// fresh registry, runs the transition, and writes back what changed.
// ---------------------------------------------------------------------------

/// The key of one record of the call state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    /// A call ([`Call`] as JSON).
    Call(CallId),
    /// A user's live call ids and presence epoch ([`UserRecord`] as JSON).
    User(UserId),
    /// The live call holding a Jitsi room (the call id).
    Room(RoomName),
    /// The live call of a group (the call id).
    Group(GroupId),
}

/// A user's record: their live calls and, once they lost their last socket
/// while in one, their presence epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Live calls the user is a party to.
    pub calls: BTreeSet<CallId>,
    /// Presence epoch (absent until it first moves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// A stored record that does not parse (a store bug or a foreign writer).
#[derive(Debug, thiserror::Error)]
#[error("call-state record {key:?} does not parse")]
pub struct RecordError {
    /// The record.
    pub key: RecordKey,
}

/// What one record points at: the call ids a store must load with it so the
/// rules see every call the record names.
///
/// # Errors
/// [`RecordError`] when the value does not parse.
pub fn references(key: &RecordKey, value: &str) -> Result<Vec<CallId>, RecordError> {
    let bad = || RecordError { key: key.clone() };
    match key {
        RecordKey::Call(_) => Ok(Vec::new()),
        RecordKey::User(_) => serde_json::from_str::<UserRecord>(value)
            .map(|u| u.calls.into_iter().collect())
            .map_err(|_| bad()),
        RecordKey::Room(_) | RecordKey::Group(_) => {
            CallId::parse(value).map(|id| vec![id]).map_err(|_| bad())
        }
    }
}

/// The records a call's index entries live in: its parties' user records,
/// its room and, for a group call, its group.
pub fn index_keys(call: &Call) -> Vec<RecordKey> {
    let mut keys: Vec<RecordKey> = call.parties().into_iter().map(RecordKey::User).collect();
    keys.push(RecordKey::Room(call.room.clone()));
    if let CallTarget::Group { group, .. } = &call.target {
        keys.push(RecordKey::Group(group.clone()));
    }
    keys
}

impl Registry {
    /// A registry holding the records a store read: `Some(value)` for a
    /// record found, `None` for one known to be absent. References to a
    /// call known to be absent (a record that outlived its call) are
    /// dropped, so the next export removes them.
    ///
    /// # Errors
    /// [`RecordError`] for a value that does not parse.
    pub fn from_records<'a>(
        policy: CallPolicy,
        records: impl IntoIterator<Item = (&'a RecordKey, &'a Option<String>)> + Clone,
    ) -> Result<Self, RecordError> {
        let mut r = Self::new(policy);
        let mut absent: BTreeSet<CallId> = BTreeSet::new();
        for (key, value) in records.clone() {
            let bad = || RecordError { key: key.clone() };
            match (key, value) {
                (RecordKey::Call(id), None) => {
                    absent.insert(*id);
                }
                (RecordKey::Call(id), Some(v)) => {
                    let call: Call = serde_json::from_str(v).map_err(|_| bad())?;
                    if call.id != *id {
                        return Err(bad());
                    }
                    r.calls.insert(call.id, call);
                }
                _ => {}
            }
        }
        let live = |id: &CallId| !absent.contains(id);
        for (key, value) in records {
            let Some(value) = value else { continue };
            let bad = || RecordError { key: key.clone() };
            match key {
                RecordKey::Call(_) => {}
                RecordKey::User(user) => {
                    let rec: UserRecord = serde_json::from_str(value).map_err(|_| bad())?;
                    let calls: BTreeSet<CallId> = rec.calls.into_iter().filter(live).collect();
                    if calls.is_empty() {
                        continue;
                    }
                    if let Some(epoch) = rec.epoch {
                        r.epochs.insert(user.clone(), epoch);
                    }
                    r.by_user.insert(user.clone(), calls);
                }
                RecordKey::Room(room) => {
                    let id = CallId::parse(value).map_err(|_| bad())?;
                    if live(&id) {
                        r.by_room.insert(room.clone(), id);
                    }
                }
                RecordKey::Group(group) => {
                    let id = CallId::parse(value).map_err(|_| bad())?;
                    if live(&id) {
                        r.by_group.insert(group.clone(), id);
                    }
                }
            }
        }
        Ok(r)
    }

    /// Every record this registry represents, serialised. A key a store read
    /// and that is missing here must be deleted; a value that differs from
    /// what was read must be written (see [`diff`]).
    pub fn records(&self) -> BTreeMap<RecordKey, String> {
        let mut out = BTreeMap::new();
        for (id, call) in &self.calls {
            if let Ok(v) = serde_json::to_string(call) {
                out.insert(RecordKey::Call(*id), v);
            }
        }
        for (user, calls) in &self.by_user {
            let rec = UserRecord {
                calls: calls.clone(),
                epoch: self.epochs.get(user).copied(),
            };
            if let Ok(v) = serde_json::to_string(&rec) {
                out.insert(RecordKey::User(user.clone()), v);
            }
        }
        for (room, id) in &self.by_room {
            out.insert(RecordKey::Room(room.clone()), id.to_string());
        }
        for (group, id) in &self.by_group {
            out.insert(RecordKey::Group(group.clone()), id.to_string());
        }
        out
    }

    /// The live calls and the records holding their index entries.
    pub fn calls_with_index_keys(&self) -> BTreeMap<CallId, Vec<RecordKey>> {
        self.calls
            .iter()
            .map(|(id, call)| (*id, index_keys(call)))
            .collect()
    }
}

/// The writes that turn `before` (what a store read: `None` = absent) into
/// `after` (a registry's [`Registry::records`] after a transition):
/// `Some(value)` to set, `None` to delete. Keys in neither are untouched.
pub fn diff(
    before: &BTreeMap<RecordKey, Option<String>>,
    after: &BTreeMap<RecordKey, String>,
) -> Vec<(RecordKey, Option<String>)> {
    let mut out = Vec::new();
    for (key, was) in before {
        match (was, after.get(key)) {
            (Some(_), None) => out.push((key.clone(), None)),
            (was, Some(now)) if was.as_deref() != Some(now.as_str()) => {
                out.push((key.clone(), Some(now.clone())));
            }
            _ => {}
        }
    }
    for (key, now) in after {
        if !before.contains_key(key) {
            out.push((key.clone(), Some(now.clone())));
        }
    }
    out
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
