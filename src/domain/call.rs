//! The call state machine's data: a call, its parties and states, and the
//! record clients see. Transitions live in the signaling registry, which owns
//! every [`Call`] under one lock.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{CallId, DisplayName, GroupId, GroupName, RoomName, UserId};

/// A user with the name the directory gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Id.
    pub id: UserId,
    /// Display name (from the directory, never from a payload).
    pub name: DisplayName,
}

/// Where a call is in its life. Ended calls are removed, not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// Invitations are out; nobody has answered yet.
    Ringing,
    /// At least one callee answered.
    Active,
}

/// Where one group-call invitee stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteState {
    /// Their devices are ringing.
    Ringing,
    /// In the call.
    Joined,
    /// Declined.
    Declined,
    /// Joined, then left.
    Left,
    /// Did not answer before the ring timeout.
    Missed,
}

/// One invitee of a group call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitee {
    /// Display name.
    pub name: DisplayName,
    /// Where they stand.
    pub state: InviteState,
}

/// Whom a call is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CallTarget {
    /// One-to-one.
    Direct {
        /// The callee.
        callee: Party,
    },
    /// A group call.
    Group {
        /// The group.
        group: GroupId,
        /// Its name when the call started.
        group_name: GroupName,
        /// Every member rung (members minus the caller).
        invitees: BTreeMap<UserId, Invitee>,
        /// Whether the caller is still in the call.
        caller_present: bool,
        /// The group's owner when the call started (for the moderator policy).
        owner: Option<UserId>,
    },
}

/// A live call. (De)serialised as the stored record of the cluster's call
/// state (see `cluster::call_state`); clients see [`CallRecord`] instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Server-made id.
    pub id: CallId,
    /// Jitsi room.
    pub room: RoomName,
    /// Who called.
    pub caller: Party,
    /// Ringing or active.
    pub state: CallState,
    /// When it was created.
    #[serde(with = "unix_nanos")]
    pub created_at: OffsetDateTime,
    /// Direct or group.
    pub target: CallTarget,
}

/// The call as clients see it (`incomingVideoCall`, acks, ...).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// Server-made id.
    pub call_id: CallId,
    /// Jitsi room.
    pub room_name: RoomName,
    /// Caller id.
    pub caller_id: UserId,
    /// Caller's display name.
    pub caller_name: DisplayName,
    /// Callee id (direct calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<UserId>,
    /// Callee's display name (direct calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_name: Option<DisplayName>,
    /// Whether this is a group call.
    pub is_group_call: bool,
    /// Group id (group calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// Group name (group calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<GroupName>,
    /// Creation time, RFC 3339, from the server's clock.
    pub timestamp: String,
    /// Ringing or active.
    pub state: CallState,
}

impl Call {
    /// Whether this is a group call.
    pub fn is_group(&self) -> bool {
        matches!(self.target, CallTarget::Group { .. })
    }

    /// Everyone the call concerns: caller, callee, every invitee.
    pub fn parties(&self) -> Vec<UserId> {
        let mut out = vec![self.caller.id.clone()];
        match &self.target {
            CallTarget::Direct { callee } => out.push(callee.id.clone()),
            CallTarget::Group { invitees, .. } => out.extend(invitees.keys().cloned()),
        }
        out
    }

    /// Whether `user` is the caller, the callee or an invitee.
    pub fn involves(&self, user: &UserId) -> bool {
        &self.caller.id == user
            || match &self.target {
                CallTarget::Direct { callee } => &callee.id == user,
                CallTarget::Group { invitees, .. } => invitees.contains_key(user),
            }
    }

    /// Who is in the call's media right now: for a direct call both parties
    /// once active (the caller alone while ringing); for a group call the
    /// caller if present and every joined invitee.
    pub fn participants(&self) -> BTreeSet<UserId> {
        let mut out = BTreeSet::new();
        match &self.target {
            CallTarget::Direct { callee } => {
                out.insert(self.caller.id.clone());
                if self.state == CallState::Active {
                    out.insert(callee.id.clone());
                }
            }
            CallTarget::Group {
                invitees,
                caller_present,
                ..
            } => {
                if *caller_present {
                    out.insert(self.caller.id.clone());
                }
                out.extend(
                    invitees
                        .iter()
                        .filter(|(_, i)| i.state == InviteState::Joined)
                        .map(|(id, _)| id.clone()),
                );
            }
        }
        out
    }

    /// Whether `user` is busy because of this call: in it while it is active.
    pub fn keeps_busy(&self, user: &UserId) -> bool {
        self.state == CallState::Active && self.participants().contains(user)
    }

    /// The record clients see.
    pub fn record(&self) -> CallRecord {
        let (receiver_id, receiver_name, group_id, group_name) = match &self.target {
            CallTarget::Direct { callee } => (
                Some(callee.id.clone()),
                Some(callee.name.clone()),
                None,
                None,
            ),
            CallTarget::Group {
                group, group_name, ..
            } => (None, None, Some(group.clone()), Some(group_name.clone())),
        };
        CallRecord {
            call_id: self.id,
            room_name: self.room.clone(),
            caller_id: self.caller.id.clone(),
            caller_name: self.caller.name.clone(),
            receiver_id,
            receiver_name,
            is_group_call: self.is_group(),
            group_id,
            group_name,
            timestamp: self.created_at.format(&Rfc3339).unwrap_or_default(),
            state: self.state,
        }
    }
}

/// `created_at` as `[seconds, nanoseconds]` since the Unix epoch: exact, and
/// without the `time` crate's serde feature.
mod unix_nanos {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        (t.unix_timestamp(), t.nanosecond()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
        let t = OffsetDateTime::from_unix_timestamp(secs).map_err(serde::de::Error::custom)?;
        t.replace_nanosecond(nanos)
            .map_err(serde::de::Error::custom)
    }
}
