//! Start-up refusals and the operator commands.

use std::process::Command;

use callgate::app::{App, BuildError};
use callgate::config::{Environment, StoreKind};
use callgate::policy::Policy;

use crate::helpers::*;

async fn refusal(tweak: impl FnOnce(&mut callgate::config::Config)) -> String {
    let mut config = test_config();
    tweak(&mut config);
    match App::build(config, Policy::builtin().expect("policy")).await {
        Err(BuildError::Config(problems)) => problems.to_string(),
        Err(other) => panic!("expected config problems, got {other}"),
        Ok(_) => panic!("the server started"),
    }
}

#[tokio::test]
async fn production_refuses_an_empty_secret() {
    let problems = refusal(|c| {
        c.environment = Environment::Production;
        c.auth.jwt_secret = String::new().into();
    })
    .await;
    assert!(
        problems.contains("auth.jwt_secret: is empty in production;"),
        "{problems}"
    );
}

#[tokio::test]
async fn a_short_secret_is_refused_in_any_environment() {
    for env in [Environment::Development, Environment::Production] {
        let problems = refusal(|c| {
            c.environment = env;
            c.auth.jwt_secret = "too-short".to_string().into();
        })
        .await;
        assert!(
            problems.contains("auth.jwt_secret: is shorter than 32 bytes;"),
            "{problems}"
        );
    }
}

#[tokio::test]
async fn production_refuses_the_embedded_store_and_a_wildcard_origin() {
    let problems = refusal(|c| {
        c.environment = Environment::Production;
        c.store.kind = StoreKind::Embedded;
        c.server.allowed_origins = vec!["*".into()];
    })
    .await;
    assert!(problems.contains("store.kind:"), "{problems}");
    assert!(problems.contains("server.allowed_origins:"), "{problems}");
}

#[tokio::test]
async fn development_without_a_secret_generates_one() {
    let server = TestServer::spawn_with(|c| c.auth.jwt_secret = String::new().into()).await;
    let alice = server.seed_user("alice").await;
    // The test secret is not the server's now, so its tokens fail...
    assert_eq!(
        TestClient::connect(&server, Some(&server.token(&alice)))
            .await
            .err()
            .as_deref(),
        Some("unauthorized")
    );
    // ...while a token from login works.
    let (status, body) = server
        .post(
            "/auth/login",
            None,
            &serde_json::json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        TestClient::connect(&server, body["token"].as_str())
            .await
            .is_ok()
    );
}

#[test]
fn check_config_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "environment = \"production\"\n[auth]\ntoken_ttl_secs = 5\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("CALLGATE_JWT_SECRET")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in ["auth.jwt_secret:", "auth.token_ttl_secs:", "store.kind:"] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    assert!(
        text.lines().all(|l| l.contains(": ") && l.contains("; ")),
        "format is key: problem; fix\n{text}"
    );
}

#[test]
fn check_config_accepts_the_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("check-config")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn hash_password_prints_an_argon2id_phc_string_that_verifies() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse battery\n")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).expect("utf8");
    let hash = hash.trim();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let parsed = argon2::PasswordHash::new(hash).expect("phc");
    use argon2::PasswordVerifier;
    assert!(
        argon2::Argon2::default()
            .verify_password(b"correct horse battery", &parsed)
            .is_ok()
    );
}

#[test]
fn a_malformed_seed_names_the_file_and_the_pointer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"users":[{"id":"ok","username":"alice","displayName":"A","password":"12345678"},{"id":"","username":"bob","displayName":"B","password":"12345678"}]}"#).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["--listen", "127.0.0.1:0", "--seed"])
        .arg(&seed)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seed.json at /users/1/id"), "{err}");
}
