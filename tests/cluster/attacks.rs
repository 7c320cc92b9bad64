//! Attacks across nodes: forged controls from a socket on another node,
//! eavesdropping on a group room whose members are elsewhere.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_forged_accept_reject_and_end_from_another_node_are_refused() {
    let cluster = Cluster::start(3, PolicyFile::default()).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    let mut mallory = cluster.connect(2, &MALLORY).await;
    assert_eq!(
        (
            alice.node.as_str(),
            bob.node.as_str(),
            mallory.node.as_str()
        ),
        ("node-a", "node-b", "node-c")
    );
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    let call_id = ok(&ack)["callId"].as_str().expect("callId").to_string();
    let room = ack["roomName"].as_str().expect("roomName").to_string();
    assert_eq!(
        bob.next("incomingVideoCall").await["callId"],
        call_id.as_str()
    );

    // Mallory on node c knows the call id and the room (say, leaked): every
    // control, by id or by room, with spoofed ids, looks like no call at all.
    for event in ["acceptVideoCall", "rejectVideoCall", "endVideoCall"] {
        for payload in [
            json!({ "callId": call_id }),
            json!({ "roomName": room }),
            json!({ "callId": call_id, "callerId": ALICE.id, "receiverId": BOB.id }),
            json!({ "callId": call_id, "endForAll": true }),
        ] {
            failed(&mallory.emit_ack(event, payload.clone()).await, "not_found");
        }
    }
    // Spoofing the caller id on an initiate from node c.
    failed(
        &mallory
            .emit_ack(
                "initiateVideoCall",
                json!({ "receiverId": BOB.id, "callerId": ALICE.id }),
            )
            .await,
        "forbidden",
    );
    // The caller (node a) cannot accept her own call on Bob's behalf.
    failed(
        &alice
            .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
            .await,
        "forbidden",
    );
    // Nothing reached the parties; the call still rings and Bob can take it.
    alice.assert_no("videoCallAccepted").await;
    alice.assert_no("videoCallRejected").await;
    bob.assert_no("videoCallEnded").await;
    ok(&bob
        .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
        .await);
    assert_eq!(alice.next("videoCallAccepted").await["acceptedBy"], BOB.id);
    // Active now: Mallory still cannot end it.
    failed(
        &mallory
            .emit_ack(
                "endVideoCall",
                json!({ "callId": call_id, "endForAll": true }),
            )
            .await,
        "not_found",
    );
    bob.assert_no("videoCallEnded").await;
    // All Mallory ever got back is her own failures.
    let got = mallory.drain().await;
    assert!(
        got.iter().all(|(n, _)| n == "videoCallFailed"),
        "mallory received {got:?}"
    );
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_non_member_on_another_node_cannot_join_or_hear_a_group_room() {
    let cluster = Cluster::start(3, PolicyFile::default()).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    let mut carol = cluster.connect(2, &CAROL).await;
    let mut mallory = cluster.connect(2, &MALLORY).await;
    assert_eq!(
        (
            alice.node.as_str(),
            bob.node.as_str(),
            carol.node.as_str(),
            mallory.node.as_str()
        ),
        ("node-a", "node-b", "node-c", "node-c")
    );

    // Mallory tries every way into the group's room from node c.
    for event in ["joinGroup", "groupCreated"] {
        let ack = mallory
            .emit_ack(event, json!({ "groupId": TEAM, "memberIds": [MALLORY.id] }))
            .await;
        failed(&ack, "not_found");
    }
    failed(
        &mallory.emit_ack("joinGroup", json!(TEAM)).await,
        "not_found",
    );
    failed(
        &mallory
            .emit_ack("initiateGroupVideoCall", json!({ "groupId": TEAM }))
            .await,
        "not_found",
    );

    // A group call from node a rings the members on nodes b and c, Carol on
    // Mallory's own node included, and not Mallory.
    let ack = alice
        .emit_ack("initiateGroupVideoCall", json!({ "groupId": TEAM }))
        .await;
    let call_id = ok(&ack)["callId"].as_str().expect("callId").to_string();
    for member in [&mut bob, &mut carol] {
        let incoming = member.next("incomingVideoCall").await;
        assert_eq!(incoming["callId"], call_id.as_str());
        assert_eq!(incoming["isGroupCall"], true);
    }
    ok(&bob
        .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
        .await);
    assert_eq!(alice.next("videoCallAccepted").await["acceptedBy"], BOB.id);
    assert_eq!(
        alice.next("groupCallParticipantJoined").await["userId"],
        BOB.id
    );
    // Mallory, on the node where the group has a member, heard nothing of it,
    // and cannot join the call by id.
    failed(
        &mallory
            .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
            .await,
        "not_found",
    );
    let got = mallory.drain().await;
    assert!(
        got.iter()
            .all(|(n, v)| ["error", "videoCallFailed"].contains(&n.as_str())
                && v["code"] == "not_found"),
        "mallory received {got:?}"
    );
}
