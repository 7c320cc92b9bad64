//! The Socket.IO handshake: only a valid token for an existing user connects,
//! and no event is lost right after connecting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use futures_util::FutureExt;
use rust_socketio::asynchronous::ClientBuilder;
use rust_socketio::{Event, TransportType};
use serde_json::{Value, json};

use crate::helpers::*;

const OTHER_SECRET: &str = "not-the-server-secret-not-the-server-secret";

async fn outcome(server: &TestServer, token: &str) -> Result<(), String> {
    TestClient::connect(server, Some(token)).await.map(|_| ())
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[tokio::test]
async fn a_valid_token_connects() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    assert_eq!(outcome(&server, &server.token(&alice)).await, Ok(()));
}

#[tokio::test]
async fn jwt_matrix_only_valid_tokens_connect() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let good = claims_for(&alice.id, 3600);
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    let now = now() as i64;
    let huge = mint(
        &with(good.clone(), "pad", json!("x".repeat(9 * 1024))),
        SECRET,
    );
    let ghost = callgate::domain::UserId::parse("ghost").expect("id");

    let cases: Vec<(&str, String, Result<(), String>)> = vec![
        ("valid", mint(&good, SECRET), Ok(())),
        (
            "expired 2 s ago, inside the 5 s leeway",
            mint(&with(good.clone(), "exp", json!(now - 2)), SECRET),
            Ok(()),
        ),
        (
            "wrong key",
            mint(&good, OTHER_SECRET),
            Err("unauthorized".into()),
        ),
        ("alg none", alg_none, Err("unauthorized".into())),
        (
            "HS384 with the right secret",
            hs384,
            Err("unauthorized".into()),
        ),
        (
            "expired an hour ago",
            mint(&with(good.clone(), "exp", json!(now - 3600)), SECRET),
            Err("token_expired".into()),
        ),
        (
            "expired 30 s ago",
            mint(&with(good.clone(), "exp", json!(now - 30)), SECRET),
            Err("token_expired".into()),
        ),
        (
            "nbf in the future",
            mint(&with(good.clone(), "nbf", json!(now + 120)), SECRET),
            Err("unauthorized".into()),
        ),
        (
            "missing iss",
            mint(&without(good.clone(), "iss"), SECRET),
            Err("unauthorized".into()),
        ),
        (
            "missing aud",
            mint(&without(good.clone(), "aud"), SECRET),
            Err("unauthorized".into()),
        ),
        (
            "missing sub",
            mint(&without(good.clone(), "sub"), SECRET),
            Err("unauthorized".into()),
        ),
        (
            "missing exp",
            mint(&without(good.clone(), "exp"), SECRET),
            Err("unauthorized".into()),
        ),
        (
            "wrong audience",
            mint(&with(good.clone(), "aud", json!("someone-else")), SECRET),
            Err("unauthorized".into()),
        ),
        (
            "wrong issuer",
            mint(&with(good.clone(), "iss", json!("someone-else")), SECRET),
            Err("unauthorized".into()),
        ),
        ("9 KiB token", huge, Err("unauthorized".into())),
        (
            "unknown user",
            mint(&claims_for(&ghost, 3600), SECRET),
            Err("unauthorized".into()),
        ),
        (
            "sub that is not an id",
            mint(&with(good.clone(), "sub", json!({"$ne": null})), SECRET),
            Err("unauthorized".into()),
        ),
        ("garbage", "not-a-token".into(), Err("unauthorized".into())),
        ("empty", String::new(), Err("unauthorized".into())),
    ];
    for (name, token, expected) in cases {
        assert_eq!(outcome(&server, &token).await, expected, "case: {name}");
    }
}

#[tokio::test]
async fn no_token_is_unauthorized() {
    let server = TestServer::spawn().await;
    let result = TestClient::connect_with(&server, None, TransportType::Websocket, None).await;
    assert_eq!(result.err().as_deref(), Some("unauthorized"));
    let result = TestClient::connect_with(
        &server,
        Some(json!({"token": 42})),
        TransportType::Websocket,
        None,
    )
    .await;
    assert_eq!(result.err().as_deref(), Some("unauthorized"));
}

#[tokio::test]
async fn a_token_in_the_authorization_header_connects() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let result = TestClient::connect_with(
        &server,
        None,
        TransportType::Websocket,
        Some(&server.token(&alice)),
    )
    .await;
    assert!(result.is_ok(), "{:?}", result.err());
}

#[tokio::test]
async fn a_token_in_the_query_string_is_ignored() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let url = format!("{}?token={}", server.url("/"), server.token(&alice));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let tx2 = tx.clone();
    let client = ClientBuilder::new(url)
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on(Event::Connect, move |_, _| {
            let _ = tx.send("connected".into());
            async {}.boxed()
        })
        .on(Event::Error, move |p, _| {
            let _ = tx2.send(format!("{p:?}"));
            async {}.boxed()
        })
        .connect()
        .await
        .expect("transport");
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("answer")
        .expect("message");
    assert!(first.contains("unauthorized"), "{first}");
    let _ = client.disconnect().await;
}

#[tokio::test]
async fn polling_transport_is_authenticated_too() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let ok = TestClient::connect_with(
        &server,
        Some(json!({"token": server.token(&alice)})),
        TransportType::Polling,
        None,
    )
    .await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    let bad = TestClient::connect_with(
        &server,
        Some(json!({"token": mint(&claims_for(&alice.id, 3600), OTHER_SECRET)})),
        TransportType::Polling,
        None,
    )
    .await;
    assert_eq!(bad.err().as_deref(), Some("unauthorized"));
}

#[tokio::test]
async fn tokens_from_an_external_issuer_with_a_custom_claim_connect() {
    const EXTERNAL: &str = "chat-backend-secret-chat-backend-secret-42";
    let server = TestServer::spawn_with(|c| {
        c.auth.external.enabled = true;
        c.auth.external.algorithm = "HS256".into();
        c.auth.external.secret = EXTERNAL.to_string().into();
        c.auth.external.issuer = "chat-backend".into();
        c.auth.external.audience = "chat-app".into();
        c.auth.external.user_id_claim = "userId".into();
    })
    .await;
    let alice = server.seed_user("alice").await;
    let now = now();
    let external = json!({"userId": alice.id, "iat": now, "exp": now + 600, "iss": "chat-backend", "aud": "chat-app"});
    assert_eq!(outcome(&server, &mint(&external, EXTERNAL)).await, Ok(()));
    assert_eq!(
        outcome(
            &server,
            &mint(&with(external.clone(), "iss", json!("callgate")), EXTERNAL)
        )
        .await,
        Err("unauthorized".into()),
        "the external key only signs for the external issuer"
    );
    assert_eq!(
        outcome(
            &server,
            &mint(&without(external.clone(), "userId"), EXTERNAL)
        )
        .await,
        Err("unauthorized".into())
    );
    assert_eq!(
        outcome(
            &server,
            &mint(&with(external.clone(), "exp", json!(now - 60)), EXTERNAL)
        )
        .await,
        Err("token_expired".into())
    );
    assert_eq!(
        outcome(&server, &server.token(&alice)).await,
        Ok(()),
        "own tokens still work"
    );
}

#[tokio::test]
async fn the_handshake_joins_the_user_and_group_rooms() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let group = server.seed_group("Team", &alice, &[]).await;
    let _a = server.connect(&alice).await;
    let _b = server.connect(&bob).await;
    assert_eq!(
        server.users_in_group_room(&group.id),
        vec![alice.id.clone()]
    );
    let user_room = callgate::signaling::rooms::user_room(&bob.id);
    assert_eq!(server.io.within(user_room).sockets().len(), 1);
}

/// socketioxide acknowledges CONNECT before running the connect handler; events
/// a client emits on `connect` must still all be handled. Each of 25 events
/// here earns a reply, repeated over 20 fresh connections.
#[tokio::test]
async fn events_emitted_on_connect_are_never_dropped() {
    const EVENTS: usize = 25;
    const ROUNDS: usize = 20;
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    for round in 0..ROUNDS {
        let replies = Arc::new(AtomicUsize::new(0));
        let counted = replies.clone();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let bob_id = bob.id.to_string();
        let client = ClientBuilder::new(server.url("/"))
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .auth(json!({"token": server.token(&alice)}))
            .on(Event::Connect, move |_, client| {
                let bob_id = bob_id.clone();
                async move {
                    for _ in 0..EVENTS {
                        // Claiming another user's id earns an `error` reply every time.
                        client
                            .emit("joinVideoRoom", json!({"userId": bob_id}))
                            .await
                            .expect("emit");
                    }
                }
                .boxed()
            })
            .on(Event::Error, move |_, _| {
                if counted.fetch_add(1, Ordering::SeqCst) + 1 == EVENTS {
                    let _ = done_tx.send(());
                }
                async {}.boxed()
            })
            .connect()
            .await
            .expect("connect");
        let _ = tokio::time::timeout(WAIT, done_rx.recv()).await;
        assert_eq!(replies.load(Ordering::SeqCst), EVENTS, "round {round}");
        let _ = client.disconnect().await;
    }
}

#[tokio::test]
async fn eddsa_tokens_are_issued_at_login_and_accepted_at_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
    let private = dir.path().join("jwt-ed25519.pem");
    let public = dir.path().join("jwt-ed25519.pub.pem");
    std::fs::write(&private, key.serialize_pem()).expect("write");
    std::fs::write(&public, key.public_key_pem()).expect("write");
    let server = TestServer::spawn_with(|c| {
        c.auth.algorithm = callgate::config::IssuerAlgorithm::EdDSA;
        c.auth.ed25519_private_key_file = private.clone();
        c.auth.ed25519_public_key_file = public.clone();
    })
    .await;
    let alice = server.seed_user("alice").await;
    let (status, body) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(TestClient::connect(&server, Some(token)).await.is_ok());
    // An HS256 token signed with the old shared secret no longer works.
    assert_eq!(
        outcome(&server, &server.token(&alice)).await,
        Err("unauthorized".into())
    );
}
