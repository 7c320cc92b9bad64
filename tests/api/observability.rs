//! Metrics, policy reload and the shutdown notice.

use serde_json::json;

use crate::helpers::*;

async fn metrics(server: &TestServer) -> String {
    let resp = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    resp.text().await.expect("body")
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_sockets_calls_outcomes_events_rejections_handshakes_and_logins() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let (status, _) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    let _ = TestClient::connect(&server, Some("not-a-token")).await;
    let mut a = server.connect(&alice).await;
    let b = server.connect(&bob).await;
    let call = a
        .emit_ack("initiateVideoCall", json!({"receiverId": bob.id}))
        .await;
    assert_eq!(
        a.emit_ack("initiateVideoCall", json!({"receiverId": "ghost"}))
            .await["error"]["code"],
        "not_found"
    );

    let text = metrics(&server).await;
    assert_eq!(value(&text, "callgate_sockets"), Some(2.0), "{text}");
    assert_eq!(
        value(&text, r#"callgate_calls{kind="direct",state="ringing"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"callgate_events_total{event="initiateVideoCall",outcome="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"callgate_events_total{event="initiateVideoCall",outcome="not_found"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"callgate_rejections_total{code="not_found"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"callgate_handshake_failures_total{reason="unauthorized"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "callgate_login_seconds_count"), Some(1.0));

    assert_eq!(
        b.emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
            .await["ok"],
        true
    );
    assert_eq!(
        a.emit_ack("endVideoCall", json!({"callId": call["callId"]}))
            .await["ok"],
        true
    );
    a.drain().await;
    let text = metrics(&server).await;
    assert_eq!(
        value(&text, r#"callgate_calls{kind="direct",state="active"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"callgate_call_outcomes_total{reason="hangup"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_valid_policy_reload_applies_at_once_and_an_invalid_one_is_refused() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let a = server.connect(&alice).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    let tight = callgate::policy::DEFAULT_POLICY_TOML.replace(
        "rooms = { per_minute = 60, burst = 20 }",
        "rooms = { per_minute = 1, burst = 1 }",
    );
    assert_ne!(tight, callgate::policy::DEFAULT_POLICY_TOML);
    std::fs::write(&path, &tight).expect("write");
    callgate::app::reload_policy(&server.hub, Some(path.clone())).expect("valid policy");
    assert_eq!(a.emit_ack("joinVideoRoom", json!({})).await["ok"], true);
    assert_eq!(
        a.emit_ack("joinVideoRoom", json!({})).await["error"]["code"],
        "rate_limited"
    );

    std::fs::write(
        &path,
        tight.replace("ring_timeout_secs = 45", "ring_timeout_secs = 0"),
    )
    .expect("write");
    let problems = callgate::app::reload_policy(&server.hub, Some(path)).expect_err("refused");
    assert!(
        problems.to_string().contains("calls.ring_timeout_secs"),
        "{problems}"
    );
    assert_eq!(
        server.hub.calls().policy().ring_timeout_secs,
        45,
        "the old policy stays"
    );
}

#[tokio::test]
async fn shutdown_tells_every_socket_before_closing_it() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let mut a = server.connect(&alice).await;
    callgate::signaling::shutdown(&server.io).await;
    let notice = a.next("serverShutdown").await;
    assert_eq!(notice["code"], "server_shutdown");
    // The namespace is closed: nobody can connect any more.
    assert!(
        TestClient::connect(&server, Some(&server.token(&alice)))
            .await
            .is_err()
    );
    // Disconnects and timers still running then must not panic on the
    // missing namespace (socketioxide's io.within/io.to would).
    assert!(!callgate::signaling::calls::is_online(
        &server.io, &alice.id
    ));
    assert!(callgate::signaling::rooms::user_sockets(&server.io, &alice.id).is_empty());
    let group = server.seed_group("Team", &alice, &[]).await;
    callgate::signaling::rooms::join_group(&server.io, &alice.id, &group.id).await;
    callgate::signaling::shutdown(&server.io).await;
}
