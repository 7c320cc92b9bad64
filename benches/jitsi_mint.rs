//! Cost of minting one Jitsi room token, per mode: what each participant adds
//! to a call set-up (one per initiate, accept or refresh).
//!
//! The RSA key is generated here (2048 bits, the minimum callgate accepts) and
//! written to a temporary file, as an operator's key would be.
//!
//! Run with: `cargo bench --bench jitsi_mint`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use callgate::config::{Config, Overrides};
use callgate::domain::{CallId, DisplayName, RoomName, UserId};
use callgate::jitsi::{Grant, Jitsi, Role};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

fn jitsi(env: &[(&str, &str)]) -> Jitsi {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let config = Config::load_from(None, &Overrides::default(), &env).expect("config");
    config.validate().expect("valid");
    Jitsi::from_config(&config.jitsi)
        .expect("key")
        .expect("domain")
}

fn main() {
    let dir = tempfile::tempdir().expect("dir");
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa key");
    let path = dir.path().join("jitsi.pem");
    std::fs::write(
        &path,
        key.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes(),
    )
    .expect("write");
    let path = path.display().to_string();
    let common = [
        ("CALLGATE__JITSI__DOMAIN", "meet.example.com"),
        ("CALLGATE__JITSI__APP_ID", "callgate"),
        ("CALLGATE__JITSI__SUBJECT", "meet.jitsi"),
    ];
    let hs = jitsi(
        &[
            &common[..],
            &[
                ("CALLGATE__JITSI__TOKEN", "hs256"),
                (
                    "CALLGATE_JITSI_APP_SECRET",
                    "an-hs256-secret-of-at-least-32-bytes!",
                ),
            ],
        ]
        .concat(),
    );
    let rs = jitsi(
        &[
            &common[..],
            &[
                ("CALLGATE__JITSI__TOKEN", "rs256"),
                ("CALLGATE__JITSI__PRIVATE_KEY_FILE", path.as_str()),
                ("CALLGATE__JITSI__KID", "callgate/bench"),
            ],
        ]
        .concat(),
    );
    let grant = Grant {
        call_id: CallId::new_random(),
        room: RoomName::new_random(),
        user: UserId::parse("6860e2e85547033af89987ba").expect("id"),
        name: DisplayName::parse("Alice Adams").expect("name"),
        role: Role {
            caller: true,
            group_owner: false,
            group_call: false,
        },
    };
    for (mode, j, n) in [("hs256", &hs, 20_000u32), ("rs256", &rs, 300)] {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(j.access(&grant).expect("mint"));
        }
        let per = start.elapsed() / n;
        println!(
            "{mode}: {n} tokens, {:.1} µs each, {:.0} tokens/s on one core",
            per.as_secs_f64() * 1e6,
            1.0 / per.as_secs_f64()
        );
    }
}
