//! Every HTTP route: success and each error code.

use serde_json::{Value, json};

use crate::helpers::*;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn register_returns_201_with_a_working_token() {
    let server = TestServer::spawn().await;
    let (status, body) = server
        .post(
            "/auth/register",
            None,
            &json!({"username": "erin", "password": PASSWORD, "displayName": "Erin E"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["username"], "erin");
    assert_eq!(body["user"]["displayName"], "Erin E");
    assert!(body["expiresAt"].as_u64().is_some_and(|e| e > now()));
    let token = body["token"].as_str().expect("token");
    let (status, me) = server.get("/auth/me", Some(token)).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], body["user"]["id"]);
    assert!(me.get("passwordHash").is_none(), "{me}");
}

#[tokio::test]
async fn register_refuses_a_taken_username_with_409() {
    let server = TestServer::spawn().await;
    server.seed_user("erin").await;
    let (status, body) = server
        .post(
            "/auth/register",
            None,
            &json!({"username": "erin", "password": PASSWORD, "displayName": "E"}),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "username_taken"));
}

#[tokio::test]
async fn register_names_the_bad_field_with_400() {
    let server = TestServer::spawn().await;
    let cases = [
        (
            json!({"password": PASSWORD, "displayName": "E"}),
            "username",
        ),
        (
            json!({"username": "E R", "password": PASSWORD, "displayName": "E"}),
            "username",
        ),
        (
            json!({"username": "erin", "password": "short", "displayName": "E"}),
            "password",
        ),
        (
            json!({"username": "erin", "password": PASSWORD, "displayName": ""}),
            "displayName",
        ),
        (
            json!({"username": "erin", "password": PASSWORD, "displayName": {"$ne": null}}),
            "displayName",
        ),
        (
            json!({"username": "erin", "password": "x".repeat(1025), "displayName": "E"}),
            "password",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = server.post("/auth/register", None, &body).await;
        assert_eq!((status, code(&answer)), (400, "bad_request"), "{body}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.starts_with(field), "{message} should name {field}");
        assert!(
            !message.contains("$ne") && !message.contains("xxxx"),
            "input echoed: {message}"
        );
    }
}

#[tokio::test]
async fn register_can_be_closed_by_config() {
    let server = TestServer::spawn_with(|c| c.auth.registration_open = false).await;
    let (status, body) = server
        .post(
            "/auth/register",
            None,
            &json!({"username": "erin", "password": PASSWORD, "displayName": "E"}),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "registration_closed"));
}

#[tokio::test]
async fn login_returns_a_token_for_the_right_password() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let (status, body) = server
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], alice.id.as_str());
    let token = body["token"].as_str().expect("token");
    assert!(TestClient::connect(&server, Some(token)).await.is_ok());
}

#[tokio::test]
async fn login_answers_unknown_user_and_wrong_password_byte_for_byte_alike() {
    let server = TestServer::spawn().await;
    server.seed_user("alice").await;
    let wrong = server
        .http
        .post(server.url("/auth/login"))
        .json(&json!({"username": "alice", "password": "wrong password"}))
        .send()
        .await
        .expect("request");
    let unknown = server
        .http
        .post(server.url("/auth/login"))
        .json(&json!({"username": "mallory", "password": "wrong password"}))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    let wrong = wrong.bytes().await.expect("body");
    let unknown = unknown.bytes().await.expect("body");
    assert_eq!(wrong, unknown);
    assert_eq!(
        serde_json::from_slice::<Value>(&wrong).expect("json")["error"]["code"],
        "invalid_credentials"
    );
}

#[tokio::test]
async fn login_with_a_malformed_body_is_a_400() {
    let server = TestServer::spawn().await;
    for body in [
        json!([1, 2]),
        json!({"password": PASSWORD}),
        json!({"username": 5, "password": PASSWORD}),
    ] {
        let (status, answer) = server.post("/auth/login", None, &body).await;
        assert_eq!((status, code(&answer)), (400, "bad_request"), "{body}");
    }
    let resp = server
        .http
        .post(server.url("/auth/login"))
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn bodies_over_16_kib_are_refused_with_413() {
    let server = TestServer::spawn().await;
    let big = json!({"username": "alice", "password": PASSWORD, "padding": "x".repeat(17 * 1024)});
    let (status, body) = server.post("/auth/login", None, &big).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"));
}

#[tokio::test]
async fn me_requires_a_valid_token() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let (status, body) = server.get("/auth/me", None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, body) = server
        .get(
            "/auth/me",
            Some(&mint(
                &claims_for(&alice.id, 3600),
                "another-secret-another-secret-0123",
            )),
        )
        .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, body) = server
        .get("/auth/me", Some(&mint(&claims_for(&alice.id, -60), SECRET)))
        .await;
    assert_eq!((status, code(&body)), (401, "token_expired"));
    let (status, body) = server.get("/auth/me", Some(&server.token(&alice))).await;
    assert_eq!(status, 200);
    assert_eq!(body["username"], "alice");
}

#[tokio::test]
async fn groups_are_created_listed_and_shown_to_members_only() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let eve = server.seed_user("eve").await;
    // Only co-members can be added: alice and bob already share a group.
    server.seed_group("Known", &alice, &[&bob]).await;
    let (status, group) = server
        .post(
            "/groups",
            Some(&server.token(&alice)),
            &json!({"name": "Team", "memberIds": [bob.id]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["owner"], alice.id.as_str());
    assert_eq!(group["members"], json!([alice.id, bob.id]));
    let id = group["id"].as_str().expect("id").to_string();

    let (status, list) = server.get("/groups", Some(&server.token(&bob))).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (status, _) = server
        .get(&format!("/groups/{id}"), Some(&server.token(&bob)))
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .get(&format!("/groups/{id}"), Some(&server.token(&eve)))
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = server
        .get("/groups/doesnotexist", Some(&server.token(&eve)))
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, list) = server.get("/groups", Some(&server.token(&eve))).await;
    assert_eq!((status, list), (200, json!([])));
}

#[tokio::test]
async fn creating_a_group_with_unknown_members_is_a_400() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let (status, body) = server
        .post(
            "/groups",
            Some(&server.token(&alice)),
            &json!({"name": "Team", "memberIds": ["nobody"]}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
    let (status, body) = server
        .post(
            "/groups",
            Some(&server.token(&alice)),
            &json!({"name": "Team", "memberIds": [{"$ne": null}]}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
    let (status, body) = server.post("/groups", None, &json!({"name": "Team"})).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
}

#[tokio::test]
async fn only_the_owner_adds_members_and_only_owner_or_self_removes() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let carol = server.seed_user("carol").await;
    let group = server.seed_group("Team", &alice, &[&bob]).await;
    // Only co-members can be added: alice and carol share another group.
    server.seed_group("Known", &alice, &[&carol]).await;
    let members = format!("/groups/{}/members", group.id);

    let (status, body) = server
        .post(
            &members,
            Some(&server.token(&bob)),
            &json!({"userId": carol.id}),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, body) = server
        .post(
            &members,
            Some(&server.token(&carol)),
            &json!({"userId": carol.id}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (404, "not_found"),
        "an outsider cannot even see the group"
    );
    let (status, body) = server
        .post(
            &members,
            Some(&server.token(&alice)),
            &json!({"userId": "ghost"}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
    let (status, body) = server
        .post(
            &members,
            Some(&server.token(&alice)),
            &json!({"userId": carol.id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"], json!([alice.id, bob.id, carol.id]));

    let (status, body) = server
        .delete(
            &format!("{members}/{}", carol.id),
            Some(&server.token(&bob)),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, _) = server
        .delete(&format!("{members}/{}", bob.id), Some(&server.token(&bob)))
        .await;
    assert_eq!(status, 204, "a member may leave");
    let (status, _) = server
        .delete(
            &format!("{members}/{}", carol.id),
            Some(&server.token(&alice)),
        )
        .await;
    assert_eq!(status, 204, "the owner may remove");
    let (status, body) = server
        .delete(
            &format!("{members}/{}", carol.id),
            Some(&server.token(&alice)),
        )
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn a_membership_change_reaches_live_sockets_at_once() {
    let server = TestServer::spawn().await;
    let alice = server.seed_user("alice").await;
    let bob = server.seed_user("bob").await;
    let group = server.seed_group("Team", &alice, &[]).await;
    server.seed_group("Known", &alice, &[&bob]).await;
    let _alice_socket = server.connect(&alice).await;
    let _bob_phone = server.connect(&bob).await;
    let _bob_laptop = server.connect(&bob).await;
    assert_eq!(
        server.users_in_group_room(&group.id),
        vec![alice.id.clone()]
    );

    let members = format!("/groups/{}/members", group.id);
    let (status, _) = server
        .post(
            &members,
            Some(&server.token(&alice)),
            &json!({"userId": bob.id}),
        )
        .await;
    assert_eq!(status, 200);
    let mut expected = vec![alice.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(server.users_in_group_room(&group.id), expected);
    let room = callgate::signaling::rooms::group_room(&group.id);
    assert_eq!(
        server.io.within(room).sockets().len(),
        3,
        "both of bob's sockets joined"
    );

    let (status, _) = server
        .delete(&format!("{members}/{}", bob.id), Some(&server.token(&bob)))
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        server.users_in_group_room(&group.id),
        vec![alice.id.clone()]
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::spawn().await;
    let (status, health) = server.get("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["cluster"], false, "one process, no Redis");
    let node = health["node"].as_str().expect("the node id");
    assert!(node.starts_with("node-"), "a random id: {node}");
    assert_eq!(
        server.get("/readyz", None).await,
        (200, json!({"status": "ready", "node": node}))
    );
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let server = TestServer::spawn().await;
    let (status, body) = server.get("/nope", None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}
