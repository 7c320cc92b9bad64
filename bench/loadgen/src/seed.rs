//! Seed files in callgate's format (README "Seed file"): the users every
//! server under test loads, and whose ids the generator signs tokens for.
//!
//! Every generated user shares ONE argon2id PHC string (`passwordHash`),
//! hashed once, so loading 20 000 users costs no hashing at start-up while
//! `POST /auth/login` still verifies a real hash at callgate's cost.

use std::path::Path;

use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

/// A user as the seed file holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedUser {
    /// 1 to 64 characters from `[A-Za-z0-9_-]`.
    pub id: String,
    /// 3 to 32 characters from `a-z0-9_.-`.
    pub username: String,
    /// Shown name.
    pub display_name: String,
    /// An argon2id PHC string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// A seed file. Groups are kept as they are; generated seeds have none.
#[derive(Debug, Serialize, Deserialize)]
pub struct Seed {
    /// Users.
    pub users: Vec<SeedUser>,
    /// Groups, untouched.
    #[serde(default)]
    pub groups: Vec<serde_json::Value>,
}

/// The argon2id PHC string of `password` with callgate's default cost
/// (OWASP: m = 19456 KiB, t = 2, p = 1).
///
/// # Errors
/// When argon2 refuses the input.
pub fn hash_password(password: &str) -> Result<String, String> {
    let params = Params::new(19_456, 2, 1, None).map_err(|e| e.to_string())?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// `count` users sharing `password_hash`: ids are 24 hex digits (ObjectId-like),
/// usernames `bench00000`, `bench00001`, ...
pub fn generate(count: usize, password_hash: &str) -> Seed {
    let users = (0..count)
        .map(|i| SeedUser {
            id: format!("{i:024x}"),
            username: format!("bench{i:05}"),
            display_name: format!("Bench User {i}"),
            password_hash: Some(password_hash.to_owned()),
        })
        .collect();
    Seed {
        users,
        groups: Vec::new(),
    }
}

/// Reads a seed file.
///
/// # Errors
/// An unreadable or malformed file, named.
pub fn load(path: &Path) -> Result<Seed, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a seed file.
///
/// # Errors
/// When the file cannot be written.
pub fn save(seed: &Seed, path: &Path) -> Result<(), String> {
    let text = serde_json::to_string(seed).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_users_are_valid_for_callgate() {
        let seed = generate(20_000, "$argon2id$...");
        let last = &seed.users[19_999];
        assert_eq!(last.id.len(), 24);
        assert!(last.id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(last.username, "bench19999");
        let ids: std::collections::HashSet<_> = seed.users.iter().map(|u| &u.id).collect();
        assert_eq!(ids.len(), 20_000);
    }

    #[test]
    fn seed_json_uses_callgate_field_names() {
        let json = serde_json::to_value(generate(1, "h")).unwrap();
        assert_eq!(json["users"][0]["displayName"], "Bench User 0");
        assert_eq!(json["users"][0]["passwordHash"], "h");
    }

    #[test]
    fn hashes_are_argon2id_at_callgate_cost() {
        let hash = hash_password("bench-password").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
    }
}
