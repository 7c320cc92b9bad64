//! Nodes dying (kill -9), nodes drained (SIGTERM), Redis restarting, a
//! node's link to Redis cut or slowed down.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// Alice on node `a` calls Bob on node `b`; Bob is rung. The call id.
async fn ring(alice: &Client, bob: &mut Client) -> String {
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    let call_id = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        bob.next("incomingVideoCall").await["callId"],
        call_id.as_str()
    );
    call_id
}

/// As [`ring`], then Bob accepts and Alice hears it.
async fn accepted_call(alice: &mut Client, bob: &mut Client) -> String {
    let call_id = ring(alice, bob).await;
    ok(&bob
        .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
        .await);
    assert_eq!(
        alice.next("videoCallAccepted").await["callId"],
        call_id.as_str()
    );
    call_id
}

fn find_call<'a>(calls: &'a Value, call_id: &str) -> Option<&'a Value> {
    calls.as_array()?.iter().find(|c| c["callId"] == call_id)
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_the_ring_timeout_fires_once_after_the_callers_node_was_killed() {
    // The ring timeout (2 s) comes before the ringing grace (30 s) would
    // cancel the call for the vanished caller: the timer, created by node a,
    // must fire on node b.
    let policy = PolicyFile {
        ring_timeout_secs: 2,
        ringing_grace_secs: 30,
        ..PolicyFile::default()
    };
    let mut cluster = Cluster::start(2, policy).await;
    let alice = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    assert_eq!(
        (alice.node.as_str(), bob.node.as_str()),
        ("node-a", "node-b")
    );
    let call_id = ring(&alice, &mut bob).await;
    let rung = Instant::now();

    cluster.kill(0);

    let ended = bob
        .next_within("videoCallEnded", Duration::from_secs(8))
        .await;
    assert_eq!(ended["callId"], call_id.as_str());
    assert_eq!(ended["reason"], "timeout", "{ended}");
    assert!(
        rung.elapsed() >= Duration::from_millis(1900),
        "the ring timeout fired early, after {:?}",
        rung.elapsed()
    );
    assert_eq!(
        bob.next("videoCallMissed").await["callId"],
        call_id.as_str()
    );
    // Exactly once, whichever node claimed it.
    bob.assert_no("videoCallEnded").await;
    failed(
        &bob.emit_ack("acceptVideoCall", json!({ "callId": call_id }))
            .await,
        "not_found",
    );
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_dead_nodes_sockets_are_accounted_for_and_its_calls_resume_elsewhere() {
    // Two sockets per user at most: Alice's two on node a hold both her
    // slots until the cluster frees them.
    let policy = PolicyFile {
        ring_timeout_secs: 60,
        ringing_grace_secs: 1,
        reconnect_grace_secs: 15,
        max_per_user: 2,
        ..PolicyFile::default()
    };
    let mut cluster = Cluster::start(3, policy).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let alice_tab = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    let mut carol = cluster.connect(2, &CAROL).await;
    assert_eq!(
        (
            alice.node.as_str(),
            alice_tab.node.as_str(),
            bob.node.as_str(),
            carol.node.as_str()
        ),
        ("node-a", "node-a", "node-b", "node-c")
    );
    // The cap holds across nodes before the death: a third socket anywhere is refused.
    assert_eq!(
        cluster.try_connect(2, &ALICE).await.err().as_deref(),
        Some("too_many_connections")
    );

    // An accepted call between Alice (node a) and Bob (node b).
    let call_id = accepted_call(&mut alice, &mut bob).await;

    cluster.kill(0);
    let killed = Instant::now();
    drop((alice, alice_tab));

    // Her slots are freed within the bound: two sockets on node c.
    let mut alice = cluster.connect_when_free(2, &ALICE, DEAD_NODE_BOUND).await;
    assert_eq!(alice.node, "node-c");
    let freed_after = killed.elapsed();

    // She gets her live call back on the new node and goes on with it.
    let active = alice.next("activeVideoCalls").await;
    let call = find_call(&active, &call_id).unwrap_or_else(|| panic!("{call_id} not in {active}"));
    assert_eq!(call["state"], "active");
    let tab = cluster.connect(2, &ALICE).await;
    assert_eq!(tab.node, "node-c");
    // Bob was never told the call ended.
    bob.assert_no("videoCallEnded").await;
    carol.assert_no("incomingVideoCall").await;

    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": call_id }))
        .await);
    let ended = bob.next("videoCallEnded").await;
    assert_eq!(ended["callId"], call_id.as_str());
    assert_eq!(ended["reason"], "hangup");
    eprintln!("dead node's slots freed after {freed_after:?}");
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_calls_of_a_dead_node_end_after_their_graces_when_nobody_comes_back() {
    // On node a: Alice, in an active call with Bob (node b), and Mallory,
    // ringing Carol (node c).
    let policy = PolicyFile {
        ring_timeout_secs: 60,
        ringing_grace_secs: 1,
        reconnect_grace_secs: 2,
        ..PolicyFile::default()
    };
    let mut cluster = Cluster::start(3, policy).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mallory = cluster.connect(0, &MALLORY).await;
    let mut bob = cluster.connect(1, &BOB).await;
    let mut carol = cluster.connect(2, &CAROL).await;
    assert_eq!(
        (
            alice.node.as_str(),
            mallory.node.as_str(),
            bob.node.as_str(),
            carol.node.as_str()
        ),
        ("node-a", "node-a", "node-b", "node-c")
    );
    let active = accepted_call(&mut alice, &mut bob).await;
    let ack = mallory
        .emit_ack("initiateVideoCall", json!({ "receiverId": CAROL.id }))
        .await;
    let ringing = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        carol.next("incomingVideoCall").await["callId"],
        ringing.as_str()
    );

    cluster.kill(0);
    let killed = Instant::now();

    // The ringing call whose caller vanished is cancelled for the callee:
    // within the dead-node bound plus the ringing grace.
    let ended = carol
        .next_within("videoCallEnded", DEAD_NODE_BOUND + Duration::from_secs(1))
        .await;
    assert_eq!(ended["callId"], ringing.as_str());
    assert_eq!(ended["reason"], "caller_disconnected");
    // The accepted call entered the reconnect grace (2 s), then ended for Bob.
    let ended = bob
        .next_within("videoCallEnded", DEAD_NODE_BOUND + Duration::from_secs(2))
        .await;
    assert_eq!(ended["callId"], active.as_str());
    assert_eq!(ended["reason"], "disconnected");
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "the reconnect grace was cut short: {:?}",
        killed.elapsed()
    );
    // Bob is free again: Carol can call him.
    let ack = carol
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    ok(&ack);
    bob.next("incomingVideoCall").await;
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_rolling_restart_keeps_accepted_and_ringing_calls() {
    let policy = PolicyFile {
        ring_timeout_secs: 60,
        ringing_grace_secs: 10,
        reconnect_grace_secs: 10,
        ..PolicyFile::default()
    };
    let mut cluster = Cluster::start(3, policy).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    let mallory = cluster.connect(2, &MALLORY).await;
    let mut carol = cluster.connect(0, &CAROL).await;
    assert_eq!(
        (
            alice.node.as_str(),
            bob.node.as_str(),
            mallory.node.as_str(),
            carol.node.as_str()
        ),
        ("node-a", "node-b", "node-c", "node-a")
    );
    // On node a: Alice in an accepted call with Bob, Carol rung by Mallory.
    let active = accepted_call(&mut alice, &mut bob).await;
    let ack = mallory
        .emit_ack("initiateVideoCall", json!({ "receiverId": CAROL.id }))
        .await;
    let ringing = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        carol.next("incomingVideoCall").await["callId"],
        ringing.as_str()
    );

    // Drain node a.
    cluster.terminate(0).await;
    let notice = alice.next("serverShutdown").await;
    assert_eq!(notice["code"], "server_shutdown");
    assert_eq!(
        carol.next("serverShutdown").await["code"],
        "server_shutdown"
    );

    // The load balancer sends them to node b and c.
    let mut alice = cluster.connect(1, &ALICE).await;
    let mut carol = cluster.connect(2, &CAROL).await;
    assert_eq!(
        (alice.node.as_str(), carol.node.as_str()),
        ("node-b", "node-c")
    );
    let calls = alice.next("activeVideoCalls").await;
    let call = find_call(&calls, &active).unwrap_or_else(|| panic!("{active} not in {calls}"));
    assert_eq!(call["state"], "active");
    // The ringing call is re-announced: in activeVideoCalls (ringing) or rung again.
    let calls = carol.next("activeVideoCalls").await;
    let call = find_call(&calls, &ringing).unwrap_or_else(|| panic!("{ringing} not in {calls}"));
    assert_eq!(call["state"], "ringing");
    // Nobody's call ended because of the restart.
    bob.assert_no("videoCallEnded").await;

    // Carol answers on node c; Mallory on node c hears it.
    ok(&carol
        .emit_ack("acceptVideoCall", json!({ "callId": ringing }))
        .await);
    let mut mallory = mallory;
    assert_eq!(
        mallory.next("videoCallAccepted").await["callId"],
        ringing.as_str()
    );

    // Node a comes back and takes sockets and calls again.
    cluster.restart(0).await;
    let mallory_again = cluster.connect(0, &MALLORY).await;
    assert_eq!(mallory_again.node, "node-a");
    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": active }))
        .await);
    let ended = bob.next("videoCallEnded").await;
    assert_eq!(ended["callId"], active.as_str());
    assert_eq!(ended["reason"], "hangup");
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_redis_restart_in_the_middle_of_traffic_is_survived() {
    // This test owns its Redis: it kills it and starts it again, empty.
    let mut redis = RedisServer::start();
    let mut cluster = Cluster::start_on(redis.url(), 2, PolicyFile::default()).await;
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    assert_eq!(
        (alice.node.as_str(), bob.node.as_str()),
        ("node-a", "node-b")
    );
    let call_id = accepted_call(&mut alice, &mut bob).await;
    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": call_id }))
        .await);
    bob.next("videoCallEnded").await;
    cluster.wait_ready(200, WAIT).await;

    redis.kill();

    // While Redis is down: call events answer `unavailable`, fast, and
    // /readyz is 503 on every node.
    // (Both at once, right away: a node that cannot renew its lease for
    // 1.5 s fences itself and closes its sockets.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ((a, a_took), (b, b_took)) = tokio::join!(
        alice.emit_ack_timed("initiateVideoCall", json!({ "receiverId": BOB.id })),
        bob.emit_ack_timed("initiateVideoCall", json!({ "receiverId": ALICE.id }))
    );
    failed(&a, "unavailable");
    failed(&b, "unavailable");
    assert!(
        a_took < Duration::from_secs(1),
        "unavailable took {a_took:?}"
    );
    assert!(
        b_took < Duration::from_secs(1),
        "unavailable took {b_took:?}"
    );
    cluster.wait_ready(503, Duration::from_secs(3)).await;
    for node in &cluster.nodes {
        let (status, body) = node.get("/readyz").await;
        assert_eq!(status, 503, "{}: {body}", node.id);
    }
    // Nothing was half-applied: nobody was rung.
    bob.assert_no("incomingVideoCall").await;

    // Nothing crashed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.assert_running();

    // Redis comes back, empty. The nodes heal by themselves.
    redis.restart();
    cluster.wait_ready(200, Duration::from_secs(15)).await;

    // Calls across the nodes work again (the adapter resubscribed: the ring
    // crosses from node a to node b). Clients connected after the heal; the
    // old sockets may have been closed by a node that lost its lease.
    let mut alice = cluster.connect(0, &ALICE).await;
    let mut bob = cluster.connect(1, &BOB).await;
    assert_eq!(
        (alice.node.as_str(), bob.node.as_str()),
        ("node-a", "node-b")
    );
    let mut rang = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ack = alice
            .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
            .await;
        if ack["ok"] == true {
            let call_id = ack["callId"].as_str().expect("callId").to_string();
            assert_eq!(
                bob.next("incomingVideoCall").await["callId"],
                call_id.as_str()
            );
            ok(&bob
                .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
                .await);
            assert_eq!(
                alice.next("videoCallAccepted").await["callId"],
                call_id.as_str()
            );
            rang = true;
            break;
        }
        // Only a node still rejoining may refuse, and only with `unavailable`.
        failed(&ack, "unavailable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        rang,
        "no call across the nodes within 10 s of Redis coming back"
    );
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_node_cut_off_from_redis_fences_itself_and_its_users_go_on_elsewhere() {
    // Node c reaches Redis through a link the test cuts; a and b do not.
    let policy = PolicyFile {
        ring_timeout_secs: 60,
        reconnect_grace_secs: 20,
        ..PolicyFile::default()
    };
    let shared = redis_url();
    let link = Link::to(&shared).await;
    let mut cluster = Cluster::start_with(shared, 3, policy, &[(2, link.url())]).await;
    let mut bob = cluster.connect(0, &BOB).await;
    let mut alice = cluster.connect(2, &ALICE).await;
    assert_eq!(
        (bob.node.as_str(), alice.node.as_str()),
        ("node-a", "node-c")
    );
    let call_id = accepted_call(&mut alice, &mut bob).await;

    link.cut();
    let cut = Instant::now();

    // Node c stops acting within its lease: its sockets are closed (so they
    // reconnect to a live node), or, while still open, get `unavailable`,
    // never a transition made on stale state.
    unavailable_until_fenced(
        &mut alice,
        &CAROL,
        Duration::from_secs(1),
        cut,
        "losing Redis",
    )
    .await;
    let (status, _) = cluster.node(2).get("/readyz").await;
    assert_eq!(status, 503, "a fenced node is not ready");

    // Alice comes back on node b: her call is still there, Bob was told nothing.
    let mut alice = cluster.connect_when_free(1, &ALICE, DEAD_NODE_BOUND).await;
    assert_eq!(alice.node, "node-b");
    let calls = alice.next("activeVideoCalls").await;
    let call = find_call(&calls, &call_id).unwrap_or_else(|| panic!("{call_id} not in {calls}"));
    assert_eq!(call["state"], "active");
    bob.assert_no("videoCallEnded").await;

    // The link comes back: node c registers again and serves calls.
    link.restore();
    cluster.wait_ready(200, Duration::from_secs(15)).await;
    let mut carol = cluster
        .connect_when_free(2, &CAROL, Duration::from_secs(10))
        .await;
    assert_eq!(carol.node, "node-c");
    let ack = bob
        .emit_ack("endVideoCall", json!({ "callId": call_id }))
        .await;
    ok(&ack);
    assert_eq!(alice.next("videoCallEnded").await["reason"], "hangup");
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": CAROL.id }))
        .await;
    let second = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        carol.next("incomingVideoCall").await["callId"],
        second.as_str()
    );
    cluster.assert_running();
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_node_with_a_slow_redis_answers_unavailable_fast_and_heals_when_it_speeds_up() {
    // Node b reaches Redis through a link the test slows down; node a does
    // not. Slowed, every round trip of node b takes 3 s more: ten times its
    // command timeout, with the connections up (nothing is refused or
    // reset: Redis is slow, not down).
    const SLOW: Duration = Duration::from_millis(1500);
    let fast_answer = Duration::from_millis(REDIS_TIMEOUT_MS + 500);
    let policy = PolicyFile {
        ring_timeout_secs: 60,
        ..PolicyFile::default()
    };
    let shared = redis_url();
    let link = Link::to(&shared).await;
    let mut cluster = Cluster::start_with(shared, 2, policy, &[(1, link.url())]).await;
    let mut bob = cluster.connect(0, &BOB).await;
    let mut alice = cluster.connect(1, &ALICE).await;
    assert_eq!(
        (bob.node.as_str(), alice.node.as_str()),
        ("node-a", "node-b")
    );
    cluster.wait_ready(200, WAIT).await;

    link.delay(SLOW);
    let slowed = Instant::now();

    // A call from the slow node answers `unavailable` within the command
    // timeout, not when Redis finally answers.
    let (ack, took) = alice
        .try_emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }), WAIT)
        .await
        .expect("initiateVideoCall on the slow node got no answer: a hang");
    failed(&ack, "unavailable");
    assert!(
        took < fast_answer,
        "unavailable took {took:?} (redis_timeout_ms = {REDIS_TIMEOUT_MS})"
    );
    let first_unavailable = took;

    // /readyz on the slow node is 503 as fast; the other node stays ready.
    let asked = Instant::now();
    let (status, body) = cluster.node(1).get("/readyz").await;
    let readyz_took = asked.elapsed();
    assert_eq!(status, 503, "node-b /readyz with a slow Redis: {body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(
        readyz_took < fast_answer,
        "/readyz took {readyz_took:?} with a slow Redis"
    );
    let (status, body) = cluster.node(0).get("/readyz").await;
    assert_eq!(status, 200, "node-a's Redis is fine: {body}");

    // Its lease renewals time out too: within its lease the slow node fences
    // itself and closes its sockets (so they reconnect to a node that
    // reaches Redis); until then every event answers `unavailable`, fast.
    let why = "its Redis slowed down";
    unavailable_until_fenced(&mut alice, &BOB, fast_answer, slowed, why).await;
    let fenced_after = slowed.elapsed();
    // Fenced and still slow: not ready, and a new socket is refused at once.
    let (status, body) = cluster.node(1).get("/readyz").await;
    assert_eq!(status, 503, "a fenced node is not ready: {body}");
    let asked = Instant::now();
    assert_eq!(
        cluster.try_connect(1, &ALICE).await.err().as_deref(),
        Some("unavailable"),
        "a handshake on the fenced node"
    );
    assert!(
        asked.elapsed() < fast_answer,
        "the refused handshake took {:?}",
        asked.elapsed()
    );
    // Nothing reached Bob from the refused attempts.
    bob.assert_silent().await;
    cluster.assert_running();

    // Redis speeds up again: node b heals by itself.
    link.delay(Duration::ZERO);
    let restored = Instant::now();
    cluster.wait_ready(200, Duration::from_secs(20)).await;
    let healed_after = restored.elapsed();

    // Nothing was half-applied: Alice has no live call, Bob was never rung,
    // and the same call goes through, ringing Bob exactly once.
    let mut alice = cluster.connect(1, &ALICE).await;
    assert_eq!(alice.node, "node-b");
    alice.assert_no("activeVideoCalls").await;
    bob.assert_silent().await;
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    let call_id = ok(&ack)["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        bob.next("incomingVideoCall").await["callId"],
        call_id.as_str()
    );
    ok(&bob
        .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
        .await);
    assert_eq!(
        alice.next("videoCallAccepted").await["callId"],
        call_id.as_str()
    );
    bob.assert_no("incomingVideoCall").await;
    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": call_id }))
        .await);
    let ended = bob.next("videoCallEnded").await;
    assert_eq!(ended["callId"], call_id.as_str());
    assert_eq!(ended["reason"], "hangup");
    cluster.assert_running();
    eprintln!(
        "slow Redis: unavailable after {first_unavailable:?}, /readyz 503 after {readyz_took:?}, \
         fenced after {fenced_after:?}, ready again {healed_after:?} after it sped up"
    );
}

/// How node b's commit of an initiateVideoCall gets no answer in time.
#[derive(Debug, Clone, Copy)]
enum NoAnswer {
    /// It reaches Redis this late: past the command timeout.
    Late(Duration),
    /// It reaches Redis, then the link is lost before the answer comes back.
    LinkLost,
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_commit_answered_too_late_never_applies_and_nobody_hears_of_it() {
    // Held 800 ms, past node b's 300 ms command timeout; its lease
    // (node_timeout_ms 1.5 s) outlasts the hold.
    a_commit_without_its_answer_is_undone(NoAnswer::Late(Duration::from_millis(800))).await;
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_commit_whose_answer_was_lost_with_the_link_is_undone_and_withdrawn() {
    // The undo goes over the connection node b makes again.
    a_commit_without_its_answer_is_undone(NoAnswer::LinkLost).await;
}

/// Two nodes under `policy`, node b behind a link to Redis; Bob on node a,
/// Alice on node b, one call from her set up and cancelled, so node b has
/// the commit script loaded (its next commit is one EVALSHA, known on the
/// link by the SHA1 returned here).
async fn commits_on_a_link(policy: PolicyFile) -> (Cluster, Link, String, Client, Client) {
    let shared = redis_url();
    let commit_sha = redis_cmd(
        &shared,
        &["SCRIPT", "LOAD", callgate::cluster::call_state::CAS],
    )
    .expect("script load");
    let link = Link::to(&shared).await;
    let cluster = Cluster::start_with(shared, 2, policy, &[(1, link.url())]).await;
    let mut bob = cluster.connect(0, &BOB).await;
    let alice = cluster.connect(1, &ALICE).await;
    assert_eq!(
        (bob.node.as_str(), alice.node.as_str()),
        ("node-a", "node-b")
    );
    cluster.wait_ready(200, WAIT).await;
    let warm = ring(&alice, &mut bob).await;
    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": warm }))
        .await);
    assert_eq!(bob.next("videoCallEnded").await["callId"], warm.as_str());
    (cluster, link, commit_sha, bob, alice)
}

/// Node b reaches Redis through a link that singles out its call-state
/// commits (EVALSHA of the commit script, known by its SHA1): one reaches
/// Redis and is applied, but node b gets no answer in time and answers
/// `unavailable`. Everything else goes at full speed, except what follows a
/// held commit on its connection. Nobody may ever hear of that call.
async fn a_commit_without_its_answer_is_undone(fault: NoAnswer) {
    const RING_TIMEOUT_SECS: u64 = 2;
    let policy = PolicyFile {
        ring_timeout_secs: RING_TIMEOUT_SECS,
        ..PolicyFile::default()
    };
    let (mut cluster, link, commit_sha, mut bob, mut alice) = commits_on_a_link(policy).await;

    match fault {
        NoAnswer::Late(by) => link.hold_matching(commit_sha.as_bytes(), by),
        NoAnswer::LinkLost => link.lose_after_matching(commit_sha.as_bytes()),
    }
    let (ack, took) = alice
        .emit_ack_timed("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    link.hold_nothing();
    let asked = Instant::now();
    failed(&ack, "unavailable");
    if let NoAnswer::Late(by) = fault {
        assert!(
            took < by,
            "unavailable after {took:?}: not before Redis ran the commit"
        );
    }

    // Node b settles the commit once Redis has it. A late commit: Redis runs
    // it past its deadline, so it refuses and never applies (the undo,
    // queued behind it on the same connection, finds nothing). A lost link:
    // it had applied, and node b undoes it once it has reconnected.
    let settled = match fault {
        NoAnswer::Late(_) => "had not applied: refused for good",
        NoAnswer::LinkLost => "had applied: undone",
    };
    eventually(
        Duration::from_secs(20),
        "node b settles the commit whose answer it lost",
        || {
            let done = cluster.node(1).logs().iter().any(|l| l.contains(settled));
            async move { done }
        },
    )
    .await;

    // Past the ring timeout the commit would have set (and a few timer
    // polls). A late commit was refused by its deadline: Bob never heard of
    // the call, rung or missed. A commit whose answer was lost with the link
    // had applied, and published Bob's `incomingVideoCall` itself: Bob heard
    // the call, then, once node b undid it, that it was cancelled, and
    // nothing else. Alice heard only that her call failed
    // (`videoCallFailed`, besides the ack), never that it ended.
    let quiet_until = asked + Duration::from_secs(RING_TIMEOUT_SECS + 2);
    tokio::time::sleep_until(quiet_until.into()).await;
    let got = bob.drain().await;
    match fault {
        NoAnswer::Late(_) => assert!(got.is_empty(), "Bob, after the refused call: {got:?}"),
        NoAnswer::LinkLost => match got.as_slice() {
            [(rung, call), (ended, over)]
                if rung == "incomingVideoCall"
                    && ended == "videoCallEnded"
                    && over["callId"] == call["callId"]
                    && over["reason"] == "cancelled" => {}
            _ => panic!("Bob, after the undone call: {got:?}"),
        },
    }
    let got = alice.drain().await;
    assert!(
        got.len() <= 1
            && got
                .iter()
                .all(|(n, v)| n == "videoCallFailed" && v["code"] == "unavailable"),
        "Alice, after the undone call: {got:?}"
    );
    cluster.wait_ready(200, Duration::from_secs(20)).await;

    // No call is left: the same call rings Bob exactly once, nothing is
    // `replaced`, and it goes through.
    let call_id = ring(&alice, &mut bob).await;
    ok(&bob
        .emit_ack("acceptVideoCall", json!({ "callId": call_id }))
        .await);
    assert_eq!(
        alice.next("videoCallAccepted").await["callId"],
        call_id.as_str()
    );
    ok(&alice
        .emit_ack("endVideoCall", json!({ "callId": call_id }))
        .await);
    let ended = bob.next("videoCallEnded").await;
    assert_eq!(
        (ended["callId"].as_str(), ended["reason"].as_str()),
        (Some(call_id.as_str()), Some("hangup"))
    );
    // Whatever else arrives is about this call (Alice hears her own
    // hang-up), and nothing was rung twice or replaced.
    for (who, got) in [("Bob", bob.drain().await), ("Alice", alice.drain().await)] {
        assert!(
            got.iter().all(|(n, v)| n != "incomingVideoCall"
                && v["callId"] == call_id.as_str()
                && v["reason"] != "replaced"),
            "{who}, after the call: {got:?}"
        );
    }
    cluster.assert_running();
    eprintln!("{fault:?}: unavailable after {took:?}, undone, nothing left");
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_retry_on_the_node_whose_commit_lost_its_answer_never_builds_on_it() {
    // Node b's commit reaches Redis, then its link is lost, and stays down
    // for half a second: the undo cannot run before Redis is back. Alice
    // retries all along; whichever command reaches Redis first once it is
    // back, her retry must not find the call (it would replace it: a
    // `replaced` to both for a call nobody saw), because node b runs its
    // pending undo before any transition.
    let (mut cluster, link, commit_sha, mut bob, mut alice) =
        commits_on_a_link(PolicyFile::default()).await;

    link.lose_after_matching(commit_sha.as_bytes());
    let ack = alice
        .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
        .await;
    failed(&ack, "unavailable");
    link.cut();
    let back = Instant::now() + Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(20);
    let call_id = loop {
        if Instant::now() >= back {
            link.restore();
        }
        if let Some((ack, _)) = alice
            .try_emit_ack(
                "initiateVideoCall",
                json!({ "receiverId": BOB.id }),
                Duration::from_secs(2),
            )
            .await
        {
            if ack["ok"] == true {
                break ack["callId"].as_str().expect("callId").to_string();
            }
            failed(&ack, "unavailable");
        }
        assert!(Instant::now() < deadline, "no retry went through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The lost commit had applied and published Bob's `incomingVideoCall`
    // itself. Node b's undo, run before the retry, withdrew it
    // (`cancelled`); then the retry rang, a call of its own.
    let first = bob.next("incomingVideoCall").await;
    assert_ne!(
        first["callId"],
        call_id.as_str(),
        "the undone call rang first"
    );
    let withdrawn = bob.next("videoCallEnded").await;
    assert_eq!(
        (&withdrawn["callId"], withdrawn["reason"].as_str()),
        (&first["callId"], Some("cancelled"))
    );
    assert_eq!(
        bob.next("incomingVideoCall").await["callId"],
        call_id.as_str()
    );
    for (who, got) in [("Bob", bob.drain().await), ("Alice", alice.drain().await)] {
        assert!(
            got.iter().all(|(n, v)| n != "incomingVideoCall"
                && n != "videoCallEnded"
                && n != "close"
                && v["reason"] != "replaced"),
            "{who}, after the retry: {got:?}"
        );
    }
    let logs = cluster.node(1).logs();
    assert!(
        logs.iter().any(|l| l.contains("had applied: undone")),
        "node b undid the commit:\n{}",
        logs.join("\n")
    );
    cluster.assert_running();
}
