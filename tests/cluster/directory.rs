//! The directory in cluster mode: every node loads the same seed, so a login
//! on any node verifies the same argon2id hash and its token is good on every
//! node; HTTP writes to the embedded directory are refused rather than
//! diverging between nodes.

use serde_json::{Value, json};

use crate::harness::*;

async fn post(node: &Node, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(node.url(path)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_login_on_one_node_works_on_another_and_the_embedded_directory_is_read_only() {
    let cluster = Cluster::start(2, PolicyFile::default()).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    assert_eq!(
        (
            a.reported_id().await.as_str(),
            b.reported_id().await.as_str()
        ),
        ("node-a", "node-b")
    );
    let (_, health) = a.get("/healthz").await;
    assert_eq!(health["cluster"], true, "{health}");
    // A cluster node's live calls are in Redis: no `callgate_calls` series
    // (a 0 would read as "no calls"), but this node's own gauges are there.
    let (status, metrics) = a.get("/metrics").await;
    let text = metrics.as_str().unwrap_or_default();
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|l| l.starts_with("callgate_sockets ")),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("callgate_calls{")),
        "no live-call series on a cluster node: {text}"
    );

    // A real argon2id verification on node a...
    let (status, body) = post(
        a,
        "/auth/login",
        None,
        &json!({ "username": "alice", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    // ...and node b takes the token, for HTTP and for a socket.
    let req = reqwest::Client::new()
        .get(b.url("/contacts"))
        .bearer_auth(&token);
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let wrong = post(
        b,
        "/auth/login",
        None,
        &json!({ "username": "alice", "password": "not the password" }),
    )
    .await;
    assert_eq!(wrong.0, 401, "{}", wrong.1);

    // Writes to the embedded directory would change one node's copy only:
    // refused, on every node, and nothing changed.
    for node in [a, b] {
        let (status, body) = post(
            node,
            "/auth/register",
            None,
            &json!({ "username": "erin", "password": PASSWORD, "displayName": "Erin E" }),
        )
        .await;
        assert_eq!(status, 409, "{}: {body}", node.id);
        assert_eq!(body["error"]["code"], "read_only", "{}: {body}", node.id);
        let (status, body) = post(
            node,
            "/groups",
            Some(&token),
            &json!({ "name": "Side", "memberIds": [BOB.id] }),
        )
        .await;
        assert_eq!(status, 409, "{}: {body}", node.id);
        assert_eq!(body["error"]["code"], "read_only", "{}: {body}", node.id);
    }
    let (status, _) = post(
        b,
        "/auth/login",
        None,
        &json!({ "username": "erin", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 401, "erin was not registered anywhere");
}
