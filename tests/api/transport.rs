//! Transport limits: Origin allowlist, message and payload caps, heartbeat.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rust_socketio::TransportType;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

const ALLOWED: &str = "https://app.example.com";

async fn server_with_origins() -> TestServer {
    TestServer::spawn_with(|c| c.server.allowed_origins = vec![ALLOWED.into()]).await
}

/// Status of a bare Engine.IO request with an `Origin`.
async fn transport_status(server: &TestServer, transport: &str, origin: &str) -> u16 {
    let mut req = server
        .http
        .get(server.url(&format!("/socket.io/?EIO=4&transport={transport}")))
        .header("origin", origin);
    if transport == "websocket" {
        req = req
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    req.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn foreign_origins_are_refused_on_both_transports() {
    let server = server_with_origins().await;
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.net",
        "null",
        "http://app.example.com",
    ] {
        for transport in ["polling", "websocket"] {
            assert_eq!(
                transport_status(&server, transport, origin).await,
                403,
                "{origin} over {transport}"
            );
        }
    }
    assert_eq!(transport_status(&server, "polling", ALLOWED).await, 200);
    assert_eq!(transport_status(&server, "websocket", ALLOWED).await, 101);
}

#[tokio::test]
async fn an_allowed_origin_connects_and_no_origin_goes_on_to_the_token_check() {
    let server = server_with_origins().await;
    let alice = server.seed_user("alice").await;
    let token = json!({"token": server.token(&alice)});
    for polling in [true, false] {
        let transport = || {
            if polling {
                TransportType::Polling
            } else {
                TransportType::Websocket
            }
        };
        let mut builder_ok =
            TestClient::connect_with_origin(&server, token.clone(), transport(), ALLOWED).await;
        assert!(builder_ok.is_ok(), "{:?}", builder_ok.as_ref().err());
        if let Ok(c) = builder_ok.as_mut() {
            assert_eq!(c.emit_ack("joinVideoRoom", json!({})).await["ok"], true);
        }
        let evil = TestClient::connect_with_origin(
            &server,
            token.clone(),
            transport(),
            "https://evil.example",
        )
        .await;
        assert!(evil.is_err());
    }
    assert!(
        TestClient::connect(&server, Some(&server.token(&alice)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_one_mib_websocket_message_closes_that_socket_only() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let b = server.connect(&bob).await;
    let a = server.connect(&alice).await;
    let _ = a
        .client
        .emit("joinVideoRoom", json!({"pad": "x".repeat(1 << 20)}))
        .await;
    let alice_room = callgate::signaling::rooms::user_room(&alice.id);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.io.within(alice_room.clone()).sockets().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the oversized socket is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        b.emit_ack("joinVideoRoom", json!({})).await["ok"],
        true,
        "others are unaffected"
    );
    assert!(
        TestClient::connect(&server, Some(&server.token(&alice)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_oversized_polling_body_is_refused() {
    let server = TestServer::spawn().await;
    let open = server
        .http
        .get(server.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .expect("open")
        .text()
        .await
        .expect("body");
    let handshake: serde_json::Value =
        serde_json::from_str(open.trim_start_matches('0')).expect("open packet");
    let sid = handshake["sid"].as_str().expect("sid");
    assert_eq!(handshake["maxPayload"], 65536);
    let status = server
        .http
        .post(server.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}")))
        .body(format!("4{}", "x".repeat(100 * 1024)))
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status.as_u16(), 413);
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_cleaned_up() {
    let server = TestServer::spawn_with(|c| {
        c.socketio.ping_interval_secs = 1;
        c.socketio.ping_timeout_secs = 1;
    })
    .await;
    let alice = server.seed_user("alice").await;
    let group = server.seed_group("Team", &alice, &[]).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let open = ws.next().await.expect("open").expect("frame");
    assert!(open.to_text().expect("text").starts_with('0'));
    ws.send(Message::text(format!(
        "40{}",
        json!({"token": server.token(&alice)})
    )))
    .await
    .expect("connect");
    // Skip the pings the server may send first (and leave them unanswered).
    loop {
        let frame = ws.next().await.expect("connect ack").expect("frame");
        let text = frame.to_text().expect("text").to_string();
        if text.starts_with("40") {
            break;
        }
        assert_eq!(text, "2", "only pings may come before the CONNECT ack");
    }
    assert_eq!(
        server.users_in_group_room(&group.id),
        vec![alice.id.clone()]
    );
    assert_eq!(server.hub.limits.connections.total(), 1);
    // Read nothing, answer no ping: after interval + timeout the server drops it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(server.users_in_group_room(&group.id).is_empty());
    assert_eq!(
        server.hub.limits.connections.total(),
        0,
        "its slot is free again"
    );
    drop(ws);
}
