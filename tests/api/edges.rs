//! The white-box review's findings (issue 14), each tried again as an attack
//! that must fail: forwarding headers, login lock-out, IPv6 budgets, group
//! membership, transport path spellings, header sizes, session opens, and
//! stale access.

use std::time::Duration;

use callgate::policy::Rate;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;

fn tight(rate: &mut Rate, per_minute: u32, burst: u32) {
    *rate = Rate { per_minute, burst };
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn login_via_proxy(
    server: &TestServer,
    headers: &[(&str, &str)],
    username: &str,
    password: &str,
) -> u16 {
    let mut req = server.http.post(server.url("/auth/login"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

fn behind_proxy(c: &mut callgate::config::Config) {
    c.server.trusted_proxies = vec!["127.0.0.1".into()];
    // These tests count 401s and 429s: on a loaded machine the idle-priority
    // hashing threads may take longer than the default 2 s queue wait, and a
    // 503 server_busy is not what they are about.
    c.password.queue_timeout_ms = 60_000;
}

// Finding 1.
#[tokio::test]
async fn a_client_cannot_pick_its_ip_with_a_forwarded_header_the_proxy_does_not_overwrite() {
    let server = TestServer::spawn_with_policy(behind_proxy, |p| {
        tight(&mut p.rate_limits.login_per_ip, 1, 3);
    })
    .await;
    // nginx overwrites X-Forwarded-For with the real client; the client adds
    // its own Forwarded, which nginx passes on.
    let mut statuses = Vec::new();
    for n in 0..5 {
        let forged = format!("for=203.0.113.{n}");
        statuses.push(
            login_via_proxy(
                &server,
                &[("x-forwarded-for", "198.51.100.9"), ("forwarded", &forged)],
                "nobody",
                "wrong password",
            )
            .await,
        );
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);

    // With forwarded_header = "forwarded", X-Forwarded-For is the one ignored.
    let server = TestServer::spawn_with_policy(
        |c| {
            behind_proxy(c);
            c.server.forwarded_header = callgate::config::ForwardedHeader::Forwarded;
        },
        |p| tight(&mut p.rate_limits.login_per_ip, 1, 2),
    )
    .await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        let forged = format!("203.0.113.{n}");
        statuses.push(
            login_via_proxy(
                &server,
                &[
                    ("forwarded", "for=198.51.100.9"),
                    ("x-forwarded-for", &forged),
                ],
                "nobody",
                "wrong password",
            )
            .await,
        );
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
}

// Finding 2.
#[tokio::test]
async fn one_address_cannot_lock_an_account_out_of_login() {
    let server = TestServer::spawn_with_policy(behind_proxy, |p| {
        tight(&mut p.rate_limits.login_per_ip, 1, 3);
        tight(&mut p.rate_limits.login_per_username, 1, 3);
    })
    .await;
    server.seed_user("carol").await;
    server.seed_user("dave").await;
    let attacker = [("x-forwarded-for", "203.0.113.66")];
    // The attacker spends its own IP budget, then keeps going.
    for user in ["carol", "dave"] {
        for _ in 0..6 {
            login_via_proxy(&server, &attacker, user, "guessing wrong").await;
        }
    }
    // From their own addresses, carol and dave log in.
    for (user, ip) in [("carol", "198.51.100.1"), ("dave", "198.51.100.2")] {
        assert_eq!(
            login_via_proxy(&server, &[("x-forwarded-for", ip)], user, PASSWORD).await,
            200,
            "{user}"
        );
    }
    // A second attacker address with a fresh IP budget drains only its own
    // (carol, address) bucket.
    let second = [("x-forwarded-for", "203.0.113.67")];
    for _ in 0..3 {
        login_via_proxy(&server, &second, "carol", "guessing wrong").await;
    }
    assert_eq!(
        login_via_proxy(&server, &second, "carol", PASSWORD).await,
        429
    );
    assert_eq!(
        login_via_proxy(
            &server,
            &[("x-forwarded-for", "198.51.100.1")],
            "carol",
            PASSWORD
        )
        .await,
        200
    );
}

// Finding 8.
#[tokio::test]
async fn ipv6_clients_share_one_budget_per_64() {
    let server = TestServer::spawn_with_policy(behind_proxy, |p| {
        tight(&mut p.rate_limits.login_per_ip, 1, 2);
    })
    .await;
    let mut statuses = Vec::new();
    for n in 1..=4 {
        let ip = format!("2001:db8:1:2::{n:x}");
        statuses.push(
            login_via_proxy(
                &server,
                &[("x-forwarded-for", &ip)],
                "nobody",
                "wrong password",
            )
            .await,
        );
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    // Another /64 has its own budget.
    assert_eq!(
        login_via_proxy(
            &server,
            &[("x-forwarded-for", "2001:db8:1:3::1")],
            "nobody",
            "wrong password"
        )
        .await,
        401
    );
    // A configurable prefix: /128 keys each address on its own.
    let server = TestServer::spawn_with_policy(
        |c| {
            behind_proxy(c);
            c.server.ipv6_prefix_len = 128;
        },
        |p| tight(&mut p.rate_limits.login_per_ip, 1, 1),
    )
    .await;
    for n in 1..=3 {
        let ip = format!("2001:db8:1:2::{n:x}");
        assert_eq!(
            login_via_proxy(
                &server,
                &[("x-forwarded-for", &ip)],
                "nobody",
                "wrong password"
            )
            .await,
            401
        );
    }
}

async fn token_of(server: &TestServer, user: &callgate::store::User) -> String {
    server.token(user)
}

// Finding 3.
#[tokio::test]
async fn only_co_members_can_be_added_and_unknown_ids_look_the_same() {
    let server = TestServer::spawn_with_policy(
        |_| {},
        |p| p.calls.one_to_one = callgate::policy::OneToOne::SharedGroup,
    )
    .await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let dave = server.seed_user("dave").await;
    server.seed_group("ab", &alice, &[&bob]).await;
    let dave_t = token_of(&server, &dave).await;

    // dave shares no group with bob: he cannot make one with him.
    let (status, refused) = server
        .post(
            "/groups",
            Some(&dave_t),
            &json!({"name": "mine", "memberIds": [bob.id]}),
        )
        .await;
    assert_eq!(status, 400);
    // An id that does not exist gets the very same answer.
    let (status2, unknown) = server
        .post(
            "/groups",
            Some(&dave_t),
            &json!({"name": "mine", "memberIds": ["6860e2e85547033af89987ba"]}),
        )
        .await;
    assert_eq!((status2, &unknown), (status, &refused));
    assert!(
        server
            .get("/groups", Some(&dave_t))
            .await
            .1
            .as_array()
            .expect("list")
            .is_empty()
    );

    // Nor can he add bob to a group he owns.
    let (_, own) = server
        .post(
            "/groups",
            Some(&dave_t),
            &json!({"name": "solo", "memberIds": []}),
        )
        .await;
    let gid = own["id"].as_str().expect("id").to_string();
    let (s1, b1) = server
        .post(
            &format!("/groups/{gid}/members"),
            Some(&dave_t),
            &json!({"userId": bob.id}),
        )
        .await;
    let (s2, b2) = server
        .post(
            &format!("/groups/{gid}/members"),
            Some(&dave_t),
            &json!({"userId": "6860e2e85547033af89987bb"}),
        )
        .await;
    assert_eq!((s1, code(&b1)), (400, "bad_request"));
    assert_eq!((s1, &b1), (s2, &b2));

    // So the shared_group rule still holds: dave cannot ring bob.
    let d = server.connect(&dave).await;
    let _b = server.connect(&bob).await;
    let call = d
        .emit_ack("initiateVideoCall", json!({"receiverId": bob.id}))
        .await;
    assert_eq!(code(&call), "forbidden");
    // An id that does not exist answers the same: initiates do not enumerate.
    let ghost = d
        .emit_ack(
            "initiateVideoCall",
            json!({"receiverId": "6860e2e85547033af89987bc"}),
        )
        .await;
    assert_eq!(ghost["error"], call["error"]);

    // alice shares a group with bob: she can.
    let (status, _) = server
        .post(
            "/groups",
            Some(&server.token(&alice)),
            &json!({"name": "again", "memberIds": [bob.id]}),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn group_changes_are_rate_limited_and_memberships_capped() {
    let server = TestServer::spawn_with_policy(
        |_| {},
        |p| {
            tight(&mut p.rate_limits.group_changes, 1, 3);
            p.groups.max_per_user = 3;
        },
    )
    .await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    server.seed_group("ab", &alice, &[&bob]).await;
    let t = server.token(&alice);
    let create = |name: &'static str| {
        let t = t.clone();
        let bob = bob.id.clone();
        let server = &server;
        async move {
            server
                .post(
                    "/groups",
                    Some(&t),
                    &json!({"name": name, "memberIds": [bob]}),
                )
                .await
        }
    };
    assert_eq!(create("g2").await.0, 201);
    assert_eq!(create("g3").await.0, 201);
    // bob (and alice) are in 3 groups: the cap.
    let (status, body) = create("g4").await;
    assert_eq!((status, code(&body)), (409, "limit_reached"));
    // The refused creation used the third change of the burst: the next is limited.
    let (status, _) = create("g5").await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn the_owner_hands_a_group_over_before_leaving() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let g = server.seed_group("ab", &alice, &[&bob]).await;
    let t = server.token(&alice);
    let (status, body) = server
        .delete(&format!("/groups/{}/members/{}", g.id, alice.id), Some(&t))
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    // bob is not the owner: he cannot take the group.
    let (status, _) = server
        .post(
            &format!("/groups/{}/owner", g.id),
            Some(&server.token(&bob)),
            &json!({"userId": bob.id}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = server
        .post(
            &format!("/groups/{}/owner", g.id),
            Some(&t),
            &json!({"userId": bob.id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["owner"], json!(bob.id));
    let (status, _) = server
        .delete(&format!("/groups/{}/members/{}", g.id, alice.id), Some(&t))
        .await;
    assert_eq!(status, 204);
    // The last member, owner or not, may leave.
    let (status, _) = server
        .delete(
            &format!("/groups/{}/members/{}", g.id, bob.id),
            Some(&server.token(&bob)),
        )
        .await;
    assert_eq!(status, 204);
}

/// Status of a bare Engine.IO request on `path`.
async fn open_status(
    server: &TestServer,
    path: &str,
    transport: &str,
    headers: &[(&str, String)],
) -> u16 {
    let mut req = server
        .http
        .get(server.url(&format!("{path}?EIO=4&transport={transport}")));
    if transport == "websocket" {
        req = req
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    req.send().await.expect("request").status().as_u16()
}

// Finding 4.
#[tokio::test]
async fn the_origin_check_holds_on_every_spelling_of_the_transport_path() {
    let server = TestServer::spawn_with(|c| {
        c.server.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let evil = [("origin", "https://evil.example".to_string())];
    for path in ["/socket.io", "/socket.io/"] {
        for transport in ["polling", "websocket"] {
            assert_eq!(
                open_status(&server, path, transport, &evil).await,
                403,
                "{path} {transport}"
            );
        }
        assert_eq!(
            open_status(&server, path, "polling", &[]).await,
            200,
            "{path}"
        );
        assert_eq!(
            open_status(&server, path, "websocket", &[]).await,
            101,
            "{path}"
        );
    }
    // Below the path, engineioxide would answer too: 404, whatever the origin.
    for path in ["/socket.io/x", "/socket.io//", "/socket.io/socket.io/"] {
        assert_eq!(
            open_status(&server, path, "polling", &evil).await,
            404,
            "{path}"
        );
        assert_eq!(
            open_status(&server, path, "polling", &[]).await,
            404,
            "{path}"
        );
    }
    // A full authenticated connect without the trailing slash, on websocket.
    let alice = server.seed_user("alice").await;
    let url = format!("ws://{}/socket.io?EIO=4&transport=websocket", server.addr);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .expect("request");
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().expect("v"));
    assert!(
        tokio_tungstenite::connect_async(req).await.is_err(),
        "foreign origin refused"
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("upgrade");
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let open = ws.next().await.expect("open").expect("frame");
    assert!(open.to_text().expect("text").starts_with('0'));
    ws.send(Message::text(format!(
        "40{}",
        json!({"token": server.token(&alice)})
    )))
    .await
    .expect("send");
    // Skip Engine.IO pings until the namespace CONNECT answer.
    loop {
        let frame = ws.next().await.expect("connect").expect("frame");
        let text = frame.to_text().expect("text").to_string();
        if text == "2" {
            ws.send(Message::text("3")).await.expect("pong");
            continue;
        }
        assert!(text.starts_with("40{\"sid\""), "{text}");
        break;
    }
}

// Finding 5.
#[tokio::test]
async fn oversized_heads_get_431_and_session_opens_are_limited_per_ip() {
    let server = TestServer::spawn_with_policy(
        |c| c.server.max_socketio_header_bytes = 4096,
        |p| tight(&mut p.rate_limits.session_open_per_ip, 1, 3),
    )
    .await;
    let big = [("x-padding", "a".repeat(5000))];
    assert_eq!(
        open_status(&server, "/socket.io/", "polling", &big).await,
        431
    );
    assert_eq!(
        open_status(&server, "/socket.io", "websocket", &big).await,
        431
    );
    // The API is not the transport: its requests keep hyper's own limits.
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, 200);
    // 431s spent nothing; three opens pass, the fourth is limited before any CONNECT.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(open_status(&server, "/socket.io/", "polling", &[]).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[tokio::test]
async fn a_session_keeps_only_the_headers_it_needs() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let mut client = TestClient::connect(&server, Some(&server.token(&alice)))
        .await
        .expect("connects");
    let sockets = callgate::signaling::rooms::user_sockets(&server.io, &alice.id);
    let parts = sockets[0].req_parts();
    let names: Vec<&str> = parts.headers.keys().map(|k| k.as_str()).collect();
    for name in &names {
        assert!(
            callgate::http::transport::KEPT_HEADERS
                .iter()
                .any(|k| k.as_str() == *name),
            "{name} kept"
        );
    }
    assert!(
        !parts.headers.contains_key("host") && !parts.headers.contains_key("user-agent"),
        "{names:?}"
    );
    client.drain().await;
}

// Finding 10: stale access.
#[tokio::test]
async fn a_member_removed_from_a_group_cannot_accept_or_rejoin_its_call() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let g = server.seed_group("abc", &alice, &[&bob, &carol]).await;
    let a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut c = server.connect(&carol).await;
    let call = a
        .emit_ack("initiateGroupVideoCall", json!({"groupId": g.id}))
        .await;
    let call_id = call["callId"].clone();
    b.next("incomingVideoCall").await;
    c.next("incomingVideoCall").await;
    // carol joins, then leaves the call; bob has not answered yet.
    assert_eq!(
        c.emit_ack("acceptVideoCall", json!({"callId": call_id}))
            .await["ok"],
        true
    );
    assert_eq!(
        c.emit_ack("endVideoCall", json!({"callId": call_id})).await["ok"],
        true
    );
    // Both are removed from the group.
    for user in [&bob, &carol] {
        let (status, _) = server
            .delete(
                &format!("/groups/{}/members/{}", g.id, user.id),
                Some(&server.token(&alice)),
            )
            .await;
        assert_eq!(status, 204);
    }
    // bob's ringing devices are told the call is over for him.
    b.next("videoCallEnded").await;
    let accept = b
        .emit_ack("acceptVideoCall", json!({"callId": call_id}))
        .await;
    assert_eq!(code(&accept), "not_found", "bob accepts: {accept}");
    let rejoin = c
        .emit_ack("acceptVideoCall", json!({"callId": call_id}))
        .await;
    assert_eq!(code(&rejoin), "not_found", "carol rejoins: {rejoin}");
}

#[tokio::test]
async fn a_member_removed_during_a_call_leaves_it() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let g = server.seed_group("abc", &alice, &[&bob, &carol]).await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let _c = server.connect(&carol).await;
    let call = a
        .emit_ack("initiateGroupVideoCall", json!({"groupId": g.id}))
        .await;
    b.next("incomingVideoCall").await;
    assert_eq!(
        b.emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
            .await["ok"],
        true
    );
    let (status, _) = server
        .delete(
            &format!("/groups/{}/members/{}", g.id, bob.id),
            Some(&server.token(&alice)),
        )
        .await;
    assert_eq!(status, 204);
    let left = a.next("groupCallParticipantLeft").await;
    assert_eq!(left["userId"], json!(bob.id));
    b.next("videoCallEnded").await;
}

#[tokio::test]
async fn a_user_deleted_from_the_directory_loses_their_sockets_within_the_recheck_period() {
    let server = TestServer::spawn_with(|c| c.auth.session_recheck_secs = 1).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let _a = server.connect(&alice).await;
    let _b = server.connect(&bob).await;
    // On MongoDB the chat app deletes him, straight in the database.
    if let Some(m) = &server.mongo {
        let gone = m
            .users()
            .delete_one(mongodb::bson::doc! { "_id": m.stored(bob.id.as_str()) })
            .await
            .expect("deleted");
        assert_eq!(gone.deleted_count, 1);
    } else {
        let callgate::store::Store::Embedded(store) = &server.store else {
            panic!("embedded store");
        };
        assert!(store.delete_user(&bob.id).expect("deleted"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !callgate::signaling::rooms::user_sockets(&server.io, &bob.id).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        callgate::signaling::rooms::user_sockets(&server.io, &alice.id).len(),
        1
    );
    // And cannot come back with the token he still holds.
    assert_eq!(
        TestClient::connect(&server, Some(&server.token(&bob)))
            .await
            .err()
            .as_deref(),
        Some("unauthorized")
    );
}

// Finding 7: a cap on concurrent connections.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_a_freed_slot_is_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::spawn_with(|c| c.server.max_connections = 2).await;
    let first = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("1");
    let _second = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("3");
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(WAIT, third.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third connection is closed unanswered"
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut s = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("4");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
        if out.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was not reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
