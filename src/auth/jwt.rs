//! Issuing and verifying JWTs.
//!
//! Verification is explicit: the allowed algorithm comes from config only (so
//! `alg: none` and algorithm confusion fail), `exp`, `iss`, `aud` and the
//! user-id claim are required (jsonwebtoken accepts a token without `iss` or
//! `aud` unless they are listed as required), `nbf` is checked, leeway is the
//! configured one (default 5 s, not the library's 60 s), and oversized tokens
//! are refused before any decoding.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, Environment, IssuerAlgorithm, Problem, Problems};
use crate::domain::{DisplayName, UserId};

/// Why a token was refused. Its `Display` is a stable code, safe to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Valid signature, but past `exp` (plus leeway).
    #[error("token_expired")]
    Expired,
    /// Anything else: missing, malformed, oversized, bad signature, wrong
    /// algorithm, issuer or audience, missing claims, not yet valid.
    #[error("unauthorized")]
    Invalid(InvalidReason),
}

/// The detail behind [`TokenError::Invalid`], for logs and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// No token was presented.
    Missing,
    /// Longer than `auth.max_token_bytes`.
    TooLarge,
    /// Not a JWT, or an unknown algorithm in the header.
    Malformed,
    /// Signature does not verify, or an algorithm that is not allowed.
    Signature,
    /// A required claim is missing or malformed.
    Claims,
    /// Wrong `iss` or `aud`.
    IssuerOrAudience,
    /// `nbf` in the future.
    NotYetValid,
}

impl InvalidReason {
    /// A short label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Signature => "signature",
            Self::Claims => "claims",
            Self::IssuerOrAudience => "issuer_or_audience",
            Self::NotYetValid => "not_yet_valid",
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The user the token was issued for.
    pub user_id: UserId,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A freshly issued token.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

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

struct Verifier {
    key: DecodingKey,
    validation: Validation,
    user_id_claim: String,
}

/// The keys and rules for issuing callgate's tokens and verifying both its own
/// and, optionally, an external issuer's.
pub struct TokenKeys {
    encoding: EncodingKey,
    header: Header,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    max_token_bytes: usize,
    own: Verifier,
    external: Option<Verifier>,
    generated_secret: bool,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.header.alg)
            .field("external", &self.external.is_some())
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn validation(
    alg: Algorithm,
    issuer: &str,
    audience: &str,
    leeway: u64,
    claim: &str,
) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    let mut required = vec!["exp", "iss", "aud"];
    if claim == "sub" {
        required.push("sub");
    }
    v.set_required_spec_claims(&required);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.leeway = leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    v
}

fn read_pem(key: &str, path: &std::path::Path) -> Result<Vec<u8>, Problem> {
    std::fs::read(path).map_err(|_| {
        Problem::new(
            key,
            format!("cannot read {}", path.display()),
            "give a readable PEM file",
        )
    })
}

impl TokenKeys {
    /// Builds the keys from config. In development an empty HS256 secret is
    /// replaced by a random one (see [`TokenKeys::generated_secret`]).
    ///
    /// # Errors
    /// Returns every key that cannot be loaded or is too weak.
    pub fn from_config(auth: &AuthConfig, environment: Environment) -> Result<Self, Problems> {
        let mut problems = Vec::new();
        let leeway = auth.leeway_secs;
        let mut generated_secret = false;
        let own_keys = match auth.algorithm {
            IssuerAlgorithm::HS256 => {
                let configured = auth.jwt_secret.expose_secret().as_bytes();
                let secret: Vec<u8> =
                    if configured.is_empty() && environment == Environment::Development {
                        generated_secret = true;
                        let mut bytes = vec![0u8; 32];
                        rand::rng().fill_bytes(&mut bytes);
                        bytes
                    } else if configured.len() < 32 {
                        problems.push(Problem::new(
                            "auth.jwt_secret",
                            "is empty or shorter than 32 bytes",
                            "set CALLGATE_JWT_SECRET to at least 32 random bytes",
                        ));
                        Vec::new()
                    } else {
                        configured.to_vec()
                    };
                Some((
                    Algorithm::HS256,
                    EncodingKey::from_secret(&secret),
                    DecodingKey::from_secret(&secret),
                ))
            }
            IssuerAlgorithm::EdDSA => {
                let private = read_pem(
                    "auth.ed25519_private_key_file",
                    &auth.ed25519_private_key_file,
                )
                .and_then(|pem| {
                    EncodingKey::from_ed_pem(&pem).map_err(|_| {
                        Problem::new(
                            "auth.ed25519_private_key_file",
                            "is not an Ed25519 private key in PEM",
                            "make one with certs/make-dev-certs.sh",
                        )
                    })
                });
                let public = read_pem(
                    "auth.ed25519_public_key_file",
                    &auth.ed25519_public_key_file,
                )
                .and_then(|pem| {
                    DecodingKey::from_ed_pem(&pem).map_err(|_| {
                        Problem::new(
                            "auth.ed25519_public_key_file",
                            "is not an Ed25519 public key in PEM",
                            "make one with certs/make-dev-certs.sh",
                        )
                    })
                });
                match (private, public) {
                    (Ok(e), Ok(d)) => Some((Algorithm::EdDSA, e, d)),
                    (e, d) => {
                        problems.extend(e.err());
                        problems.extend(d.err());
                        None
                    }
                }
            }
        };

        let external = if auth.external.enabled {
            match Self::external_verifier(auth) {
                Ok(v) => Some(v),
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        } else {
            None
        };

        match own_keys {
            Some((alg, encoding, decoding)) if problems.is_empty() => Ok(Self {
                encoding,
                header: Header::new(alg),
                issuer: auth.issuer.clone(),
                audience: auth.audience.clone(),
                ttl_secs: auth.token_ttl_secs,
                max_token_bytes: auth.max_token_bytes,
                own: Verifier {
                    key: decoding,
                    validation: validation(alg, &auth.issuer, &auth.audience, leeway, "sub"),
                    user_id_claim: "sub".into(),
                },
                external,
                generated_secret,
            }),
            _ => Err(Problems(problems)),
        }
    }

    fn external_verifier(auth: &AuthConfig) -> Result<Verifier, Problem> {
        let ext = &auth.external;
        let alg: Algorithm = ext.algorithm.parse().map_err(|_| {
            Problem::new(
                "auth.external.algorithm",
                "is not a JWT algorithm",
                "use e.g. HS256 or RS256",
            )
        })?;
        let bad_key = |what: &str| {
            Problem::new(
                "auth.external.public_key_file",
                format!("is not a {what} public key in PEM"),
                "give the issuer's public key",
            )
        };
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = ext.secret.expose_secret().as_bytes();
                if secret.len() < 32 {
                    return Err(Problem::new(
                        "auth.external.secret",
                        "is shorter than 32 bytes",
                        "set the chat backend's signing secret",
                    ));
                }
                DecodingKey::from_secret(secret)
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let pem = read_pem("auth.external.public_key_file", &ext.public_key_file)?;
                DecodingKey::from_rsa_pem(&pem).map_err(|_| bad_key("RSA"))?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let pem = read_pem("auth.external.public_key_file", &ext.public_key_file)?;
                DecodingKey::from_ec_pem(&pem).map_err(|_| bad_key("EC"))?
            }
            Algorithm::EdDSA => {
                let pem = read_pem("auth.external.public_key_file", &ext.public_key_file)?;
                DecodingKey::from_ed_pem(&pem).map_err(|_| bad_key("Ed25519"))?
            }
            _ => {
                return Err(Problem::new(
                    "auth.external.algorithm",
                    "is not supported",
                    "use HS*, RS*, PS*, ES256, ES384 or EdDSA",
                ));
            }
        };
        Ok(Verifier {
            key,
            validation: validation(
                alg,
                &ext.issuer,
                &ext.audience,
                auth.leeway_secs,
                &ext.user_id_claim,
            ),
            user_id_claim: ext.user_id_claim.clone(),
        })
    }

    /// Whether the HS256 secret was generated at start (development only):
    /// tokens will not survive a restart.
    pub fn generated_secret(&self) -> bool {
        self.generated_secret
    }

    /// Issues a token for `user`.
    ///
    /// # Errors
    /// Only if signing fails, which a loaded key does not do in practice.
    pub fn issue(
        &self,
        user: &UserId,
        name: &DisplayName,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let now = now_secs();
        let exp = now + self.ttl_secs;
        let claims = Claims {
            sub: user.as_str(),
            name: name.as_str(),
            iat: now,
            nbf: now,
            exp,
            iss: &self.issuer,
            aud: &self.audience,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = encode(&self.header, &claims, &self.encoding)?;
        Ok(IssuedToken {
            token,
            expires_at: exp,
        })
    }

    /// Verifies a token against callgate's own key, then the external issuer's.
    ///
    /// # Errors
    /// [`TokenError::Expired`] for a genuine but expired token, otherwise
    /// [`TokenError::Invalid`] with the reason.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Invalid(InvalidReason::Missing));
        }
        if token.len() > self.max_token_bytes {
            return Err(TokenError::Invalid(InvalidReason::TooLarge));
        }
        match (Self::verify_with(&self.own, token), &self.external) {
            (Ok(v), _) => Ok(v),
            (Err(e @ TokenError::Expired), _) | (Err(e), None) => Err(e),
            (Err(own), Some(ext)) => match Self::verify_with(ext, token) {
                Ok(v) => Ok(v),
                Err(TokenError::Expired) => Err(TokenError::Expired),
                // Report the more specific of the two failures.
                Err(TokenError::Invalid(InvalidReason::Signature)) => Err(own),
                Err(e) => Err(e),
            },
        }
    }

    fn verify_with(verifier: &Verifier, token: &str) -> Result<VerifiedToken, TokenError> {
        let data = decode::<Map<String, Value>>(token, &verifier.key, &verifier.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName => TokenError::Invalid(InvalidReason::Signature),
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::Invalid(InvalidReason::Claims)
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenError::Invalid(InvalidReason::IssuerOrAudience)
                }
                ErrorKind::ImmatureSignature => TokenError::Invalid(InvalidReason::NotYetValid),
                _ => TokenError::Invalid(InvalidReason::Malformed),
            })?;
        let claims = data.claims;
        let user_id = match claims.get(&verifier.user_id_claim) {
            Some(Value::String(s)) => UserId::parse(s).ok(),
            Some(Value::Number(n)) if n.is_u64() => UserId::parse(&n.to_string()).ok(),
            _ => None,
        }
        .ok_or(TokenError::Invalid(InvalidReason::Claims))?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(TokenError::Invalid(InvalidReason::Claims))?;
        Ok(VerifiedToken {
            user_id,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn keys() -> TokenKeys {
        let env = vec![("CALLGATE_JWT_SECRET".to_string(), "k".repeat(40))];
        let config = Config::load_from(None, &Overrides::default(), &env).expect("config");
        TokenKeys::from_config(&config.auth, config.environment).expect("keys")
    }

    #[test]
    fn issued_tokens_verify_to_their_user() {
        let keys = keys();
        let user = UserId::parse("u1").expect("id");
        let name = DisplayName::parse("U").expect("name");
        let issued = keys.issue(&user, &name).expect("issue");
        let verified = keys.verify(&issued.token).expect("verify");
        assert_eq!(verified.user_id, user);
        assert_eq!(verified.expires_at, issued.expires_at);
    }

    #[test]
    fn empty_and_oversized_tokens_are_refused_before_decoding() {
        let keys = keys();
        assert_eq!(
            keys.verify(""),
            Err(TokenError::Invalid(InvalidReason::Missing))
        );
        assert_eq!(
            keys.verify(&"a".repeat(9000)),
            Err(TokenError::Invalid(InvalidReason::TooLarge))
        );
        assert_eq!(
            keys.verify("not.a.jwt"),
            Err(TokenError::Invalid(InvalidReason::Malformed))
        );
    }

    #[test]
    fn error_display_is_a_stable_code() {
        assert_eq!(TokenError::Expired.to_string(), "token_expired");
        assert_eq!(
            TokenError::Invalid(InvalidReason::Signature).to_string(),
            "unauthorized"
        );
    }
}
