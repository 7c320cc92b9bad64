//! Pure domain types: identifiers, names and secrets that can only be built by
//! parsing, so a value that exists is a value that is valid. No I/O here.
//!
//! [`call`] holds the call state machine's data.

pub mod call;
mod ids;
mod names;

pub use ids::{CallId, GroupId, UserId};
pub use names::{DisplayName, GroupName, Password, RoomName, Username};

/// Why a piece of client input was refused. The message is fixed text that
/// names the rule, never the input itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {rule}")]
pub struct ParseError {
    /// What was being parsed (`user id`, `roomName`, ...).
    pub what: &'static str,
    /// The rule it broke.
    pub rule: &'static str,
}

impl ParseError {
    pub(crate) const fn new(what: &'static str, rule: &'static str) -> Self {
        Self { what, rule }
    }
}
