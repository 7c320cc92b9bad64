//! Call signaling: every rule of the call state machine, black-box.

use std::time::Duration;

use callgate::policy::{BusyRule, OneToOne, Policy};
use serde_json::{Value, json};

use crate::helpers::*;

fn ok(ack: &Value) -> bool {
    ack["ok"] == json!(true)
}

fn code(ack: &Value) -> &str {
    ack["error"]["code"].as_str().unwrap_or("<none>")
}

fn short_timers(p: &mut Policy) {
    p.calls.ring_timeout_secs = 1;
    p.calls.ringing_grace_secs = 1;
    p.calls.reconnect_grace_secs = 1;
}

struct Pair {
    server: TestServer,
    alice: callgate::store::User,
    bob: callgate::store::User,
    a: TestClient,
    b: TestClient,
}

async fn pair_with(tweak: impl FnOnce(&mut Policy)) -> Pair {
    let server = TestServer::spawn_with_policy(|_| {}, tweak).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let a = server.connect(&alice).await;
    let b = server.connect(&bob).await;
    Pair {
        server,
        alice,
        bob,
        a,
        b,
    }
}

async fn pair() -> Pair {
    pair_with(|_| {}).await
}

/// Alice calls Bob; returns the ack (the call record).
async fn ring(p: &mut Pair) -> Value {
    let ack =
        p.a.emit_ack("initiateVideoCall", json!({"receiverId": p.bob.id}))
            .await;
    assert!(ok(&ack), "{ack}");
    p.b.next("incomingVideoCall").await;
    ack
}

#[tokio::test]
async fn a_direct_call_rings_every_callee_socket_with_server_made_fields() {
    let mut p = pair().await;
    let mut b2 = p.server.connect(&p.bob).await;
    let ack = p
        .a
        .emit_ack(
            "initiateVideoCall",
            json!({"receiverId": p.bob.id, "callerName": "Somebody Else", "receiverName": "X", "isGroupCall": false, "timestamp": "2025-08-06T00:00:00Z"}),
        )
        .await;
    assert!(ok(&ack), "{ack}");
    let call_id = ack["callId"].as_str().expect("callId").to_string();
    assert!(callgate::domain::CallId::parse(&call_id).is_ok());
    assert!(ack["roomName"].as_str().expect("room").starts_with("call-"));
    for incoming in [
        p.b.next("incomingVideoCall").await,
        b2.next("incomingVideoCall").await,
    ] {
        assert_eq!(incoming["callId"], call_id.as_str());
        assert_eq!(incoming["callerId"], p.alice.id.as_str());
        assert_eq!(
            incoming["callerName"], "alice display",
            "the name comes from the directory"
        );
        assert_eq!(incoming["receiverId"], p.bob.id.as_str());
        assert_eq!(incoming["receiverName"], "bob display");
        assert_eq!(incoming["isGroupCall"], false);
        assert_ne!(incoming["timestamp"], "2025-08-06T00:00:00Z");
        assert!(incoming.get("socketId").is_none() && incoming.get("callerSocketId").is_none());
    }
    // The ack carried the record: no videoCallRinging repeats it.
    p.a.assert_silent("the caller, who asked for an ack").await;
}

#[tokio::test]
async fn a_call_that_ends_leaves_no_ring_timer_behind() {
    // Each ringing call holds a ring-timeout task; a call answered and hung
    // up in a second must not keep it (and its memory) for the ring time.
    let mut p = pair().await;
    for _ in 0..3 {
        let ack = ring(&mut p).await;
        let id = ack["callId"].as_str().expect("callId").to_string();
        assert_eq!(p.server.hub.pending_ring_timers(), 1);
        let accepted = p.b.emit_ack("acceptVideoCall", json!({"callId": id})).await;
        assert!(ok(&accepted), "{accepted}");
        let ended = p.a.emit_ack("endVideoCall", json!({"callId": id})).await;
        assert!(ok(&ended), "{ended}");
        assert_eq!(p.server.hub.pending_ring_timers(), 0);
        p.a.drain().await;
        p.b.drain().await;
    }
    // Cancelled while ringing, too.
    let ack = ring(&mut p).await;
    let cancelled =
        p.a.emit_ack("endVideoCall", json!({"callId": ack["callId"]}))
            .await;
    assert!(ok(&cancelled), "{cancelled}");
    assert_eq!(p.server.hub.pending_ring_timers(), 0);
    assert_eq!(p.server.registry_sizes(), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn a_ring_timeout_still_fires_and_delivers() {
    let mut p = pair_with(|pol| pol.calls.ring_timeout_secs = 1).await;
    let ack = ring(&mut p).await;
    let ended = p.a.next("videoCallEnded").await;
    assert_eq!(ended["reason"], "timeout");
    assert_eq!(ended["callId"], ack["callId"]);
    assert_eq!(p.b.next("videoCallMissed").await["callId"], ack["callId"]);
    assert_eq!(p.server.hub.pending_ring_timers(), 0);
}

#[tokio::test]
async fn a_caller_without_an_ack_learns_the_call_id_from_videocallringing() {
    // The seed's frontend emits initiateVideoCall without a callback.
    let mut p = pair().await;
    let mut a2 = p.server.connect(&p.alice).await;
    p.a.emit("initiateVideoCall", json!({"receiverId": p.bob.id}))
        .await;
    let incoming = p.b.next("incomingVideoCall").await;
    let ringing = p.a.next("videoCallRinging").await;
    assert_eq!(ringing["callId"], incoming["callId"]);
    assert_eq!(ringing["receiverId"], p.bob.id.as_str());
    // Only the initiating socket: the caller's other device is not told.
    a2.assert_silent("the caller's other socket").await;

    p.a.emit(
        "initiateGroupVideoCall",
        json!({"groupId": "000000000000000000000000"}),
    )
    .await;
    let failed = p.a.next("videoCallFailed").await;
    assert_eq!(failed["code"], "not_found");
    p.a.assert_silent("a caller whose initiate failed").await;
}

#[tokio::test]
async fn a_spoofed_caller_id_is_forbidden_and_rings_nobody() {
    let mut p = pair().await;
    let carol = p.server.seed_user("carol").await;
    let ack =
        p.a.emit_ack(
            "initiateVideoCall",
            json!({"receiverId": p.bob.id, "callerId": carol.id}),
        )
        .await;
    assert_eq!(code(&ack), "forbidden");
    let failed = p.a.next("videoCallFailed").await;
    assert_eq!(failed["code"], "forbidden");
    assert_eq!(failed["receiverId"], p.bob.id.as_str());
    p.b.assert_silent("bob").await;
}

#[tokio::test]
async fn initiate_refuses_self_unknown_offline_and_malformed_receivers() {
    let mut p = pair().await;
    let dave = p.server.seed_user("dave").await;
    let cases = [
        (json!({"receiverId": p.alice.id}), "bad_request"),
        (json!({"receiverId": "nobody"}), "not_found"),
        (json!({"receiverId": dave.id}), "offline"),
        (
            json!({"receiverId": p.bob.id, "roomName": "a b"}),
            "bad_request",
        ),
        (json!({"receiverId": {"$ne": null}}), "bad_request"),
        (json!({}), "bad_request"),
        (json!("bob"), "bad_request"),
        (
            json!({"receiverId": p.bob.id, "callerName": "x".repeat(10_000)}),
            "bad_request",
        ),
    ];
    for (payload, expected) in cases {
        let ack = p.a.emit_ack("initiateVideoCall", payload.clone()).await;
        assert_eq!(code(&ack), expected, "{payload}");
    }
    p.b.assert_silent("bob").await;
    assert_eq!(p.server.registry_sizes().0, 0);
}

#[tokio::test]
async fn shared_group_policy_refuses_strangers() {
    let mut p = pair_with(|pol| pol.calls.one_to_one = OneToOne::SharedGroup).await;
    let ack =
        p.a.emit_ack("initiateVideoCall", json!({"receiverId": p.bob.id}))
            .await;
    assert_eq!(code(&ack), "forbidden");
    p.server.seed_group("Team", &p.alice, &[&p.bob]).await;
    let ack =
        p.a.emit_ack("initiateVideoCall", json!({"receiverId": p.bob.id}))
            .await;
    assert!(ok(&ack), "{ack}");
    p.b.next("incomingVideoCall").await;
}

#[tokio::test]
async fn a_callee_in_an_active_call_is_busy_unless_policy_rings() {
    for (rule, expect_ok) in [(BusyRule::Reject, false), (BusyRule::Ring, true)] {
        let mut p = pair_with(|pol| pol.calls.busy = rule).await;
        let carol = p.server.seed_user("carol").await;
        let c = p.server.connect(&carol).await;
        let call = ring(&mut p).await;
        assert!(ok(&p
            .b
            .emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
            .await));
        let ack = c
            .emit_ack("initiateVideoCall", json!({"receiverId": p.bob.id}))
            .await;
        assert_eq!(ok(&ack), expect_ok, "{rule:?}: {ack}");
        if !expect_ok {
            assert_eq!(code(&ack), "busy");
        }
    }
}

#[tokio::test]
async fn a_redial_while_ringing_replaces_the_call_for_both_sides() {
    let mut p = pair().await;
    let first = ring(&mut p).await;
    let ack =
        p.a.emit_ack("initiateVideoCall", json!({"receiverId": p.bob.id}))
            .await;
    assert!(ok(&ack), "{ack}");
    assert_ne!(ack["callId"], first["callId"]);
    for ended in [
        p.a.next("videoCallEnded").await,
        p.b.next("videoCallEnded").await,
    ] {
        assert_eq!(ended["callId"], first["callId"]);
        assert_eq!(ended["reason"], "replaced");
    }
    assert_eq!(p.b.next("incomingVideoCall").await["callId"], ack["callId"]);
    assert_eq!(p.server.registry_sizes().0, 1);
}

#[tokio::test]
async fn a_callee_calling_back_answers_the_ringing_call() {
    let mut p = pair().await;
    let first = ring(&mut p).await;
    let ack =
        p.b.emit_ack("initiateVideoCall", json!({"receiverId": p.alice.id}))
            .await;
    assert!(ok(&ack), "{ack}");
    assert_eq!(ack["callId"], first["callId"]);
    assert_eq!(ack["crossed"], true);
    assert_eq!(ack["state"], "active");
    for accepted in [
        p.a.next("videoCallAccepted").await,
        p.b.next("videoCallAccepted").await,
    ] {
        assert_eq!(accepted["callId"], first["callId"]);
        assert_eq!(accepted["crossed"], true);
    }
    assert_eq!(p.server.registry_sizes().0, 1);
}

#[tokio::test]
async fn a_room_name_of_another_live_call_is_refused() {
    let p = pair().await;
    let carol = p.server.seed_user("carol").await;
    let dave = p.server.seed_user("dave").await;
    let c = p.server.connect(&carol).await;
    let mut d = p.server.connect(&dave).await;
    let ack =
        p.a.emit_ack(
            "initiateVideoCall",
            json!({"receiverId": p.bob.id, "roomName": "team-standup"}),
        )
        .await;
    assert!(ok(&ack));
    assert_eq!(ack["roomName"], "team-standup");
    let ack = c
        .emit_ack(
            "initiateVideoCall",
            json!({"receiverId": dave.id, "roomName": "team-standup"}),
        )
        .await;
    assert_eq!(code(&ack), "room_in_use");
    d.assert_silent("dave").await;
}

#[tokio::test]
async fn accept_is_for_the_callee_only_and_the_first_accept_wins() {
    let mut p = pair().await;
    let mallory = p.server.seed_user("mallory").await;
    let mut m = p.server.connect(&mallory).await;
    let mut b2 = p.server.connect(&p.bob).await;
    let call = ring(&mut p).await;
    b2.next("incomingVideoCall").await;
    let id = call["callId"].clone();

    assert_eq!(
        code(&m.emit_ack("acceptVideoCall", json!({"callId": id})).await),
        "not_found"
    );
    assert_eq!(
        code(
            &m.emit_ack("acceptVideoCall", json!({"roomName": call["roomName"]}))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        code(&p.a.emit_ack("acceptVideoCall", json!({"callId": id})).await),
        "forbidden"
    );

    let ack = p.b.emit_ack("acceptVideoCall", json!({"callId": id})).await;
    assert!(ok(&ack), "{ack}");
    assert_eq!(ack["state"], "active");
    let accepted = p.a.next("videoCallAccepted").await;
    assert_eq!(accepted["acceptedBy"], p.bob.id.as_str());
    assert_eq!(accepted["callId"], id);
    let elsewhere = b2.next("videoCallEnded").await;
    assert_eq!(elsewhere["reason"], "answered_elsewhere");
    assert_eq!(
        code(&b2.emit_ack("acceptVideoCall", json!({"callId": id})).await),
        "invalid_state"
    );
    let seen: Vec<String> = m.drain().await.into_iter().map(|(e, _)| e).collect();
    assert!(
        seen.iter().all(|e| e == "videoCallFailed"),
        "mallory saw only her own failures: {seen:?}"
    );
}

#[tokio::test]
async fn two_devices_accepting_at_once_yield_exactly_one_winner_200_times() {
    let mut p = pair().await;
    let mut b2 = p.server.connect(&p.bob).await;
    for round in 0..200 {
        let ack =
            p.a.emit_ack("initiateVideoCall", json!({"receiverId": p.bob.id}))
                .await;
        assert!(ok(&ack), "round {round}: {ack}");
        let id = ack["callId"].clone();
        let (x, y) = tokio::join!(
            p.b.emit_ack("acceptVideoCall", json!({"callId": id})),
            b2.emit_ack("acceptVideoCall", json!({"callId": id}))
        );
        let winners = [&x, &y].iter().filter(|a| ok(a)).count();
        assert_eq!(winners, 1, "round {round}: {x} / {y}");
        let loser = if ok(&x) { &y } else { &x };
        assert_eq!(code(loser), "invalid_state");
        assert!(ok(&p
            .a
            .emit_ack("endVideoCall", json!({"callId": id}))
            .await));
    }
    p.b.drain().await;
    b2.drain().await;
    assert_eq!(p.server.registry_sizes(), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn reject_tells_the_caller_and_stops_the_other_devices() {
    let mut p = pair().await;
    let mut b2 = p.server.connect(&p.bob).await;
    let call = ring(&mut p).await;
    b2.next("incomingVideoCall").await;
    assert_eq!(
        code(
            &p.a.emit_ack("rejectVideoCall", json!({"callId": call["callId"]}))
                .await
        ),
        "forbidden"
    );
    assert!(ok(&p
        .b
        .emit_ack("rejectVideoCall", json!({"callId": call["callId"]}))
        .await));
    let rejected = p.a.next("videoCallRejected").await;
    assert_eq!(rejected["reason"], "declined");
    assert_eq!(
        b2.next("videoCallEnded").await["reason"],
        "rejected_elsewhere"
    );
    assert_eq!(
        code(
            &p.b.emit_ack("rejectVideoCall", json!({"callId": call["callId"]}))
                .await
        ),
        "not_found"
    );
    assert_eq!(p.server.registry_sizes().0, 0);
}

#[tokio::test]
async fn reject_after_accept_is_an_invalid_state() {
    let mut p = pair().await;
    let call = ring(&mut p).await;
    assert!(ok(&p
        .b
        .emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
        .await));
    assert_eq!(
        code(
            &p.b.emit_ack("rejectVideoCall", json!({"callId": call["callId"]}))
                .await
        ),
        "invalid_state"
    );
}

#[tokio::test]
async fn the_caller_cancels_a_ringing_call() {
    let mut p = pair().await;
    let call = ring(&mut p).await;
    assert!(ok(&p
        .a
        .emit_ack("endVideoCall", json!({"callId": call["callId"]}))
        .await));
    let ended = p.b.next("videoCallEnded").await;
    assert_eq!(ended["reason"], "cancelled");
    assert_eq!(ended["callId"], call["callId"]);
}

#[tokio::test]
async fn hanging_up_an_active_call_tells_every_socket_of_both() {
    let mut p = pair().await;
    let mut b2 = p.server.connect(&p.bob).await;
    let call = ring(&mut p).await;
    assert!(ok(&p
        .b
        .emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
        .await));
    p.a.next("videoCallAccepted").await;
    b2.next("videoCallEnded").await; // answered elsewhere
    assert!(ok(&p
        .a
        .emit_ack("endVideoCall", json!({"callId": call["callId"]}))
        .await));
    for c in [&mut p.a, &mut p.b, &mut b2] {
        let ended = c.next("videoCallEnded").await;
        assert_eq!(ended["reason"], "hangup");
        assert_eq!(ended["endedBy"], p.alice.id.as_str());
    }
}

#[tokio::test]
async fn outsiders_cannot_end_a_call_even_knowing_its_ids() {
    let mut p = pair().await;
    let mallory = p.server.seed_user("mallory").await;
    let mut m = p.server.connect(&mallory).await;
    let call = ring(&mut p).await;
    for payload in [
        json!({"callId": call["callId"]}),
        json!({"roomName": call["roomName"]}),
        json!({"callId": call["callId"], "callerId": p.alice.id, "receiverId": p.bob.id}),
        json!({}),
    ] {
        assert_eq!(
            code(&m.emit_ack("endVideoCall", payload.clone()).await),
            "not_found",
            "{payload}"
        );
        assert_eq!(
            code(&m.emit_ack("rejectVideoCall", payload.clone()).await),
            "not_found",
            "{payload}"
        );
    }
    p.a.assert_silent("alice").await;
    p.b.assert_silent("bob").await;
    m.drain().await;
    assert_eq!(p.server.registry_sizes().0, 1);
}

#[tokio::test]
async fn seed_payloads_without_call_id_match_by_room_or_by_the_only_call() {
    let mut p = pair().await;
    let room = format!("call-{}", uuid::Uuid::new_v4());
    let ack = p
        .a
        .emit_ack(
            "initiateVideoCall",
            json!({"roomName": room, "callerId": p.alice.id, "callerName": "Alice", "receiverId": p.bob.id, "receiverName": "Bob", "isGroupCall": false, "timestamp": "2025-08-06T10:00:00.000Z"}),
        )
        .await;
    assert!(ok(&ack), "{ack}");
    let incoming = p.b.next("incomingVideoCall").await;
    // The seed callee echoes the whole payload back.
    assert!(ok(&p.b.emit_ack("acceptVideoCall", incoming).await));
    p.a.next("videoCallAccepted").await;
    // The seed caller ends with roomName, callerId, receiverId: no callId.
    let ack = p
        .a
        .emit_ack("endVideoCall", json!({"roomName": room, "callerId": p.alice.id, "receiverId": p.bob.id, "isGroupCall": false}))
        .await;
    assert!(ok(&ack), "{ack}");
    assert_eq!(p.b.next("videoCallEnded").await["reason"], "hangup");

    ring(&mut p).await;
    assert!(
        ok(&p.a.emit_ack("endVideoCall", json!({})).await),
        "the only live call"
    );
    assert_eq!(p.b.next("videoCallEnded").await["reason"], "cancelled");
}

#[tokio::test]
async fn an_unanswered_call_times_out_for_both_and_is_missed_by_the_callee() {
    let mut p = pair_with(short_timers).await;
    let call = ring(&mut p).await;
    let ended = p.a.next("videoCallEnded").await;
    assert_eq!(ended["reason"], "timeout");
    assert_eq!(p.b.next("videoCallEnded").await["reason"], "timeout");
    assert_eq!(p.b.next("videoCallMissed").await["callId"], call["callId"]);
    assert_eq!(p.server.registry_sizes(), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn a_caller_who_vanishes_while_ringing_cancels_after_the_grace() {
    let mut p = pair_with(|pol| {
        short_timers(pol);
        pol.calls.ring_timeout_secs = 30;
    })
    .await;
    ring(&mut p).await;
    let Pair {
        a, mut b, server, ..
    } = p;
    a.disconnect().await;
    assert_eq!(
        b.next("videoCallEnded").await["reason"],
        "caller_disconnected"
    );
    assert_eq!(server.registry_sizes().0, 0);
}

#[tokio::test]
async fn a_callee_who_vanishes_while_ringing_is_unavailable_after_the_grace() {
    let mut p = pair_with(|pol| {
        short_timers(pol);
        pol.calls.ring_timeout_secs = 30;
    })
    .await;
    ring(&mut p).await;
    let Pair {
        mut a, b, server, ..
    } = p;
    b.disconnect().await;
    assert_eq!(a.next("videoCallEnded").await["reason"], "unavailable");
    assert_eq!(server.registry_sizes().0, 0);
}

#[tokio::test]
async fn a_participant_who_does_not_come_back_disconnects_the_call() {
    let mut p = pair_with(short_timers).await;
    let call = ring(&mut p).await;
    assert!(ok(&p
        .b
        .emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
        .await));
    p.a.next("videoCallAccepted").await;
    let Pair {
        mut a, b, server, ..
    } = p;
    b.disconnect().await;
    assert_eq!(a.next("videoCallEnded").await["reason"], "disconnected");
    assert_eq!(server.registry_sizes().0, 0);
}

#[tokio::test]
async fn a_participant_who_reconnects_in_time_keeps_the_call_and_recovers_it() {
    let mut p = pair_with(|pol| {
        pol.calls.ring_timeout_secs = 30;
        pol.calls.reconnect_grace_secs = 2;
    })
    .await;
    let call = ring(&mut p).await;
    assert!(ok(&p
        .b
        .emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
        .await));
    p.a.next("videoCallAccepted").await;
    let Pair {
        mut a,
        b,
        server,
        bob,
        ..
    } = p;
    b.disconnect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = server.connect(&bob).await;
    let active = b.next("activeVideoCalls").await;
    assert_eq!(active[0]["callId"], call["callId"]);
    assert_eq!(active[0]["state"], "active");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.assert_silent("alice").await;
    assert_eq!(server.registry_sizes().0, 1, "the call goes on");
}

#[tokio::test]
async fn ended_calls_are_forgotten_after_10_000_calls() {
    let p = pair().await;
    for i in 0..10_000 {
        let ack =
            p.a.emit_ack("initiateVideoCall", json!({"receiverId": p.bob.id}))
                .await;
        assert!(ok(&ack), "call {i}: {ack}");
        let id = json!({"callId": ack["callId"]});
        let end = match i % 3 {
            0 => p.a.emit_ack("endVideoCall", id).await,
            1 => p.b.emit_ack("rejectVideoCall", id).await,
            _ => {
                assert!(ok(&p.b.emit_ack("acceptVideoCall", id.clone()).await));
                p.b.emit_ack("endVideoCall", id).await
            }
        };
        assert!(ok(&end), "call {i}: {end}");
    }
    assert_eq!(p.server.registry_sizes(), (0, 0, 0, 0, 0));
}

// ---- Group calls ----

struct Team {
    server: TestServer,
    alice: callgate::store::User,
    bob: callgate::store::User,
    carol: callgate::store::User,
    group: callgate::store::Group,
    a: TestClient,
    b: TestClient,
    c: TestClient,
    m: TestClient,
}

async fn team_with(tweak: impl FnOnce(&mut Policy)) -> Team {
    let server = TestServer::spawn_with_policy(|_| {}, tweak).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let mallory = server.seed_user("mallory").await;
    let group = server.seed_group("Team", &alice, &[&bob, &carol]).await;
    let a = server.connect(&alice).await;
    let b = server.connect(&bob).await;
    let c = server.connect(&carol).await;
    let m = server.connect(&mallory).await;
    Team {
        server,
        alice,
        bob,
        carol,
        group,
        a,
        b,
        c,
        m,
    }
}

async fn group_ring(t: &mut Team) -> Value {
    let ack =
        t.a.emit_ack("initiateGroupVideoCall", json!({"groupId": t.group.id}))
            .await;
    assert!(ok(&ack), "{ack}");
    for c in [&mut t.b, &mut t.c] {
        let incoming = c.next("incomingVideoCall").await;
        assert_eq!(incoming["isGroupCall"], true);
        assert_eq!(incoming["groupId"], t.group.id.as_str());
        assert_eq!(incoming["groupName"], "Team");
        assert_eq!(incoming["callerId"], t.alice.id.as_str());
    }
    ack
}

#[tokio::test]
async fn a_group_call_rings_the_members_but_not_outsiders_or_the_callers_other_devices() {
    let mut t = team_with(|_| {}).await;
    let mut a2 = t.server.connect(&t.alice).await;
    group_ring(&mut t).await;
    a2.assert_silent("alice's other device").await;
    t.m.assert_silent("mallory").await;
}

#[tokio::test]
async fn outsiders_cannot_start_a_group_call() {
    let mut t = team_with(|_| {}).await;
    let ack =
        t.m.emit_ack("initiateGroupVideoCall", json!({"groupId": t.group.id}))
            .await;
    assert_eq!(code(&ack), "not_found");
    let ack =
        t.m.emit_ack("initiateGroupVideoCall", json!({"groupId": "doesnotexist"}))
            .await;
    assert_eq!(code(&ack), "not_found");
    t.b.assert_silent("bob").await;
    t.c.assert_silent("carol").await;
}

#[tokio::test]
async fn a_second_initiate_returns_the_live_call_and_rings_nobody() {
    let mut t = team_with(|_| {}).await;
    let first = group_ring(&mut t).await;
    let again =
        t.b.emit_ack("initiateGroupVideoCall", json!({"groupId": t.group.id}))
            .await;
    assert!(ok(&again));
    assert_eq!(again["alreadyActive"], true);
    assert_eq!(again["callId"], first["callId"]);
    t.a.assert_silent("alice").await;
    t.c.assert_silent("carol").await;
}

#[tokio::test]
async fn group_invitees_above_the_policy_cap_are_forbidden() {
    let mut t = team_with(|p| p.calls.max_group_invitees = 1).await;
    let ack =
        t.a.emit_ack("initiateGroupVideoCall", json!({"groupId": t.group.id}))
            .await;
    assert_eq!(code(&ack), "forbidden");
    t.b.assert_silent("bob").await;
}

#[tokio::test]
async fn joining_a_group_call_tells_the_caller_and_the_participants() {
    let mut t = team_with(|_| {}).await;
    let call = group_ring(&mut t).await;
    let id = json!({"callId": call["callId"]});
    assert!(ok(&t.b.emit_ack("acceptVideoCall", id.clone()).await));
    assert_eq!(
        t.a.next("videoCallAccepted").await["acceptedBy"],
        t.bob.id.as_str()
    );
    assert_eq!(
        t.a.next("groupCallParticipantJoined").await["userId"],
        t.bob.id.as_str()
    );
    let ack = t.c.emit_ack("acceptVideoCall", id.clone()).await;
    assert!(ok(&ack));
    assert_eq!(ack["participants"].as_array().map(Vec::len), Some(3));
    for c in [&mut t.a, &mut t.b] {
        let joined = c.next("groupCallParticipantJoined").await;
        assert_eq!(joined["userId"], t.carol.id.as_str());
        assert_eq!(joined["userName"], "carol display");
    }
    t.a.drain().await;
    assert!(
        !t.a.drain()
            .await
            .iter()
            .any(|(e, _)| e == "videoCallAccepted"),
        "only the first accept sends videoCallAccepted"
    );
    assert_eq!(
        code(&t.m.emit_ack("acceptVideoCall", id).await),
        "not_found"
    );
}

#[tokio::test]
async fn declines_reach_the_caller_and_all_declined_rejects_the_call() {
    let mut t = team_with(|_| {}).await;
    let call = group_ring(&mut t).await;
    let id = json!({"callId": call["callId"]});
    assert!(ok(&t.b.emit_ack("rejectVideoCall", id.clone()).await));
    assert_eq!(
        t.a.next("groupCallParticipantDeclined").await["userId"],
        t.bob.id.as_str()
    );
    t.a.assert_silent("alice (one decline is not a rejection)")
        .await;
    assert!(ok(&t.c.emit_ack("rejectVideoCall", id).await));
    assert_eq!(t.a.next("videoCallRejected").await["reason"], "declined");
    assert_eq!(t.server.registry_sizes(), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn leaving_a_group_call_and_ending_it_for_all() {
    let mut t = team_with(|_| {}).await;
    let call = group_ring(&mut t).await;
    let id = json!({"callId": call["callId"]});
    assert!(ok(&t.b.emit_ack("acceptVideoCall", id.clone()).await));
    assert!(ok(&t.c.emit_ack("acceptVideoCall", id.clone()).await));
    t.a.drain().await;
    t.b.drain().await;
    assert!(
        ok(&t.c.emit_ack("endVideoCall", id.clone()).await),
        "carol leaves"
    );
    for c in [&mut t.a, &mut t.b] {
        assert_eq!(
            c.next("groupCallParticipantLeft").await["userId"],
            t.carol.id.as_str()
        );
    }
    let ack =
        t.b.emit_ack(
            "endVideoCall",
            json!({"callId": call["callId"], "endForAll": true}),
        )
        .await;
    assert_eq!(code(&ack), "forbidden", "only the caller ends it for all");
    assert!(ok(&t
        .a
        .emit_ack(
            "endVideoCall",
            json!({"callId": call["callId"], "endForAll": true})
        )
        .await));
    assert_eq!(t.b.next("videoCallEnded").await["reason"], "ended");
    assert_eq!(t.server.registry_sizes(), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn a_group_call_ends_when_the_last_participant_leaves() {
    let mut t = team_with(|_| {}).await;
    let call = group_ring(&mut t).await;
    let id = json!({"callId": call["callId"]});
    assert!(ok(&t.b.emit_ack("acceptVideoCall", id.clone()).await));
    assert!(
        ok(&t.a.emit_ack("endVideoCall", id.clone()).await),
        "the caller leaves, bob stays"
    );
    assert_eq!(
        t.b.next("groupCallParticipantLeft").await["userId"],
        t.alice.id.as_str()
    );
    assert_eq!(t.server.registry_sizes().0, 1);
    assert!(ok(&t.b.emit_ack("endVideoCall", id).await));
    assert_eq!(
        t.c.next("videoCallEnded").await["reason"],
        "ended",
        "carol was still ringing"
    );
    assert_eq!(t.server.registry_sizes(), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn the_initiator_leaving_before_anyone_joined_ends_the_group_call() {
    let mut t = team_with(|_| {}).await;
    let call = group_ring(&mut t).await;
    assert!(ok(&t
        .a
        .emit_ack("endVideoCall", json!({"callId": call["callId"]}))
        .await));
    for c in [&mut t.b, &mut t.c] {
        assert_eq!(c.next("videoCallEnded").await["reason"], "ended");
    }
}

#[tokio::test]
async fn unanswered_group_invitees_time_out_and_the_call_goes_on() {
    let mut t = team_with(short_timers).await;
    let call = group_ring(&mut t).await;
    assert!(ok(&t
        .b
        .emit_ack("acceptVideoCall", json!({"callId": call["callId"]}))
        .await));
    assert_eq!(t.c.next("videoCallEnded").await["reason"], "timeout");
    t.b.drain().await;
    assert_eq!(
        t.server.registry_sizes().0,
        1,
        "alice and bob are still in the call"
    );
}

#[tokio::test]
async fn an_unanswered_group_call_ends_at_the_timeout() {
    let mut t = team_with(short_timers).await;
    group_ring(&mut t).await;
    for c in [&mut t.a, &mut t.b, &mut t.c] {
        assert_eq!(c.next("videoCallEnded").await["reason"], "timeout");
    }
    assert_eq!(t.server.registry_sizes(), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn a_group_participant_who_does_not_come_back_leaves_the_call() {
    let mut t = team_with(short_timers).await;
    let call = group_ring(&mut t).await;
    let id = json!({"callId": call["callId"]});
    assert!(ok(&t.b.emit_ack("acceptVideoCall", id.clone()).await));
    assert!(ok(&t.c.emit_ack("acceptVideoCall", id).await));
    t.a.drain().await;
    t.b.drain().await;
    let Team {
        mut a,
        mut b,
        c,
        carol,
        server,
        ..
    } = t;
    c.disconnect().await;
    for s in [&mut a, &mut b] {
        assert_eq!(
            s.next("groupCallParticipantLeft").await["userId"],
            carol.id.as_str()
        );
    }
    assert_eq!(server.registry_sizes().0, 1, "the others go on");
}

#[tokio::test]
async fn a_group_caller_who_vanishes_while_ringing_cancels_the_call() {
    let mut t = team_with(|p| {
        short_timers(p);
        p.calls.ring_timeout_secs = 30;
    })
    .await;
    group_ring(&mut t).await;
    let Team {
        a,
        mut b,
        mut c,
        server,
        ..
    } = t;
    a.disconnect().await;
    for s in [&mut b, &mut c] {
        assert_eq!(
            s.next("videoCallEnded").await["reason"],
            "caller_disconnected"
        );
    }
    assert_eq!(server.registry_sizes(), (0, 0, 0, 0, 0));
}
