//! Opaque identifiers for users, groups and calls.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use super::ParseError;

/// Longest accepted user or group id.
pub const MAX_ID_LEN: usize = 64;

fn parse_opaque_id(what: &'static str, raw: &str) -> Result<Arc<str>, ParseError> {
    if raw.is_empty() || raw.len() > MAX_ID_LEN {
        return Err(ParseError::new(what, "must be 1 to 64 characters"));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ParseError::new(
            what,
            "may only contain A-Z, a-z, 0-9, _ and -",
        ));
    }
    Ok(Arc::from(raw))
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses an id: 1 to 64 characters from `[A-Za-z0-9_-]`.
            ///
            /// # Errors
            /// Returns a [`ParseError`] naming the broken rule.
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                parse_opaque_id($what, raw).map(Self)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

opaque_id!(
    /// A user's id: opaque, 1 to 64 characters from `[A-Za-z0-9_-]`
    /// (a MongoDB ObjectId in hex fits).
    UserId,
    "user id"
);
opaque_id!(
    /// A group's id, with the same rules as [`UserId`].
    GroupId,
    "group id"
);

/// A call's id: a random UUID v4 made by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallId(uuid::Uuid);

impl CallId {
    /// A fresh random call id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Parses a call id in the hyphenated UUID form.
    ///
    /// # Errors
    /// Returns a [`ParseError`] when the text is not a hyphenated UUID.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() != 36 {
            return Err(ParseError::new("callId", "must be a UUID"));
        }
        uuid::Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| ParseError::new("callId", "must be a UUID"))
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for CallId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_hex_is_a_valid_user_id() {
        assert!(UserId::parse("6860e2e85547033af89987ba").is_ok());
    }

    #[test]
    fn ids_refuse_empty_long_and_foreign_characters() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"a".repeat(65)).is_err());
        assert!(UserId::parse(&"a".repeat(64)).is_ok());
        for bad in ["a b", "a/b", "a:b", "$ne", "é", "a\0b", "user:x"] {
            assert!(GroupId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_deserialize_only_from_valid_strings() {
        assert!(serde_json::from_str::<UserId>("\"abc_-1\"").is_ok());
        assert!(serde_json::from_str::<UserId>("{\"$ne\":null}").is_err());
        assert!(serde_json::from_str::<UserId>("12").is_err());
        assert!(serde_json::from_str::<UserId>("null").is_err());
    }

    #[test]
    fn call_ids_round_trip_and_refuse_other_text() {
        let id = CallId::new_random();
        assert_eq!(CallId::parse(&id.to_string()), Ok(id));
        assert!(CallId::parse("not-a-uuid").is_err());
        assert!(CallId::parse("6860e2e85547033af89987ba").is_err());
    }
}
