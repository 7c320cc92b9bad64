//! Layered TOML: built-in defaults, then a file, the environment and flags,
//! merged key by key and deserialised with every problem collected.
//!
//! serde stops at the first error, so extraction is a loop: each error is
//! recorded under its key path (never a byte offset), the offending value is
//! put back to its default (or removed, for an unknown key), and the rest is
//! deserialised again. Every problem is reported once, naming the layer that
//! set the key (a file path, an environment variable or a flag). Secret keys
//! never have their value printed, whatever the error.

use std::collections::BTreeMap;
use std::path::Path;

use figment::error::{Actual, Kind};
use figment::value::{Dict, Tag, Value};
use serde::de::DeserializeOwned;

use super::Problem;

/// Most problems reported from one set of layers (each costs one re-parse).
const MAX_PROBLEMS: usize = 100;

/// Layers merged so far, and the problems met reading them.
#[derive(Debug)]
pub struct Layers {
    defaults: Dict,
    merged: Dict,
    /// Dotted key (as set) → the layer that set it last.
    sources: BTreeMap<String, String>,
    /// Keys whose values are secrets (and whatever lies below them).
    secrets: &'static [&'static str],
    problems: Vec<Problem>,
}

/// The outcome of [`Layers::extract`].
#[derive(Debug)]
pub struct Resolved<T> {
    /// The value, built with defaults in place of every bad value; `None`
    /// only when the layers could not be repaired.
    pub value: Option<T>,
    /// Every problem met while reading and deserialising.
    pub problems: Vec<Problem>,
    /// The effective settings, secrets redacted (for `check-config --print`).
    pub effective: Dict,
    sources: BTreeMap<String, String>,
}

impl<T> Resolved<T> {
    /// Names, in each problem, the layer that set its key (or a parent of it).
    pub fn attribute(&self, problems: &mut [Problem]) {
        for p in problems {
            if p.source.is_none() {
                p.source = source_of(&self.sources, &p.key);
            }
        }
    }

    /// The effective settings as TOML, secrets redacted.
    pub fn effective_toml(&self) -> String {
        toml::to_string(&self.effective)
            .unwrap_or_else(|_| "# the effective settings cannot be shown as TOML\n".into())
    }
}

fn source_of(sources: &BTreeMap<String, String>, key: &str) -> Option<String> {
    let mut k = key;
    loop {
        if let Some(s) = sources.get(k) {
            return Some(s.clone());
        }
        k = k.rsplit_once('.')?.0;
    }
}

/// The path segments of a dotted key.
fn split(key: &str) -> Vec<String> {
    key.split('.').map(str::to_string).collect()
}

/// A path as operators write it: `a.b`, with array items as `a.b[2]`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() && !out.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn get<'a>(dict: &'a Dict, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = dict.get(first)?;
    for seg in rest {
        value = match value {
            Value::Dict(_, d) => d.get(seg)?,
            Value::Array(_, a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Sets `path`, creating tables on the way (a non-table in the way is replaced).
fn set(dict: &mut Dict, path: &[String], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = dict;
    for seg in parents {
        let entry = here
            .entry(seg.clone())
            .or_insert_with(|| Value::Dict(Tag::Default, Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::Dict(Tag::Default, Dict::new());
        }
        let Value::Dict(_, next) = entry else {
            return;
        };
        here = next;
    }
    here.insert(last.clone(), new);
}

fn remove(dict: &mut Dict, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut here = dict;
    for seg in parents {
        match here.get_mut(seg)? {
            Value::Dict(_, next) => here = next,
            _ => return None,
        }
    }
    here.remove(last)
}

/// Merges `top` over `base` key by key; records the source of every key set.
fn merge(
    base: &mut Dict,
    top: Dict,
    prefix: &str,
    origin: &str,
    sources: &mut BTreeMap<String, String>,
) {
    for (k, v) in top {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        sources.insert(key.clone(), origin.to_string());
        match (base.get_mut(&k), v) {
            (Some(Value::Dict(_, b)), Value::Dict(_, t)) => merge(b, t, &key, origin, sources),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses TOML into a table, or a problem naming `origin`, the line and the column.
fn parse_toml(text: &str, origin: &str) -> Result<Dict, Problem> {
    toml::from_str::<Dict>(text).map_err(|e| {
        let at = e.span().map(|s| line_col(text, s.start));
        let problem = match at {
            Some((line, col)) => format!(
                "is not valid TOML at line {line}, column {col}: {}",
                e.message().trim()
            ),
            None => format!("is not valid TOML: {}", e.message().trim()),
        };
        Problem::new("", problem, "fix the TOML syntax there").from_source(origin)
    })
}

fn json(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "?".into());
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// What a value is, without showing it when it is a secret.
fn describe(actual: &Actual, secret: bool) -> String {
    let (kind, shown) = match actual {
        Actual::Bool(b) => ("a boolean", b.to_string()),
        Actual::Unsigned(n) => ("the number", n.to_string()),
        Actual::Signed(n) => ("the number", n.to_string()),
        Actual::Float(n) => ("the number", n.to_string()),
        Actual::Char(c) => (
            "the string",
            serde_json::to_string(&c.to_string()).unwrap_or_default(),
        ),
        Actual::Str(s) => ("the string", json(&Value::from(s.clone()))),
        Actual::Seq => return "an array".into(),
        Actual::Map => return "a table".into(),
        _ => return "a value of another type".into(),
    };
    if secret {
        match kind {
            "the number" => "a number".into(),
            "the string" => "a string".into(),
            other => other.into(),
        }
    } else {
        format!("{kind} {shown}")
    }
}

/// Edit distance, for "did you mean" hints on unknown keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn one_of(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Layers {
    /// Starts from `defaults` (TOML text built into the binary). `secrets`
    /// lists the keys whose values are never printed.
    pub fn new(defaults: &str, secrets: &'static [&'static str]) -> Self {
        let mut problems = Vec::new();
        let defaults = parse_toml(defaults, "built-in defaults").unwrap_or_else(|p| {
            problems.push(p);
            Dict::new()
        });
        Self {
            merged: defaults.clone(),
            defaults,
            sources: BTreeMap::new(),
            secrets,
            problems,
        }
    }

    fn is_secret(&self, key: &str) -> bool {
        self.secrets
            .iter()
            .any(|s| key == *s || key.starts_with(&format!("{s}.")))
    }

    /// Merges a TOML text over the layers so far; `origin` names it in problems.
    pub fn text(&mut self, text: &str, origin: &str) {
        match parse_toml(text, origin) {
            Ok(dict) => merge(&mut self.merged, dict, "", origin, &mut self.sources),
            Err(p) => self.problems.push(p),
        }
    }

    /// Merges a TOML file; `flag` names the option that gave it.
    pub fn file(&mut self, path: &Path, flag: &str) {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => self.text(&text, &origin),
            Err(e) => self.problems.push(Problem::new(
                flag,
                format!("{origin} cannot be read ({})", e.kind()),
                "give the path of a readable TOML file",
            )),
        }
    }

    /// Sets one dotted key from `origin` (an environment variable or a flag).
    pub fn set(&mut self, key: &str, value: Value, origin: &str) {
        set(&mut self.merged, &split(key), value);
        self.sources.insert(key.to_string(), origin.to_string());
    }

    /// Sets a key from an environment variable's text: a secret verbatim, as
    /// a string; anything else read like TOML (numbers, booleans, arrays).
    pub fn set_env(&mut self, key: &str, raw: &str, var: &str) {
        let value = if self.is_secret(key) {
            Value::from(raw.to_string())
        } else {
            raw.parse::<Value>().unwrap_or_else(|e| match e {})
        };
        self.set(key, value, var);
    }

    /// Deserialises the merged layers into `T`, collecting every problem.
    pub fn extract<T: DeserializeOwned>(mut self) -> Resolved<T> {
        let mut value = None;
        while self.problems.len() < MAX_PROBLEMS {
            match Value::Dict(Tag::Default, self.merged.clone()).deserialize::<T>() {
                Ok(v) => {
                    value = Some(v);
                    break;
                }
                Err(errors) => {
                    let Some(first) = errors.into_iter().next() else {
                        break;
                    };
                    if !self.absorb(first.path, first.kind) {
                        break;
                    }
                }
            }
        }
        let mut effective = self.merged.clone();
        for key in self.secrets {
            let path = split(key);
            if let Some(Value::String(_, s)) = get(&effective, &path)
                && !s.is_empty()
            {
                set(&mut effective, &path, Value::from("<redacted>".to_string()));
            }
        }
        let mut resolved = Resolved {
            value,
            problems: Vec::new(),
            effective,
            sources: self.sources,
        };
        let mut problems = self.problems;
        resolved.attribute(&mut problems);
        resolved.problems = problems;
        resolved
    }

    /// Records one deserialisation error and repairs the layers so the next
    /// round gets past it. Returns false when no repair was possible.
    fn absorb(&mut self, mut path: Vec<String>, kind: Kind) -> bool {
        let field = kind_field(&kind);
        if !field.is_empty() && path.last().map(String::as_str) != Some(field) {
            path.push(field.to_string());
        }
        let key = dotted(&path);
        let secret = self.is_secret(&key);
        // Repairs happen on whole values: an error inside an array puts the array back.
        let repair_at: Vec<String> = path
            .iter()
            .take_while(|s| s.parse::<usize>().is_err())
            .cloned()
            .collect();
        let default = get(&self.defaults, &repair_at).cloned();
        let hint = match (&default, secret) {
            (_, true) => "write it as a quoted string (secrets are read verbatim, also from their environment variables)".to_string(),
            (Some(d), false) => format!("use a value like {} (the default)", json(d)),
            (None, false) => "see the defaults for its form".to_string(),
        };
        let (problem, fix) = match &kind {
            Kind::UnknownField(_, expected) => {
                let leaf = path.last().map_or("", String::as_str);
                let near = expected
                    .iter()
                    .filter(|e| distance(leaf, e) <= 2)
                    .min_by_key(|e| distance(leaf, e));
                let fix = match near {
                    Some(n) => format!("remove it; did you mean \"{n}\"?"),
                    None if expected.is_empty() => "remove it".to_string(),
                    None => format!("remove it; the known keys here are {}", one_of(expected)),
                };
                ("is an unknown key".to_string(), fix)
            }
            Kind::MissingField(_) => ("is missing".to_string(), "add it".to_string()),
            Kind::UnknownVariant(v, expected) => {
                let shown = if secret {
                    "this value".to_string()
                } else {
                    format!("\"{v}\"")
                };
                (
                    format!("is {shown}, which is not one of its values"),
                    format!("use one of {}", one_of(expected)),
                )
            }
            Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => (
                format!(
                    "is {}, expected {}",
                    describe(actual, secret),
                    expectation(expected)
                ),
                hint,
            ),
            Kind::InvalidLength(n, expected) => {
                (format!("has {n} items, expected {expected}"), hint)
            }
            Kind::Message(msg) if !secret => {
                let shown =
                    get(&self.merged, &path).map_or_else(String::new, |v| format!(" {}", json(v)));
                (format!("is not valid{shown}: {msg}"), hint)
            }
            _ if secret => ("is not valid".to_string(), hint),
            other => (format!("is not valid: {other}"), hint),
        };
        let source = source_of(&self.sources, &key);
        let mut p = Problem::new(key, problem, fix);
        p.source = source;
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
        let before = get(&self.merged, &repair_at).cloned();
        match (&kind, default) {
            (Kind::UnknownField(..), _) | (_, None) => {
                remove(&mut self.merged, &repair_at);
            }
            (_, Some(d)) => set(&mut self.merged, &repair_at, d),
        }
        let after = get(&self.merged, &repair_at).cloned();
        before != after && !repair_at.is_empty()
    }
}

/// serde's names for numbers, in words.
fn expectation(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number of 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        other if other.starts_with("enum ") => "one of its values",
        other => other,
    }
}

fn kind_field(kind: &Kind) -> &str {
    match kind {
        Kind::UnknownField(name, _) => name,
        Kind::MissingField(name) => name,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_lines_and_columns() {
        assert_eq!(line_col("a\nbc\nd", 0), (1, 1));
        assert_eq!(line_col("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_col("a\nbc\nd", 5), (3, 1));
    }

    #[test]
    fn near_names_are_suggested() {
        assert_eq!(distance("listn", "listen"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn array_items_are_written_with_brackets() {
        assert_eq!(
            dotted(&split("socketio.transports.1")),
            "socketio.transports[1]"
        );
    }
}
