//! `TokenKeys::verify` on arbitrary input.
//!
//! Input layout (see docs/fuzzing.md):
//! - first byte < 0x80: the whole input, as lossy UTF-8, is the token (so a
//!   seed file can be a plain JWT);
//! - 0x80..=0xBF: "structured": header and claims are arbitrary JSON (or
//!   arbitrary bytes), base64url-encoded into the token shape, with a
//!   signature that is either genuine (HMAC-SHA256 with the fuzz key, computed
//!   independently of jsonwebtoken) or not;
//! - 0xC0..=0xFF: "template": well-known claims each picked from good and bad
//!   variants, so that the expected outcome is known and checked exactly.
//!
//! Invariants: a token whose signature is not HMAC-SHA256 with the key never
//! verifies (nor reports `Expired`, which is for genuine tokens only); a token
//! that verifies names the user in `sub`, its `exp`, callgate's issuer and
//! audience, is not expired or immature; a template token verifies exactly when
//! all of its claims are good.

#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::{Result, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use callgate::auth::TokenError;
use callgate::auth::TokenKeys;
use callgate::auth::jwt::InvalidReason;
use callgate::config::Config;
use callgate::domain::{DisplayName, UserId};
use callgate_fuzz::hmac_sha256;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// 40 characters: above the 32-byte floor.
const SECRET: &str = "callgate-fuzz-secret-0123456789abcdefghi";

struct Ctx {
    keys: TokenKeys,
    issuer: String,
    audience: String,
    leeway: u64,
    max_token_bytes: usize,
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        assert_eq!(SECRET.len(), 40);
        let env = [("CALLGATE_JWT_SECRET".to_string(), SECRET.to_string())];
        let config =
            Config::load_from(None, &Default::default(), &env).expect("default config loads");
        let keys =
            TokenKeys::from_config(&config.auth, config.environment).expect("keys from config");
        assert!(!keys.generated_secret(), "the fuzz secret must be used");
        // Self-test: a token callgate issues verifies, and the independent
        // HMAC oracle below agrees that it is genuine.
        let user = UserId::parse("6860e2e85547033af89987ba").expect("user id");
        let name = DisplayName::parse("Alice Adams").expect("display name");
        let issued = keys.issue(&user, &name).expect("issue");
        let verified = keys
            .verify(&issued.token)
            .expect("an issued token verifies");
        assert_eq!(verified.user_id, user);
        assert!(
            genuine(&issued.token).is_some(),
            "HMAC oracle disagrees with callgate"
        );
        // `CALLGATE_FUZZ_MINT_TOKEN=path` writes that token, to seed a corpus.
        if let Some(path) = std::env::var_os("CALLGATE_FUZZ_MINT_TOKEN") {
            std::fs::write(path, &issued.token).expect("write minted token");
        }
        Ctx {
            keys,
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            leeway: config.auth.leeway_secs,
            max_token_bytes: config.auth.max_token_bytes,
        }
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signature_for(signing_input: &str) -> String {
    b64(&hmac_sha256(SECRET.as_bytes(), signing_input.as_bytes()))
}

/// Whether `token` is `header.payload.signature` with the signature the
/// HMAC-SHA256 of `header.payload` under the key, and its header names HS256.
/// Returns the decoded claims when so.
fn genuine(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let expected = hmac_sha256(SECRET.as_bytes(), format!("{h}.{p}").as_bytes());
    let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
    if sig != expected {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    if header.get("alg") != Some(&json!("HS256")) {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

/// `iss`/`aud`: the expected string, or an array of strings holding it.
fn names(claim: Option<&Value>, expected: &str) -> bool {
    match claim {
        Some(Value::String(s)) => s == expected,
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string) && items.iter().any(|i| i == expected)
        }
        _ => false,
    }
}

/// The rules every result must obey, whatever produced the token.
fn check_result(
    token: &str,
    result: &std::result::Result<callgate::auth::VerifiedToken, TokenError>,
    before: u64,
    after: u64,
) {
    let c = ctx();
    if token.is_empty() {
        assert_eq!(result, &Err(TokenError::Invalid(InvalidReason::Missing)));
        return;
    }
    if token.len() > c.max_token_bytes {
        assert_eq!(result, &Err(TokenError::Invalid(InvalidReason::TooLarge)));
        return;
    }
    match result {
        Ok(v) => {
            let Some(claims) = genuine(token) else {
                panic!("a token not signed with the key verified: {token:?} -> {v:?}");
            };
            let Some(claims) = claims.as_object() else {
                panic!("verified claims are not an object: {token:?}");
            };
            assert_eq!(
                claims.get("sub").and_then(Value::as_str),
                Some(v.user_id.as_str()),
                "user id is not the sub claim: {token:?}"
            );
            assert!(UserId::parse(v.user_id.as_str()).is_ok());
            assert_eq!(
                claims.get("exp").and_then(Value::as_u64),
                Some(v.expires_at),
                "expires_at is not the exp claim: {token:?}"
            );
            assert!(
                v.expires_at.saturating_add(c.leeway) >= before,
                "an expired token verified: {token:?}"
            );
            match claims.get("nbf") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) => assert!(
                    n.as_f64()
                        .is_some_and(|nbf| nbf <= (after + c.leeway) as f64 + 1.0),
                    "a token not yet valid verified: {token:?}"
                ),
                Some(other) => panic!("nbf {other} accepted: {token:?}"),
            }
            assert!(
                names(claims.get("iss"), &c.issuer),
                "wrong iss accepted: {token:?}"
            );
            assert!(
                names(claims.get("aud"), &c.audience),
                "wrong aud accepted: {token:?}"
            );
        }
        Err(TokenError::Expired) => {
            let Some(claims) = genuine(token) else {
                panic!("Expired reported for a token not signed with the key: {token:?}");
            };
            let exp = claims.get("exp").and_then(Value::as_f64);
            assert!(
                exp.is_some_and(|exp| exp < (after.saturating_sub(c.leeway)) as f64 + 1.0),
                "Expired reported for a token whose exp is not past: {token:?}"
            );
        }
        Err(TokenError::Invalid(_)) => {}
    }
}

fn verify(token: &str) {
    let before = now();
    let result = ctx().keys.verify(token);
    let after = now();
    check_result(token, &result, before, after);
}

// ---- structured ------------------------------------------------------------

const HEADER_KEYS: &[&str] = &[
    "alg", "typ", "kid", "cty", "crit", "jku", "jwk", "x5u", "x5c", "b64",
];
const CLAIM_KEYS: &[&str] = &[
    "sub", "exp", "nbf", "iat", "iss", "aud", "jti", "name", "id", "userId",
];
const ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "none", "None", "NONE", "RS256", "PS256", "ES256", "EdDSA", "hs256",
    "HS256 ", "",
];

/// A JSON part, encoded: arbitrary JSON, or arbitrary bytes, in one of several
/// base64 spellings.
fn part(u: &mut Unstructured<'_>, keys: &[&str], template: Value) -> Result<String> {
    let bytes = match u.int_in_range(0u8..=3)? {
        0 => serde_json::to_vec(&template).expect("json"),
        1 => serde_json::to_vec(&Value::Object(callgate_fuzz::object(u, keys, 2)?)).expect("json"),
        2 => serde_json::to_vec(&callgate_fuzz::value(u, keys, 3)?).expect("json"),
        _ => u.arbitrary::<Vec<u8>>()?,
    };
    Ok(match u.int_in_range(0u8..=7)? {
        0 => URL_SAFE.encode(&bytes),
        1 => STANDARD.encode(&bytes),
        2 => String::from_utf8_lossy(&bytes).into_owned(),
        _ => b64(&bytes),
    })
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    let mut header = Map::new();
    header.insert("alg".into(), json!(*u.choose(ALGS)?));
    if u.arbitrary()? {
        header.insert("typ".into(), json!("JWT"));
    }
    let h = part(u, HEADER_KEYS, Value::Object(header))?;
    let t = now();
    let claims = json!({
        "sub": *u.choose(&["6860e2e85547033af89987ba", "u1", "a b", ""])?,
        "exp": t + 1000, "nbf": t - 10, "iat": t - 10,
        "iss": ctx().issuer, "aud": ctx().audience,
    });
    let p = part(u, CLAIM_KEYS, claims)?;
    let signing_input = format!("{h}.{p}");
    let sig = match u.int_in_range(0u8..=7)? {
        0 => String::new(),
        1 => b64(&hmac_sha256(
            b"another-secret-another-secret-another-se",
            signing_input.as_bytes(),
        )),
        2 => b64(&u.arbitrary::<Vec<u8>>()?),
        3 => u.arbitrary::<String>()?,
        4 => {
            // Genuine, then one byte flipped.
            let mut mac = hmac_sha256(SECRET.as_bytes(), signing_input.as_bytes());
            let i = u.int_in_range(0usize..=31)?;
            mac[i] ^= u.int_in_range(1u8..=255)?;
            b64(&mac)
        }
        5 => URL_SAFE.encode(hmac_sha256(SECRET.as_bytes(), signing_input.as_bytes())),
        _ => signature_for(&signing_input),
    };
    let mut token = format!("{signing_input}.{sig}");
    match u.int_in_range(0u8..=15)? {
        0 => token.push('.'),
        1 => token = format!(" {token}"),
        2 => token.push_str(".e30"),
        3 => token = format!("{h}.{p}"),
        _ => {}
    }
    verify(&token);
    Ok(())
}

// ---- template (model-checked) ---------------------------------------------

/// One claim: its JSON value (None = absent) and whether callgate should
/// accept a token because of it.
struct Pick {
    value: Option<Value>,
    good: bool,
}

fn pick(value: Option<Value>, good: bool) -> Pick {
    Pick { value, good }
}

fn template(u: &mut Unstructured<'_>) -> Result<()> {
    let c = ctx();
    let t = now();
    let l = c.leeway;
    let long_id = "a".repeat(64);
    let too_long_id = "a".repeat(65);
    let sub = match u.int_in_range(0u8..=9)? {
        0 => pick(Some(json!("6860e2e85547033af89987ba")), true),
        1 => pick(Some(json!("u1")), true),
        2 => pick(Some(json!(long_id)), true),
        3 => pick(Some(json!(too_long_id)), false),
        4 => pick(Some(json!("a b")), false),
        5 => pick(Some(json!("")), false),
        6 => pick(Some(json!(12345)), false),
        7 => pick(Some(Value::Null), false),
        8 => pick(Some(json!(["u1"])), false),
        _ => pick(None, false),
    };
    let name_claim = |u: &mut Unstructured<'_>, good: &str| -> Result<Pick> {
        Ok(match u.int_in_range(0u8..=8)? {
            0 | 1 => pick(Some(json!(good)), true),
            2 => pick(Some(json!([good])), true),
            3 => pick(Some(json!(["other", good])), true),
            4 => pick(Some(json!("other")), false),
            5 => pick(Some(json!([])), false),
            6 => pick(Some(json!(5)), false),
            7 => pick(Some(json!(format!("{good} "))), false),
            _ => pick(None, false),
        })
    };
    let iss = name_claim(u, &c.issuer)?;
    let aud = name_claim(u, &c.audience)?;
    // `expired` marks the variants that are good in every way but time.
    let (exp, expired) = match u.int_in_range(0u8..=10)? {
        0 | 1 => (pick(Some(json!(t + 1000)), true), false),
        2 => (pick(Some(json!(t.saturating_sub(1000))), false), true),
        3 => (pick(Some(json!(t.saturating_sub(l / 2))), true), false),
        4 => (pick(Some(json!(u64::MAX)), true), false),
        5 => (pick(Some(json!((t + 1000) as f64 + 0.5)), false), false),
        6 => (pick(Some(json!(format!("{}", t + 1000))), false), false),
        7 => (pick(Some(json!(-1)), false), false),
        8 => (pick(Some(json!(1e20)), false), false),
        9 => (pick(Some(Value::Null), false), false),
        _ => (pick(None, false), false),
    };
    let nbf = match u.int_in_range(0u8..=7)? {
        0 | 1 => pick(None, true),
        // jsonwebtoken reads a present `nbf: null` as malformed.
        2 => pick(Some(Value::Null), false),
        3 => pick(Some(json!(t.saturating_sub(1000))), true),
        4 => pick(Some(json!(t + l / 2)), true),
        5 => pick(Some(json!(t + 1000)), false),
        6 => pick(Some(json!("0")), false),
        _ => pick(Some(json!(-5)), false),
    };
    let mut claims = Map::new();
    // Extra claims first, so that the well-known ones below overwrite them.
    if u.arbitrary()? {
        claims.extend(callgate_fuzz::object(
            u,
            &["name", "jti", "iat", "id", "userId", "role"],
            1,
        )?);
    }
    for (key, p) in [
        ("sub", &sub),
        ("iss", &iss),
        ("aud", &aud),
        ("exp", &exp),
        ("nbf", &nbf),
    ] {
        match &p.value {
            Some(v) => {
                claims.insert(key.into(), v.clone());
            }
            None => {
                claims.remove(key);
            }
        }
    }
    let header = if u.arbitrary()? {
        json!({"alg": "HS256", "typ": "JWT"})
    } else {
        json!({"alg": "HS256"})
    };
    let signing_input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).expect("json")),
        b64(&serde_json::to_vec(&claims).expect("json"))
    );
    let token = format!("{signing_input}.{}", signature_for(&signing_input));
    let before = now();
    let result = c.keys.verify(&token);
    let after = now();
    check_result(&token, &result, before, after);
    if token.len() > c.max_token_bytes || before != t || after != t {
        return Ok(()); // the clock moved: the borderline variants may flip
    }
    let all_good = sub.good && iss.good && aud.good && exp.good && nbf.good;
    assert_eq!(
        result.is_ok(),
        all_good,
        "template token: expected {} got {result:?}: {}",
        if all_good { "Ok" } else { "Err" },
        Value::Object(claims)
    );
    if expired && sub.good && iss.good && aud.good && nbf.good {
        assert_eq!(
            result,
            Err(TokenError::Expired),
            "{}",
            Value::Object(claims)
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(b) if *b >= 0xC0 => {
            let _ = template(&mut Unstructured::new(&data[1..]));
        }
        Some(b) if *b >= 0x80 => {
            let _ = structured(&mut Unstructured::new(&data[1..]));
        }
        _ => verify(&String::from_utf8_lossy(data)),
    }
});
