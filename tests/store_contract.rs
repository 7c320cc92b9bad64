//! The store contract: every case runs against the embedded store, and
//! against MongoDB when `CALLGATE_TEST_MONGODB_URI` is set.
//!
//! Each contract case is one `async fn` taking a [`Store`]; the
//! `contract_tests!` macro turns it into `embedded_<case>` (always run) and
//! `mongodb_<case>` (ignored unless run with `--include-ignored`, and then
//! failing loudly when the variable is missing, never silently passing). Each
//! MongoDB test works in a fresh, randomly named database that is dropped at
//! the end, even when the case panics.
//!
//! ```text
//! CALLGATE_TEST_MONGODB_URI=mongodb://localhost:27017 \
//!     cargo test --test store_contract -- --include-ignored
//! ```
//!
//! The MongoDB-only cases at the bottom insert documents directly (string and
//! ObjectId `_id`s, mixed member arrays, custom field names, documents that
//! do not parse) and check the store reads them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

use std::collections::BTreeSet;
use std::future::Future;

use callgate::config::{Config, MongoConfig, Overrides};
use callgate::domain::{DisplayName, GroupId, GroupName, UserId, Username};
use callgate::store::{EmbeddedStore, Group, MongoStore, NewGroup, NewUser, Store, StoreError};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use secrecy::SecretString;

const MONGODB_URI_VAR: &str = "CALLGATE_TEST_MONGODB_URI";
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn uid(raw: &str) -> UserId {
    UserId::parse(raw).expect("valid user id")
}

fn gid(raw: &str) -> GroupId {
    GroupId::parse(raw).expect("valid group id")
}

fn new_user(username: &str, display_name: &str) -> NewUser {
    NewUser {
        username: Username::parse(username).expect("valid username"),
        display_name: DisplayName::parse(display_name).expect("valid display name"),
        password_hash: format!("{HASH}{username}"),
    }
}

fn new_group(name: &str, owner: &UserId, members: &[&UserId]) -> NewGroup {
    NewGroup {
        name: GroupName::parse(name).expect("valid group name"),
        owner: owner.clone(),
        members: members.iter().map(|m| (*m).clone()).collect(),
    }
}

fn ids(raw: &[&str]) -> Vec<UserId> {
    raw.iter().map(|r| uid(r)).collect()
}

fn is_object_id_hex(id: &str) -> bool {
    id.len() == 24
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn group_ids(groups: &[Group]) -> BTreeSet<GroupId> {
    groups.iter().map(|g| g.id.clone()).collect()
}

/// `[store.mongodb]` as shipped in `defaults.toml`.
fn default_mongo_config() -> MongoConfig {
    Config::load_from(None, &Overrides::default(), &[])
        .expect("default configuration loads")
        .store
        .mongodb
}

fn embedded_store() -> Store {
    Store::Embedded(EmbeddedStore::new())
}

/// A fresh MongoDB database for one test, dropped by [`MongoFixture::run`].
#[derive(Clone)]
struct MongoFixture {
    config: MongoConfig,
    raw: mongodb::Database,
}

impl MongoFixture {
    async fn new() -> Self {
        let uri = std::env::var(MONGODB_URI_VAR).unwrap_or_else(|_| {
            panic!(
                "{MONGODB_URI_VAR} is not set: the mongodb_* tests need a MongoDB server \
                 (e.g. {MONGODB_URI_VAR}=mongodb://localhost:27017 cargo test --test store_contract -- --include-ignored)"
            )
        });
        let mut config = default_mongo_config();
        config.uri = SecretString::from(uri.clone());
        config.database = format!("callgate_test_{}", uuid::Uuid::new_v4().simple());
        let client = mongodb::Client::with_uri_str(&uri)
            .await
            .expect("the test MongoDB URI parses");
        let raw = client.database(&config.database);
        Self { config, raw }
    }

    /// A store on this database with the fixture's configuration.
    async fn store(&self) -> Store {
        self.store_with(|_| {}).await
    }

    /// A store on this database with a changed configuration.
    async fn store_with(&self, change: impl FnOnce(&mut MongoConfig)) -> Store {
        let mut config = self.config.clone();
        change(&mut config);
        Store::Mongo(
            MongoStore::connect(&config)
                .await
                .expect("MongoStore connects"),
        )
    }

    fn users(&self) -> mongodb::Collection<Document> {
        self.raw.collection(&self.config.users_collection)
    }

    fn groups(&self) -> mongodb::Collection<Document> {
        self.raw.collection(&self.config.groups_collection)
    }

    /// Runs `case`, drops the database whatever happened, then re-raises a panic.
    async fn run(self, case: impl Future<Output = ()> + Send + 'static) {
        let outcome = tokio::spawn(case).await;
        if let Err(e) = self.raw.drop().await {
            eprintln!("could not drop test database {}: {e}", self.config.database);
        }
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("test task failed: {e}"),
        }
    }

    /// Runs a contract case on a store over this database.
    async fn run_case<F, Fut>(self, case: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let store = self.store().await;
        self.run(case(store)).await;
    }
}

/// `embedded_<case>` and `mongodb_<case>` for one contract case.
macro_rules! contract_tests {
    ($($case:ident => $embedded:ident, $mongodb:ident;)*) => {$(
        #[tokio::test]
        async fn $embedded() {
            $case(embedded_store()).await;
        }

        #[tokio::test]
        #[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
        async fn $mongodb() {
            MongoFixture::new().await.run_case($case).await;
        }
    )*};
}

contract_tests! {
    create_user_then_find_by_id_and_username
        => embedded_create_user_then_find_by_id_and_username, mongodb_create_user_then_find_by_id_and_username;
    duplicate_username_is_taken
        => embedded_duplicate_username_is_taken, mongodb_duplicate_username_is_taken;
    existing_users_filters_unknown_ids
        => embedded_existing_users_filters_unknown_ids, mongodb_existing_users_filters_unknown_ids;
    users_are_the_known_ones_in_the_order_asked_each_once
        => embedded_users_are_the_known_ones_in_the_order_asked_each_once,
           mongodb_users_are_the_known_ones_in_the_order_asked_each_once;
    create_group_puts_owner_first_and_drops_duplicates
        => embedded_create_group_puts_owner_first_and_drops_duplicates,
           mongodb_create_group_puts_owner_first_and_drops_duplicates;
    groups_of_lists_every_group_of_a_member
        => embedded_groups_of_lists_every_group_of_a_member, mongodb_groups_of_lists_every_group_of_a_member;
    add_member_adds_once
        => embedded_add_member_adds_once, mongodb_add_member_adds_once;
    remove_member_removes_once
        => embedded_remove_member_removes_once, mongodb_remove_member_removes_once;
    unknown_group_is_not_found
        => embedded_unknown_group_is_not_found, mongodb_unknown_group_is_not_found;
    ping_answers
        => embedded_ping_answers, mongodb_ping_answers;
    set_owner_hands_over_to_members_only
        => embedded_set_owner_hands_over_to_members_only, mongodb_set_owner_hands_over_to_members_only;
}

// ---------------------------------------------------------------------------
// Contract cases (every backend)
// ---------------------------------------------------------------------------

async fn create_user_then_find_by_id_and_username(store: Store) {
    let created = store
        .create_user(new_user("alice", "Alice Adams"))
        .await
        .expect("create");
    assert_eq!(created.username.as_str(), "alice");
    assert_eq!(created.display_name.as_str(), "Alice Adams");
    assert!(
        is_object_id_hex(created.id.as_str()),
        "id looks like an ObjectId: {}",
        created.id
    );

    assert_eq!(
        store.user(&created.id).await.expect("user"),
        Some(created.clone())
    );

    let creds = store
        .credentials(&created.username)
        .await
        .expect("credentials")
        .expect("credentials found");
    assert_eq!(creds.user, created);
    assert_eq!(
        creds.password_hash.as_deref(),
        Some(format!("{HASH}alice").as_str())
    );

    let bob = store
        .create_user(new_user("bob", "Bob"))
        .await
        .expect("create bob");
    assert_ne!(bob.id, created.id, "fresh ids");

    assert_eq!(
        store
            .user(&uid("000000000000000000000000"))
            .await
            .expect("user"),
        None
    );
    assert_eq!(store.user(&uid("nobody")).await.expect("user"), None);
    let nobody = Username::parse("nobody").expect("username");
    assert!(
        store
            .credentials(&nobody)
            .await
            .expect("credentials")
            .is_none()
    );
}

async fn duplicate_username_is_taken(store: Store) {
    let first = store
        .create_user(new_user("alice", "Alice"))
        .await
        .expect("create");
    let again = store.create_user(new_user("alice", "Another Alice")).await;
    assert!(matches!(again, Err(StoreError::UsernameTaken)), "{again:?}");

    let creds = store
        .credentials(&first.username)
        .await
        .expect("credentials")
        .expect("found");
    assert_eq!(creds.user, first, "the first registration is untouched");
}

async fn existing_users_filters_unknown_ids(store: Store) {
    let a = store
        .create_user(new_user("alice", "Alice"))
        .await
        .expect("create");
    let b = store
        .create_user(new_user("bob", "Bob"))
        .await
        .expect("create");
    let asked = vec![
        a.id.clone(),
        uid("ffffffffffffffffffffffff"),
        b.id.clone(),
        uid("ghost-user"),
    ];
    assert_eq!(
        store.existing_users(&asked).await.expect("existing"),
        vec![a.id, b.id]
    );
    assert!(
        store
            .existing_users(&[])
            .await
            .expect("existing")
            .is_empty()
    );
    assert!(
        store
            .existing_users(&ids(&["ghost"]))
            .await
            .expect("existing")
            .is_empty()
    );
}

/// The batch lookup (`GET /contacts`, group invites) answers what one
/// `user` lookup per id would: the same records, unknown ids left out.
async fn users_are_the_known_ones_in_the_order_asked_each_once(store: Store) {
    let a = store
        .create_user(new_user("alice", "Alice"))
        .await
        .expect("create");
    let b = store
        .create_user(new_user("bob", "Bob"))
        .await
        .expect("create");
    let asked = vec![
        b.id.clone(),
        uid("ffffffffffffffffffffffff"),
        a.id.clone(),
        uid("ghost-user"),
        b.id.clone(),
    ];
    let one_by_one = store.user(&b.id).await.expect("user").expect("bob");
    assert_eq!(
        store.users(&asked).await.expect("users"),
        vec![
            one_by_one,
            store.user(&a.id).await.expect("user").expect("alice")
        ]
    );
    assert!(store.users(&[]).await.expect("users").is_empty());
    assert!(
        store
            .users(&ids(&["ghost"]))
            .await
            .expect("users")
            .is_empty()
    );
}

async fn create_group_puts_owner_first_and_drops_duplicates(store: Store) {
    let owner = store
        .create_user(new_user("alice", "Alice"))
        .await
        .expect("create")
        .id;
    let bob = store
        .create_user(new_user("bob", "Bob"))
        .await
        .expect("create")
        .id;
    // A member id that is not ObjectId-shaped (ids from another application).
    let carol = uid("carol-ext_1");

    let group = store
        .create_group(new_group(
            "Project Team",
            &owner,
            &[&bob, &owner, &carol, &bob],
        ))
        .await
        .expect("create group");
    assert!(
        is_object_id_hex(group.id.as_str()),
        "id looks like an ObjectId: {}",
        group.id
    );
    assert_eq!(group.name.as_str(), "Project Team");
    assert_eq!(group.owner.as_ref(), Some(&owner));
    assert_eq!(
        group.members,
        vec![owner.clone(), bob.clone(), carol.clone()]
    );

    assert_eq!(
        store.group(&group.id).await.expect("group"),
        Some(group.clone())
    );
    for member in [&owner, &bob, &carol] {
        assert_eq!(
            store.groups_of(member).await.expect("groups_of"),
            vec![group.clone()],
            "{member}"
        );
    }
    assert!(
        store
            .groups_of(&uid("outsider"))
            .await
            .expect("groups_of")
            .is_empty()
    );
    assert_eq!(
        store
            .group(&gid("000000000000000000000000"))
            .await
            .expect("group"),
        None
    );
    assert_eq!(
        store.group(&gid("no-such-group")).await.expect("group"),
        None
    );
}

async fn groups_of_lists_every_group_of_a_member(store: Store) {
    let alice = uid("aaaaaaaaaaaaaaaaaaaaaaaa");
    let bob = uid("bob");
    let one = store
        .create_group(new_group("One", &alice, &[&bob]))
        .await
        .expect("one");
    let two = store
        .create_group(new_group("Two", &bob, &[]))
        .await
        .expect("two");
    let three = store
        .create_group(new_group("Three", &alice, &[]))
        .await
        .expect("three");

    let of_bob = store.groups_of(&bob).await.expect("groups_of");
    assert_eq!(
        group_ids(&of_bob),
        BTreeSet::from([one.id.clone(), two.id.clone()])
    );
    assert_eq!(of_bob.len(), 2, "no group twice");
    let of_alice = store.groups_of(&alice).await.expect("groups_of");
    assert_eq!(
        group_ids(&of_alice),
        BTreeSet::from([one.id.clone(), three.id.clone()])
    );
    for g in of_bob.iter().chain(&of_alice) {
        assert_eq!(store.group(&g.id).await.expect("group").as_ref(), Some(g));
    }
}

async fn add_member_adds_once(store: Store) {
    let owner = store
        .create_user(new_user("alice", "Alice"))
        .await
        .expect("create")
        .id;
    let bob = store
        .create_user(new_user("bob", "Bob"))
        .await
        .expect("create")
        .id;
    let carol = uid("carol");
    let group = store
        .create_group(new_group("Team", &owner, &[]))
        .await
        .expect("group");

    assert!(store.add_member(&group.id, &bob).await.expect("add"));
    assert!(!store.add_member(&group.id, &bob).await.expect("add again"));
    assert!(
        !store
            .add_member(&group.id, &owner)
            .await
            .expect("owner is a member")
    );
    assert!(
        store
            .add_member(&group.id, &carol)
            .await
            .expect("add string id")
    );
    assert!(
        !store
            .add_member(&group.id, &carol)
            .await
            .expect("add string id again")
    );

    let stored = store.group(&group.id).await.expect("group").expect("found");
    assert_eq!(
        stored.members,
        vec![owner.clone(), bob.clone(), carol.clone()]
    );
    assert_eq!(stored.owner, Some(owner));
    assert_eq!(
        store.groups_of(&bob).await.expect("groups_of"),
        vec![stored.clone()]
    );
    assert_eq!(
        store.groups_of(&carol).await.expect("groups_of"),
        vec![stored]
    );
}

async fn remove_member_removes_once(store: Store) {
    let owner = uid("0123456789abcdef01234567");
    let bob = uid("89abcdef0123456789abcdef");
    let carol = uid("carol");
    let group = store
        .create_group(new_group("Team", &owner, &[&bob, &carol]))
        .await
        .expect("group");

    assert!(store.remove_member(&group.id, &bob).await.expect("remove"));
    assert!(
        !store
            .remove_member(&group.id, &bob)
            .await
            .expect("remove again")
    );
    assert!(
        store
            .remove_member(&group.id, &carol)
            .await
            .expect("remove string id")
    );
    assert!(
        !store
            .remove_member(&group.id, &uid("never-a-member"))
            .await
            .expect("remove stranger")
    );

    let stored = store.group(&group.id).await.expect("group").expect("found");
    assert_eq!(stored.members, vec![owner.clone()]);
    assert!(store.groups_of(&bob).await.expect("groups_of").is_empty());
    assert!(store.groups_of(&carol).await.expect("groups_of").is_empty());
    assert_eq!(
        store.groups_of(&owner).await.expect("groups_of"),
        vec![stored]
    );

    // A removed member can come back.
    assert!(store.add_member(&group.id, &bob).await.expect("re-add"));
}

async fn set_owner_hands_over_to_members_only(store: Store) {
    let owner = uid("0123456789abcdef01234567");
    let bob = uid("89abcdef0123456789abcdef");
    let carol = uid("carol");
    let group = store
        .create_group(new_group("Team", &owner, &[&bob, &carol]))
        .await
        .expect("group");
    assert!(
        !store
            .set_owner(&group.id, &uid("stranger"))
            .await
            .expect("stranger")
    );
    assert_eq!(
        store
            .group(&group.id)
            .await
            .expect("group")
            .expect("found")
            .owner,
        Some(owner.clone())
    );
    assert!(store.set_owner(&group.id, &bob).await.expect("object id"));
    assert_eq!(
        store
            .group(&group.id)
            .await
            .expect("group")
            .expect("found")
            .owner,
        Some(bob.clone())
    );
    assert!(store.set_owner(&group.id, &carol).await.expect("string id"));
    assert_eq!(
        store
            .group(&group.id)
            .await
            .expect("group")
            .expect("found")
            .owner,
        Some(carol)
    );
    let missing = store
        .set_owner(&gid("000000000000000000000000"), &bob)
        .await;
    assert!(
        matches!(missing, Err(StoreError::GroupNotFound)),
        "{missing:?}"
    );
}

async fn unknown_group_is_not_found(store: Store) {
    let user = uid("someone");
    for group in [gid("000000000000000000000000"), gid("no-such-group")] {
        let added = store.add_member(&group, &user).await;
        assert!(matches!(added, Err(StoreError::GroupNotFound)), "{added:?}");
        let removed = store.remove_member(&group, &user).await;
        assert!(
            matches!(removed, Err(StoreError::GroupNotFound)),
            "{removed:?}"
        );
    }
}

async fn ping_answers(store: Store) {
    store.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------
// Without a server
// ---------------------------------------------------------------------------

/// A connection failure is reported as `Unavailable` without the URI or the
/// credentials it holds. Needs no server: nothing listens on port 1.
#[tokio::test]
async fn connect_failure_never_reveals_the_uri() {
    let mut config = default_mongo_config();
    config.connect_timeout_secs = 1;
    for uri in [
        "mongodb://callgate_admin:s3cretPassw0rd@127.0.0.1:1/?directConnection=true",
        "mongodb://callgate_admin:s3cretPassw0rd@127.0.0.1:notaport/",
        "postgres://callgate_admin:s3cretPassw0rd@127.0.0.1/",
        "",
    ] {
        config.uri = SecretString::from(uri);
        let err = MongoStore::connect(&config).await.expect_err("must fail");
        let StoreError::Unavailable(msg) = &err else {
            panic!("expected Unavailable, got {err:?}");
        };
        assert!(!msg.is_empty());
        for leak in [
            "s3cretPassw0rd",
            "callgate_admin",
            "127.0.0.1",
            "postgres://",
        ] {
            assert!(!msg.contains(leak), "message {msg:?} reveals {leak:?}");
            assert!(!err.to_string().contains(leak), "display reveals {leak:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// MongoDB only: documents written by another application
// ---------------------------------------------------------------------------

const OID_A: &str = "64b7f0c2a1b2c3d4e5f60718";
const OID_B: &str = "64b7f0c2a1b2c3d4e5f60719";
const OID_C: &str = "64b7f0c2a1b2c3d4e5f6071a";

fn oid(hex: &str) -> Bson {
    Bson::ObjectId(ObjectId::parse_str(hex).expect("hex"))
}

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_users_with_object_id_and_string_ids_are_found() {
    let fx = MongoFixture::new().await;
    let store = fx.store().await;
    let users = fx.users();
    fx.clone()
        .run(async move {
            users
                .insert_many([
                    // ObjectId _id, full record.
                    doc! { "_id": oid(OID_A), "username": "alice", "displayName": "Alice", "passwordHash": HASH },
                    // ObjectId-shaped id stored as a string.
                    doc! { "_id": OID_B, "username": "bob", "displayName": "Bob" },
                    // Free-form string id, no display name, no hash.
                    doc! { "_id": "legacy-carol", "username": "carol" },
                ])
                .await
                .expect("insert");

            let alice = store.user(&uid(OID_A)).await.expect("user").expect("alice by ObjectId");
            assert_eq!((alice.id.as_str(), alice.username.as_str()), (OID_A, "alice"));
            let bob = store.user(&uid(OID_B)).await.expect("user").expect("bob by string hex id");
            assert_eq!(bob.id.as_str(), OID_B);
            let carol = store.user(&uid("legacy-carol")).await.expect("user").expect("carol");
            assert_eq!(carol.display_name.as_str(), "carol", "display name falls back to the username");

            let asked = ids(&[OID_A, OID_C, OID_B, "legacy-carol", "legacy-dave"]);
            assert_eq!(
                store.existing_users(&asked).await.expect("existing"),
                ids(&[OID_A, OID_B, "legacy-carol"])
            );

            let creds = |name: &str| {
                let store = store.clone();
                let name = Username::parse(name).expect("username");
                async move { store.credentials(&name).await.expect("credentials").expect("found") }
            };
            assert_eq!(creds("alice").await.password_hash.as_deref(), Some(HASH));
            let carol_creds = creds("carol").await;
            assert_eq!(carol_creds.user, carol);
            assert_eq!(carol_creds.password_hash, None, "absent hash");

            // Usernames registered elsewhere are taken here too.
            let taken = store.create_user(new_user("carol", "Carol")).await;
            assert!(matches!(taken, Err(StoreError::UsernameTaken)), "{taken:?}");
        })
        .await;
}

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_groups_with_mixed_member_forms_are_found_and_edited() {
    let fx = MongoFixture::new().await;
    let store = fx.store().await;
    let groups = fx.groups();
    fx.clone()
        .run(async move {
            let string_gid = "legacy-team";
            groups
                .insert_many([
                    doc! {
                        "_id": string_gid,
                        "name": "Legacy Team",
                        "owner": oid(OID_A),
                        // A as ObjectId and again as string, B as string, a free-form id.
                        "members": [oid(OID_A), OID_B, "carol-x", OID_A],
                    },
                    doc! {
                        "_id": oid(OID_C),
                        "name": "ObjectId Team",
                        "owner": OID_B,
                        "members": [OID_B, oid(OID_A)],
                    },
                ])
                .await
                .expect("insert");

            let legacy = store
                .group(&gid(string_gid))
                .await
                .expect("group")
                .expect("string _id");
            assert_eq!(legacy.name.as_str(), "Legacy Team");
            assert_eq!(legacy.owner, Some(uid(OID_A)));
            assert_eq!(
                legacy.members,
                ids(&[OID_A, OID_B, "carol-x"]),
                "one entry per member"
            );
            let modern = store
                .group(&gid(OID_C))
                .await
                .expect("group")
                .expect("ObjectId _id");
            assert_eq!(modern.owner, Some(uid(OID_B)));
            assert_eq!(modern.members, ids(&[OID_B, OID_A]));

            for member in [OID_A, OID_B] {
                let of = store.groups_of(&uid(member)).await.expect("groups_of");
                assert_eq!(
                    group_ids(&of),
                    BTreeSet::from([gid(string_gid), gid(OID_C)]),
                    "{member}"
                );
            }

            // Already members, in either stored form.
            assert!(
                !store
                    .add_member(&gid(string_gid), &uid(OID_A))
                    .await
                    .expect("add")
            );
            assert!(
                !store
                    .add_member(&gid(string_gid), &uid(OID_B))
                    .await
                    .expect("add")
            );
            assert!(
                !store
                    .add_member(&gid(OID_C), &uid(OID_A))
                    .await
                    .expect("add")
            );

            // Removing pulls both forms.
            assert!(
                store
                    .remove_member(&gid(string_gid), &uid(OID_A))
                    .await
                    .expect("remove")
            );
            assert!(
                !store
                    .remove_member(&gid(string_gid), &uid(OID_A))
                    .await
                    .expect("remove again")
            );
            let raw = groups
                .find_one(doc! { "_id": string_gid })
                .await
                .expect("raw read")
                .expect("raw doc");
            assert_eq!(
                raw.get_array("members").expect("array"),
                &vec![Bson::from(OID_B), Bson::from("carol-x")]
            );

            // Added back: stored as an ObjectId, the form callgate writes.
            assert!(
                store
                    .add_member(&gid(string_gid), &uid(OID_A))
                    .await
                    .expect("re-add")
            );
            let raw = groups
                .find_one(doc! { "_id": string_gid })
                .await
                .expect("raw read")
                .expect("raw doc");
            assert_eq!(
                raw.get_array("members").expect("array").last(),
                Some(&oid(OID_A))
            );
            assert!(store.groups_of(&uid(OID_A)).await.expect("groups_of").len() == 2);
        })
        .await;
}

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_custom_field_names_are_used_for_reads_and_writes() {
    let fx = MongoFixture::new().await;
    let store = fx
        .store_with(|c| {
            c.users_collection = "people".into();
            c.groups_collection = "teams".into();
            c.username_field = "login".into();
            c.display_name_field = "fullName".into();
            c.password_hash_field = "secret".into();
            c.group_name_field = "title".into();
            c.members_field = "people".into();
            c.owner_field = "admin".into();
        })
        .await;
    let people: mongodb::Collection<Document> = fx.raw.collection("people");
    let teams: mongodb::Collection<Document> = fx.raw.collection("teams");
    fx.clone()
        .run(async move {
            people
                .insert_one(doc! { "_id": "ext-1", "login": "erin", "fullName": "Erin E." })
                .await
                .expect("insert");
            let erin = store
                .user(&uid("ext-1"))
                .await
                .expect("user")
                .expect("erin");
            assert_eq!(erin.display_name.as_str(), "Erin E.");

            let frank = store
                .create_user(new_user("frank", "Frank F."))
                .await
                .expect("create");
            let raw = people
                .find_one(doc! { "login": "frank" })
                .await
                .expect("raw read")
                .expect("written under the configured field names");
            assert_eq!(
                raw.get("_id"),
                Some(&oid(frank.id.as_str())),
                "new ids are ObjectIds"
            );
            assert_eq!(raw.get_str("fullName").ok(), Some("Frank F."));
            let creds = store
                .credentials(&frank.username)
                .await
                .expect("credentials")
                .expect("found");
            assert_eq!(creds.password_hash, Some(format!("{HASH}frank")));

            let team = store
                .create_group(new_group("Ops", &frank.id, &[&erin.id]))
                .await
                .expect("create group");
            let raw = teams
                .find_one(doc! { "title": "Ops" })
                .await
                .expect("raw read")
                .expect("written under the configured field names");
            assert_eq!(raw.get("_id"), Some(&oid(team.id.as_str())));
            assert_eq!(raw.get("admin"), Some(&oid(frank.id.as_str())));
            assert_eq!(
                raw.get_array("people").expect("members array"),
                &vec![oid(frank.id.as_str()), Bson::from("ext-1")],
                "ObjectId-shaped ids stored as ObjectIds, others as strings"
            );
            assert_eq!(
                store.groups_of(&erin.id).await.expect("groups_of"),
                vec![team]
            );
        })
        .await;
}

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_unparseable_documents_are_skipped_not_crashed() {
    let fx = MongoFixture::new().await;
    let store = fx.store().await;
    let (users, groups) = (fx.users(), fx.groups());
    fx.clone()
        .run(async move {
            users
                .insert_many([
                    doc! { "_id": oid(OID_A), "username": "Not A Valid Name!" },
                    doc! { "_id": "bad-display", "username": "dave", "displayName": 42 },
                    doc! { "_id": "no-username", "displayName": "Nobody" },
                    doc! { "_id": "bad id with spaces", "username": "eve" },
                    doc! { "_id": 17, "username": "mallory" },
                    doc! { "_id": "good", "username": "grace" },
                ])
                .await
                .expect("insert users");
            groups
                .insert_many([
                    doc! { "_id": "bad-name", "name": "", "members": ["good"] },
                    doc! { "_id": "bad-members", "name": "Broken", "members": "good" },
                    doc! { "_id": "partly-bad", "name": "Partly", "owner": 3.5, "members": ["good", "bad id", 17, Bson::Null] },
                ])
                .await
                .expect("insert groups");

            assert_eq!(store.user(&uid(OID_A)).await.expect("no crash"), None);
            assert_eq!(store.user(&uid("bad-display")).await.expect("no crash"), None);
            assert_eq!(store.user(&uid("no-username")).await.expect("no crash"), None);
            assert_eq!(
                store
                    .existing_users(&ids(&[OID_A, "bad-display", "no-username", "good"]))
                    .await
                    .expect("no crash"),
                ids(&["good"]),
                "only users that can be read exist"
            );
            let dave = Username::parse("dave").expect("username");
            assert!(store.credentials(&dave).await.expect("no crash").is_none());
            let eve = Username::parse("eve").expect("username");
            assert!(store.credentials(&eve).await.expect("no crash").is_none());
            let grace = Username::parse("grace").expect("username");
            assert!(store.credentials(&grace).await.expect("no crash").is_some());

            assert_eq!(store.group(&gid("bad-name")).await.expect("no crash"), None);
            assert_eq!(store.group(&gid("bad-members")).await.expect("no crash"), None);
            let partly = store.group(&gid("partly-bad")).await.expect("no crash").expect("readable");
            assert_eq!(partly.members, ids(&["good"]));
            assert_eq!(partly.owner, None, "an unreadable owner is no owner");
            assert_eq!(store.groups_of(&uid("good")).await.expect("no crash"), vec![partly]);
        })
        .await;
}

#[tokio::test]
#[ignore = "needs MongoDB: set CALLGATE_TEST_MONGODB_URI and run with --include-ignored"]
async fn mongodb_connect_creates_the_indexes() {
    let fx = MongoFixture::new().await;
    let _store = fx.store().await;
    let (users, groups) = (fx.users(), fx.groups());
    let skip = fx.config.clone();
    fx.clone()
        .run(async move {
            let names = users.list_index_names().await.expect("list");
            assert!(
                names.iter().any(|n| n == "callgate_username_unique"),
                "{names:?}"
            );
            let names = groups.list_index_names().await.expect("list");
            assert!(names.iter().any(|n| n == "callgate_members"), "{names:?}");

            // The unique index refuses a second document with the same username.
            users
                .insert_one(doc! { "username": "zoe" })
                .await
                .expect("first");
            assert!(users.insert_one(doc! { "username": "zoe" }).await.is_err());

            // Connecting again (indexes already there) works.
            MongoStore::connect(&skip).await.expect("reconnect");
        })
        .await;
}
