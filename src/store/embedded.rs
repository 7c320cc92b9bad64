//! The embedded store: the whole directory in memory, behind one
//! `std::sync::RwLock` that is never held across an `.await` (every method
//! does its work and drops the guard before returning).
//!
//! Users registered and groups created through the API live until restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use super::seed::Seed;
use super::{Credentials, Group, NewGroup, NewUser, StoreError, StoreResult, User};
use crate::domain::{GroupId, UserId, Username};

#[derive(Debug, Default)]
struct Directory {
    users: HashMap<UserId, (User, Option<String>)>,
    by_username: HashMap<Username, UserId>,
    groups: HashMap<GroupId, Group>,
    groups_by_member: HashMap<UserId, BTreeSet<GroupId>>,
}

impl Directory {
    fn insert_user(&mut self, user: User, hash: Option<String>) {
        self.by_username
            .insert(user.username.clone(), user.id.clone());
        self.users.insert(user.id.clone(), (user, hash));
    }

    fn insert_group(&mut self, group: Group) {
        for m in &group.members {
            self.groups_by_member
                .entry(m.clone())
                .or_default()
                .insert(group.id.clone());
        }
        self.groups.insert(group.id.clone(), group);
    }
}

/// In-memory directory. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct EmbeddedStore {
    inner: Arc<RwLock<Directory>>,
    /// Cluster mode: each node holds its own copy of the seed, so a change
    /// on one node would silently diverge from the others. Every write is
    /// refused instead ([`StoreError::ReadOnly`]).
    read_only: bool,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("embedded store lock poisoned".into())
}

impl EmbeddedStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same store, refusing every write through the API (cluster mode).
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    fn writable(&self) -> StoreResult<()> {
        if self.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// A store loaded from a checked seed. `hash` turns a seed's plain
    /// password into a PHC string.
    ///
    /// # Errors
    /// Whatever `hash` returns.
    pub fn from_seed<E>(
        seed: Seed,
        mut hash: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<Self, E> {
        let mut dir = Directory::default();
        for u in seed.users {
            let stored = match (u.password, u.password_hash) {
                (Some(p), _) => Some(hash(p.expose())?),
                (None, h) => h,
            };
            let user = User {
                id: u.id,
                username: u.username,
                display_name: u.display_name,
            };
            dir.insert_user(user, stored);
        }
        for g in seed.groups {
            let mut members = Vec::with_capacity(g.members.len());
            for m in g.members {
                if !members.contains(&m) {
                    members.push(m);
                }
            }
            dir.insert_group(Group {
                id: g.id,
                name: g.name,
                owner: g.owner,
                members,
            });
        }
        Ok(Self {
            inner: Arc::new(RwLock::new(dir)),
            read_only: false,
        })
    }

    /// Always answers.
    pub(crate) async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    pub(crate) async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let dir = self.inner.read().map_err(poisoned)?;
        Ok(dir.users.get(id).map(|(u, _)| u.clone()))
    }

    pub(crate) async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let dir = self.inner.read().map_err(poisoned)?;
        let mut out: Vec<User> = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((u, _)) = dir.users.get(id)
                && !out.iter().any(|o| o.id == u.id)
            {
                out.push(u.clone());
            }
        }
        Ok(out)
    }

    pub(crate) async fn existing_users(&self, ids: &[UserId]) -> StoreResult<Vec<UserId>> {
        let dir = self.inner.read().map_err(poisoned)?;
        Ok(ids
            .iter()
            .filter(|id| dir.users.contains_key(*id))
            .cloned()
            .collect())
    }

    pub(crate) async fn credentials(
        &self,
        username: &Username,
    ) -> StoreResult<Option<Credentials>> {
        let dir = self.inner.read().map_err(poisoned)?;
        Ok(dir
            .by_username
            .get(username)
            .and_then(|id| dir.users.get(id))
            .map(|(user, hash)| Credentials {
                user: user.clone(),
                password_hash: hash.clone(),
            }))
    }

    pub(crate) async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        self.writable()?;
        let mut dir = self.inner.write().map_err(poisoned)?;
        if dir.by_username.contains_key(&new.username) {
            return Err(StoreError::UsernameTaken);
        }
        let id = loop {
            let id = UserId::parse(&super::new_object_id())
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if !dir.users.contains_key(&id) {
                break id;
            }
        };
        let user = User {
            id,
            username: new.username,
            display_name: new.display_name,
        };
        dir.insert_user(user.clone(), Some(new.password_hash));
        Ok(user)
    }

    pub(crate) async fn groups_of(&self, user: &UserId) -> StoreResult<Vec<Group>> {
        let dir = self.inner.read().map_err(poisoned)?;
        Ok(dir
            .groups_by_member
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|gid| dir.groups.get(gid).cloned())
            .collect())
    }

    pub(crate) async fn group(&self, id: &GroupId) -> StoreResult<Option<Group>> {
        let dir = self.inner.read().map_err(poisoned)?;
        Ok(dir.groups.get(id).cloned())
    }

    pub(crate) async fn create_group(&self, new: NewGroup) -> StoreResult<Group> {
        self.writable()?;
        let mut dir = self.inner.write().map_err(poisoned)?;
        let id = loop {
            let id = GroupId::parse(&super::new_object_id())
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if !dir.groups.contains_key(&id) {
                break id;
            }
        };
        let group = Group {
            id,
            name: new.name,
            members: super::member_list(&new.owner, &new.members),
            owner: Some(new.owner),
        };
        dir.insert_group(group.clone());
        Ok(group)
    }

    pub(crate) async fn add_member(&self, group: &GroupId, user: &UserId) -> StoreResult<bool> {
        self.writable()?;
        let mut dir = self.inner.write().map_err(poisoned)?;
        let g = dir.groups.get_mut(group).ok_or(StoreError::GroupNotFound)?;
        if g.has_member(user) {
            return Ok(false);
        }
        g.members.push(user.clone());
        dir.groups_by_member
            .entry(user.clone())
            .or_default()
            .insert(group.clone());
        Ok(true)
    }

    pub(crate) async fn remove_member(&self, group: &GroupId, user: &UserId) -> StoreResult<bool> {
        self.writable()?;
        let mut dir = self.inner.write().map_err(poisoned)?;
        let g = dir.groups.get_mut(group).ok_or(StoreError::GroupNotFound)?;
        let before = g.members.len();
        g.members.retain(|m| m != user);
        let removed = g.members.len() != before;
        if removed && let Some(set) = dir.groups_by_member.get_mut(user) {
            set.remove(group);
            if set.is_empty() {
                dir.groups_by_member.remove(user);
            }
        }
        Ok(removed)
    }

    pub(crate) async fn set_owner(&self, group: &GroupId, owner: &UserId) -> StoreResult<bool> {
        self.writable()?;
        let mut dir = self.inner.write().map_err(poisoned)?;
        let g = dir.groups.get_mut(group).ok_or(StoreError::GroupNotFound)?;
        if !g.has_member(owner) {
            return Ok(false);
        }
        g.owner = Some(owner.clone());
        Ok(true)
    }

    /// Deletes a user from the directory (what an operator or the chat app
    /// does to an account; callgate's API has no route for it). Their group
    /// memberships stay, as in a MongoDB directory whose users document was
    /// deleted; every rule treats a member the directory does not know as
    /// gone. `false` if there was no such user.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        let mut dir = self.inner.write().map_err(poisoned)?;
        match dir.users.remove(id) {
            Some((user, _)) => {
                dir.by_username.remove(&user.username);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_read_only_store_refuses_every_write_and_changes_nothing() {
        let seed = Seed::parse(
            r#"{"users":[{"id":"u1","username":"alice","displayName":"Alice","passwordHash":"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g"},
                {"id":"u2","username":"bob","displayName":"Bob","passwordHash":"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g"}],
               "groups":[{"id":"g1","name":"Team","members":["u1"],"owner":"u1"}]}"#,
        )
        .expect("seed");
        let store = EmbeddedStore::from_seed(seed, |p| Ok::<_, ()>(p.to_string()))
            .expect("store")
            .read_only();
        let g1 = GroupId::parse("g1").expect("id");
        let u1 = UserId::parse("u1").expect("id");
        let u2 = UserId::parse("u2").expect("id");
        assert!(matches!(
            store.add_member(&g1, &u2).await,
            Err(StoreError::ReadOnly)
        ));
        assert!(matches!(
            store.remove_member(&g1, &u1).await,
            Err(StoreError::ReadOnly)
        ));
        assert!(matches!(
            store.set_owner(&g1, &u1).await,
            Err(StoreError::ReadOnly)
        ));
        let group = store.group(&g1).await.expect("read").expect("group");
        assert_eq!(group.members, vec![u1.clone()], "nothing changed");
        // Reads still work: the seed is the directory.
        assert!(store.user(&u2).await.expect("read").is_some());
    }
}
