//! The rules that types cannot express, written one line per key next to
//! the section that owns it: a range with its reason for every number, a
//! non-empty name, a readable file. Used by the configuration and the policy.

use std::fmt::Display;
use std::path::Path;

use super::{Problem, Problems};

/// A number a range rule can check.
pub trait Number: Copy + Display + PartialOrd {
    /// The value widened, for the rule table.
    fn widened(self) -> i128;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            fn widened(self) -> i128 {
                i128::try_from(self).unwrap_or(i128::MAX)
            }
        }
    )*};
}
number!(u8, u16, u32, u64, usize);

/// One range rule, kept so tests can try both edges of every range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRule {
    /// Dotted key.
    pub key: String,
    /// Smallest allowed value.
    pub min: i128,
    /// Largest allowed value.
    pub max: i128,
}

/// Collects problems while a configuration or policy is checked.
#[derive(Debug)]
pub struct Rules {
    defaults: toml::Table,
    problems: Vec<Problem>,
    ranges: Vec<RangeRule>,
}

impl Rules {
    /// Rules whose fixes quote the defaults in `defaults_toml`.
    pub fn new(defaults_toml: &str) -> Self {
        Self {
            defaults: toml::from_str(defaults_toml).unwrap_or_default(),
            problems: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// The default of a dotted key, as TOML.
    pub fn default_of(&self, key: &str) -> Option<String> {
        let mut parts = key.split('.');
        let mut value = self.defaults.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value.to_string())
    }

    /// `value` must lie in `min..=max`; `why` says what the bounds protect
    /// (e.g. "0 would refuse every connection").
    pub fn range<T: Number>(&mut self, key: &str, value: T, min: T, max: T, why: &str) {
        self.ranges.push(RangeRule {
            key: key.to_string(),
            min: min.widened(),
            max: max.widened(),
        });
        if value < min || value > max {
            let default = self
                .default_of(key)
                .map_or_else(String::new, |d| format!(" (default {d})"));
            self.problems.push(Problem::new(
                key,
                format!("is {value}, must be {min} to {max} ({why})"),
                format!("use a value from {min} to {max}{default}"),
            ));
        }
    }

    /// `value` must not be empty.
    pub fn non_empty(&mut self, key: &str, value: &str, fix: &str) {
        if value.is_empty() {
            self.fail(key, "is empty", fix);
        }
    }

    /// `path` must be a readable file.
    pub fn file(&mut self, key: &str, path: &Path, fix: &str) {
        if !path.is_file() {
            self.fail(
                key,
                &format!("is not a readable file ({})", path.display()),
                fix,
            );
        }
    }

    /// Records a problem.
    pub fn fail(&mut self, key: &str, problem: &str, fix: &str) {
        self.problems.push(Problem::new(key, problem, fix));
    }

    /// Every range rule checked so far.
    pub fn ranges(&self) -> &[RangeRule] {
        &self.ranges
    }

    /// The problems found, if any.
    ///
    /// # Errors
    /// Every problem found.
    pub fn finish(self) -> Result<(), Problems> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(self.problems))
        }
    }
}
