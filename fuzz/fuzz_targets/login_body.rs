//! The JSON body of `POST /auth/login`: arbitrary bytes through
//! `JsonObject::from_bytes`, then `LoginRequest::parse`. The same object also
//! goes through the field reads of `/auth/register` and `/groups...`, and the
//! bytes through the axum extractor (`JsonObject::from_request`, polled to
//! completion without a runtime), which must agree with `from_bytes`.
//!
//! Invariants: every error is `bad_request` (or `payload_too_large` from the
//! extractor) with a message under 200 bytes that never contains a string
//! (value or key) of more than 8 characters from the body unless it is
//! callgate's fixed text; a body is accepted exactly when it is a JSON object;
//! `LoginRequest::parse` fails exactly when `username` or `password` is missing
//! or not a string, and otherwise keeps each value unchanged when (and only
//! when) it meets its rule (usernames are not folded).

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use callgate::domain::{DisplayName, GroupName, Password, UserId, Username};
use callgate::error::{ClientError, ErrorCode};
use callgate::http::auth::LoginRequest;
use callgate::http::extract::JsonObject;
use callgate::http::groups::MAX_MEMBERS_PER_REQUEST;
use callgate_fuzz::{Vocabulary, check_message, probe_values, strings_in};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// Polls a future that never waits (a body already in memory) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("extracting an in-memory body did not complete");
}

fn extract(bytes: Vec<u8>) -> Result<JsonObject, ClientError> {
    let request = Request::builder()
        .method("POST")
        .uri("/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .expect("request");
    ready(JsonObject::from_request(request, &())).map_err(|e| e.0)
}

/// Username rule, written out independently of callgate.
fn username_ok(s: &str) -> bool {
    (3..=32).contains(&s.len())
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// `LoginRequest::parse`, checked against the body.
fn login(body: &JsonObject) -> Result<(), ClientError> {
    let raw = |k: &str| body.0.get(k).and_then(Value::as_str);
    match LoginRequest::parse(body) {
        Ok(req) => {
            let (Some(user), Some(pass)) = (raw("username"), raw("password")) else {
                panic!("login accepted a body without string username and password");
            };
            match &req.username {
                Some(u) => {
                    assert!(username_ok(user), "invalid username {user:?} kept");
                    assert_eq!(u.as_str(), user, "username changed by parsing");
                }
                None => assert!(!username_ok(user), "valid username {user:?} dropped"),
            }
            let pass_ok = (8..=1024).contains(&pass.len());
            match &req.password {
                Some(p) => {
                    assert!(pass_ok, "password of {} bytes kept", pass.len());
                    assert_eq!(p.expose(), pass, "password changed by parsing");
                }
                None => assert!(!pass_ok, "valid password dropped"),
            }
            Ok(())
        }
        Err(e) => {
            assert!(
                raw("username").is_none() || raw("password").is_none(),
                "login refused a body with string username and password: {e:?}"
            );
            Err(e)
        }
    }
}

/// The other routes' field reads, in handler order.
fn other_reads(body: &JsonObject) -> Vec<Result<(), ClientError>> {
    vec![
        // register
        body.field("username", Username::parse).map(drop),
        body.field("password", |s| Password::parse(s.to_string()))
            .map(drop),
        body.field("displayName", DisplayName::parse).map(|d| {
            if let Some(Value::String(raw)) = body.0.get("displayName") {
                assert_eq!(
                    d.as_str(),
                    raw.trim(),
                    "display name is not the trimmed input"
                );
            }
        }),
        // groups
        body.field("name", GroupName::parse).map(drop),
        body.list("memberIds", MAX_MEMBERS_PER_REQUEST, UserId::parse)
            .map(|ids| {
                if let Some(Value::Array(raw)) = body.0.get("memberIds") {
                    assert_eq!(ids.len(), raw.len());
                    assert!(ids.len() <= MAX_MEMBERS_PER_REQUEST);
                }
            }),
        body.field("userId", UserId::parse).map(drop),
    ]
}

fn reads(body: &JsonObject) -> Vec<Result<(), ClientError>> {
    let mut all = vec![login(body)];
    all.extend(other_reads(body));
    all
}

const KEYS: &[&str] = &[
    "username",
    "password",
    "displayName",
    "name",
    "memberIds",
    "userId",
];

fn vocabulary() -> &'static Vocabulary {
    static VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();
    VOCABULARY.get_or_init(|| {
        let mut vocabulary = Vocabulary::default();
        let mut learn = |body: Vec<u8>| match JsonObject::from_bytes(&body) {
            Err(e) => vocabulary.learn(&e.message),
            Ok(obj) => {
                for r in reads(&obj) {
                    if let Err(e) = r {
                        vocabulary.learn(&e.message);
                    }
                }
            }
        };
        learn(Vec::new());
        learn(b"{".to_vec());
        learn(b"[]".to_vec());
        learn(b"{}".to_vec());
        for value in probe_values() {
            learn(serde_json::to_vec(&value).expect("json"));
            for key in KEYS {
                learn(serde_json::to_vec(&json!({ *key: value })).expect("json"));
            }
        }
        assert!(vocabulary.len() > 8, "probing found too few messages");
        vocabulary
    })
}

fuzz_target!(|data: &[u8]| {
    let vocabulary = vocabulary();
    let parsed = serde_json::from_slice::<Value>(data).ok();
    let mut inputs = Vec::new();
    match &parsed {
        Some(v) => strings_in(v, &mut inputs),
        // Not JSON: the raw text is what could be echoed.
        None => inputs.push(String::from_utf8_lossy(data).into_owned()),
    }
    let direct = JsonObject::from_bytes(data);
    // The axum extractor must give the same answer.
    match (&direct, extract(data.to_vec())) {
        (Ok(a), Ok(b)) => assert_eq!(a.0, b.0),
        (Err(a), Err(b)) => assert_eq!(a, &b),
        (a, b) => panic!("from_bytes {a:?} but from_request {b:?}"),
    }
    match direct {
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
            assert!(
                !matches!(parsed, Some(Value::Object(_))),
                "a JSON object body was refused: {e:?}"
            );
            check_message(&e.message, &inputs, vocabulary);
        }
        Ok(body) => {
            let Some(Value::Object(map)) = &parsed else {
                panic!("a body that is not a JSON object was accepted");
            };
            assert_eq!(&body.0, map as &Map<String, Value>);
            for r in reads(&body) {
                if let Err(e) = r {
                    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
                    check_message(&e.message, &inputs, vocabulary);
                }
            }
        }
    }
});
