//! Secrets never reach the logs: a whole session of traffic (registration,
//! good and bad logins, good, forged and expired tokens, calls, attacks, rate
//! limits) runs with every log line captured at trace level (every target), through
//! the binary's own capped subscriber, then the
//! capture is scanned for JWT shapes, argon2 hashes and the passwords used.
//!
//! Its own test binary, because it installs a process-wide subscriber.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

#[path = "../api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

use helpers::*;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const REGISTERED_PASSWORD: &str = "registration-secret-pw";
const WRONG_PASSWORD: &str = "a-wrong-secret-password";

#[tokio::test]
async fn no_token_password_or_hash_is_ever_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    // The binary's own subscriber (callgate::telemetry) at the most verbose
    // filter there is, as RUST_LOG=trace gives it: the cap, not the filter,
    // must keep secrets out.
    callgate::telemetry::try_init(
        callgate::config::LogFormat::Json,
        tracing_subscriber::EnvFilter::new("trace"),
        move || writer.clone(),
    )
    .expect("subscriber");

    let server = TestServer::spawn_with_policy(
        |_| {},
        |p| {
            p.rate_limits.rooms = callgate::policy::Rate {
                per_minute: 1,
                burst: 2,
            };
        },
    )
    .await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;

    let (status, reg) = server
        .post(
            "/auth/register",
            None,
            &json!({"username": "erin", "password": REGISTERED_PASSWORD, "displayName": "Erin"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, login) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": WRONG_PASSWORD}),
        )
        .await;
    server
        .post(
            "/auth/login",
            None,
            &json!({"username": "nobody", "password": WRONG_PASSWORD}),
        )
        .await;
    server
        .get("/auth/me", Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."))
        .await;

    let token = login["token"].as_str().expect("token").to_string();
    let forged = mint(
        &claims_for(&alice.id, 3600),
        "forged-secret-forged-secret-forged-secret",
    );
    let expired = mint(&claims_for(&alice.id, -3600), SECRET);
    for bad in [&forged, &expired, &"eyJ.garbage.token".to_string()] {
        assert!(TestClient::connect(&server, Some(bad)).await.is_err());
    }
    let mut a = TestClient::connect(&server, Some(&token))
        .await
        .expect("alice");
    let mut b = server.connect(&bob).await;
    let call = a
        .emit_ack(
            "initiateVideoCall",
            json!({"receiverId": bob.id, "callerId": bob.id}),
        )
        .await;
    assert_eq!(call["error"]["code"], "forbidden");
    let call = a
        .emit_ack(
            "initiateVideoCall",
            json!({"receiverId": bob.id, "callerName": token}),
        )
        .await;
    assert_eq!(
        call["error"]["code"], "bad_request",
        "a token pasted in a field is too long and refused"
    );
    let call = a
        .emit_ack("initiateVideoCall", json!({"receiverId": bob.id}))
        .await;
    assert_eq!(
        b.emit_ack(
            "acceptVideoCall",
            json!({"callId": call["callId"], "token": token})
        )
        .await["ok"],
        true
    );
    assert_eq!(
        a.emit_ack("endVideoCall", json!({"callId": call["callId"]}))
            .await["ok"],
        true
    );
    for _ in 0..4 {
        a.emit_ack("joinVideoRoom", json!({"userId": reg["token"]}))
            .await;
    }
    a.drain().await;
    b.drain().await;
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let logs = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf8");
    assert!(logs.lines().count() > 20, "the capture works:\n{logs}");
    let jwt_shape = logs.match_indices("eyJ").count();
    assert_eq!(jwt_shape, 0, "JWT-shaped text in logs:\n{logs}");
    for secret in [
        "$argon2",
        PASSWORD,
        REGISTERED_PASSWORD,
        WRONG_PASSWORD,
        SECRET,
        token.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret:?} found in logs");
    }
}
