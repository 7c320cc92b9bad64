//! The MongoDB directory, on the official `mongodb` 3.x driver.
//!
//! The schema may belong to another application, so both collections are read
//! as untyped [`Document`]s and every field name comes from
//! [`MongoConfig`]. Documents are turned into [`User`]s and [`Group`]s by
//! parsing each value into its domain type; a document that does not parse is
//! skipped with a warning (naming the collection and the broken rule, never the
//! document's contents), never a panic.
//!
//! Ids may be stored as ObjectIds or as strings, and both forms match: an id of
//! 24 lower-case hex digits is looked up as `{$in: [ObjectId(id), "id"]}`, any
//! other id as the string itself; member arrays are matched the same way. Read
//! back, an ObjectId becomes its lower-case hex string. New users and groups
//! get a fresh ObjectId, so ids look like those of the embedded store.
//!
//! Injection: every filter and update here is built only from typed, validated
//! values ([`UserId`], [`GroupId`], [`Username`], [`DisplayName`],
//! [`GroupName`]) placed as plain values under field names from the
//! configuration, which refuses names starting with `$`. No client JSON ever
//! reaches a query.
//!
//! Errors: driver failures become [`StoreError::Unavailable`] with a short
//! description built from the error's kind and server code only. Driver
//! messages are never copied, and the connection string (which may hold
//! credentials) never appears in an error or a log line.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{Error as DriverError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use secrecy::ExposeSecret;

use super::{Credentials, Group, NewGroup, NewUser, StoreError, StoreResult, User};
use crate::config::MongoConfig;
use crate::domain::{DisplayName, GroupId, GroupName, UserId, Username};

/// Name of the unique index on the username field.
pub const USERNAME_INDEX: &str = "callgate_username_unique";
/// Name of the index on the groups' members field.
pub const MEMBERS_INDEX: &str = "callgate_members";

/// MongoDB server error code for a duplicate key.
const DUPLICATE_KEY: i32 = 11000;
/// Server error codes for "an equivalent index already exists" (under another
/// name or with other options).
const INDEX_CONFLICT: [i32; 2] = [85, 86];
/// How often the driver re-checks the server's health.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause between start-up pings.
const STARTUP_RETRY: Duration = Duration::from_millis(250);

/// Field names, from the configuration.
#[derive(Debug)]
struct Fields {
    username: String,
    display_name: String,
    password_hash: String,
    group_name: String,
    members: String,
    owner: String,
}

/// MongoDB-backed directory. Cheap to clone (the driver's client is shared).
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    users: Collection<Document>,
    groups: Collection<Document>,
    fields: Arc<Fields>,
    /// Bound on each operation while serving (`store.mongodb.query_timeout_ms`).
    query_timeout: Duration,
    /// Bound on the readiness ping (`store.mongodb.readyz_timeout_ms`).
    readyz_timeout: Duration,
}

impl fmt::Debug for MongoStore {
    // Hand-written so the client (and its options) is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.db.name())
            .field("users", &self.users.name())
            .field("groups", &self.groups.name())
            .finish_non_exhaustive()
    }
}

/// A short, credential-free description of a driver error: its kind and, for
/// server errors, the code. Never the driver's message, which may quote hosts,
/// user names or document values.
fn describe(err: &DriverError) -> String {
    match err.kind.as_ref() {
        ErrorKind::Command(c) => format!("server error {} ({})", c.code, c.code_name),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("write error {}", w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("write concern error {} ({})", w.code, w.code_name)
        }
        ErrorKind::Write(_) => "write error".into(),
        ErrorKind::ServerSelection { .. } => {
            "no reachable server (server selection timed out)".into()
        }
        ErrorKind::Authentication { .. } => {
            "authentication failed (check the credentials in the URI)".into()
        }
        ErrorKind::Io(e) => format!("I/O error ({:?})", e.kind()),
        ErrorKind::ConnectionPoolCleared { .. } => "connection pool cleared".into(),
        ErrorKind::DnsResolve { .. } => "DNS resolution failed".into(),
        ErrorKind::InvalidTlsConfig { .. } => "invalid TLS configuration".into(),
        ErrorKind::InvalidArgument { .. } => "invalid argument".into(),
        ErrorKind::InvalidResponse { .. } => "invalid server response".into(),
        ErrorKind::IncompatibleServer { .. } => "incompatible server version".into(),
        ErrorKind::Shutdown => "client shut down".into(),
        _ => "driver error".into(),
    }
}

/// `StoreError::Unavailable` for a failed operation.
fn unavailable(op: &str, err: &DriverError) -> StoreError {
    StoreError::Unavailable(format!("mongodb {op} failed: {}", describe(err)))
}

/// The server error code carried by a driver error, if any.
fn server_code(err: &DriverError) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// The ObjectId an id stands for, when it is 24 lower-case hex digits (the
/// form ObjectIds are read back as, so the match is exact both ways).
fn object_id(raw: &str) -> Option<ObjectId> {
    let shaped = raw.len() == 24
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if shaped {
        ObjectId::parse_str(raw).ok()
    } else {
        None
    }
}

/// The value an id is stored as by callgate: an ObjectId when it has that
/// shape, else the string.
fn stored_id(raw: &str) -> Bson {
    object_id(raw).map_or_else(|| Bson::String(raw.to_owned()), Bson::ObjectId)
}

/// Every stored form of an id: `[ObjectId, string]` or `[string]`.
fn id_forms(raw: &str) -> Vec<Bson> {
    let mut forms = Vec::with_capacity(2);
    if let Some(oid) = object_id(raw) {
        forms.push(Bson::ObjectId(oid));
    }
    forms.push(Bson::String(raw.to_owned()));
    forms
}

/// A filter matching `field` against either stored form of an id.
fn id_filter(field: &str, raw: &str) -> Document {
    let mut forms = id_forms(raw);
    if forms.len() == 1
        && let Some(only) = forms.pop()
    {
        return doc! { field: only };
    }
    doc! { field: { "$in": forms } }
}

/// The text of an id value: an ObjectId's hex, or a string as it is.
fn id_text(value: &Bson) -> Option<String> {
    match value {
        Bson::ObjectId(oid) => Some(oid.to_hex()),
        Bson::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn parse_user_id(value: &Bson) -> Option<UserId> {
    id_text(value).and_then(|s| UserId::parse(&s).ok())
}

fn parse_group_id(value: &Bson) -> Option<GroupId> {
    id_text(value).and_then(|s| GroupId::parse(&s).ok())
}

/// `fut` within `limit`: a driver error or the deadline becomes
/// [`StoreError::Unavailable`] naming the operation.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, DriverError>>,
) -> StoreResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(what, &e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "mongodb {what} timed out after {} ms",
            limit.as_millis()
        ))),
    }
}

impl MongoStore {
    /// Connects, pings within `connect_timeout_secs` and, when
    /// `create_indexes` is set, creates the unique username index
    /// ([`USERNAME_INDEX`]) and the members index ([`MEMBERS_INDEX`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] with a message saying what failed; it never
    /// contains the connection string.
    pub async fn connect(config: &MongoConfig) -> StoreResult<Self> {
        let timeout = Duration::from_secs(config.connect_timeout_secs.max(1));
        let query_timeout = Duration::from_millis(config.query_timeout_ms.max(1));
        let uri = config.uri.expose_secret();
        if uri.is_empty() {
            return Err(StoreError::Unavailable(
                "store.mongodb.uri is empty: set CALLGATE_MONGODB_URI".into(),
            ));
        }
        // Parsing may resolve SRV records, so it is bounded too.
        let mut options = match tokio::time::timeout(timeout, ClientOptions::parse(uri)).await {
            Ok(Ok(options)) => options,
            Ok(Err(e)) => {
                let why = match e.kind.as_ref() {
                    ErrorKind::DnsResolve { .. } => "its SRV/TXT records could not be resolved",
                    _ => "it is not a valid MongoDB connection string",
                };
                return Err(StoreError::Unavailable(format!(
                    "store.mongodb.uri was refused: {why}"
                )));
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "store.mongodb.uri could not be resolved within {}s",
                    timeout.as_secs()
                )));
            }
        };
        options.app_name = Some("callgate".into());
        // Every wait inside the driver is bounded by the query timeout, so an
        // outage turns into an error, never a hang; the outer
        // `tokio::time::timeout` of each operation is the hard bound.
        options.connect_timeout = Some(query_timeout.min(timeout));
        options.server_selection_timeout = Some(query_timeout.min(timeout));
        // How often the driver re-checks the server: a database that comes
        // back is noticed within about this long, without a restart.
        options.heartbeat_freq = Some(HEARTBEAT);
        let client = Client::with_options(options).map_err(|e| {
            StoreError::Unavailable(format!(
                "mongodb client could not be created: {}",
                describe(&e)
            ))
        })?;
        let db = client.database(&config.database);
        let store = Self {
            users: db.collection(&config.users_collection),
            groups: db.collection(&config.groups_collection),
            db,
            fields: Arc::new(Fields {
                username: config.username_field.clone(),
                display_name: config.display_name_field.clone(),
                password_hash: config.password_hash_field.clone(),
                group_name: config.group_name_field.clone(),
                members: config.members_field.clone(),
                owner: config.owner_field.clone(),
            }),
            query_timeout,
            readyz_timeout: Duration::from_millis(config.readyz_timeout_ms.max(1)),
        };
        store.startup_ping(timeout).await.map_err(|e| {
            let StoreError::Unavailable(detail) = e else {
                return e;
            };
            StoreError::Unavailable(format!(
                "MongoDB start-up ping failed (database \"{}\", timeout {}s): {detail}",
                config.database,
                timeout.as_secs()
            ))
        })?;
        if config.create_indexes {
            store.create_indexes().await?;
        }
        Ok(store)
    }

    /// Creates the username and members indexes. An equivalent index that
    /// already exists under another name is accepted with a warning.
    async fn create_indexes(&self) -> StoreResult<()> {
        let f = &self.fields;
        let username = IndexModel::builder()
            .keys(doc! { f.username.as_str(): 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name(USERNAME_INDEX.to_string())
                    .build(),
            )
            .build();
        let members = IndexModel::builder()
            .keys(doc! { f.members.as_str(): 1 })
            .options(
                IndexOptions::builder()
                    .name(MEMBERS_INDEX.to_string())
                    .build(),
            )
            .build();
        for (coll, model, what) in [
            (&self.users, username, "unique username index"),
            (&self.groups, members, "members index"),
        ] {
            match coll.create_index(model).await {
                Ok(_) => {}
                Err(e) if server_code(&e).is_some_and(|c| INDEX_CONFLICT.contains(&c)) => {
                    tracing::warn!(
                        collection = coll.name(),
                        "an index on the same field already exists with other options; keeping it, not creating the callgate {what}"
                    );
                }
                Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot create the {what} on {}.{}: some usernames are stored twice; \
                         remove the duplicates or set store.mongodb.create_indexes = false",
                        coll.name(),
                        f.username
                    )));
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot create the {what} on {}: {}",
                        coll.name(),
                        describe(&e)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Pings until the server answers or `within` has passed (server
    /// selection gives up after the query timeout, so this retries).
    async fn startup_ping(&self, within: Duration) -> StoreResult<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = bounded("ping", left.min(self.query_timeout), async {
                self.db.run_command(doc! { "ping": 1 }).await
            })
            .await;
            match attempt {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + STARTUP_RETRY >= deadline => {
                    return Err(e);
                }
                Err(_) => tokio::time::sleep(STARTUP_RETRY).await,
            }
        }
    }

    /// Whether the server answers a ping within `store.mongodb.readyz_timeout_ms`.
    pub(crate) async fn ping(&self) -> StoreResult<()> {
        bounded("ping", self.readyz_timeout, async {
            self.db.run_command(doc! { "ping": 1 }).await
        })
        .await
        .map(|_| ())
    }

    /// Runs one directory operation within the query timeout.
    async fn op<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, DriverError>>,
    ) -> StoreResult<T> {
        bounded(what, self.query_timeout, fut).await
    }

    /// Only the fields a [`User`] is built from (never the password hash).
    fn user_projection(&self) -> Document {
        doc! { "_id": 1, self.fields.username.as_str(): 1, self.fields.display_name.as_str(): 1 }
    }

    /// A user from a document; `None` (with a warning) when it does not parse.
    fn to_user(&self, d: &Document) -> Option<User> {
        let warn = |rule: &str| {
            tracing::warn!(
                collection = self.users.name(),
                rule,
                "skipping a user document that does not parse"
            );
        };
        let Some(id) = d.get("_id").and_then(parse_user_id) else {
            warn("_id must be an ObjectId or a valid user id string");
            return None;
        };
        let Some(username) = d
            .get(&self.fields.username)
            .and_then(Bson::as_str)
            .and_then(|s| Username::parse(s).ok())
        else {
            warn("the username field must be a valid username");
            return None;
        };
        let display_name = match d.get(&self.fields.display_name) {
            None | Some(Bson::Null) => DisplayName::parse(username.as_str()).ok(),
            Some(v) => v.as_str().and_then(|s| DisplayName::parse(s).ok()),
        };
        let Some(display_name) = display_name else {
            warn("the display name field must be a valid display name");
            return None;
        };
        Some(User {
            id,
            username,
            display_name,
        })
    }

    /// A group from a document; `None` (with a warning) when it does not parse.
    /// Member ids that do not parse are dropped (with a warning), as are
    /// duplicates (the same id stored as ObjectId and as string).
    fn to_group(&self, d: &Document) -> Option<Group> {
        let coll = self.groups.name();
        let warn = |rule: &str| {
            tracing::warn!(
                collection = coll,
                rule,
                "skipping a group document that does not parse"
            );
        };
        let Some(id) = d.get("_id").and_then(parse_group_id) else {
            warn("_id must be an ObjectId or a valid group id string");
            return None;
        };
        let Some(name) = d
            .get(&self.fields.group_name)
            .and_then(Bson::as_str)
            .and_then(|s| GroupName::parse(s).ok())
        else {
            warn("the group name field must be a valid group name");
            return None;
        };
        let raw_members: &[Bson] = match d.get(&self.fields.members) {
            None | Some(Bson::Null) => &[],
            Some(Bson::Array(items)) => items,
            Some(_) => {
                warn("the members field must be an array");
                return None;
            }
        };
        let mut members: Vec<UserId> = Vec::with_capacity(raw_members.len());
        let mut dropped = 0_usize;
        for m in raw_members {
            match parse_user_id(m) {
                Some(m) if !members.contains(&m) => members.push(m),
                Some(_) => {}
                None => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::warn!(collection = coll, group = %id, dropped, "ignoring member ids that do not parse");
        }
        let owner = match d.get(&self.fields.owner) {
            None | Some(Bson::Null) => None,
            Some(v) => {
                let owner = parse_user_id(v);
                if owner.is_none() {
                    tracing::warn!(collection = coll, group = %id, "ignoring an owner id that does not parse; the group has no owner");
                }
                owner
            }
        };
        Some(Group {
            id,
            name,
            owner,
            members,
        })
    }

    /// The user with this id.
    pub(crate) async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let found = self
            .op("user lookup", async {
                self.users
                    .find_one(id_filter("_id", id.as_str()))
                    .projection(self.user_projection())
                    .await
            })
            .await?;
        Ok(found.as_ref().and_then(|d| self.to_user(d)))
    }

    /// The users among `ids` that exist (and parse), in the order given, each
    /// once: one round trip whatever the number of ids.
    pub(crate) async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let forms: Vec<Bson> = ids.iter().flat_map(|id| id_forms(id.as_str())).collect();
        let docs: Vec<Document> = self
            .op("users lookup", async {
                self.users
                    .find(doc! { "_id": { "$in": forms } })
                    .projection(self.user_projection())
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut found: HashMap<UserId, User> = docs
            .iter()
            .filter_map(|d| self.to_user(d))
            .map(|u| (u.id.clone(), u))
            .collect();
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// The ids among `ids` that exist (as users that parse), in the order given.
    pub(crate) async fn existing_users(&self, ids: &[UserId]) -> StoreResult<Vec<UserId>> {
        let found: HashSet<UserId> = self.users(ids).await?.into_iter().map(|u| u.id).collect();
        Ok(ids
            .iter()
            .filter(|id| found.contains(*id))
            .cloned()
            .collect())
    }

    /// The user with this username, with the stored hash (`None` when absent).
    pub(crate) async fn credentials(
        &self,
        username: &Username,
    ) -> StoreResult<Option<Credentials>> {
        let f = &self.fields;
        let found = self
            .op("credentials lookup", async {
                self.users
                    .find_one(doc! { f.username.as_str(): username.as_str() })
                    .projection(doc! {
                        "_id": 1,
                        f.username.as_str(): 1,
                        f.display_name.as_str(): 1,
                        f.password_hash.as_str(): 1,
                    })
                    .await
            })
            .await?;
        let Some(d) = found else { return Ok(None) };
        let Some(user) = self.to_user(&d) else {
            return Ok(None);
        };
        let password_hash = match d.get(&f.password_hash) {
            None | Some(Bson::Null) => None,
            Some(Bson::String(h)) => Some(h.clone()),
            Some(_) => {
                tracing::warn!(collection = self.users.name(), user = %user.id, "ignoring a password hash that is not a string");
                None
            }
        };
        Ok(Some(Credentials {
            user,
            password_hash,
        }))
    }

    /// Creates a user with a fresh ObjectId.
    pub(crate) async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let f = &self.fields;
        // The unique index may be disabled (schema owned elsewhere): check first.
        let taken = self
            .op("username check", async {
                self.users
                    .find_one(doc! { f.username.as_str(): new.username.as_str() })
                    .projection(doc! { "_id": 1 })
                    .await
            })
            .await?;
        if taken.is_some() {
            return Err(StoreError::UsernameTaken);
        }
        let oid = ObjectId::new();
        let id =
            UserId::parse(&oid.to_hex()).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let record = doc! {
            "_id": oid,
            f.username.as_str(): new.username.as_str(),
            f.display_name.as_str(): new.display_name.as_str(),
            f.password_hash.as_str(): new.password_hash.as_str(),
        };
        // The duplicate-key answer is a result, not a failure: keep it apart
        // from the driver error that `op` maps to `Unavailable`.
        let inserted = self
            .op("user insert", async {
                match self.users.insert_one(record).await {
                    Ok(_) => Ok(true),
                    Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if !inserted {
            return Err(StoreError::UsernameTaken);
        }
        Ok(User {
            id,
            username: new.username,
            display_name: new.display_name,
        })
    }

    /// The groups `user` is a member of, ordered by group id.
    pub(crate) async fn groups_of(&self, user: &UserId) -> StoreResult<Vec<Group>> {
        let docs: Vec<Document> = self
            .op("groups lookup", async {
                self.groups
                    .find(id_filter(&self.fields.members, user.as_str()))
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut groups: Vec<Group> = docs
            .iter()
            .filter_map(|d| self.to_group(d))
            .filter(|g| g.has_member(user))
            .collect();
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        groups.dedup_by(|a, b| a.id == b.id);
        Ok(groups)
    }

    /// The group with this id.
    pub(crate) async fn group(&self, id: &GroupId) -> StoreResult<Option<Group>> {
        let found = self
            .op("group lookup", async {
                self.groups.find_one(id_filter("_id", id.as_str())).await
            })
            .await?;
        Ok(found.as_ref().and_then(|d| self.to_group(d)))
    }

    /// Creates a group with a fresh ObjectId; the owner is its first member.
    pub(crate) async fn create_group(&self, new: NewGroup) -> StoreResult<Group> {
        let f = &self.fields;
        let oid = ObjectId::new();
        let id =
            GroupId::parse(&oid.to_hex()).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let members = super::member_list(&new.owner, &new.members);
        let stored_members: Vec<Bson> = members.iter().map(|m| stored_id(m.as_str())).collect();
        let record = doc! {
            "_id": oid,
            f.group_name.as_str(): new.name.as_str(),
            f.owner.as_str(): stored_id(new.owner.as_str()),
            f.members.as_str(): stored_members,
        };
        self.op("group insert", async {
            self.groups.insert_one(record).await
        })
        .await?;
        Ok(Group {
            id,
            name: new.name,
            owner: Some(new.owner),
            members,
        })
    }

    /// Adds `user` to the group (`$addToSet`); `false` if already a member in
    /// either stored form.
    pub(crate) async fn add_member(&self, group: &GroupId, user: &UserId) -> StoreResult<bool> {
        let members = self.fields.members.as_str();
        let mut filter = id_filter("_id", group.as_str());
        filter.insert(members, doc! { "$nin": id_forms(user.as_str()) });
        let update = doc! { "$addToSet": { members: stored_id(user.as_str()) } };
        let result = self
            .op("member add", async {
                self.groups.update_one(filter, update).await
            })
            .await?;
        if result.modified_count > 0 {
            return Ok(true);
        }
        if result.matched_count > 0 {
            return Ok(false);
        }
        // Nothing matched: either the group is missing or the user is already in it.
        let exists = self
            .op("group lookup", async {
                self.groups
                    .find_one(id_filter("_id", group.as_str()))
                    .projection(doc! { "_id": 1 })
                    .await
            })
            .await?;
        if exists.is_some() {
            Ok(false)
        } else {
            Err(StoreError::GroupNotFound)
        }
    }

    /// Removes `user` from the group (`$pull` of both stored forms); `false`
    /// if not a member.
    pub(crate) async fn remove_member(&self, group: &GroupId, user: &UserId) -> StoreResult<bool> {
        let update = doc! {
            "$pull": { self.fields.members.as_str(): { "$in": id_forms(user.as_str()) } }
        };
        let result = self
            .op("member remove", async {
                self.groups
                    .update_one(id_filter("_id", group.as_str()), update)
                    .await
            })
            .await?;
        if result.matched_count == 0 {
            return Err(StoreError::GroupNotFound);
        }
        Ok(result.modified_count > 0)
    }

    /// Makes `owner` the group's owner if they are a member; `false` if not.
    pub(crate) async fn set_owner(&self, group: &GroupId, owner: &UserId) -> StoreResult<bool> {
        let mut filter = id_filter("_id", group.as_str());
        filter.insert(
            self.fields.members.as_str(),
            doc! { "$in": id_forms(owner.as_str()) },
        );
        let update = doc! { "$set": { self.fields.owner.as_str(): stored_id(owner.as_str()) } };
        let result = self
            .groups
            .update_one(filter, update)
            .await
            .map_err(|e| unavailable("owner change", &e))?;
        if result.matched_count > 0 {
            return Ok(true);
        }
        let exists = self
            .groups
            .find_one(id_filter("_id", group.as_str()))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(|e| unavailable("group lookup", &e))?;
        if exists.is_some() {
            Ok(false)
        } else {
            Err(StoreError::GroupNotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "6860e2e85547033af89987ba";

    #[test]
    fn object_id_shaped_ids_match_both_forms() {
        let filter = id_filter("_id", HEX);
        let forms = filter
            .get_document("_id")
            .and_then(|d| d.get_array("$in"))
            .cloned();
        let oid = ObjectId::parse_str(HEX).ok().map(Bson::ObjectId);
        assert_eq!(forms.ok(), oid.map(|o| vec![o, Bson::String(HEX.into())]));
    }

    #[test]
    fn other_ids_match_as_plain_strings() {
        for raw in [
            "alice-1",
            "6860E2E85547033AF89987BA",
            "6860e2e85547033af89987b",
        ] {
            assert_eq!(id_filter("_id", raw), doc! { "_id": raw }, "{raw}");
            assert_eq!(stored_id(raw), Bson::String(raw.into()));
        }
        assert!(matches!(stored_id(HEX), Bson::ObjectId(_)));
    }

    #[test]
    fn ids_read_back_from_object_ids_and_strings_only() {
        let oid = ObjectId::parse_str(HEX).ok().map(Bson::ObjectId);
        assert_eq!(
            oid.as_ref().and_then(parse_user_id).map(|u| u.to_string()),
            Some(HEX.into())
        );
        assert_eq!(
            parse_user_id(&Bson::String("bob".into())).map(|u| u.to_string()),
            Some("bob".into())
        );
        assert_eq!(parse_user_id(&Bson::String("no spaces".into())), None);
        assert_eq!(parse_user_id(&Bson::Int32(7)), None);
    }

    #[test]
    fn descriptions_never_copy_driver_messages() {
        let secret = "mongodb://admin:hunter2@db.example.com";
        let e = DriverError::custom(secret.to_string());
        assert!(!describe(&e).contains("hunter2"));
    }
}
