//! Declarative policies, loaded from `policies/*.toml` and validated like the
//! config: every problem names its key and the fix.

use std::path::Path;

use serde::Deserialize;

use crate::config::{Problem, Problems};

/// The built-in policy (the text of `policies/default.toml`).
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../policies/default.toml");

/// A whole policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Call rules.
    pub calls: CallPolicy,
    /// Rate limits.
    pub rate_limits: RateLimitPolicy,
    /// Connection caps.
    pub connections: ConnectionPolicy,
    /// Group membership caps.
    #[serde(default)]
    pub groups: GroupPolicy,
}

/// `[groups]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPolicy {
    /// Most groups one user may belong to; creating or joining one more is
    /// refused with `limit_reached`.
    pub max_per_user: usize,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        Self { max_per_user: 200 }
    }
}

fn default_session_open_per_ip() -> Rate {
    Rate {
        per_minute: 240,
        burst: 60,
    }
}

fn default_group_changes() -> Rate {
    Rate {
        per_minute: 30,
        burst: 10,
    }
}

/// One rate: `burst` at once, then one every `60 / per_minute` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained events per minute.
    pub per_minute: u32,
    /// Events allowed at once.
    pub burst: u32,
}

/// `[rate_limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// initiate events, per user.
    pub call_initiate: Rate,
    /// accept, reject, end, per user.
    pub call_control: Rate,
    /// room events, per user.
    pub rooms: Rate,
    /// Socket.IO handshakes, per IP.
    pub handshake_per_ip: Rate,
    /// Engine.IO session opens (before any CONNECT), per IP.
    #[serde(default = "default_session_open_per_ip")]
    pub session_open_per_ip: Rate,
    /// Group creations and membership changes, per user.
    #[serde(default = "default_group_changes")]
    pub group_changes: Rate,
    /// Logins, per IP.
    pub login_per_ip: Rate,
    /// Logins, per username.
    pub login_per_username: Rate,
    /// Registrations, per IP.
    pub register_per_ip: Rate,
    /// Consecutive refused events before a socket is disconnected (0: never).
    pub disconnect_after: u32,
}

impl RateLimitPolicy {
    /// Every rate with its key, for validation.
    pub fn rates(&self) -> [(&'static str, Rate); 9] {
        [
            ("rate_limits.call_initiate", self.call_initiate),
            ("rate_limits.call_control", self.call_control),
            ("rate_limits.rooms", self.rooms),
            ("rate_limits.handshake_per_ip", self.handshake_per_ip),
            ("rate_limits.session_open_per_ip", self.session_open_per_ip),
            ("rate_limits.group_changes", self.group_changes),
            ("rate_limits.login_per_ip", self.login_per_ip),
            ("rate_limits.login_per_username", self.login_per_username),
            ("rate_limits.register_per_ip", self.register_per_ip),
        ]
    }
}

/// `[connections]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPolicy {
    /// Sockets per user.
    pub max_per_user: usize,
    /// Sockets per client IP.
    pub max_per_ip: usize,
    /// Sockets in total.
    pub max_total: usize,
}

/// `[calls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallPolicy {
    /// Seconds a call rings before it is given up.
    pub ring_timeout_secs: u64,
    /// Seconds a ringing call waits for a vanished caller or callee.
    pub ringing_grace_secs: u64,
    /// Seconds an active call waits for a vanished participant.
    pub reconnect_grace_secs: u64,
    /// Who may call whom one-to-one.
    pub one_to_one: OneToOne,
    /// What happens when the callee is already in a call.
    pub busy: BusyRule,
    /// Most invitees a group call may ring.
    pub max_group_invitees: usize,
}

/// `calls.one_to_one`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OneToOne {
    /// Any user may call any other.
    Anyone,
    /// Caller and callee must share a group.
    SharedGroup,
}

/// `calls.busy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyRule {
    /// Refuse with `busy`.
    Reject,
    /// Ring anyway.
    Ring,
}

impl Policy {
    /// Parses and validates policy text; `origin` names it in problems.
    ///
    /// # Errors
    /// Every problem found.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Problems> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            Problems(vec![Problem::new(
                format!(
                    "{origin}: {}",
                    e.span()
                        .map_or("policy".into(), |s| format!("bytes {}..{}", s.start, s.end))
                ),
                e.message().to_string(),
                "compare with policies/default.toml",
            )])
        })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Reads and validates a policy file.
    ///
    /// # Errors
    /// Every problem found, or one saying the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(path).map_err(|_| {
            Problems(vec![Problem::new(
                "--policy",
                format!("cannot read {}", path.display()),
                "give a readable policy TOML file",
            )])
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The built-in policy.
    ///
    /// # Errors
    /// Never in a released build (a test parses it).
    pub fn builtin() -> Result<Self, Problems> {
        Self::parse(DEFAULT_POLICY_TOML, "built-in policy")
    }

    /// Checks every rule types cannot express.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut out = Vec::new();
        let c = &self.calls;
        if !(1..=600).contains(&c.ring_timeout_secs) {
            out.push(Problem::new(
                "calls.ring_timeout_secs",
                "must be 1 to 600",
                "use the default 45",
            ));
        }
        if c.ringing_grace_secs > 300 {
            out.push(Problem::new(
                "calls.ringing_grace_secs",
                "must be 0 to 300",
                "use the default 5",
            ));
        }
        if c.reconnect_grace_secs > 3600 {
            out.push(Problem::new(
                "calls.reconnect_grace_secs",
                "must be 0 to 3600",
                "use the default 30",
            ));
        }
        if !(1..=1000).contains(&c.max_group_invitees) {
            out.push(Problem::new(
                "calls.max_group_invitees",
                "must be 1 to 1000",
                "use the default 50",
            ));
        }
        if !(1..=100_000).contains(&self.groups.max_per_user) {
            out.push(Problem::new(
                "groups.max_per_user",
                "must be 1 to 100000",
                "use the default 200",
            ));
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(Problems(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_policies_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("policies/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Policy::load(&path).unwrap_or_else(|p| panic!("{}: {p}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1);
        assert!(Policy::builtin().is_ok());
        // The JavaScript suite's relaxed policy must stay valid too.
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/policy.toml");
        Policy::load(&js).unwrap_or_else(|p| panic!("{}: {p}", js.display()));
    }

    #[test]
    fn problems_name_the_key() {
        let text = DEFAULT_POLICY_TOML.replace("ring_timeout_secs = 45", "ring_timeout_secs = 0");
        let err = Policy::parse(&text, "t").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("calls.ring_timeout_secs: must be 1 to 600;"),
            "{err}"
        );
        let err = Policy::parse("[calls]\nbogus = 1\n", "t").expect_err("refused");
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
