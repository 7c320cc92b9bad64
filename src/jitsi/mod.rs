//! Jitsi room tokens: one JWT per participant of a call, naming the call's
//! room, in the shape Prosody's `mod_auth_token` (and 8x8's JaaS) accept.
//!
//! Who may have a token is decided by the call registry (a [`Grant`] is
//! what a transition hands the socket that acted); this module only turns
//! a grant into `jitsi: {domain, room, jwt}`. The rules it follows are
//! Prosody's (`luajwtjitsi.lib.lua`, `token/util.lib.lua`): header `typ`
//! exactly `"JWT"` and the server's `alg`; `exp` and `nbf` JSON numbers
//! checked with no skew allowance; `iss`, `aud`, `room` and `sub` required;
//! the room compared lowercased; every `context.user` field a string but
//! `moderator`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{JitsiConfig, JitsiModerator, JitsiTokenMode, Problem, Problems};
use crate::domain::{CallId, DisplayName, RoomName, UserId};

/// `nbf` is this many seconds before `iat`: Prosody allows no skew, so a
/// Prosody whose clock is a little behind ours must still accept a fresh token.
pub const NOT_BEFORE_SLACK_SECS: u64 = 10;

/// `iss` of every JaaS token.
const JAAS_ISSUER: &str = "chat";

/// The smallest RSA key accepted.
const MIN_RSA_BITS: usize = 2048;

/// What the registry found a participant entitled to: a token for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The call.
    pub call_id: CallId,
    /// Its room, as stored (already lowercase; see [`RoomName`]).
    pub room: RoomName,
    /// The participant's id.
    pub user: UserId,
    /// Their name from the directory.
    pub name: DisplayName,
    /// Their role, for the moderator policy.
    pub role: Role,
}

/// A participant's role in their call, as the moderator policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// They placed the call.
    pub caller: bool,
    /// The call is a group call and they own the group.
    pub group_owner: bool,
    /// The call is a group call.
    pub group_call: bool,
}

impl JitsiModerator {
    /// Whether `role` makes a moderator under this policy.
    pub fn applies_to(self, role: Role) -> bool {
        match self {
            Self::Caller => role.caller,
            Self::GroupOwner => {
                if role.group_call {
                    role.group_owner
                } else {
                    role.caller
                }
            }
            Self::Everyone => true,
            Self::None => false,
        }
    }
}

/// `jitsi: {domain, room, jwt?}`: what a participant opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// The Jitsi host.
    pub domain: String,
    /// The room exactly as the Jitsi client must open it (`<AppID>/<room>` for JaaS).
    pub room: String,
    /// The room token; absent when `jitsi.token` is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
}

/// Minting failed: the key would not sign. Never carries key material.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the Jitsi room token could not be signed")]
pub struct MintError;

/// The claims, in Prosody's shape. Absent values are left out, never null.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    /// Issuer: the app id (JaaS: "chat").
    pub iss: &'a str,
    /// Audience.
    pub aud: &'a str,
    /// Subject: XMPP domain, tenant or `*` (JaaS: the AppID).
    pub sub: &'a str,
    /// The room, lowercased.
    pub room: &'a str,
    /// Issued at.
    pub iat: u64,
    /// Not before: `iat` − [`NOT_BEFORE_SLACK_SECS`].
    pub nbf: u64,
    /// Expiry: `iat` + ttl.
    pub exp: u64,
    /// Who the token is for.
    pub context: Context<'a>,
}

/// `context`.
#[derive(Debug, Serialize)]
pub struct Context<'a> {
    /// `context.user`.
    pub user: User<'a>,
}

/// `context.user`: strings, and `moderator` as a boolean.
#[derive(Debug, Serialize)]
pub struct User<'a> {
    /// User id.
    pub id: &'a str,
    /// Display name from the directory.
    pub name: &'a str,
    /// Whether Prosody (with `token_affiliation`) makes them a moderator.
    pub moderator: bool,
}

/// The signing half of a mode.
#[derive(Clone)]
enum Signer {
    Hs256(EncodingKey),
    Rsa {
        key: EncodingKey,
        kid: String,
        public_pem: String,
    },
}

/// The configured Jitsi deployment: its domain and, when tokens are on, the key.
#[derive(Clone)]
pub struct Jitsi {
    domain: String,
    mode: JitsiTokenMode,
    signer: Option<Signer>,
    issuer: String,
    audience: String,
    subject: String,
    tenant: Option<String>,
    ttl_secs: u64,
    moderator: JitsiModerator,
}

impl std::fmt::Debug for Jitsi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jitsi")
            .field("domain", &self.domain)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `hex(sha256(kid))`: the file name Prosody's `asap_key_server` asks for.
pub fn key_file_name(kid: &str) -> String {
    let digest = Sha256::digest(kid.as_bytes());
    let mut out = String::with_capacity(digest.len() * 2 + 4);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str(".pem");
    out
}

fn load_rsa(path: &Path) -> Result<(EncodingKey, String), Problem> {
    let bad = |problem: &str| {
        Problem::new(
            "jitsi.private_key_file",
            problem,
            "give a PEM RSA private key (PKCS#8 or PKCS#1) of at least 2048 bits",
        )
    };
    let pem = std::fs::read_to_string(path).map_err(|_| bad("is not a readable file"))?;
    let key = RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|_| bad("is not a PEM RSA private key"))?;
    if key.size() * 8 < MIN_RSA_BITS {
        return Err(bad("holds an RSA key shorter than 2048 bits"));
    }
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| bad("holds a key whose public half cannot be written"))?;
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|_| bad("is not a PEM RSA private key"))?;
    Ok((encoding, public_pem))
}

impl Jitsi {
    /// Builds from a validated `[jitsi]` section; `None` when no domain is set.
    ///
    /// # Errors
    /// A private key that cannot be read or used.
    pub fn from_config(config: &JitsiConfig) -> Result<Option<Self>, Problems> {
        let Some(domain) = config.domain() else {
            return Ok(None);
        };
        let signer = match config.token {
            JitsiTokenMode::Off => None,
            JitsiTokenMode::Hs256 => Some(Signer::Hs256(EncodingKey::from_secret(
                config.app_secret.expose_secret().as_bytes(),
            ))),
            JitsiTokenMode::Rs256 | JitsiTokenMode::Jaas => {
                let (key, public_pem) =
                    load_rsa(&config.private_key_file).map_err(|p| Problems(vec![p]))?;
                Some(Signer::Rsa {
                    key,
                    kid: config.kid.clone(),
                    public_pem,
                })
            }
        };
        let jaas = config.token == JitsiTokenMode::Jaas;
        Ok(Some(Self {
            domain: domain.to_string(),
            mode: config.token,
            signer,
            issuer: if jaas {
                JAAS_ISSUER.to_string()
            } else {
                config.app_id.clone()
            },
            audience: config.audience.clone(),
            subject: if jaas {
                config.app_id.clone()
            } else {
                config.subject.clone()
            },
            tenant: jaas.then(|| config.app_id.clone()),
            ttl_secs: config.token_ttl_secs,
            moderator: config.moderator,
        }))
    }

    /// The Jitsi host.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether room tokens are minted.
    pub fn mints_tokens(&self) -> bool {
        self.signer.is_some()
    }

    /// Whether minting costs an RSA signature (worth moving off the runtime).
    pub fn signs_slowly(&self) -> bool {
        matches!(self.signer, Some(Signer::Rsa { .. }))
    }

    /// The public key served at `/jitsi/keys/<file>` (RS256 and JaaS), if `file`
    /// is `hex(sha256(kid))`.pem of the configured key.
    pub fn public_key(&self, file: &str) -> Option<&str> {
        match &self.signer {
            Some(Signer::Rsa {
                kid, public_pem, ..
            }) if key_file_name(kid) == file => Some(public_pem),
            _ => None,
        }
    }

    /// The claims a token for `grant` carries when issued at `now`.
    pub fn claims<'a>(&'a self, grant: &'a Grant, now: u64) -> Claims<'a> {
        Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: &self.subject,
            room: grant.room.as_str(),
            iat: now,
            nbf: now.saturating_sub(NOT_BEFORE_SLACK_SECS),
            exp: now.saturating_add(self.ttl_secs),
            context: Context {
                user: User {
                    id: grant.user.as_str(),
                    name: grant.name.as_str(),
                    moderator: self.moderator.applies_to(grant.role),
                },
            },
        }
    }

    /// `jitsi: {domain, room, jwt}` for `grant`, issued now.
    ///
    /// # Errors
    /// [`MintError`] when the key refuses to sign.
    pub fn access(&self, grant: &Grant) -> Result<Access, MintError> {
        self.access_at(grant, now_secs())
    }

    /// [`Jitsi::access`] at a given time (for tests).
    ///
    /// # Errors
    /// As [`Jitsi::access`].
    pub fn access_at(&self, grant: &Grant, now: u64) -> Result<Access, MintError> {
        let room = match &self.tenant {
            Some(tenant) => format!("{tenant}/{}", grant.room),
            None => grant.room.to_string(),
        };
        let jwt = match &self.signer {
            None => None,
            Some(signer) => {
                let claims = self.claims(grant, now);
                let (header, key) = match signer {
                    Signer::Hs256(key) => (Header::new(Algorithm::HS256), key),
                    Signer::Rsa { key, kid, .. } => {
                        let mut header = Header::new(Algorithm::RS256);
                        header.kid = Some(kid.clone());
                        (header, key)
                    }
                };
                Some(encode(&header, &claims, key).map_err(|_| MintError)?)
            }
        };
        Ok(Access {
            domain: self.domain.clone(),
            room,
            jwt,
        })
    }
}

#[cfg(test)]
mod tests;
