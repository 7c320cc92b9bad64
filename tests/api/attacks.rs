//! Attack tests: an attacker fires every client event with forged and
//! malformed payloads while two victims are in a live call, a bystander shares
//! their group and an outsider is connected. Pass = every attempt gets an error
//! reply (or a harmless success on the attacker's own state), nothing reaches
//! anyone else, the call is untouched and the server keeps accepting sockets.

use callgate::signaling::events::CLIENT_EVENTS;
use serde_json::{Value, json};

use crate::helpers::*;

/// Events whose success only ever concerns the sender's own socket.
const HARMLESS: [&str; 3] = ["userOnline", "joinVideoRoom", "leaveGroup"];

/// The id field each event is about.
fn field_of(event: &str) -> &'static str {
    match event {
        "userOnline" | "joinVideoRoom" => "userId",
        "joinGroup" | "leaveGroup" | "groupCreated" | "initiateGroupVideoCall" => "groupId",
        "initiateVideoCall" => "receiverId",
        _ => "callId",
    }
}

/// The malformed classes: (name, payload), or `None` for "no payload at all".
fn classes(event: &str, base: &Value) -> Vec<(&'static str, Option<Value>)> {
    let field = field_of(event);
    let with = |v: Value| {
        let mut m = base.clone();
        m[field] = v;
        Some(m)
    };
    let mut extra = base.clone();
    extra["unexpected"] = json!({"nested": [1, 2, 3]});
    vec![
        ("forged but well-formed", Some(base.clone())),
        ("missing field", Some(json!({}))),
        ("wrong type", with(json!(12345))),
        ("extra field", Some(extra)),
        ("empty string", with(json!(""))),
        ("10 KB string", with(json!("x".repeat(10 * 1024)))),
        ("invalid id", with(json!("../../etc/passwd"))),
        ("$ne operator", with(json!({"$ne": null}))),
        ("unicode and NUL", with(json!("é\u{0}🙂"))),
        ("huge number", with(json!(u64::MAX))),
        ("float", with(json!(1e308))),
        ("array instead of object", Some(json!([base.clone()]))),
        ("null", Some(Value::Null)),
        ("bare 10 KB string", Some(json!("y".repeat(10 * 1024)))),
        ("no payload", None),
    ]
}

#[tokio::test]
async fn every_event_with_forged_or_malformed_payloads_fails_without_side_effects() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let dave = server.seed_user("dave").await;
    let mallory = server.seed_user("mallory").await;
    let group = server.seed_group("Team", &alice, &[&bob, &carol]).await;

    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut bystander = server.connect(&carol).await;
    let mut outsider = server.connect(&dave).await;
    let mut attacker = server.connect(&mallory).await;

    let call = a
        .emit_ack("initiateVideoCall", json!({"receiverId": bob.id}))
        .await;
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(
        b.emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
            .await["ok"],
        true
    );
    a.drain().await;
    b.drain().await;

    let mut cases = 0;
    for event in CLIENT_EVENTS {
        // Forged targets: someone else's identity, group and call.
        let base = match event {
            "userOnline" | "joinVideoRoom" => json!({"userId": alice.id}),
            "joinGroup" | "leaveGroup" | "groupCreated" => {
                json!({"groupId": group.id, "memberIds": [mallory.id]})
            }
            "initiateGroupVideoCall" => json!({"groupId": group.id, "callerId": alice.id}),
            "initiateVideoCall" => {
                json!({"receiverId": bob.id, "callerId": alice.id, "roomName": call["roomName"]})
            }
            _ => {
                json!({"callId": call["callId"], "roomName": call["roomName"], "callerId": alice.id, "receiverId": bob.id, "endForAll": true})
            }
        };
        for (class, payload) in classes(event, &base) {
            let ack = match &payload {
                Some(p) => attacker.emit_ack(event, p.clone()).await,
                None => attacker.emit_ack_bare(event).await,
            };
            let failed = ack["ok"] == json!(false)
                && ack["error"]["code"].is_string()
                && ack["error"]["message"].is_string();
            let harmless = ack["ok"] == json!(true) && HARMLESS.contains(&event);
            assert!(failed || harmless, "{event} / {class}: {ack}");
            if let Some(message) = ack["error"]["message"].as_str() {
                assert!(
                    message.len() < 200 && !message.contains("xxxx") && !message.contains("$ne"),
                    "{event} / {class}: input echoed in {message}"
                );
            }
            assert!(
                TestClient::connect(&server, Some(&server.token(&dave)))
                    .await
                    .is_ok(),
                "{event} / {class}: server stopped accepting"
            );
            cases += 1;
        }
    }
    assert_eq!(cases, CLIENT_EVENTS.len() * 15);

    a.assert_silent("alice (victim)").await;
    b.assert_silent("bob (victim)").await;
    bystander.assert_silent("carol (bystander)").await;
    outsider.assert_silent("dave (outsider)").await;
    let seen: Vec<String> = attacker.drain().await.into_iter().map(|(e, _)| e).collect();
    assert!(
        seen.iter().all(|e| e == "videoCallFailed" || e == "error"),
        "attacker only hears its own failures: {seen:?}"
    );
    assert_eq!(
        server.registry_sizes().0,
        1,
        "the victims' call is untouched"
    );
    assert!(
        server
            .users_in_group_room(&group.id)
            .iter()
            .all(|u| u != &mallory.id),
        "the attacker never joined the group room"
    );
    // The victims can still use their call.
    assert_eq!(
        a.emit_ack("endVideoCall", json!({"callId": call["callId"]}))
            .await["ok"],
        true
    );
    assert_eq!(b.next("videoCallEnded").await["reason"], "hangup");
}

#[tokio::test]
async fn claiming_another_users_id_in_room_events_is_forbidden() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let mallory = server.seed_user("mallory").await;
    let mut m = server.connect(&mallory).await;
    for (event, payload) in [
        ("userOnline", json!(alice.id)),
        ("joinVideoRoom", json!({"userId": alice.id})),
    ] {
        let ack = m.emit_ack(event, payload).await;
        assert_eq!(ack["error"]["code"], "forbidden", "{event}");
        let err = m.next("error").await;
        assert_eq!(err["code"], "forbidden");
        assert_eq!(err["event"], event);
    }
    assert_eq!(
        m.emit_ack("userOnline", json!(mallory.id)).await["ok"],
        true
    );
}

#[tokio::test]
async fn non_members_cannot_join_or_announce_a_group() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let mallory = server.seed_user("mallory").await;
    let group = server.seed_group("Team", &alice, &[]).await;
    let mut a = server.connect(&alice).await;
    let m = server.connect(&mallory).await;
    assert_eq!(
        m.emit_ack("joinGroup", json!(group.id)).await["error"]["code"],
        "not_found"
    );
    assert_eq!(
        m.emit_ack(
            "groupCreated",
            json!({"groupId": group.id, "memberIds": [mallory.id]})
        )
        .await["error"]["code"],
        "not_found"
    );
    assert_eq!(
        server.users_in_group_room(&group.id),
        vec![alice.id.clone()]
    );
    a.assert_silent("alice").await;
}

#[tokio::test]
async fn group_created_joins_members_from_the_directory_not_the_payload() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let mallory = server.seed_user("mallory").await;
    let a = server.connect(&alice).await;
    let _b = server.connect(&bob).await;
    let _m = server.connect(&mallory).await;
    let group = server.seed_group("Team", &alice, &[&bob]).await;
    // The sockets connected before the group existed.
    assert!(server.users_in_group_room(&group.id).is_empty());
    let ack = a
        .emit_ack(
            "groupCreated",
            json!({"groupId": group.id, "memberIds": [mallory.id]}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let mut expected = vec![alice.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(server.users_in_group_room(&group.id), expected);
}

#[tokio::test]
async fn user_online_resyncs_group_rooms_from_the_directory() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let a = server.connect(&alice).await;
    let group = server.seed_group("Team", &alice, &[]).await;
    let ack = a.emit_ack("userOnline", json!(alice.id)).await;
    assert_eq!(ack["groups"], json!([group.id]));
    assert_eq!(
        server.users_in_group_room(&group.id),
        vec![alice.id.clone()]
    );
    server
        .store
        .remove_member(&group.id, &alice.id)
        .await
        .expect("removed");
    let ack = a.emit_ack("userOnline", Value::Null).await;
    assert_eq!(ack["groups"], json!([]));
    assert!(server.users_in_group_room(&group.id).is_empty());
}
