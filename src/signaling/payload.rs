//! Reading client payloads: a JSON value in, typed fields out, each failure a
//! `bad_request` that names the field and never echoes the value.
//!
//! Unknown fields are ignored (the seed frontend sends names and timestamps the
//! server does not trust); known fields must have the right type and shape.

use serde_json::{Map, Value};

use crate::domain::ParseError;
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
