//! The test harness: the real server on port 0 with fresh state per test, real
//! tokens, real argon2 hashes, and a real Socket.IO client (rust_socketio).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callgate::app::App;
use callgate::config::{Config, Overrides};
use callgate::domain::{DisplayName, GroupId, GroupName, UserId, Username};
use callgate::policy::Policy;
use callgate::store::{Group, NewGroup, NewUser, Store, User};
use futures_util::FutureExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use tokio::sync::{mpsc, oneshot};

/// The HS256 secret every test server uses.
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
/// The password every seeded user has.
pub const PASSWORD: &str = "correct horse battery";
/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(400);

/// A running server with handles to arrange data and mint tokens.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub store: Store,
    pub io: SocketIo,
    pub hub: Arc<callgate::signaling::Hub>,
    pub http: reqwest::Client,
    /// The MongoDB database behind `store`, when the server runs on MongoDB.
    pub mongo: Option<MongoDir>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mongo) = self.mongo.take() {
            mongo.drop_database();
        }
    }
}

/// Selects the store every `TestServer::spawn*` runs on: unset or
/// `embedded` for the embedded store, `mongodb` for MongoDB at
/// `CALLGATE_TEST_MONGODB_URI` (scripts/test runs the black-box suite both
/// ways).
pub const STORE_VAR: &str = "CALLGATE_TEST_STORE";
/// The MongoDB server for the MongoDB tests (a real mongod or the SecantusDB
/// scripts/test starts).
pub const MONGODB_URI_VAR: &str = "CALLGATE_TEST_MONGODB_URI";
/// `objectid` (default) or `string`: how seeded documents store their ids.
pub const IDS_VAR: &str = "CALLGATE_TEST_MONGODB_IDS";

/// How a Mongoose-shaped database stores `_id`, `owner` and `members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    /// `ObjectId`, as Mongoose writes by default.
    ObjectId,
    /// Strings (`_id: String` in the schema).
    String,
}

/// A fresh MongoDB database for one test server, shaped like a Mongoose
/// chat app's (`users`, `groups`), dropped when the server is.
pub struct MongoDir {
    pub uri: String,
    pub db: mongodb::Database,
    pub ids: IdForm,
}

impl MongoDir {
    /// A new, randomly named database on `uri`.
    pub async fn new(uri: &str, ids: IdForm) -> Self {
        let client = mongodb::Client::with_uri_str(uri)
            .await
            .expect("the test MongoDB URI parses");
        let name = format!("callgate_test_{}", uuid::Uuid::new_v4().simple());
        let db = client.database(&name);
        // Mongoose creates `username_1` (unique) itself (`unique: true` in the
        // schema, autoIndex), so callgate runs with create_indexes = false.
        db.collection::<mongodb::bson::Document>("users")
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(mongodb::bson::doc! { "username": 1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .unique(true)
                            .build(),
                    )
                    .build(),
            )
            .await
            .expect("username index");
        Self {
            uri: uri.to_string(),
            db,
            ids,
        }
    }

    /// The database named by the environment, if the suite runs on MongoDB.
    pub async fn from_env() -> Option<Self> {
        match std::env::var(STORE_VAR).as_deref() {
            Err(_) | Ok("" | "embedded") => return None,
            Ok("mongodb") => {}
            Ok(other) => panic!("{STORE_VAR}={other}: use embedded or mongodb"),
        }
        let uri = std::env::var(MONGODB_URI_VAR).unwrap_or_else(|_| {
            panic!("{STORE_VAR}=mongodb needs {MONGODB_URI_VAR} (scripts/test sets both)")
        });
        let ids = match std::env::var(IDS_VAR).as_deref() {
            Err(_) | Ok("" | "objectid") => IdForm::ObjectId,
            Ok("string") => IdForm::String,
            Ok(other) => panic!("{IDS_VAR}={other}: use objectid or string"),
        };
        Some(Self::new(&uri, ids).await)
    }

    /// Points `config` at this database, set up as the README says for a
    /// schema that belongs to the chat app.
    pub fn configure(&self, config: &mut Config) {
        config.store.kind = callgate::config::StoreKind::Mongodb;
        config.store.mongodb.uri = secrecy::SecretString::from(self.uri.clone());
        config.store.mongodb.database = self.db.name().to_string();
        config.store.mongodb.create_indexes = false;
    }

    pub fn users(&self) -> mongodb::Collection<mongodb::bson::Document> {
        self.db.collection("users")
    }

    pub fn groups(&self) -> mongodb::Collection<mongodb::bson::Document> {
        self.db.collection("groups")
    }

    /// A fresh id in this database's form.
    pub fn new_id(&self) -> mongodb::bson::Bson {
        let oid = mongodb::bson::oid::ObjectId::new();
        match self.ids {
            IdForm::ObjectId => mongodb::bson::Bson::ObjectId(oid),
            IdForm::String => mongodb::bson::Bson::String(format!("s-{}", oid.to_hex())),
        }
    }

    /// The stored form of an id callgate reports.
    pub fn stored(&self, id: &str) -> mongodb::bson::Bson {
        match mongodb::bson::oid::ObjectId::parse_str(id) {
            Ok(oid) if self.ids == IdForm::ObjectId => mongodb::bson::Bson::ObjectId(oid),
            _ => mongodb::bson::Bson::String(id.to_string()),
        }
    }

    /// Inserts a user as a Mongoose app does; returns its id as callgate
    /// reports it.
    pub async fn insert_user(&self, username: &str, display_name: &str, hash: &str) -> String {
        let id = self.new_id();
        self.users()
            .insert_one(mongodb::bson::doc! {
                "_id": id.clone(),
                "username": username,
                "email": format!("{username}@example.test"),
                "displayName": display_name,
                "passwordHash": hash,
                "createdAt": mongodb::bson::DateTime::now(),
                "__v": 0,
            })
            .await
            .expect("user inserted");
        id_text(&id)
    }

    /// Inserts a group as a Mongoose app does; returns its id.
    pub async fn insert_group(&self, name: &str, owner: &str, members: &[&str]) -> String {
        let id = self.new_id();
        let members: Vec<mongodb::bson::Bson> = members.iter().map(|m| self.stored(m)).collect();
        self.groups()
            .insert_one(mongodb::bson::doc! {
                "_id": id.clone(),
                "name": name,
                "owner": self.stored(owner),
                "members": members,
                "createdAt": mongodb::bson::DateTime::now(),
                "__v": 0,
            })
            .await
            .expect("group inserted");
        id_text(&id)
    }

    /// Drops the database on a thread of its own (`Drop` cannot await, and
    /// the test's runtime may be shutting down).
    fn drop_database(self) {
        let (uri, name) = (self.uri, self.db.name().to_string());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let dropped = async {
                    let client = mongodb::Client::with_uri_str(&uri).await?;
                    client.database(&name).drop().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), dropped).await;
            });
        })
        .join();
    }
}

fn id_text(id: &mongodb::bson::Bson) -> String {
    match id {
        mongodb::bson::Bson::ObjectId(oid) => oid.to_hex(),
        mongodb::bson::Bson::String(s) => s.clone(),
        other => panic!("unexpected id {other:?}"),
    }
}

/// The configuration tests start from: defaults, port 0, the test secret.
pub fn test_config() -> Config {
    let env = vec![("CALLGATE_JWT_SECRET".to_string(), SECRET.to_string())];
    let mut config = Config::load_from(None, &Overrides::default(), &env).expect("defaults load");
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config
}

/// Tests exercise behaviour, not limits: every rate and cap is lifted unless a
/// test sets its own.
pub fn relax_limits(policy: &mut Policy) {
    let lots = callgate::policy::Rate {
        per_minute: 1_000_000,
        burst: 100_000,
    };
    let r = &mut policy.rate_limits;
    r.call_initiate = lots;
    r.call_control = lots;
    r.rooms = lots;
    r.handshake_per_ip = lots;
    r.session_open_per_ip = lots;
    r.group_changes = lots;
    r.login_per_ip = lots;
    r.login_per_username = lots;
    r.register_per_ip = lots;
    policy.connections.max_per_user = 1000;
    policy.connections.max_per_ip = 10_000;
    policy.connections.max_total = 10_000;
}

/// One real argon2id hash of [`PASSWORD`], made once per test binary.
pub fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let params = callgate::auth::password::params(&test_config().password).expect("params");
        callgate::auth::password::hash_blocking(&params, PASSWORD).expect("hash")
    })
    .clone()
}

impl TestServer {
    /// A server with the default test configuration and policy.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose configuration `tweak` may change first.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with_policy(tweak, |_| {}).await
    }

    /// A server with both configuration and policy tweaked.
    pub async fn spawn_with_policy(
        tweak: impl FnOnce(&mut Config),
        tweak_policy: impl FnOnce(&mut Policy),
    ) -> Self {
        let mongo = MongoDir::from_env().await;
        Self::spawn_on(mongo, tweak, tweak_policy).await
    }

    /// A server on MongoDB at `uri` (whatever [`STORE_VAR`] says), with its
    /// own fresh database.
    pub async fn spawn_on_mongo(uri: &str, ids: IdForm, tweak: impl FnOnce(&mut Config)) -> Self {
        let mongo = MongoDir::new(uri, ids).await;
        Self::spawn_on(Some(mongo), tweak, |_| {}).await
    }

    async fn spawn_on(
        mongo: Option<MongoDir>,
        tweak: impl FnOnce(&mut Config),
        tweak_policy: impl FnOnce(&mut Policy),
    ) -> Self {
        let mut config = test_config();
        if let Some(m) = &mongo {
            m.configure(&mut config);
        }
        tweak(&mut config);
        let mut policy = Policy::builtin().expect("policy");
        relax_limits(&mut policy);
        tweak_policy(&mut policy);
        let app = App::build(config, policy).await.expect("server builds");
        let addr = app.local_addr().expect("addr");
        let store = app.store().clone();
        let io = app.io().local().expect("a single-process server").clone();
        let hub = app.hub().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            store,
            io,
            hub,
            http: reqwest::Client::new(),
            mongo,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Creates a user with [`PASSWORD`]: through the store on the embedded
    /// store, as a Mongoose-shaped document written by the chat app on MongoDB.
    pub async fn seed_user(&self, username: &str) -> User {
        if let Some(m) = &self.mongo {
            let id = m
                .insert_user(username, &format!("{username} display"), &password_hash())
                .await;
            return self
                .store
                .user(&UserId::parse(&id).expect("id"))
                .await
                .expect("store answers")
                .expect("a Mongoose-shaped user reads back");
        }
        self.store
            .create_user(NewUser {
                username: Username::parse(username).expect("username"),
                display_name: DisplayName::parse(&format!("{username} display")).expect("name"),
                password_hash: password_hash(),
            })
            .await
            .expect("user created")
    }

    /// Creates a group owned by `owner` with `members` (a Mongoose-shaped
    /// document on MongoDB; the owner is listed first, as callgate would).
    pub async fn seed_group(&self, name: &str, owner: &User, members: &[&User]) -> Group {
        if let Some(m) = &self.mongo {
            let mut ids: Vec<&str> = vec![owner.id.as_str()];
            for u in members {
                if !ids.contains(&u.id.as_str()) {
                    ids.push(u.id.as_str());
                }
            }
            let id = m.insert_group(name, owner.id.as_str(), &ids).await;
            return self
                .store
                .group(&GroupId::parse(&id).expect("id"))
                .await
                .expect("store answers")
                .expect("a Mongoose-shaped group reads back");
        }
        self.store
            .create_group(NewGroup {
                name: GroupName::parse(name).expect("name"),
                owner: owner.id.clone(),
                members: members.iter().map(|u| u.id.clone()).collect(),
            })
            .await
            .expect("group created")
    }

    /// A valid token for `user`, minted like the server's own.
    pub fn token(&self, user: &User) -> String {
        mint(&claims_for(&user.id, 3600), SECRET)
    }

    /// Connects `user` with a fresh valid token.
    pub async fn connect(&self, user: &User) -> TestClient {
        TestClient::connect(self, Some(&self.token(user)))
            .await
            .expect("connects")
    }

    /// POSTs JSON, returning status and body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request")).await
    }

    /// GETs, returning status and body.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request")).await
    }

    /// DELETEs, returning status and body.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request")).await
    }

    /// Sizes of every call-registry index: (calls, rooms, users, groups, epochs).
    pub fn registry_sizes(&self) -> (usize, usize, usize, usize, usize) {
        self.hub
            .calls()
            .local(|c| c.index_sizes())
            .expect("one process keeps its calls in memory")
    }

    /// The ids of the users whose sockets are in the group's room.
    pub fn users_in_group_room(&self, group: &GroupId) -> Vec<UserId> {
        let room = callgate::signaling::rooms::group_room(group);
        let mut users: Vec<UserId> = self
            .io
            .within(room)
            .sockets()
            .into_iter()
            .filter_map(|s| callgate::signaling::session::of(&s))
            .map(|s| s.user_id.clone())
            .collect();
        users.sort();
        users.dedup();
        users
    }
}

async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Standard claims for `user`, valid for `ttl` seconds.
pub fn claims_for(user: &UserId, ttl: i64) -> Value {
    let now = now() as i64;
    json!({
        "sub": user.as_str(), "name": "x", "iat": now, "nbf": now, "exp": now + ttl,
        "iss": "callgate", "aud": "callgate", "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// Signs `claims` with HS256 and `secret`.
pub fn mint(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A real Socket.IO client that records every event it receives.
pub struct TestClient {
    pub client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    /// Events read past by `next` while looking for another name.
    backlog: Vec<(String, Value)>,
}

fn first_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        Payload::Text(_) => Value::Null,
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        Payload::Binary(_) => Value::Null,
    }
}

impl TestClient {
    /// Connects over websocket with `token` in the auth payload. `Err` carries
    /// the `connect_error` message.
    pub async fn connect(server: &TestServer, token: Option<&str>) -> Result<Self, String> {
        Self::connect_with(
            server,
            token.map(|t| json!({ "token": t })),
            TransportType::Websocket,
            None,
        )
        .await
    }

    /// Connects with an explicit auth payload, transport and Authorization header.
    pub async fn connect_with(
        server: &TestServer,
        auth: Option<Value>,
        transport: TransportType,
        bearer: Option<&str>,
    ) -> Result<Self, String> {
        Self::connect_full(server, auth, transport, bearer, None).await
    }

    async fn connect_full(
        server: &TestServer,
        auth: Option<Value>,
        transport: TransportType,
        bearer: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Self, String> {
        let (tx, rx) = mpsc::unbounded_channel::<(String, Value)>();
        let (status_tx, mut status_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let tx_any = tx.clone();
        let tx_err = tx.clone();
        let status_ok = status_tx.clone();
        let mut builder = ClientBuilder::new(server.url("/"))
            .transport_type(transport)
            .reconnect(false)
            .on_any(move |event, payload, _| {
                let _ = tx_any.send((event.to_string(), first_value(payload)));
                async {}.boxed()
            })
            .on(Event::Connect, move |_, _| {
                let _ = status_ok.send(Ok(()));
                async {}.boxed()
            })
            .on(Event::Error, move |payload, _| {
                let value = first_value(payload);
                if let Some(text) = value.as_str()
                    && let Some(rest) = text.strip_prefix("Received an ConnectError frame: ")
                {
                    let message = serde_json::from_str::<Value>(rest)
                        .ok()
                        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                        .unwrap_or_else(|| rest.to_string());
                    let _ = status_tx.send(Err(message));
                } else {
                    let _ = tx_err.send(("error".to_string(), value));
                }
                async {}.boxed()
            });
        if let Some(auth) = auth {
            builder = builder.auth(auth);
        }
        if let Some(origin) = origin {
            builder = builder.opening_header("Origin", origin);
        }
        if let Some(token) = bearer {
            builder = builder.opening_header("Authorization", format!("Bearer {token}").as_str());
        }
        let client = builder
            .connect()
            .await
            .map_err(|e| format!("transport: {e}"))?;
        match tokio::time::timeout(WAIT, status_rx.recv()).await {
            Ok(Some(Ok(()))) => Ok(Self {
                client,
                events: rx,
                backlog: Vec::new(),
            }),
            Ok(Some(Err(message))) => {
                let _ = client.disconnect().await;
                Err(message)
            }
            _ => {
                let _ = client.disconnect().await;
                Err("no answer to CONNECT".into())
            }
        }
    }

    /// Connects with an `Origin` header on the Engine.IO requests.
    pub async fn connect_with_origin(
        server: &TestServer,
        auth: Value,
        transport: TransportType,
        origin: &str,
    ) -> Result<Self, String> {
        Self::connect_full(server, Some(auth), transport, None, Some(origin)).await
    }

    /// Emits with an ack and waits for it.
    pub async fn emit_ack(&self, event: &str, payload: Value) -> Value {
        self.emit_ack_payload(event, Payload::Text(vec![payload]))
            .await
    }

    /// Emits an event with no argument at all (`["event"]`) and an ack.
    pub async fn emit_ack_bare(&self, event: &str) -> Value {
        self.emit_ack_payload(event, Payload::Text(Vec::new()))
            .await
    }

    async fn emit_ack_payload(&self, event: &str, payload: Payload) -> Value {
        let (tx, rx) = oneshot::channel::<Value>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, payload, WAIT, move |p, _| {
                if let Some(tx) = tx.lock().expect("lock").take() {
                    // Ack arguments arrive as one array: `[{ok, ...}]`.
                    let value = match first_value(p) {
                        Value::Array(mut args) if args.len() == 1 => args.swap_remove(0),
                        other => other,
                    };
                    let _ = tx.send(value);
                }
                async {}.boxed()
            })
            .await
            .expect("emit");
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("ack in time")
            .expect("ack")
    }

    /// Emits without an ack.
    pub async fn emit(&self, event: &str, payload: Value) {
        self.client.emit(event, payload).await.expect("emit");
    }

    /// The next event named `name` (others are kept for later calls).
    pub async fn next(&mut self, name: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|(n, _)| n == name) {
            return self.backlog.remove(i).1;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((n, v))) if n == name => return v,
                Ok(Some(other)) => self.backlog.push(other),
                Ok(None) => panic!("client closed while waiting for {name}"),
                Err(_) => panic!(
                    "no {name} event within {WAIT:?}; received meanwhile: {:?}",
                    self.backlog
                ),
            }
        }
    }

    /// Every event received within `QUIET` (and any kept earlier).
    pub async fn drain(&mut self) -> Vec<(String, Value)> {
        let mut out = std::mem::take(&mut self.backlog);
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            out.push(e);
        }
        out
    }

    /// Asserts that nothing at all arrives within `QUIET`.
    pub async fn assert_silent(&mut self, who: &str) {
        let got = self.drain().await;
        assert!(got.is_empty(), "{who} received {got:?}");
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}
