//! Reading client payloads: a JSON value in, typed fields out, each failure a
//! `bad_request` that names the field and never echoes the value.
//!
//! Unknown fields are ignored (the seed frontend sends names and timestamps the
//! server does not trust); known fields must have the right type and shape.

use serde_json::{Map, Value, json};

use crate::domain::{CallId, GroupId, ParseError, RoomName, UserId};
use crate::error::ClientError;

/// The payload as an object, or `bad_request`.
///
/// # Errors
/// When the payload is not a JSON object.
pub fn object(value: &Value) -> Result<&Map<String, Value>, ClientError> {
    value
        .as_object()
        .ok_or_else(|| ClientError::bad_field("payload", "must be an object"))
}

/// An optional string field parsed with `parse`; `null` counts as absent.
///
/// # Errors
/// When present but not a string, or when `parse` refuses it.
pub fn optional<T>(
    map: &Map<String, Value>,
    field: &'static str,
    parse: fn(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, ClientError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse(s).map(Some).map_err(ClientError::from),
        Some(_) => Err(ClientError::bad_field(field, "must be a string")),
    }
}

/// A required string field parsed with `parse`.
///
/// # Errors
/// When missing, not a string, or refused by `parse`.
pub fn required<T>(
    map: &Map<String, Value>,
    field: &'static str,
    parse: fn(&str) -> Result<T, ParseError>,
) -> Result<T, ClientError> {
    optional(map, field, parse)?.ok_or_else(|| ClientError::bad_field(field, "is required"))
}

/// An optional boolean field.
///
/// # Errors
/// When present but not a boolean.
pub fn flag(map: &Map<String, Value>, field: &'static str) -> Result<bool, ClientError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ClientError::bad_field(field, "must be a boolean")),
    }
}

/// An id given either bare (`"abc"`, as the seed sends `joinGroup(groupId)`)
/// or inside an object under `field` (`{"groupId": "abc"}`).
///
/// # Errors
/// When it is neither, or the id is malformed.
pub fn bare_or_field<T>(
    value: &Value,
    field: &'static str,
    parse: fn(&str) -> Result<T, ParseError>,
) -> Result<T, ClientError> {
    match value {
        Value::String(s) => parse(s).map_err(ClientError::from),
        Value::Object(map) => required(map, field, parse),
        _ => Err(ClientError::bad_field(field, "must be a string")),
    }
}

/// Longest value accepted in a field callgate ignores (names, timestamps the
/// seed frontend sends but the server does not trust).
pub const MAX_IGNORED_FIELD: usize = 256;

/// Fields the seed frontend sends that callgate ignores; still type- and
/// length-checked so a payload cannot carry megabytes under a known name.
const IGNORED_TEXT_FIELDS: [&str; 5] = [
    "callerName",
    "receiverName",
    "groupName",
    "timestamp",
    "callerSocketId",
];

fn check_ignored_fields(map: &Map<String, Value>) -> Result<(), ClientError> {
    for field in IGNORED_TEXT_FIELDS {
        match map.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.len() <= MAX_IGNORED_FIELD => {}
            Some(Value::String(_)) => return Err(ClientError::bad_field(field, "is too long")),
            Some(_) => return Err(ClientError::bad_field(field, "must be a string")),
        }
    }
    flag(map, "isGroupCall")?;
    Ok(())
}

/// The payload as an object; no payload at all counts as `{}`.
fn object_or_empty(
    data: Result<Value, impl std::fmt::Display>,
) -> Result<Map<String, Value>, ClientError> {
    match data {
        Ok(Value::Null) => Ok(Map::new()),
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Array(items)) if items.is_empty() => Ok(Map::new()),
        _ => Err(ClientError::bad_field("payload", "must be an object")),
    }
}

/// Records a parsed field in the failure context (never a raw value).
fn remember<T: serde::Serialize>(ctx: &mut Map<String, Value>, key: &str, value: &Option<T>) {
    if let Some(v) = value {
        ctx.insert(key.into(), json!(v));
    }
}

/// `initiateVideoCall`'s payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiateDirect {
    /// Whom to call.
    pub receiver: UserId,
    /// The Jitsi room the client wants, if any.
    pub room: Option<RoomName>,
    /// The caller id the client claims (must be its own).
    pub claimed_caller: Option<UserId>,
}

/// `initiateGroupVideoCall`'s payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiateGroup {
    /// Which group.
    pub group: GroupId,
    /// The Jitsi room the client wants, if any.
    pub room: Option<RoomName>,
    /// The caller id the client claims (must be its own).
    pub claimed_caller: Option<UserId>,
}

/// What accept, reject and end carry: which call, and `endForAll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    /// The call's id, if given.
    pub call_id: Option<CallId>,
    /// The call's room, if given.
    pub room: Option<RoomName>,
    /// `endForAll` (end only).
    pub end_for_all: bool,
    /// `callerId` and `receiverId` as given. Never trusted (the call record
    /// says who its parties are); cluster mode reads their records ahead,
    /// with the call's, which saves a round trip when they are right.
    pub hints: Vec<UserId>,
}

/// Decodes `initiateVideoCall`. Parsed ids go into `ctx` for the failure event.
///
/// # Errors
/// `bad_request` naming the field.
pub fn initiate_direct(
    data: Result<Value, impl std::fmt::Display>,
    ctx: &mut Map<String, Value>,
) -> Result<InitiateDirect, ClientError> {
    let map = object_or_empty(data)?;
    let receiver = optional(&map, "receiverId", UserId::parse)?;
    remember(ctx, "receiverId", &receiver);
    let room = optional(&map, "roomName", RoomName::parse)?;
    remember(ctx, "roomName", &room);
    let claimed_caller = optional(&map, "callerId", UserId::parse)?;
    check_ignored_fields(&map)?;
    let receiver = receiver.ok_or_else(|| ClientError::bad_field("receiverId", "is required"))?;
    Ok(InitiateDirect {
        receiver,
        room,
        claimed_caller,
    })
}

/// Decodes `initiateGroupVideoCall`.
///
/// # Errors
/// `bad_request` naming the field.
pub fn initiate_group(
    data: Result<Value, impl std::fmt::Display>,
    ctx: &mut Map<String, Value>,
) -> Result<InitiateGroup, ClientError> {
    let map = object_or_empty(data)?;
    let group = optional(&map, "groupId", GroupId::parse)?;
    remember(ctx, "groupId", &group);
    let room = optional(&map, "roomName", RoomName::parse)?;
    remember(ctx, "roomName", &room);
    let claimed_caller = optional(&map, "callerId", UserId::parse)?;
    check_ignored_fields(&map)?;
    let group = group.ok_or_else(|| ClientError::bad_field("groupId", "is required"))?;
    Ok(InitiateGroup {
        group,
        room,
        claimed_caller,
    })
}

/// Decodes `acceptVideoCall`, `rejectVideoCall` and `endVideoCall`.
///
/// # Errors
/// `bad_request` naming the field.
pub fn call_ref(
    data: Result<Value, impl std::fmt::Display>,
    ctx: &mut Map<String, Value>,
) -> Result<CallRef, ClientError> {
    let map = object_or_empty(data)?;
    let call_id = optional(&map, "callId", CallId::parse)?;
    remember(ctx, "callId", &call_id);
    let room = optional(&map, "roomName", RoomName::parse)?;
    remember(ctx, "roomName", &room);
    // Ids the seed echoes back are checked for shape and otherwise ignored:
    // the call itself says who its parties are.
    let mut hints = Vec::new();
    for field in ["callerId", "receiverId"] {
        hints.extend(optional(&map, field, UserId::parse)?);
    }
    optional(&map, "groupId", UserId::parse)?;
    check_ignored_fields(&map)?;
    let end_for_all = flag(&map, "endForAll")?;
    Ok(CallRef {
        call_id,
        room,
        end_for_all,
        hints,
    })
}

/// Decodes `{callId}` (`refreshJitsiToken`): the call id is required.
///
/// # Errors
/// `bad_request` when the payload is not an object or `callId` is missing or malformed.
pub fn call_id(
    data: Result<Value, impl std::fmt::Display>,
    ctx: &mut Map<String, Value>,
) -> Result<CallId, ClientError> {
    let map = object_or_empty(data)?;
    let id = required(&map, "callId", CallId::parse)?;
    remember(ctx, "callId", &Some(id));
    Ok(id)
}

/// Decodes the optional own-user id of `userOnline` and `joinVideoRoom`
/// (bare, `{userId}`, or nothing).
///
/// # Errors
/// `bad_request` when present but malformed.
pub fn own_user_id(
    data: Result<Value, impl std::fmt::Display>,
) -> Result<Option<UserId>, ClientError> {
    match data {
        Ok(Value::Null) => Ok(None),
        Ok(Value::Object(map)) if map.is_empty() => Ok(None),
        Ok(v) => bare_or_field(&v, "userId", UserId::parse).map(Some),
        Err(_) => Err(ClientError::bad_field("payload", "could not be read")),
    }
}

/// Decodes the group id of `joinGroup`, `leaveGroup` and `groupCreated`.
///
/// # Errors
/// `bad_request` when missing or malformed.
pub fn group_id(data: Result<Value, impl std::fmt::Display>) -> Result<GroupId, ClientError> {
    match data {
        Ok(v) => bare_or_field(&v, "groupId", GroupId::parse),
        Err(_) => Err(ClientError::bad_field("payload", "could not be read")),
    }
}

/// Decodes any client event's payload, as its handler would, without acting
/// on it. The one entry point for fuzzing and for tests of the decoders.
///
/// # Errors
/// `bad_request` for a malformed payload or an event callgate does not handle.
pub fn decode(event: &str, data: Value) -> Result<(), ClientError> {
    let mut ctx = Map::new();
    let data = Ok::<_, &str>(data);
    match event {
        "userOnline" | "joinVideoRoom" => own_user_id(data).map(drop),
        "joinGroup" | "leaveGroup" | "groupCreated" => group_id(data).map(drop),
        "initiateVideoCall" => initiate_direct(data, &mut ctx).map(drop),
        "initiateGroupVideoCall" => initiate_group(data, &mut ctx).map(drop),
        "acceptVideoCall" | "rejectVideoCall" | "endVideoCall" => {
            call_ref(data, &mut ctx).map(drop)
        }
        _ => Err(ClientError::bad_field(
            "event",
            "is not one callgate handles",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::UserId;

    #[test]
    fn non_string_ids_are_refused_without_echoing_them() {
        let v = json!({ "receiverId": { "$ne": null } });
        let err = required(object(&v).expect("object"), "receiverId", UserId::parse)
            .expect_err("refused");
        assert_eq!(err.message, "receiverId must be a string");
    }

    #[test]
    fn ids_may_be_bare_or_wrapped() {
        assert!(bare_or_field(&json!("g1"), "groupId", UserId::parse).is_ok());
        assert!(bare_or_field(&json!({ "groupId": "g1" }), "groupId", UserId::parse).is_ok());
        assert!(bare_or_field(&json!(12), "groupId", UserId::parse).is_err());
        assert!(bare_or_field(&json!(["g1"]), "groupId", UserId::parse).is_err());
    }
}
