//! The seed file for the embedded store.
//!
//! ```json
//! { "users":  [ { "id": "6860e2e85547033af89987ba", "username": "alice",
//!                 "displayName": "Alice Adams", "password": "dev only" } ],
//!   "groups": [ { "id": "507f1f77bcf86cd799439011", "name": "Project Team",
//!                 "members": ["6860e2e85547033af89987ba"] } ] }
//! ```
//! A user has `password` (plain text, hashed at load; development only) or
//! `passwordHash` (an argon2id PHC string). `"demo": true` at the top marks a
//! directory made for trying callgate out (see [`Seed::demo`]). Unknown keys
//! are ignored so a seed can carry notes. A malformed file is reported with its path, the JSON
//! pointer of the bad value and what is wrong.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{DisplayName, GroupId, GroupName, Password, UserId, Username};

/// A parsed seed, before any hashing.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    /// Marks a directory made for trying callgate out (`demo/seed.json`): in
    /// development the `/demo/` page lists its users with their plain-text
    /// passwords for one-click login. Absent means false: a seed is never
    /// shown unless it says so.
    #[serde(default)]
    pub demo: bool,
    /// Users.
    #[serde(default)]
    pub users: Vec<SeedUser>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
}

/// A user in the seed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedUser {
    /// Id.
    pub id: UserId,
    /// Login name.
    pub username: Username,
    /// Shown name.
    pub display_name: DisplayName,
    /// Plain password (hashed at load).
    pub password: Option<Password>,
    /// Or an argon2id PHC string.
    pub password_hash: Option<String>,
}

/// A group in the seed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedGroup {
    /// Id.
    pub id: GroupId,
    /// Name.
    pub name: GroupName,
    /// Optional owner (must be a member).
    pub owner: Option<UserId>,
    /// Member ids.
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// A seed file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SeedError {
    /// The file.
    pub path: PathBuf,
    /// JSON pointer of the bad value (empty for the whole document).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            "{} at {}: {}",
            self.path.display(),
            pointer,
            self.message
        )
    }
}

impl Seed {
    /// Reads and checks a seed file.
    ///
    /// # Errors
    /// A [`SeedError`] naming the file, the JSON pointer and the problem.
    pub fn load(path: &Path) -> Result<Self, SeedError> {
        let err = |pointer: String, message: String| SeedError {
            path: path.to_path_buf(),
            pointer,
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(String::new(), format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(|(pointer, message)| err(pointer, message))
    }

    /// Parses and checks seed text; errors are `(pointer, message)`.
    ///
    /// # Errors
    /// The JSON pointer and the problem.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let seed: Seed = serde_path_to_error::deserialize(de).map_err(|e| {
            let pointer = pointer_of(e.path());
            let mut message = e.inner().to_string();
            // serde_json appends " at line L column C"; keep it, it helps.
            if message.is_empty() {
                message = "invalid value".into();
            }
            (pointer, message)
        })?;
        seed.check()?;
        Ok(seed)
    }

    fn check(&self) -> Result<(), (String, String)> {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if !ids.insert(&u.id) {
                return Err((format!("/users/{i}/id"), "duplicate user id".into()));
            }
            if !names.insert(&u.username) {
                return Err((format!("/users/{i}/username"), "duplicate username".into()));
            }
            match (&u.password, &u.password_hash) {
                (Some(_), Some(_)) => {
                    return Err((
                        format!("/users/{i}"),
                        "give password or passwordHash, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err((
                        format!("/users/{i}"),
                        "needs password or passwordHash".into(),
                    ));
                }
                (None, Some(h)) if !h.starts_with("$argon2id$") => {
                    return Err((
                        format!("/users/{i}/passwordHash"),
                        "must be an argon2id PHC string".into(),
                    ));
                }
                _ => {}
            }
        }
        let mut group_ids = HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            if !group_ids.insert(&g.id) {
                return Err((format!("/groups/{i}/id"), "duplicate group id".into()));
            }
            for (j, m) in g.members.iter().enumerate() {
                if !ids.contains(m) {
                    return Err((
                        format!("/groups/{i}/members/{j}"),
                        "no user has this id".into(),
                    ));
                }
            }
            if let Some(owner) = &g.owner
                && !g.members.contains(owner)
            {
                return Err((
                    format!("/groups/{i}/owner"),
                    "the owner must be a member".into(),
                ));
            }
        }
        Ok(())
    }
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_format_parses_and_ignores_unknown_keys() {
        let seed = Seed::parse(
            r#"{"users":[{"id":"6860e2e85547033af89987ba","username":"alice","displayName":"Alice Adams",
                "password":"plain text, dev only","note":"ignored"}],
                "groups":[{"id":"507f1f77bcf86cd799439011","name":"Project Team",
                "members":["6860e2e85547033af89987ba"],"color":"blue"}]}"#,
        )
        .expect("valid seed");
        assert_eq!(seed.users.len(), 1);
        assert_eq!(seed.groups[0].members.len(), 1);
    }

    #[test]
    fn errors_carry_a_json_pointer() {
        let err = Seed::parse(
            r#"{"users":[{"id":"ok","username":"alice","displayName":"A","password":"12345678"},
            {"id":"bad id!","username":"bob","displayName":"B","password":"12345678"}]}"#,
        )
        .expect_err("bad id");
        assert_eq!(err.0, "/users/1/id");
        assert!(err.1.contains("user id"), "{}", err.1);

        let err =
            Seed::parse(r#"{"users":[],"groups":[{"id":"g","name":"G","members":["nobody"]}]}"#)
                .expect_err("unknown member");
        assert_eq!(
            err,
            (
                "/groups/0/members/0".to_string(),
                "no user has this id".to_string()
            )
        );
    }

    #[test]
    fn a_user_needs_exactly_one_password_form() {
        let err = Seed::parse(r#"{"users":[{"id":"a","username":"alice","displayName":"A"}]}"#)
            .expect_err("none");
        assert_eq!(err.0, "/users/0");
    }
}
