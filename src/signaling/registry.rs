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

use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};
use socketioxide::socket::Sid;
use time::OffsetDateTime;

use super::events;
use crate::domain::call::{Call, CallRecord, CallState, CallTarget, InviteState, Invitee, Party};
use crate::domain::{CallId, GroupId, GroupName, RoomName, UserId};
use crate::error::{ClientError, ErrorCode};
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
}

/// A timer a transition asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// What a transition asks the caller to do.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Extra fields for the sender's `{ok: true}` ack.
    pub ack: Body,
    /// Events to deliver.
    pub emits: Vec<Emit>,
    /// Timers to start: (delay, timer).
    pub timers: Vec<(Duration, Timer)>,
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

/// `videoCallRinging` to the initiating socket, when it asked for no ack (the
/// seed's frontend): otherwise the ack already carries the same record.
fn ringing(to: Option<Sid>, record: &Body) -> Option<Emit> {
    to.map(|sid| Emit {
        to: To::Socket(sid),
        event: events::VIDEO_CALL_RINGING,
        payload: record.clone(),
    })
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

    /// `initiateVideoCall`, after the handler checked the payload, the caller's
    /// identity, that the callee exists, the one-to-one policy and that the
    /// callee is online. Checks busy, glare and the room, then rings.
    ///
    /// # Errors
    /// `busy`, `glare` (with `existingCallId`), `room_in_use`.
    pub fn initiate_direct(
        &mut self,
        caller: Party,
        callee: Party,
        room: Option<RoomName>,
        ring: Option<Sid>,
    ) -> Transition {
        if self.policy.busy == BusyRule::Reject && self.is_busy(&callee.id) {
            return Err(ErrorCode::Busy.into());
        }
        let glare = self.calls_of(&caller.id).find(|c| {
            c.state == CallState::Ringing
                && matches!(&c.target, CallTarget::Direct { callee: other } if
                    (c.caller.id == caller.id && other.id == callee.id) || (c.caller.id == callee.id && other.id == caller.id))
        });
        if let Some(existing) = glare {
            let mut refusal = Refusal::from(ErrorCode::Glare);
            refusal
                .context
                .insert("existingCallId".into(), json!(existing.id));
            return Err(refusal);
        }
        let room = self.fresh_room(room)?;
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
        let mut emits = vec![Emit {
            to: To::User(callee_id),
            event: events::INCOMING_VIDEO_CALL,
            payload: record.clone(),
        }];
        emits.extend(ringing(ring, &record));
        let out = Outcome {
            ack: record,
            emits,
            timers: vec![(
                secs(self.policy.ring_timeout_secs),
                Timer::RingTimeout(call.id),
            )],
        };
        self.insert(call);
        Ok(out)
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
        group: (GroupId, GroupName),
        invitees: Vec<Party>,
        room: Option<RoomName>,
        ring: Option<Sid>,
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
        emits.extend(ringing(ring, &record));
        let out = Outcome {
            ack: record,
            emits,
            timers: vec![(
                secs(self.policy.ring_timeout_secs),
                Timer::RingTimeout(call.id),
            )],
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
                ..Extra::default()
            },
        );
        Ok(Outcome {
            ack,
            emits,
            timers: Vec::new(),
        })
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
            emits,
            timers: Vec::new(),
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
