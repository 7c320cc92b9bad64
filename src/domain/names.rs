//! Human-facing names, room names and passwords.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use super::ParseError;

fn deserialize_via<'de, D, T>(d: D, parse: fn(&str) -> Result<T, ParseError>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse(&raw).map_err(serde::de::Error::custom)
}

/// A login name: 3 to 32 characters from `[a-z0-9_.-]`, starting with a
/// letter or digit. Stored as given (lower case is required, not folded), so
/// two accounts can never differ only by case.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(Arc<str>);

impl Username {
    /// Parses a username.
    ///
    /// # Errors
    /// Returns a [`ParseError`] naming the broken rule.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        const RULE: &str = "must be 3 to 32 characters from a-z, 0-9, '_', '.', '-', starting with a letter or digit";
        let ok_len = (3..=32).contains(&raw.len());
        let ok_first = raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_chars = raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
        if ok_len && ok_first && ok_chars {
            Ok(Self(Arc::from(raw)))
        } else {
            Err(ParseError::new("username", RULE))
        }
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

impl<'de> Deserialize<'de> for Username {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_via(d, Self::parse)
    }
}

/// Parses free text shown to people: trimmed, 1 to `max` characters, no
/// control characters.
fn parse_label(what: &'static str, raw: &str, max: usize) -> Result<Arc<str>, ParseError> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > max {
        return Err(ParseError::new(what, "must be 1 to 64 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ParseError::new(what, "must not contain control characters"));
    }
    Ok(Arc::from(trimmed))
}

macro_rules! label {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses the name: trimmed, 1 to 64 characters, no control characters.
            ///
            /// # Errors
            /// Returns a [`ParseError`] naming the broken rule.
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                parse_label($what, raw, 64).map(Self)
            }

            /// The name as text.
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
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_via(d, Self::parse)
            }
        }
    };
}

label!(
    /// The name a user is shown by: 1 to 64 characters, trimmed, no control characters.
    DisplayName,
    "displayName"
);
label!(
    /// A group's name, with the same rules as [`DisplayName`].
    GroupName,
    "name"
);

/// A Jitsi room name: `^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$`, kept lowercased.
///
/// Jitsi opens every room lowercased (its MUC node is lowercase) and Prosody
/// compares a token's `room` lowercased, so `Team` and `team` are one room:
/// parsing folds case, and the name callgate stores, returns, indexes and
/// puts in room tokens is the one the Jitsi client opens. The characters
/// allowed are all ones Jitsi keeps as they are.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Parses a room name.
    ///
    /// # Errors
    /// Returns a [`ParseError`] naming the broken rule.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bytes = raw.as_bytes();
        let ok = (3..=128).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if ok {
            Ok(Self(Arc::from(raw.to_ascii_lowercase().as_str())))
        } else {
            Err(ParseError::new(
                "roomName",
                "must match ^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$",
            ))
        }
    }

    /// A server-made room name, `call-<uuid>`.
    pub fn new_random() -> Self {
        Self(Arc::from(format!("call-{}", uuid::Uuid::new_v4()).as_str()))
    }

    /// The room name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomName({})", self.0)
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_via(d, Self::parse)
    }
}

/// A password as typed: 8 to 1024 bytes. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    /// Shortest accepted password, in bytes.
    pub const MIN_BYTES: usize = 8;
    /// Longest accepted password, in bytes (argon2 takes any length; this
    /// bounds the work one request can ask for).
    pub const MAX_BYTES: usize = 1024;

    /// Parses a password.
    ///
    /// # Errors
    /// Returns a [`ParseError`] when it is shorter than 8 or longer than 1024 bytes.
    pub fn parse(raw: String) -> Result<Self, ParseError> {
        if (Self::MIN_BYTES..=Self::MAX_BYTES).contains(&raw.len()) {
            Ok(Self(SecretString::from(raw)))
        } else {
            Err(ParseError::new("password", "must be 8 to 1024 bytes"))
        }
    }

    /// The password's bytes, for hashing and verifying only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_pattern() {
        for ok in ["abc", "call-0f8e", "A1_-x", &"a".repeat(128)] {
            assert!(RoomName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "-abc",
            "_abc",
            "a b c",
            "abc/def",
            "",
            &"a".repeat(129),
            "日本語",
        ] {
            assert!(RoomName::parse(bad).is_err(), "{bad}");
        }
        assert!(RoomName::parse(RoomName::new_random().as_str()).is_ok());
    }

    #[test]
    fn room_names_are_lowercased_as_jitsi_opens_them() {
        let room = RoomName::parse("Team-Standup_1").map(|r| r.to_string());
        assert_eq!(room.as_deref(), Ok("team-standup_1"));
        assert_eq!(RoomName::parse("ABC"), RoomName::parse("abc"));
    }

    #[test]
    fn usernames_are_lower_case_and_bounded() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("Alice").is_err());
        assert!(Username::parse("al").is_err());
        assert!(Username::parse(".alice").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
    }

    #[test]
    fn labels_are_trimmed_and_refuse_control_characters() {
        assert_eq!(
            DisplayName::parse("  Alice  ").map(|n| n.to_string()),
            Ok("Alice".into())
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{0}b").is_err());
        assert!(GroupName::parse(&"é".repeat(64)).is_ok());
        assert!(GroupName::parse(&"é".repeat(65)).is_err());
    }

    #[test]
    fn passwords_are_bounded_and_never_printed() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(1025)).is_err());
        let p = Password::parse("correct horse".into()).map(|p| format!("{p:?}"));
        assert_eq!(p.as_deref(), Ok("Password([redacted])"));
    }
}
