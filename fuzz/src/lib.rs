//! Helpers shared by callgate's fuzz targets: a structured JSON generator and
//! the "no echo" check applied to every client-visible error message.
//!
//! Nothing here is part of callgate; see `docs/fuzzing.md`.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// Upper bound (exclusive) on a client-visible error message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 200;

/// Input strings at least this long (in chars, strictly longer than 8) must
/// never appear in an error message.
pub const ECHO_MIN_CHARS: usize = 9;

/// Strings the structured generator likes to use: valid and almost-valid ids,
/// UUIDs, room names, usernames, and classic hostile values.
pub const INTERESTING_STRINGS: &[&str] = &[
    "",
    "a",
    "u1",
    "6860e2e85547033af89987ba",
    "507f1f77bcf86cd799439011",
    "123e4567-e89b-42d3-a456-426614174000",
    "123e4567e89b42d3a456426614174000",
    "{123e4567-e89b-42d3-a456-426614174000}",
    "call-123e4567-e89b-42d3-a456-426614174000",
    "room_abc",
    "ab",
    "-abc",
    "alice",
    "alice-demo-pass",
    "Alice Adams",
    "a b",
    "a/b",
    "$ne",
    "é",
    "a\u{0}b",
    "\u{7f}",
    " \t ",
    "\u{202e}evil",
    "__proto__",
    "constructor",
    "1e999",
    "null",
];

/// A string: often one of [`INTERESTING_STRINGS`] or a known key, sometimes a
/// repeated character of a boundary length, otherwise arbitrary.
pub fn string(u: &mut Unstructured<'_>, keys: &[&str]) -> Result<String> {
    Ok(match u.int_in_range(0u8..=9)? {
        0..=2 => (*u.choose(INTERESTING_STRINGS)?).to_string(),
        3 if !keys.is_empty() => (*u.choose(keys)?).to_string(),
        4 => {
            // Boundary lengths of the id (64), room (128), label (64),
            // ignored-field (256) and password (8..1024) rules.
            let len = *u.choose(&[
                2usize, 3, 7, 8, 9, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1024, 1025,
            ])?;
            let c = *u.choose(&['a', 'Z', '0', '_', '-', ' ', 'é', '\u{1}'])?;
            std::iter::repeat_n(c, len).collect()
        }
        _ => u.arbitrary::<String>()?,
    })
}

/// A JSON number of any of serde_json's three kinds.
pub fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => Value::from(u.arbitrary::<u64>()?),
        1 => Value::from(u.arbitrary::<i64>()?),
        2 => Number::from_f64(u.arbitrary::<f64>()?).map_or(Value::Null, Value::Number),
        _ => Value::from(*u.choose(&[0i64, 1, -1, 1_700_000_000, i64::MAX])?),
    })
}

/// An arbitrary JSON value, at most `depth` levels deep, whose object keys are
/// mostly drawn from `keys` (the field names the code under test reads).
pub fn value(u: &mut Unstructured<'_>, keys: &[&str], depth: u32) -> Result<Value> {
    let kind = if depth == 0 {
        u.int_in_range(0u8..=3)?
    } else {
        u.int_in_range(0u8..=5)?
    };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => number(u)?,
        3 => Value::String(string(u, keys)?),
        4 => {
            let len = u.int_in_range(0usize..=4)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(value(u, keys, depth - 1)?);
            }
            Value::Array(items)
        }
        _ => Value::Object(object(u, keys, depth - 1)?),
    })
}

/// An arbitrary JSON object whose keys are mostly drawn from `keys`.
pub fn object(u: &mut Unstructured<'_>, keys: &[&str], depth: u32) -> Result<Map<String, Value>> {
    let len = u.int_in_range(0usize..=6)?;
    let mut map = Map::new();
    for _ in 0..len {
        let key = if !keys.is_empty() && u.ratio(4u8, 5u8)? {
            (*u.choose(keys)?).to_string()
        } else {
            string(u, keys)?
        };
        map.insert(key, value(u, keys, depth)?);
    }
    Ok(map)
}

/// Every string in `v`: string values and object keys, recursively.
pub fn strings_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings_in(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                strings_in(v, out);
            }
        }
        _ => {}
    }
}

/// The fixed text callgate is known to produce, gathered at start-up by
/// probing the code under test with short or marked inputs. An input string
/// that happens to be a piece of this text (say, a key named `receiverId`, or
/// a value equal to `must be a string`) is not an echo.
#[derive(Debug, Default)]
pub struct Vocabulary(Vec<String>);

/// Marker carried by every long probe value, so that the vocabulary cannot
/// itself be built from an echo.
pub const PROBE_MARK: &str = "PROBEMARK";

impl Vocabulary {
    /// Records a message produced by a probe; panics if the probe's own long
    /// value came back, since that is already an echo.
    pub fn learn(&mut self, message: &str) {
        assert!(
            !message.contains(PROBE_MARK),
            "probe input echoed in error message: {message:?}"
        );
        if !self.0.iter().any(|m| m == message) {
            self.0.push(message.to_string());
        }
    }

    /// Whether `s` is a piece of the known fixed text.
    pub fn allows(&self, s: &str) -> bool {
        self.0.iter().any(|m| m.contains(s))
    }

    /// How many distinct messages were learnt.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was learnt.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The values a probe puts in each field: every JSON type, plus strings that
/// break each rule. Long strings carry [`PROBE_MARK`].
pub fn probe_values() -> Vec<Value> {
    let long = format!("{PROBE_MARK}{}", "Q".repeat(1100));
    vec![
        Value::Null,
        Value::Bool(true),
        Value::from(1),
        Value::from(-1.5),
        Value::Array(vec![]),
        Value::Array(vec![Value::from(1)]),
        Value::Array(vec![Value::from("x y")]),
        Value::Object(Map::new()),
        Value::from(""),
        Value::from("x y"),
        Value::from("é"),
        Value::from("\u{1}"),
        Value::from("ab"),
        Value::from("short"),
        Value::from(long.clone()),
        Value::from(format!("{long} \u{1}")),
        Value::Array(vec![Value::from(long); 300]),
    ]
}

/// The no-echo and size rules for one client-visible error message.
///
/// # Panics
/// When `message` is 200 bytes or more, or contains a string of more than 8
/// characters from `inputs` that is not part of callgate's fixed text.
pub fn check_message(message: &str, inputs: &[String], vocabulary: &Vocabulary) {
    assert!(
        message.len() < MAX_MESSAGE_BYTES,
        "error message is {} bytes: {message:?}",
        message.len()
    );
    for s in inputs {
        if s.chars().count() >= ECHO_MIN_CHARS && message.contains(s.as_str()) {
            assert!(
                vocabulary.allows(s),
                "error message echoes input {s:?}: {message:?}"
            );
        }
    }
}

/// HMAC-SHA256, written out from RFC 2104 over `sha2` so that the token
/// target's signature oracle does not share code with `jsonwebtoken`/`hmac`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "echoes input")]
    fn an_echo_is_caught() {
        check_message(
            "user id abcdefghij is bad",
            &["abcdefghij".to_string()],
            &Vocabulary::default(),
        );
    }

    #[test]
    fn fixed_text_and_short_strings_are_not_echoes() {
        let mut v = Vocabulary::default();
        v.learn("receiverId must be a string");
        let inputs = ["receiverId", "must be a string", "a string"].map(String::from);
        check_message("receiverId must be a string", &inputs, &v);
    }

    #[test]
    #[should_panic(expected = "bytes")]
    fn a_long_message_is_caught() {
        check_message(&"x".repeat(200), &[], &Vocabulary::default());
    }

    #[test]
    #[should_panic(expected = "probe input echoed")]
    fn an_echoing_probe_is_caught() {
        Vocabulary::default().learn(&format!("bad {PROBE_MARK}QQQ"));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
