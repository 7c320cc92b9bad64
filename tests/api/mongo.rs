//! The whole server on MongoDB, where only MongoDB can say it: another
//! application writing the same collections, string ids, and a database
//! that stops and comes back.
//!
//! These tests are `#[ignore]`d (named `mongodb_*`, so scripts/test counts
//! them when it cannot run them) and run with `--include-ignored`:
//! - the another-writer and string-id tests need `CALLGATE_TEST_MONGODB_URI`
//!   (a real mongod, or the SecantusDB scripts/test starts);
//! - the outage tests need `CALLGATE_TEST_SECANTUSD`, the path of a
//!   `secantusd-py` they start, stop and restart themselves (on a storage
//!   directory of their own, so the data outlives the restart).
//!
//! Run with `--include-ignored` but without the variable, a test fails
//! saying which one is missing; it never passes silently.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use serde_json::{Value, json};

use crate::helpers::*;

/// The `secantusd-py` the outage tests run.
const SECANTUSD_VAR: &str = "CALLGATE_TEST_SECANTUSD";

fn mongodb_uri() -> String {
    std::env::var(MONGODB_URI_VAR).unwrap_or_else(|_| {
        panic!(
            "{MONGODB_URI_VAR} is not set: the mongodb_* tests need a MongoDB server \
             (bash scripts/test starts one; see README)"
        )
    })
}

fn ok(ack: &Value) -> bool {
    ack["ok"] == json!(true)
}

fn code(ack: &Value) -> &str {
    ack["error"]["code"].as_str().unwrap_or("<none>")
}

// ---------------------------------------------------------------------------
// Another writer
// ---------------------------------------------------------------------------

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_members_changed_in_the_database_are_honoured_by_the_next_group_call() {
    // Arrange: a group of alice and bob, written by the chat app; carol is
    // not in it yet. Everyone is online.
    let server = TestServer::spawn_on_mongo(&mongodb_uri(), IdForm::ObjectId, |_| {}).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let group = server.seed_group("team", &alice, &[&bob]).await;
    let a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut c = server.connect(&carol).await;

    // Act: the chat app adds carol and removes bob, straight in MongoDB.
    let m = server.mongo.as_ref().expect("on MongoDB");
    let gid = m.stored(group.id.as_str());
    m.groups()
        .update_one(
            doc! { "_id": gid.clone() },
            doc! { "$push": { "members": m.stored(carol.id.as_str()) }, "$inc": { "__v": 1 } },
        )
        .await
        .expect("member added");
    m.groups()
        .update_one(
            doc! { "_id": gid },
            doc! { "$pull": { "members": m.stored(bob.id.as_str()) }, "$inc": { "__v": 1 } },
        )
        .await
        .expect("member removed");
    let ack = a
        .emit_ack("initiateGroupVideoCall", json!({"groupId": group.id}))
        .await;

    // Assert: the very next call rings carol and not bob.
    assert!(ok(&ack), "{ack}");
    let incoming = c.next("incomingVideoCall").await;
    assert_eq!(incoming["groupId"], group.id.as_str(), "{incoming}");
    b.assert_silent("bob, removed from the group in the database")
        .await;
    // And bob, no longer a member, cannot start one himself.
    let refused = b
        .emit_ack("initiateGroupVideoCall", json!({"groupId": group.id}))
        .await;
    assert_eq!(code(&refused), "not_found", "{refused}");
}

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_a_user_deleted_in_the_database_can_neither_connect_nor_be_called() {
    let server = TestServer::spawn_on_mongo(&mongodb_uri(), IdForm::ObjectId, |_| {}).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let a = server.connect(&alice).await;
    let m = server.mongo.as_ref().expect("on MongoDB");

    m.users()
        .delete_one(doc! { "_id": m.stored(bob.id.as_str()) })
        .await
        .expect("user deleted");

    let refused = TestClient::connect(&server, Some(&server.token(&bob))).await;
    assert_eq!(refused.err().as_deref(), Some("unauthorized"));
    let ack = a
        .emit_ack("initiateVideoCall", json!({"receiverId": bob.id}))
        .await;
    assert_eq!(code(&ack), "not_found", "{ack}");
    let (status, body) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_string_ids_carry_a_whole_call() {
    // A Mongoose schema with `_id: String`: users, owner and members are strings.
    let server = TestServer::spawn_on_mongo(&mongodb_uri(), IdForm::String, |_| {}).await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    assert!(alice.id.as_str().starts_with("s-"), "{}", alice.id);
    let group = server.seed_group("pair", &alice, &[&bob]).await;
    assert_eq!(group.members, vec![alice.id.clone(), bob.id.clone()]);
    let a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    let ack = a
        .emit_ack("initiateGroupVideoCall", json!({"groupId": group.id}))
        .await;
    assert!(ok(&ack), "{ack}");
    let incoming = b.next("incomingVideoCall").await;
    assert_eq!(incoming["callerId"], alice.id.as_str());
    let accepted = b
        .emit_ack("acceptVideoCall", json!({"callId": ack["callId"]}))
        .await;
    assert!(ok(&accepted), "{accepted}");
    let ended = a
        .emit_ack("endVideoCall", json!({"callId": ack["callId"]}))
        .await;
    assert!(ok(&ended), "{ended}");
    let left = b.next("groupCallParticipantLeft").await;
    assert_eq!(left["userId"], alice.id.as_str(), "{left}");

    // Login reads the Mongoose-shaped document (argon2id hash) too.
    let (status, body) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------
// Outage
// ---------------------------------------------------------------------------

/// A SecantusDB process of the test's own, on a free loopback port and a
/// storage directory that survives its restarts. Killed when dropped.
struct Database {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Database {
    fn start() -> Self {
        let bin = PathBuf::from(std::env::var(SECANTUSD_VAR).unwrap_or_else(|_| {
            panic!(
                "{SECANTUSD_VAR} is not set: the outage tests start their own SecantusDB \
                 (bash scripts/test installs it and sets the variable)"
            )
        }));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut db = Self {
            bin,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        db.restart();
        db
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Starts the process and waits until it listens.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(self.dir.path().join("data"))
            .arg("--standalone")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("secantusd-py starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "SecantusDB did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process with SIGTERM, as a maintenance restart would, and
    /// waits for it (SIGKILL after 10 s). A graceful stop keeps what was
    /// written; a kill may lose the last writes, which is not what these
    /// tests are about.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The request took at most `bound`.
fn within(started: Instant, bound: Duration, what: &str) {
    let took = started.elapsed();
    assert!(took <= bound, "{what} took {took:?}, more than {bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SecantusDB: set CALLGATE_TEST_SECANTUSD and run with --include-ignored"]
async fn mongodb_outage_gets_fast_clear_answers_and_heals_without_a_restart() {
    // Arrange: the default query timeout (1.5 s); two live calls, ringing.
    let mut db = Database::start();
    let server = TestServer::spawn_on_mongo(&db.uri(), IdForm::ObjectId, |_| {}).await;
    let query_timeout = Duration::from_millis(1500);
    let answer_bound = query_timeout + Duration::from_secs(1);
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let dave = server.seed_user("dave").await;
    let group = server
        .seed_group("all", &alice, &[&bob, &carol, &dave])
        .await;
    let token = server.token(&alice);
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut c = server.connect(&carol).await;
    let mut d = server.connect(&dave).await;
    let first = a
        .emit_ack("initiateVideoCall", json!({"receiverId": bob.id}))
        .await;
    assert!(ok(&first), "{first}");
    b.next("incomingVideoCall").await;
    let second = c
        .emit_ack("initiateVideoCall", json!({"receiverId": dave.id}))
        .await;
    assert!(ok(&second), "{second}");
    d.next("incomingVideoCall").await;
    let (status, _) = server.get("/readyz", None).await;
    assert_eq!(status, 200);

    // Act: the database goes away.
    db.stop();

    // Assert: readiness says so within 1 s, as 503.
    for _ in 0..2 {
        let started = Instant::now();
        let resp = server
            .http
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        within(started, Duration::from_secs(1), "/readyz");
        assert_eq!(resp.status().as_u16(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    }

    // Login, register and the group API: 503 store_unavailable with Retry-After.
    let cases: [(&str, &str, Option<&str>, Value); 4] = [
        (
            "POST",
            "/auth/login",
            None,
            json!({"username": "alice", "password": PASSWORD}),
        ),
        (
            "POST",
            "/auth/register",
            None,
            json!({"username": "erin", "password": PASSWORD, "displayName": "Erin"}),
        ),
        ("GET", "/groups", Some(token.as_str()), Value::Null),
        (
            "POST",
            "/groups",
            Some(token.as_str()),
            json!({"name": "new", "memberIds": [bob.id]}),
        ),
    ];
    for (method, path, bearer, body) in cases {
        let started = Instant::now();
        let mut req = match method {
            "GET" => server.http.get(server.url(path)),
            _ => server.http.post(server.url(path)).json(&body),
        };
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        within(started, answer_bound, path);
        assert_eq!(resp.status().as_u16(), 503, "{method} {path}");
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry.is_some_and(|s| s >= 1),
            "{method} {path}: Retry-After"
        );
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body["error"]["code"], "store_unavailable",
            "{method} {path}"
        );
    }

    // A handshake needs the directory: refused quickly, as `unavailable`.
    let started = Instant::now();
    let refused = TestClient::connect(&server, Some(&token)).await;
    within(started, answer_bound * 2, "the handshake");
    assert_eq!(refused.err().as_deref(), Some("unavailable"));

    // Live calls need no lookup: accept, reject and end go on working.
    let accepted = b
        .emit_ack("acceptVideoCall", json!({"callId": first["callId"]}))
        .await;
    assert!(ok(&accepted), "{accepted}");
    a.next("videoCallAccepted").await;
    let rejected = d
        .emit_ack("rejectVideoCall", json!({"callId": second["callId"]}))
        .await;
    assert!(ok(&rejected), "{rejected}");
    c.next("videoCallRejected").await;
    let ended = a
        .emit_ack("endVideoCall", json!({"callId": first["callId"]}))
        .await;
    assert!(ok(&ended), "{ended}");
    b.next("videoCallEnded").await;
    a.drain().await;
    c.drain().await;

    // A call that needs a lookup: `unavailable` by ack and videoCallFailed,
    // within the query timeout (plus scheduling slack).
    for (event, payload) in [
        ("initiateVideoCall", json!({"receiverId": dave.id})),
        ("initiateGroupVideoCall", json!({"groupId": group.id})),
    ] {
        let started = Instant::now();
        let ack = c.emit_ack(event, payload).await;
        within(started, answer_bound, event);
        assert_eq!(code(&ack), "unavailable", "{event}: {ack}");
        let failed = c.next("videoCallFailed").await;
        assert_eq!(failed["code"], "unavailable", "{failed}");
    }
    d.assert_silent("dave, rung by nobody while the directory is down")
        .await;

    // The database comes back: everything heals, no restart.
    db.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = server.get("/readyz", None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never healed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let again = TestClient::connect(&server, Some(&token)).await;
    assert!(again.is_ok(), "{:?}", again.err());
    let ack = c
        .emit_ack("initiateVideoCall", json!({"receiverId": dave.id}))
        .await;
    assert!(ok(&ack), "{ack}");
    d.next("incomingVideoCall").await;
}

#[tokio::test]
#[ignore = "needs SecantusDB: set CALLGATE_TEST_SECANTUSD and run with --include-ignored"]
async fn mongodb_start_up_fails_clearly_when_the_database_is_down() {
    let mut db = Database::start();
    let uri = db.uri();
    db.stop();
    let mut config = test_config();
    config.store.kind = callgate::config::StoreKind::Mongodb;
    config.store.mongodb.uri = secrecy::SecretString::from(uri);
    config.store.mongodb.connect_timeout_secs = 2;
    let started = Instant::now();
    let built =
        callgate::app::App::build(config, callgate::policy::Policy::builtin().expect("p")).await;
    within(started, Duration::from_secs(4), "start-up");
    let Err(err) = built else {
        panic!("start-up succeeded with the database down")
    };
    let err = err.to_string();
    assert!(err.contains("ping failed"), "{err}");
    assert!(!err.contains("127.0.0.1"), "no connection string in {err}");
}
