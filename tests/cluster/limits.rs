//! Limits that hold for the whole cluster, not per node.

use serde_json::json;

use crate::harness::*;

/// Two nodes under `policy`: Alice on each of them, Bob on node b.
async fn alice_on_both_nodes(policy: PolicyFile) -> (Cluster, Client, Client, Client) {
    let cluster = Cluster::start(2, policy).await;
    let on_a = cluster.connect(0, &ALICE).await;
    let on_b = cluster.connect(1, &ALICE).await;
    let bob = cluster.connect(1, &BOB).await;
    assert_eq!(
        (on_a.node.as_str(), on_b.node.as_str()),
        ("node-a", "node-b")
    );
    (cluster, on_a, on_b, bob)
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_initiates_alternating_between_nodes_are_limited_like_on_one_node() {
    // 5 at once, then one every 6 s (the default call_initiate rate): 11
    // initiates within a second pass 5 times on one node, so on two nodes
    // too (not 5 per node).
    let policy = PolicyFile {
        call_initiate: Some((10, 5)),
        ..PolicyFile::default()
    };
    let (_cluster, on_a, on_b, _bob) = alice_on_both_nodes(policy).await;

    let mut passed = 0;
    let mut limited = 0;
    for i in 0..11 {
        let socket = if i % 2 == 0 { &on_a } else { &on_b };
        // A redial each time: the new call replaces the ringing one.
        let ack = socket
            .emit_ack("initiateVideoCall", json!({ "receiverId": BOB.id }))
            .await;
        if ack["ok"] == true {
            passed += 1;
        } else {
            assert_eq!(ack["error"]["code"], "rate_limited", "initiate {i}: {ack}");
            assert!(ack["error"]["retryAfterMs"].as_u64().is_some(), "{ack}");
            limited += 1;
        }
    }
    assert_eq!((passed, limited), (5, 6), "11 initiates over two nodes");
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_the_per_user_connection_cap_holds_across_nodes_and_frees_on_disconnect() {
    let policy = PolicyFile {
        max_per_user: 2,
        ..PolicyFile::default()
    };
    let cluster = Cluster::start(3, policy).await;
    let first = cluster.connect(0, &ALICE).await;
    let second = cluster.connect(1, &ALICE).await;
    assert_eq!(
        (first.node.as_str(), second.node.as_str()),
        ("node-a", "node-b")
    );
    // A third socket is refused on every node, including one she has no socket on.
    for i in 0..3 {
        assert_eq!(
            cluster.try_connect(i, &ALICE).await.err().as_deref(),
            Some("too_many_connections"),
            "a third socket on {}",
            cluster.node(i).id
        );
    }
    // Another user is not affected.
    let bob = cluster.connect(2, &BOB).await;
    assert_eq!(bob.node, "node-c");

    // A socket closed on node a frees its slot for node c.
    first.disconnect().await;
    let third = cluster.connect_when_free(2, &ALICE, WAIT).await;
    assert_eq!(third.node, "node-c");
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_refused_initiates_are_charged_like_the_ones_that_ring() {
    // A valid initiate takes its cluster charge with its first read; one
    // refused before that read (an unknown callee) is charged on its own.
    // Mixed and alternating between nodes, 11 still pass 5 times.
    let policy = PolicyFile {
        call_initiate: Some((10, 5)),
        ..PolicyFile::default()
    };
    let (_cluster, on_a, on_b, _bob) = alice_on_both_nodes(policy).await;
    let ghost = "0123456789abcdef01234567";
    let mut answered = Vec::new();
    let mut limited = 0;
    for i in 0..11 {
        let socket = if i % 2 == 0 { &on_a } else { &on_b };
        let to = if i % 3 == 0 { ghost } else { BOB.id };
        let ack = socket
            .emit_ack("initiateVideoCall", json!({ "receiverId": to }))
            .await;
        match ack["error"]["code"].as_str() {
            Some("rate_limited") => limited += 1,
            other => answered.push((to == ghost, other.map(str::to_owned))),
        }
    }
    assert_eq!(
        (answered.len(), limited),
        (5, 6),
        "11 initiates: {answered:?}"
    );
    for (to_ghost, code) in answered {
        let want = to_ghost.then(|| "not_found".to_owned());
        assert_eq!(code, want, "an unknown callee is not_found, Bob rings");
    }
}
