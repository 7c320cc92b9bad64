//! Declarative policies, loaded from `policies/*.toml` and validated like the
//! config: a file is layered over the built-in policy key by key, and every
//! problem names its file, its key and the fix.

use std::path::Path;

use serde::Deserialize;

use crate::config::{Layers, Problems, Resolved, Rules};

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

/// The cap in force before a policy is applied (the built-in policy's value;
/// a policy file layers over `policies/default.toml`, not over this).
impl Default for GroupPolicy {
    fn default() -> Self {
        Self { max_per_user: 200 }
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
    pub session_open_per_ip: Rate,
    /// Group creations and membership changes, per user.
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
    /// Parses policy text over the built-in defaults, key by key (a file may
    /// hold only the keys it changes), and validates it; `origin` names it
    /// in problems.
    ///
    /// # Errors
    /// Every problem found.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Problems> {
        let mut layers = Layers::new(DEFAULT_POLICY_TOML, &[]);
        layers.text(text, origin);
        Self::finish(Self::checked(layers))
    }

    /// Reads a policy file over the built-in defaults and validates it.
    ///
    /// # Errors
    /// Every problem found, or one saying the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, Problems> {
        Self::finish(Self::resolve(Some(path)))
    }

    /// The built-in policy.
    ///
    /// # Errors
    /// Never in a released build (a test parses it).
    pub fn builtin() -> Result<Self, Problems> {
        Self::finish(Self::resolve(None))
    }

    /// The built-in defaults with `path` over them: the policy (defaults in
    /// place of bad values), every problem (validation included), and the
    /// effective policy (`check-config --print`).
    pub fn resolve(path: Option<&Path>) -> Resolved<Self> {
        let mut layers = Layers::new(DEFAULT_POLICY_TOML, &[]);
        if let Some(path) = path {
            layers.file(path, "--policy");
        }
        Self::checked(layers)
    }

    /// Extracts and validates, each problem once.
    fn checked(layers: Layers) -> Resolved<Self> {
        let mut resolved = layers.extract::<Self>();
        if let Some(Err(more)) = resolved.value.as_ref().map(Self::validate) {
            let mut more = more.0;
            resolved.attribute(&mut more);
            let mut problems = Problems(std::mem::take(&mut resolved.problems));
            problems.extend_new(more);
            resolved.problems = problems.0;
        }
        resolved
    }

    fn finish(resolved: Resolved<Self>) -> Result<Self, Problems> {
        match resolved.value {
            Some(policy) if resolved.problems.is_empty() => Ok(policy),
            _ => Err(Problems(resolved.problems)),
        }
    }

    /// Checks every rule types cannot express.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate(&self) -> Result<(), Problems> {
        self.rules().finish()
    }

    /// Runs every rule; [`Rules::ranges`] then lists the range of each number.
    pub fn rules(&self) -> Rules {
        let mut r = Rules::new(DEFAULT_POLICY_TOML);
        self.calls.check(&mut r);
        self.rate_limits.check(&mut r);
        self.connections.check(&mut r);
        self.groups.check(&mut r);
        r
    }
}

impl CallPolicy {
    fn check(&self, r: &mut Rules) {
        r.range(
            "calls.ring_timeout_secs",
            self.ring_timeout_secs,
            1,
            600,
            "0 would give up every call at once, and a phone rings for a minute or so",
        );
        r.range(
            "calls.ringing_grace_secs",
            self.ringing_grace_secs,
            0,
            300,
            "0 cancels a ringing call as soon as its caller or callee vanishes",
        );
        r.range(
            "calls.reconnect_grace_secs",
            self.reconnect_grace_secs,
            0,
            3600,
            "0 ends an active call as soon as a participant vanishes",
        );
        r.range(
            "calls.max_group_invitees",
            self.max_group_invitees,
            1,
            1000,
            "0 would refuse every group call, and each invitee is rung on every device",
        );
    }
}

impl RateLimitPolicy {
    fn check(&self, r: &mut Rules) {
        for (key, rate) in self.rates() {
            // Neither may be 0: governor has no empty bucket, and "never" is not a rate.
            r.range(
                &format!("{key}.per_minute"),
                rate.per_minute,
                1,
                // bench/policy.toml lifts every limit with 100 000 000.
                100_000_000,
                "0 would refuse everything, to lift a limit set it high",
            );
            r.range(
                &format!("{key}.burst"),
                rate.burst,
                1,
                1_000_000,
                "0 would refuse everything, to lift a limit set it high",
            );
        }
        r.range(
            "rate_limits.disconnect_after",
            self.disconnect_after,
            0,
            100_000,
            "0 means never disconnect",
        );
    }
}

impl GroupPolicy {
    fn check(&self, r: &mut Rules) {
        r.range(
            "groups.max_per_user",
            self.max_per_user,
            1,
            100_000,
            "0 would refuse every group, and each socket joins one room per group",
        );
    }
}

impl ConnectionPolicy {
    fn check(&self, r: &mut Rules) {
        r.range(
            "connections.max_per_user",
            self.max_per_user,
            1,
            1000,
            "0 would refuse every connection, and each socket costs about 20 KiB",
        );
        r.range(
            "connections.max_per_ip",
            self.max_per_ip,
            1,
            10_000_000,
            "0 would refuse every connection",
        );
        r.range("connections.max_total", self.max_total, 1, 10_000_000,
            "0 would refuse every connection, and each socket costs about 20 KiB and a file descriptor");
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
    fn problems_name_the_file_and_the_key() {
        let err = Policy::parse("[calls]\nring_timeout_secs = 0\n", "t.toml").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("t.toml: calls.ring_timeout_secs: is 0, must be 1 to 600 ("),
            "{err}"
        );
        let err = Policy::parse("[calls]\nbogus = 1\n", "t.toml").expect_err("refused");
        assert!(
            err.to_string().starts_with(
                "t.toml: calls.bogus: is an unknown key; remove it; the known keys here are "
            ),
            "{err}"
        );
        assert!(
            !err.to_string().contains("bytes") && !err.to_string().contains('`'),
            "{err}"
        );
    }

    #[test]
    fn a_partial_file_overrides_the_defaults_key_by_key() {
        let policy = Policy::parse("[calls]\nring_timeout_secs = 20\n", "t")
            .expect("a partial policy is enough");
        let builtin = Policy::builtin().expect("builtin");
        assert_eq!(policy.calls.ring_timeout_secs, 20);
        assert_eq!(
            policy.calls.ringing_grace_secs,
            builtin.calls.ringing_grace_secs
        );
        assert_eq!(policy.rate_limits, builtin.rate_limits);
        assert_eq!(policy.connections, builtin.connections);
        // Half a rate keeps the other half.
        let policy =
            Policy::parse("[rate_limits]\ncall_initiate = { burst = 3 }\n", "t").expect("parse");
        assert_eq!(
            policy.rate_limits.call_initiate,
            Rate {
                per_minute: builtin.rate_limits.call_initiate.per_minute,
                burst: 3
            }
        );
        assert!(
            Policy::parse("", "t").is_ok(),
            "an empty file is the defaults"
        );
    }

    #[test]
    fn zero_rates_and_caps_are_refused() {
        let err = Policy::parse(
            "[rate_limits]\ncall_initiate = { per_minute = 0, burst = 0 }\n[connections]\nmax_per_user = 0\n",
            "p.toml",
        )
        .expect_err("refused")
        .to_string();
        for key in [
            "rate_limits.call_initiate.per_minute",
            "rate_limits.call_initiate.burst",
            "connections.max_per_user",
        ] {
            assert_eq!(
                err.lines()
                    .filter(|l| l.starts_with(&format!("p.toml: {key}: is 0, must be 1 to ")))
                    .count(),
                1,
                "{key}:\n{err}"
            );
        }
        assert!(
            Policy::parse("[rate_limits]\ndisconnect_after = 0\n", "t").is_ok(),
            "0 means never"
        );
    }

    #[test]
    fn a_policy_with_several_problems_reports_all_of_them_once() {
        let err = Policy::parse(
            "[calls]\none_to_one = \"friends\"\nbusy = 3\nmax_group_invitees = 0\nfoo = 1\n\
             [rate_limits]\nrooms = { per_minute = -1 }\n[connections]\nmax_total = 0\n",
            "p.toml",
        )
        .expect_err("refused")
        .to_string();
        let lines: Vec<&str> = err.lines().collect();
        for start in [
            "p.toml: calls.one_to_one: is \"friends\", which is not one of its values; use one of \"anyone\", \"shared_group\"",
            "p.toml: calls.busy: is the number 3, expected ",
            "p.toml: calls.max_group_invitees: is 0, must be 1 to 1000",
            "p.toml: calls.foo: is an unknown key",
            "p.toml: rate_limits.rooms.per_minute: is the number -1, expected ",
            "p.toml: connections.max_total: is 0, must be 1 to ",
        ] {
            assert_eq!(
                lines.iter().filter(|l| l.starts_with(start)).count(),
                1,
                "{start}\nin:\n{err}"
            );
        }
        assert_eq!(lines.len(), 6, "{err}");
    }

    #[test]
    fn every_number_in_the_default_policy_has_a_range() {
        let rules = Policy::builtin().expect("builtin").rules();
        let mut keys = Vec::new();
        crate::config::tests::numeric_keys(
            &toml::from_str(DEFAULT_POLICY_TOML).expect("toml"),
            "",
            &mut keys,
        );
        assert!(keys.len() > 15, "{keys:?}");
        for key in keys {
            assert!(
                rules.ranges().iter().any(|r| r.key == key),
                "{key} has no range rule"
            );
        }
    }

    #[test]
    fn every_policy_range_holds_at_its_edges_and_refuses_past_them() {
        for rule in Policy::builtin().expect("builtin").rules().ranges() {
            let (table, leaf) = rule.key.rsplit_once('.').expect("sectioned");
            let problem = |value: i128| {
                Policy::parse(&format!("[{table}]\n{leaf} = {value}\n"), "t")
                    .err()
                    .and_then(|p| p.0.into_iter().find(|p| p.key == rule.key))
            };
            for edge in [rule.min, rule.max] {
                assert_eq!(problem(edge), None, "{} = {edge} is allowed", rule.key);
            }
            assert!(
                problem(rule.max + 1).is_some(),
                "{} above {}",
                rule.key,
                rule.max
            );
            if rule.min > 0 {
                assert!(
                    problem(rule.min - 1).is_some(),
                    "{} below {}",
                    rule.key,
                    rule.min
                );
            }
        }
    }
}
