//! Abuse limits: rate limits on events, logins, registrations and handshakes,
//! connection caps, client IPs behind proxies, and token expiry.

use std::time::Duration;

use callgate::policy::{Policy, Rate};
use serde_json::{Value, json};

use crate::helpers::*;

fn tight(rate: &mut Rate, per_minute: u32, burst: u32) {
    *rate = Rate { per_minute, burst };
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn call_initiates_beyond_the_burst_are_rate_limited_before_any_lookup() {
    let server =
        TestServer::spawn_with_policy(|_| {}, |p| tight(&mut p.rate_limits.call_initiate, 1, 2))
            .await;
    let alice = server.seed_user("alice").await;
    let mut a = server.connect(&alice).await;
    for _ in 0..2 {
        // Unknown receivers: the limit is charged even for refused calls.
        assert_eq!(
            code(
                &a.emit_ack("initiateVideoCall", json!({"receiverId": "ghost"}))
                    .await
            ),
            "not_found"
        );
    }
    let ack = a
        .emit_ack("initiateVideoCall", json!({"receiverId": "ghost"}))
        .await;
    assert_eq!(
        code(&ack),
        "rate_limited",
        "limited before the directory lookup: {ack}"
    );
    let wait = ack["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!((1..=60_000).contains(&wait), "{wait}");
    let failures: Vec<Value> = a
        .drain()
        .await
        .into_iter()
        .filter(|(e, _)| e == "videoCallFailed")
        .map(|(_, v)| v)
        .collect();
    let codes: Vec<&str> = failures
        .iter()
        .map(|f| f["code"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(codes, ["not_found", "not_found", "rate_limited"]);
    assert!(failures[2]["retryAfterMs"].as_u64().is_some());
    // Other classes have their own budget.
    assert_eq!(a.emit_ack("joinVideoRoom", json!({})).await["ok"], true);
}

#[tokio::test]
async fn limited_room_events_answer_an_error_event() {
    let server =
        TestServer::spawn_with_policy(|_| {}, |p| tight(&mut p.rate_limits.rooms, 1, 1)).await;
    let alice = server.seed_user("alice").await;
    let mut a = server.connect(&alice).await;
    assert_eq!(a.emit_ack("userOnline", json!(alice.id)).await["ok"], true);
    assert_eq!(
        code(&a.emit_ack("userOnline", json!(alice.id)).await),
        "rate_limited"
    );
    let err = a.next("error").await;
    assert_eq!(
        (err["code"].as_str(), err["event"].as_str()),
        (Some("rate_limited"), Some("userOnline"))
    );
}

#[tokio::test]
async fn a_socket_that_keeps_hammering_is_disconnected() {
    let server = TestServer::spawn_with_policy(
        |_| {},
        |p| {
            tight(&mut p.rate_limits.rooms, 1, 1);
            p.rate_limits.disconnect_after = 5;
        },
    )
    .await;
    let alice = server.seed_user("alice").await;
    let a = server.connect(&alice).await;
    let user_room = callgate::signaling::rooms::user_room(&alice.id);
    for _ in 0..6 {
        a.emit("joinVideoRoom", json!({})).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.io.within(user_room.clone()).sockets().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected after 5 limited events in a row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn logins_are_limited_per_username_and_per_ip_with_retry_after() {
    let server = TestServer::spawn_with_policy(
        |_| {},
        |p| tight(&mut p.rate_limits.login_per_username, 1, 2),
    )
    .await;
    server.seed_user("alice").await;
    server.seed_user("bob").await;
    for _ in 0..2 {
        let (status, _) = server
            .post(
                "/auth/login",
                None,
                &json!({"username": "alice", "password": "wrong password"}),
            )
            .await;
        assert_eq!(status, 401);
    }
    let resp = server
        .http
        .post(server.url("/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 429);
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(code(&body), "rate_limited");
    // Another username from the same IP still works.
    let (status, _) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);

    let server =
        TestServer::spawn_with_policy(|_| {}, |p| tight(&mut p.rate_limits.login_per_ip, 1, 3))
            .await;
    for name in ["u1", "u2", "u3"] {
        let (status, _) = server
            .post(
                "/auth/login",
                None,
                &json!({"username": name, "password": "wrong password"}),
            )
            .await;
        assert_eq!(status, 401);
    }
    let (status, body) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "u4", "password": "wrong password"}),
        )
        .await;
    assert_eq!((status, code(&body)), (429, "rate_limited"));
}

#[tokio::test]
async fn registrations_are_limited_per_ip() {
    let server =
        TestServer::spawn_with_policy(|_| {}, |p| tight(&mut p.rate_limits.register_per_ip, 1, 1))
            .await;
    let (status, _) = server
        .post(
            "/auth/register",
            None,
            &json!({"username": "erin", "password": PASSWORD, "displayName": "E"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = server
        .post(
            "/auth/register",
            None,
            &json!({"username": "fred", "password": PASSWORD, "displayName": "F"}),
        )
        .await;
    assert_eq!((status, code(&body)), (429, "rate_limited"));
}

#[tokio::test]
async fn handshakes_are_limited_per_ip() {
    let server =
        TestServer::spawn_with_policy(|_| {}, |p| tight(&mut p.rate_limits.handshake_per_ip, 1, 2))
            .await;
    let alice = server.seed_user("alice").await;
    let _a = server.connect(&alice).await;
    let _b = server.connect(&alice).await;
    let third = TestClient::connect(&server, Some(&server.token(&alice))).await;
    assert_eq!(third.err().as_deref(), Some("rate_limited"));
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_change_the_key_unless_the_peer_is_trusted() {
    let limit_logins = |p: &mut Policy| tight(&mut p.rate_limits.login_per_ip, 1, 1);
    let login_as = |ip: &'static str| {
        move |server: &TestServer| {
            server
                .http
                .post(server.url("/auth/login"))
                .header("x-forwarded-for", ip)
                .json(&json!({"username": "nobody", "password": "wrong password"}))
                .send()
        }
    };
    // Untrusted peer: every request is keyed by the TCP peer, whatever it claims.
    let server = TestServer::spawn_with_policy(|_| {}, limit_logins).await;
    assert_eq!(
        login_as("198.51.100.1")(&server)
            .await
            .expect("req")
            .status(),
        401
    );
    assert_eq!(
        login_as("198.51.100.2")(&server)
            .await
            .expect("req")
            .status(),
        429
    );
    // Through a trusted proxy (the loopback peer), the forwarded address is the key.
    let server = TestServer::spawn_with_policy(
        |c| c.server.trusted_proxies = vec!["127.0.0.1".into()],
        limit_logins,
    )
    .await;
    assert_eq!(
        login_as("198.51.100.1")(&server)
            .await
            .expect("req")
            .status(),
        401
    );
    assert_eq!(
        login_as("198.51.100.2")(&server)
            .await
            .expect("req")
            .status(),
        401
    );
    assert_eq!(
        login_as("198.51.100.1")(&server)
            .await
            .expect("req")
            .status(),
        429
    );
}

#[tokio::test]
async fn connections_are_capped_per_user_and_freed_on_disconnect() {
    let server = TestServer::spawn_with_policy(|_| {}, |p| p.connections.max_per_user = 2).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let a1 = server.connect(&alice).await;
    let _a2 = server.connect(&alice).await;
    let third = TestClient::connect(&server, Some(&server.token(&alice))).await;
    assert_eq!(third.err().as_deref(), Some("too_many_connections"));
    assert!(
        TestClient::connect(&server, Some(&server.token(&bob)))
            .await
            .is_ok(),
        "other users are unaffected"
    );
    a1.disconnect().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match TestClient::connect(&server, Some(&server.token(&alice))).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "slot never freed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn connections_are_capped_per_ip_and_in_total() {
    let server = TestServer::spawn_with_policy(|_| {}, |p| p.connections.max_per_ip = 2).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let _a = server.connect(&alice).await;
    let _b = server.connect(&bob).await;
    assert_eq!(
        TestClient::connect(&server, Some(&server.token(&bob)))
            .await
            .err()
            .as_deref(),
        Some("too_many_connections")
    );

    let server = TestServer::spawn_with_policy(|_| {}, |p| p.connections.max_total = 1).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let _a = server.connect(&alice).await;
    assert_eq!(
        TestClient::connect(&server, Some(&server.token(&bob)))
            .await
            .err()
            .as_deref(),
        Some("too_many_connections")
    );
}

#[tokio::test]
async fn a_socket_is_told_and_disconnected_when_its_token_expires() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let token = mint(&claims_for(&alice.id, 3), SECRET);
    let mut a = TestClient::connect(&server, Some(&token))
        .await
        .expect("connects");
    assert_eq!(a.emit_ack("joinVideoRoom", json!({})).await["ok"], true);
    let expired = a.next("tokenExpired").await;
    assert_eq!(expired["code"], "token_expired");
    let user_room = callgate::signaling::rooms::user_room(&alice.id);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.io.within(user_room.clone()).sockets().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "socket outlived its token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn limiter_keys_are_forgotten_after_the_refill_window() {
    use callgate::limits::RateLimiters;
    let mut policy = Policy::builtin().expect("policy");
    // One cell per millisecond: a bucket is full again 1 ms after its only use.
    tight(&mut policy.rate_limits.login_per_ip, 60_000, 1);
    let limiters = RateLimiters::new(&policy.rate_limits);
    for i in 0..100_000u32 {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        assert!(
            limiters
                .login(callgate::limits::IpKey::new(ip, 64), None)
                .is_ok()
        );
    }
    assert_eq!(limiters.len(), 100_000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    limiters.retain_recent();
    assert_eq!(limiters.len(), 0);
}
