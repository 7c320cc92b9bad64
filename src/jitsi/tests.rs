use super::*;
use crate::config::{Config, Overrides};

fn config(env: &[(&str, &str)]) -> JitsiConfig {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    // Parsed even where validation would refuse: the key checks are tested here.
    Config::resolve(None, &Overrides::default(), &env)
        .value
        .expect("parse")
        .jitsi
}

fn grant(caller: bool) -> Grant {
    Grant {
        call_id: CallId::new_random(),
        room: RoomName::parse("Team-Room").expect("room"),
        user: UserId::parse("6860e2e85547033af89987ba").expect("id"),
        name: DisplayName::parse("Alice Adams").expect("name"),
        role: Role {
            caller,
            group_owner: false,
            group_call: false,
        },
    }
}

#[test]
fn no_domain_means_no_jitsi_at_all() {
    assert!(Jitsi::from_config(&config(&[])).expect("ok").is_none());
}

#[test]
fn token_off_gives_the_room_without_a_jwt() {
    let j = Jitsi::from_config(&config(&[("CALLGATE__JITSI__DOMAIN", "meet.example.com")]))
        .expect("ok")
        .expect("some");
    let access = j.access(&grant(true)).expect("access");
    assert_eq!(access.room, "team-room");
    assert_eq!(access.jwt, None);
    let json = serde_json::to_value(&access).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"domain": "meet.example.com", "room": "team-room"})
    );
}

#[test]
fn hs256_claims_are_integers_lowercase_and_never_null() {
    let j = Jitsi::from_config(&config(&[
        ("CALLGATE__JITSI__DOMAIN", "meet.example.com"),
        ("CALLGATE__JITSI__TOKEN", "hs256"),
        ("CALLGATE__JITSI__APP_ID", "callgate"),
        ("CALLGATE__JITSI__SUBJECT", "meet.jitsi"),
        (
            "CALLGATE_JITSI_APP_SECRET",
            "an-hs256-secret-of-at-least-32-bytes!",
        ),
    ]))
    .expect("ok")
    .expect("some");
    let g = grant(true);
    let claims = serde_json::to_value(j.claims(&g, 1_000_000)).expect("json");
    assert_eq!(
        claims,
        serde_json::json!({
            "iss": "callgate", "aud": "jitsi", "sub": "meet.jitsi", "room": "team-room",
            "iat": 1_000_000, "nbf": 999_990, "exp": 1_007_200,
            "context": {"user": {"id": "6860e2e85547033af89987ba", "name": "Alice Adams", "moderator": true}}
        })
    );
    let jwt = j.access(&g).expect("access").jwt.expect("jwt");
    assert_eq!(jwt.split('.').count(), 3);
}

#[test]
fn moderator_policies() {
    let direct = |caller| Role {
        caller,
        group_owner: false,
        group_call: false,
    };
    let group = |caller, owner| Role {
        caller,
        group_owner: owner,
        group_call: true,
    };
    assert!(JitsiModerator::Caller.applies_to(direct(true)));
    assert!(!JitsiModerator::Caller.applies_to(direct(false)));
    assert!(JitsiModerator::GroupOwner.applies_to(direct(true)));
    assert!(!JitsiModerator::GroupOwner.applies_to(group(true, false)));
    assert!(JitsiModerator::GroupOwner.applies_to(group(false, true)));
    assert!(JitsiModerator::Everyone.applies_to(direct(false)));
    assert!(!JitsiModerator::None.applies_to(group(true, true)));
}

#[test]
fn the_key_file_name_is_the_hex_sha256_of_the_kid() {
    // sha256("abc"), the FIPS 180-2 test vector.
    assert_eq!(
        key_file_name("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.pem"
    );
}

#[test]
fn an_unreadable_or_non_rsa_key_is_a_start_up_problem() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("key.pem");
    std::fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let path = path.display().to_string();
    let problems = Jitsi::from_config(&config(&[
        ("CALLGATE__JITSI__DOMAIN", "meet.example.com"),
        ("CALLGATE__JITSI__TOKEN", "rs256"),
        ("CALLGATE__JITSI__PRIVATE_KEY_FILE", &path),
    ]))
    .expect_err("refused");
    assert_eq!(problems.0[0].key, "jitsi.private_key_file");
}
