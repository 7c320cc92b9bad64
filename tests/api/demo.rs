//! The demo page (`/demo/`), its one-click accounts and `GET /contacts`.
//! The page itself is driven in Chromium by tests/js/demo_browser.test.mjs.

use callgate::config::DemoSwitch;
use callgate::http::demo::content_security_policy;
use serde_json::json;

use crate::helpers::*;

/// Writes a seed file (alice and bob in a group, carol alone) and returns its path.
fn seed_file(demo: bool) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("callgate-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("seed.json");
    let seed = json!({
        "demo": demo,
        "users": [
            {"id": "u-alice", "username": "alice", "displayName": "Alice Adams", "password": "alice-demo-pass"},
            {"id": "u-bob", "username": "bob", "displayName": "Bob Brown", "password": "bob-demo-pass"},
            {"id": "u-carol", "username": "carol", "displayName": "Carol Clark", "passwordHash": password_hash()}
        ],
        "groups": [{"id": "g-team", "name": "Team", "members": ["u-alice", "u-bob", "u-carol"]}]
    });
    std::fs::write(&path, seed.to_string()).unwrap();
    path
}

#[tokio::test]
async fn the_demo_page_is_served_in_development_with_a_strict_csp() {
    let server = TestServer::spawn().await;
    for (path, content_type) in [
        ("/demo/", "text/html; charset=utf-8"),
        ("/demo/app.js", "text/javascript; charset=utf-8"),
        ("/demo/socketio.js", "text/javascript; charset=utf-8"),
        ("/demo/style.css", "text/css; charset=utf-8"),
    ] {
        let res = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(
            h["content-security-policy"],
            content_security_policy(None).as_str(),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
    let page = server
        .http
        .get(server.url("/demo/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<script type="module" src="app.js"></script>"#));
    assert!(
        page.contains(r#"<meta name="callgate-socketio-path" content="/socket.io">"#),
        "the page is told socketio.path"
    );
    assert!(
        !page.contains("<script>"),
        "no inline script: the CSP would block it"
    );

    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(server.url("/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/demo/");
    let (status, _) = server.get("/demo/nope.js", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_demo_page_is_404_when_turned_off() {
    let server = TestServer::spawn_with(|c| c.server.demo = DemoSwitch::Set(false)).await;
    for path in ["/demo/", "/demo/app.js", "/demo/accounts.json", "/demo"] {
        let (status, body) = server.get(path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn demo_accounts_are_listed_only_for_a_seed_marked_demo() {
    let server = TestServer::spawn_with(|c| c.store.seed = seed_file(true)).await;
    let res = server
        .http
        .get(server.url("/demo/accounts.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, accounts) = server.get("/demo/accounts.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        accounts,
        json!([
            {"username": "alice", "displayName": "Alice Adams", "password": "alice-demo-pass"},
            {"username": "bob", "displayName": "Bob Brown", "password": "bob-demo-pass"}
        ]),
        "users with only a passwordHash are never listed"
    );
    // The page logs in with them like any client.
    let (status, session) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": "alice-demo-pass"}),
        )
        .await;
    assert_eq!(status, 200, "{session}");

    let plain = TestServer::spawn_with(|c| c.store.seed = seed_file(false)).await;
    let (status, body) = plain.get("/demo/accounts.json", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = plain.get("/demo/", None).await;
    assert_eq!(status, 200, "the page itself is still served");
}

/// Status of a polling handshake request carrying `origin`.
async fn polling_status(server: &TestServer, origin: &str) -> u16 {
    let req = server
        .http
        .get(server.url("/socket.io/?EIO=4&transport=polling"))
        .header("origin", origin);
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_demo_pages_origin_gets_no_exception_from_the_origin_check() {
    // The page is served from the server's own origin. Unless that origin is
    // in server.allowed_origins, its Socket.IO requests are refused like any
    // other page's; listed, they pass like any other.
    let unlisted = TestServer::spawn().await;
    let own = format!("http://{}", unlisted.addr);
    assert_eq!(polling_status(&unlisted, &own).await, 403);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = format!("http://127.0.0.1:{port}");
    let listed = TestServer::spawn_with(|c| {
        c.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.server.allowed_origins = vec![own.clone()];
    })
    .await;
    assert_eq!(polling_status(&listed, &own).await, 200);
    assert_eq!(
        polling_status(&listed, &format!("http://localhost:{port}")).await,
        403,
        "exact match only: another name for the same server is another origin"
    );
}

#[tokio::test]
async fn contacts_are_the_people_who_share_a_group_with_their_presence() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let mallory = server.seed_user("mallory").await;
    server.seed_group("team", &alice, &[&alice, &bob]).await;
    server.seed_group("other", &carol, &[&carol, &alice]).await;
    server
        .seed_group("theirs", &mallory, &[&mallory, &bob])
        .await;

    let (status, contacts) = server.get("/contacts", Some(&server.token(&alice))).await;
    assert_eq!(status, 200);
    let listed: Vec<(&str, bool)> = contacts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["username"].as_str().unwrap(),
                c["online"].as_bool().unwrap(),
            )
        })
        .collect();
    // Sorted by display name; not alice herself; not mallory (no shared group).
    assert_eq!(listed, vec![("bob", false), ("carol", false)]);
    assert_eq!(contacts[0]["id"], bob.id.to_string());
    assert_eq!(contacts[0]["displayName"], "bob display");
    assert!(contacts[0].get("passwordHash").is_none());

    let _bob_socket = server.connect(&bob).await;
    let (_, contacts) = server.get("/contacts", Some(&server.token(&alice))).await;
    assert_eq!(contacts[0]["online"], true);
    assert_eq!(contacts[1]["online"], false);

    // A member the directory no longer knows (deleted by the chat app; still
    // listed in the group) is left out.
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
    let (status, contacts) = server.get("/contacts", Some(&server.token(&alice))).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = contacts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["username"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["carol"]);
    assert_eq!(contacts[0]["id"], carol.id.to_string());
    assert_eq!(contacts[0]["displayName"], "carol display");

    let (status, body) = server.get("/contacts", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
}
