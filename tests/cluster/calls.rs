//! Calls across nodes: ring, accept, reject, end; devices on several nodes;
//! the accept race.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_call_across_nodes_rings_is_accepted_and_ends() {
    let cluster = Cluster::start(2, PolicyFile::default()).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    assert_eq!(
        (alice.node.as_str(), bob.node.as_str()),
        ("node-a", "node-b")
    );

    // Ring: Bob, on the other node, is online and rung with the server's record.
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    let call_id = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(ack["state"], "ringing");
    let incoming = bob.next("incomingVideoCall").await;
    assert_eq!(incoming["callId"], call_id.as_str());
    assert_eq!(incoming["callerId"], ALICE.id);
    assert_eq!(incoming["callerName"], ALICE.name);
    assert_eq!(incoming["receiverId"], BOB.id);

    // Accept, on node b: the caller on node a learns it.
    let ack = bob
        .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
        .await;
    assert_eq!(ok(&ack)["state"], "active");
    let accepted = alice.next("videoCallAccepted").await;
    assert_eq!(accepted["callId"], call_id.as_str());
    assert_eq!(accepted["acceptedBy"], BOB.id);
    assert_eq!(accepted["state"], "active");

    // End, from node a: Bob's socket on node b gets the hang-up.
    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": call_id }))
        .await);
    let ended = bob.next("videoCallEnded").await;
    assert_eq!(ended["callId"], call_id.as_str());
    assert_eq!(ended["reason"], "hangup");
    assert_eq!(ended["endedBy"], ALICE.id);
    let ended = alice.next("videoCallEnded").await;
    assert_eq!(ended["reason"], "hangup");

    // The call is gone for the whole cluster: ending it again from node b is not_found.
    failed(
        &bob.emit_ack("endVideoCall", json!({ "callId": call_id }))
            .await,
        "not_found",
    );

    // Reject: a second call, declined on node b.
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    let second = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_ne!(second, call_id);
    assert_eq!(
        bob.next("incomingVideoCall").await["callId"],
        second.as_str()
    );
    ok(&bob
        .emit_ack("rejectVideoCall", json!({ "callId": second }))
        .await);
    let rejected = alice.next("videoCallRejected").await;
    assert_eq!(rejected["callId"], second.as_str());
    assert_eq!(rejected["reason"], "declined");

    // Presence is cluster-wide: Carol connected nowhere is offline; once on
    // node b she can be rung from node a.
    failed(
        &alice
            .emit_ack("initiateVideoCall", json!({ "receiverId": CAROL.id }))
            .await,
        "offline",
    );
    let mut carol = cluster.connect(1, &CAROL).await;
    assert_eq!(carol.node, "node-b");
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": CAROL.id }))
        .await;
    let third = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        carol.next("incomingVideoCall").await["callId"],
        third.as_str()
    );
    // Cancel by the caller reaches node b too.
    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": third }))
        .await);
    let ended = carol.next("videoCallEnded").await;
    assert_eq!(ended["reason"], "cancelled");
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_devices_on_three_nodes_ring_and_the_other_gets_answered_elsewhere() {
    let cluster = Cluster::start(3, PolicyFile::default()).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut phone = cluster.connect(1, &BOB).await;
    let mut laptop = cluster.connect(2, &BOB).await;
    assert_eq!(
        (
            alice.node.as_str(),
            phone.node.as_str(),
            laptop.node.as_str()
        ),
        ("node-a", "node-b", "node-c")
    );

    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    let call_id = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        phone.next("incomingVideoCall").await["callId"],
        call_id.as_str()
    );
    assert_eq!(
        laptop.next("incomingVideoCall").await["callId"],
        call_id.as_str()
    );

    ok(&phone
        .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
        .await);
    let elsewhere = laptop.next("videoCallEnded").await;
    assert_eq!(elsewhere["callId"], call_id.as_str());
    assert_eq!(elsewhere["reason"], "answered_elsewhere");
    assert_eq!(alice.next("videoCallAccepted").await["acceptedBy"], BOB.id);
    // The phone that answered is not told it answered elsewhere.
    phone.assert_no("videoCallEnded").await;

    // The laptop, on a third node, cannot accept it again.
    failed(
        &laptop
            .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
            .await,
        "invalid_state",
    );
    // A hang-up from the laptop (Bob is a party) ends it for every device.
    ok(&laptop
        .emit_ack("endVideoCall", json!({ "callId": call_id }))
        .await);
    assert_eq!(alice.next("videoCallEnded").await["reason"], "hangup");
    assert_eq!(phone.next("videoCallEnded").await["reason"], "hangup");
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_an_accept_race_across_nodes_has_exactly_one_winner_every_time() {
    const ROUNDS: usize = 25;
    let cluster = Cluster::start(3, PolicyFile::default()).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut one = cluster.connect(1, &BOB).await;
    let mut two = cluster.connect(2, &BOB).await;
    assert_eq!(
        (alice.node.as_str(), one.node.as_str(), two.node.as_str()),
        ("node-a", "node-b", "node-c")
    );

    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let ack = alice
            .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
            .await;
        let call_id = ok(&ack)["callId"].as_str().expect("callId").to_string();
        assert_eq!(
            one.next("incomingVideoCall").await["callId"],
            call_id.as_str()
        );
        assert_eq!(
            two.next("incomingVideoCall").await["callId"],
            call_id.as_str()
        );

        // Both devices accept at the same moment, on two different nodes.
        let payload = json!({ "callId": call_id });
        let (a, b) = tokio::join!(
            one.emit_ack("acceptVideoCall", payload.clone()),
            two.emit_ack("acceptVideoCall", payload.clone())
        );
        let winners = [a["ok"] == true, b["ok"] == true];
        assert_eq!(
            winners.iter().filter(|w| **w).count(),
            1,
            "round {round}: exactly one accept must win: {a} / {b}"
        );
        let (loser_ack, loser) = if winners[0] {
            (&b, &mut two)
        } else {
            (&a, &mut one)
        };
        wins[usize::from(!winners[0])] += 1;
        assert_eq!(
            loser_ack["error"]["code"], "invalid_state",
            "round {round}: the losing accept: {loser_ack}"
        );
        // The losing device is told its user answered elsewhere.
        let ended = loser.next("videoCallEnded").await;
        assert_eq!(ended["callId"], call_id.as_str(), "round {round}");
        assert_eq!(ended["reason"], "answered_elsewhere", "round {round}");
        // The caller hears of exactly one accept.
        assert_eq!(
            alice.next("videoCallAccepted").await["callId"],
            call_id.as_str()
        );

        ok(&alice
            .emit_ack("endVideoCall", json!({ "callId": call_id }))
            .await);
        for c in [&mut alice, &mut one, &mut two] {
            let ended = c.next("videoCallEnded").await;
            assert_eq!(ended["callId"], call_id.as_str(), "round {round}");
            assert_eq!(ended["reason"], "hangup", "round {round}");
        }
        // A second videoCallAccepted for this call would be read, and fail,
        // at the next round's `next` (it checks the call id).
    }
    let late = alice.drain().await;
    assert!(
        late.iter().all(|(n, _)| n != "videoCallAccepted"),
        "a second videoCallAccepted: {late:?}"
    );
    eprintln!(
        "accept race: node-b won {} times, node-c {}",
        wins[0], wins[1]
    );
}
