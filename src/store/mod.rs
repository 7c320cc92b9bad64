//! The directory of users and groups: one interface ([`Store`]) over two
//! backends, an embedded in-memory store ([`embedded`]) seeded from a JSON file
//! ([`seed`]), and MongoDB ([`mongo`]).
//!
//! Everything above this module talks to [`Store`] and never knows which
//! backend answers. Every argument is a parsed domain type, so no client JSON
//! can reach a query.

pub mod embedded;
pub mod mongo;
pub mod seed;

use serde::Serialize;

use crate::domain::{DisplayName, GroupId, GroupName, UserId, Username};

pub use embedded::EmbeddedStore;
pub use mongo::MongoStore;

/// A user as the rest of callgate sees it (never with the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Opaque id.
    pub id: UserId,
    /// Login name.
    pub username: Username,
    /// Name shown to others.
    pub display_name: DisplayName,
}

/// A user with the stored password hash, for login only.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: User,
    /// The stored PHC string (may be absent for users managed elsewhere).
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A group and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Opaque id.
    pub id: GroupId,
    /// Name shown to members.
    pub name: GroupName,
    /// The member who may add and remove others (groups from a seed or
    /// another application may have none).
    pub owner: Option<UserId>,
    /// Member ids, without duplicates.
    pub members: Vec<UserId>,
}

impl Group {
    /// Whether `user` is a member.
    pub fn has_member(&self, user: &UserId) -> bool {
        self.members.contains(user)
    }
}

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    /// Login name (unique).
    pub username: Username,
    /// Name shown to others.
    pub display_name: DisplayName,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A group to create.
#[derive(Debug, Clone)]
pub struct NewGroup {
    /// Name.
    pub name: GroupName,
    /// Creator, owner and first member.
    pub owner: UserId,
    /// Other members (the owner is added if missing; duplicates are dropped).
    pub members: Vec<UserId>,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The username is already registered.
    #[error("username taken")]
    UsernameTaken,
    /// The group does not exist.
    #[error("group not found")]
    GroupNotFound,
    /// The backend failed or did not answer within its bound; the detail is
    /// for logs only. Clients get `unavailable` / 503 `store_unavailable`.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write to the embedded directory of a cluster node: each node has
    /// its own copy, so writes are refused rather than left to diverge.
    #[error("the embedded directory is read-only in cluster mode")]
    ReadOnly,
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// The directory, whichever backend holds it. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// In memory.
    Embedded(EmbeddedStore),
    /// MongoDB.
    Mongo(MongoStore),
}

macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Embedded(s) => s.$method($($arg),*).await,
            Store::Mongo(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Whether the backend answers (within `store.mongodb.readyz_timeout_ms`
    /// for MongoDB).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> StoreResult<()> {
        delegate!(self.ping())
    }

    /// The user with this id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        delegate!(self.user(id))
    }

    /// The users among `ids` that exist, in the order given, each once (one
    /// directory round trip).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        delegate!(self.users(ids))
    }

    /// The ids among `ids` that exist.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn existing_users(&self, ids: &[UserId]) -> StoreResult<Vec<UserId>> {
        delegate!(self.existing_users(ids))
    }

    /// The user with this username, with the stored hash.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>> {
        delegate!(self.credentials(username))
    }

    /// Creates a user with a fresh id.
    ///
    /// # Errors
    /// [`StoreError::UsernameTaken`], [`StoreError::Unavailable`].
    pub async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        delegate!(self.create_user(new))
    }

    /// The groups `user` is a member of.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn groups_of(&self, user: &UserId) -> StoreResult<Vec<Group>> {
        delegate!(self.groups_of(user))
    }

    /// The group with this id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn group(&self, id: &GroupId) -> StoreResult<Option<Group>> {
        delegate!(self.group(id))
    }

    /// Creates a group with a fresh id; the owner is a member.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn create_group(&self, new: NewGroup) -> StoreResult<Group> {
        delegate!(self.create_group(new))
    }

    /// Adds `user` to the group; `false` if already a member.
    ///
    /// # Errors
    /// [`StoreError::GroupNotFound`], [`StoreError::Unavailable`].
    pub async fn add_member(&self, group: &GroupId, user: &UserId) -> StoreResult<bool> {
        delegate!(self.add_member(group, user))
    }

    /// Makes `owner` the group's owner; `false` if they are not a member.
    ///
    /// # Errors
    /// [`StoreError::GroupNotFound`], [`StoreError::Unavailable`].
    pub async fn set_owner(&self, group: &GroupId, owner: &UserId) -> StoreResult<bool> {
        delegate!(self.set_owner(group, owner))
    }

    /// Removes `user` from the group; `false` if not a member.
    ///
    /// # Errors
    /// [`StoreError::GroupNotFound`], [`StoreError::Unavailable`].
    pub async fn remove_member(&self, group: &GroupId, user: &UserId) -> StoreResult<bool> {
        delegate!(self.remove_member(group, user))
    }
}

/// A new opaque id in the shape of a MongoDB ObjectId (24 hex characters), so
/// ids look alike whichever store made them.
pub(crate) fn new_object_id() -> String {
    mongodb::bson::oid::ObjectId::new().to_hex()
}

/// The owner first, then the other members once each, in order.
pub(crate) fn member_list(owner: &UserId, members: &[UserId]) -> Vec<UserId> {
    let mut out = vec![owner.clone()];
    for m in members {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}
