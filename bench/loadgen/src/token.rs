//! Tokens for the generated users: minted here with the server's HS256 secret
//! (claims as callgate issues them), or fetched with `POST /auth/login`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::http::{HttpConnection, LoginAnswer};
use crate::seed::SeedUser;

/// Lifetime of minted tokens: longer than any run.
const MINTED_TTL_SECS: u64 = 4 * 3600;

/// callgate's claims (README "HTTP API").
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    iss: &'a str,
    aud: &'a str,
    jti: String,
}

/// HS256 tokens for `users`, issuer and audience `callgate`.
///
/// # Errors
/// When signing fails.
pub fn mint(secret: &[u8], users: &[SeedUser]) -> Result<Vec<String>, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let key = EncodingKey::from_secret(secret);
    let header = Header::default(); // HS256
    let nonce = now.as_nanos();
    let iat = now.as_secs();
    users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let claims = Claims {
                sub: &user.id,
                name: &user.display_name,
                iat,
                nbf: iat,
                exp: iat + MINTED_TTL_SECS,
                iss: "callgate",
                aud: "callgate",
                // Unique per token and per run; no server checks more than that.
                jti: format!("{nonce:x}-{i}"),
            };
            encode(&header, &claims, &key).map_err(|e| e.to_string())
        })
        .collect()
}

/// Tokens for `users` from `POST /auth/login`, `concurrency` logins at a time
/// (each costs the server an argon2id verification: for small user counts).
///
/// # Errors
/// The first login that fails.
pub async fn login_all(
    addr: SocketAddr,
    users: &[SeedUser],
    password: &str,
    concurrency: usize,
) -> Result<Vec<String>, String> {
    let usernames: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.username.clone()).collect());
    let password: Arc<str> = password.into();
    let workers = concurrency.clamp(1, usernames.len().max(1));
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let usernames = usernames.clone();
        let password = password.clone();
        tasks.spawn(async move {
            let mut connection = HttpConnection::open(addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut tokens = Vec::new();
            for index in (worker..usernames.len()).step_by(workers) {
                match connection.login(&usernames[index], &password).await {
                    Ok(LoginAnswer::Token(token)) => tokens.push((index, token)),
                    Ok(LoginAnswer::Refused(status)) => {
                        return Err(format!("login as {} answered {status}", usernames[index]));
                    }
                    Err(e) => return Err(format!("login as {}: {e}", usernames[index])),
                }
            }
            Ok::<_, String>(tokens)
        });
    }
    let mut tokens = vec![String::new(); usernames.len()];
    while let Some(joined) = tasks.join_next().await {
        for (index, token) in joined.map_err(|e| e.to_string())?? {
            tokens[index] = token;
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[test]
    fn minted_tokens_carry_callgates_claims() {
        let users = crate::seed::generate(2, "h").users;
        let tokens = mint(b"0123456789abcdef0123456789abcdef", &users).unwrap();
        let mut validation = Validation::default();
        validation.set_issuer(&["callgate"]);
        validation.set_audience(&["callgate"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        let key = DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let claims = decode::<serde_json::Value>(&tokens[1], &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], users[1].id);
        assert_eq!(claims["name"], "Bench User 1");
        assert!(claims["jti"].as_str().is_some_and(|j| j.ends_with("-1")));
    }
}
