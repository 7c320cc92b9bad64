//! HS256 verification with callgate's rules: the algorithm pinned, `exp`,
//! `iss`, `aud` and `sub` required, issuer and audience `callgate`, 5 s leeway.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

/// A refused handshake; its `Display` is the client's `connect_error` message.
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unauthorized")
    }
}

/// The claims the relay reads.
#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Verifies tokens signed with one HMAC secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier for HS256 tokens issued by callgate for callgate.
    pub fn hs256(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&["callgate"]);
        validation.set_audience(&["callgate"]);
        validation.leeway = 5;
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The token's `sub`.
    ///
    /// # Errors
    /// [`Refused`] for any invalid token.
    pub fn verify(&self, token: &str) -> Result<String, Refused> {
        decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims.sub)
            .map_err(|_| Refused)
    }
}
