//! `signaling::payload::decode(event, value)` on arbitrary events and payloads.
//!
//! Input layout (see docs/fuzzing.md): byte 0 picks the event
//! (`CLIENT_EVENTS[b % 10]` when below 0xF0; otherwise the event name is the
//! rest of the input up to the first newline); byte 1 picks how the payload
//! is made (even: the remaining bytes parsed as JSON, inputs that are not JSON
//! are skipped; odd: a JSON value generated from the remaining bytes, biased
//! towards the field names callgate reads).
//!
//! Invariants: every error is `bad_request` with a message under 200 bytes
//! that never contains a string (value or key) of more than 8 characters from
//! the input, unless that string is itself part of callgate's fixed text; an
//! unknown event is never accepted; an accepted payload has what the event
//! requires.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Unstructured;
use callgate::domain::{GroupId, UserId};
use callgate::error::ErrorCode;
use callgate::signaling::events::CLIENT_EVENTS;
use callgate::signaling::payload::{MAX_IGNORED_FIELD, decode};
use callgate_fuzz::{Vocabulary, check_message, probe_values, strings_in};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// The field names callgate's decoders read.
const KEYS: &[&str] = &[
    "receiverId",
    "callerId",
    "groupId",
    "userId",
    "callId",
    "roomName",
    "endForAll",
    "isGroupCall",
    "callerName",
    "receiverName",
    "groupName",
    "timestamp",
    "callerSocketId",
    "memberIds",
];

const IGNORED_TEXT_FIELDS: &[&str] = &[
    "callerName",
    "receiverName",
    "groupName",
    "timestamp",
    "callerSocketId",
];

fn vocabulary() -> &'static Vocabulary {
    static VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();
    VOCABULARY.get_or_init(|| {
        let mut vocabulary = Vocabulary::default();
        let mut learn = |event: &str, value: Value| {
            if let Err(e) = decode(event, value) {
                vocabulary.learn(&e.message);
            }
        };
        for event in CLIENT_EVENTS.iter().copied().chain(["unknownEvent", ""]) {
            learn(event, Value::Null);
            learn(event, json!({}));
            for value in probe_values() {
                learn(event, value.clone());
                for key in KEYS {
                    learn(event, json!({ *key: value }));
                }
            }
        }
        assert!(vocabulary.len() > 10, "probing found too few messages");
        vocabulary
    })
}

fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object().and_then(|m| m.get(key))
}

fn valid_user(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| UserId::parse(s).is_ok())
}

/// What an accepted payload must have, per event.
fn check_accepted(event: &str, value: &Value) {
    assert!(
        CLIENT_EVENTS.contains(&event),
        "unknown event {event:?} accepted"
    );
    let object = |v: &Value| matches!(v, Value::Object(_) | Value::Null) || v == &json!([]);
    match event {
        "initiateVideoCall" => {
            assert!(
                valid_user(field(value, "receiverId")),
                "no receiverId: {value}"
            );
        }
        "initiateGroupVideoCall" => {
            let g = field(value, "groupId").and_then(Value::as_str);
            assert!(
                g.is_some_and(|g| GroupId::parse(g).is_ok()),
                "no groupId: {value}"
            );
        }
        "joinGroup" | "leaveGroup" | "groupCreated" => {
            let g = match value {
                Value::String(s) => Some(s.as_str()),
                _ => field(value, "groupId").and_then(Value::as_str),
            };
            assert!(
                g.is_some_and(|g| GroupId::parse(g).is_ok()),
                "no groupId: {value}"
            );
        }
        "userOnline" | "joinVideoRoom" => match value {
            Value::String(s) => assert!(UserId::parse(s).is_ok(), "bad userId: {value}"),
            Value::Object(m) if m.contains_key("userId") => {
                assert!(valid_user(m.get("userId")), "bad userId: {value}");
            }
            Value::Object(_) | Value::Null => {}
            _ => panic!("{event} accepted {value}"),
        },
        _ => {}
    }
    if matches!(
        event,
        "initiateVideoCall"
            | "initiateGroupVideoCall"
            | "acceptVideoCall"
            | "rejectVideoCall"
            | "endVideoCall"
    ) {
        assert!(object(value), "{event} accepted a non-object: {value}");
        for key in IGNORED_TEXT_FIELDS {
            match field(value, key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => assert!(s.len() <= MAX_IGNORED_FIELD, "{key} too long"),
                Some(other) => panic!("{key} = {other} accepted"),
            }
        }
    }
}

fn run(event: &str, value: Value, event_is_input: bool) {
    let vocabulary = vocabulary();
    let mut inputs = Vec::new();
    strings_in(&value, &mut inputs);
    if event_is_input {
        inputs.push(event.to_string());
    }
    match decode(event, value.clone()) {
        Ok(()) => check_accepted(event, &value),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
            check_message(&e.message, &inputs, vocabulary);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, mode, rest @ ..] = data else {
        return;
    };
    let (event, event_is_input, payload) = if *selector < 0xF0 {
        (
            CLIENT_EVENTS[usize::from(*selector) % CLIENT_EVENTS.len()].to_string(),
            false,
            rest,
        )
    } else {
        let cut = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        (
            String::from_utf8_lossy(&rest[..cut]).into_owned(),
            true,
            rest.get(cut + 1..).unwrap_or_default(),
        )
    };
    let value = if mode & 1 == 0 {
        match serde_json::from_slice::<Value>(payload) {
            Ok(v) => v,
            Err(_) => return,
        }
    } else {
        let mut u = Unstructured::new(payload);
        let generated = if mode & 2 == 0 {
            callgate_fuzz::object(&mut u, KEYS, 3).map(Value::Object)
        } else {
            callgate_fuzz::value(&mut u, KEYS, 4)
        };
        match generated {
            Ok(v) => v,
            Err(_) => Value::Object(Map::new()),
        }
    };
    run(&event, value, event_is_input);
});
