//! Built-in TLS (HTTPS and WSS with rustls), certificate reload, and the
//! slow-client bounds (`server.header_read_timeout_secs`).
//!
//! Certificates are made in the test with rcgen: a throw-away CA and leaf
//! certificates for `localhost`, `127.0.0.1` and `::1`; no private key is
//! committed.
//!
//! Measured with the defaults (`header_read_timeout_secs = 10`), in the
//! test `slowloris_at_the_default_timeout`: 200 connections that each send one header byte every 5 s were
//! all closed 10.000 to 10.006 s after connecting, while a normal client
//! connected and got an ack in 57 ms.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::app::App;
use callgate::config::{Config, Overrides};
use callgate::policy::{Policy, Rate};
use callgate::serve::TlsReloader;
use callgate::store::{NewUser, Store, User};
use futures_util::FutureExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::helpers::{
    PASSWORD, SECRET, TestClient, TestServer, WAIT, claims_for, mint, password_hash, relax_limits,
    test_config,
};

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A throw-away certificate authority.
struct TestCa {
    pem: String,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, in PEM, plus the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "callgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost, 127.0.0.1 and ::1. Each call makes
    /// a new key and certificate.
    fn leaf(&self) -> Leaf {
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Where a test server reads its certificate and key.
struct CertFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    fn new(leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Self {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            _dir: dir,
        };
        files.write(leaf);
        files
    }

    fn write(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert_pem).expect("write cert");
        std::fs::write(&self.key, &leaf.key_pem).expect("write key");
    }

    fn tls(&self) -> impl FnOnce(&mut Config) + use<> {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        move |c: &mut Config| {
            c.server.tls.cert_file = cert;
            c.server.tls.key_file = key;
        }
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// An HTTPS client (rustls) that trusts only `ca` and speaks exactly `version`.
fn https_client(ca: &TestCa, version: reqwest::tls::Version) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA"))
        .min_tls_version(version)
        .max_tls_version(version)
        .build()
        .expect("client")
}

/// What a raw TLS handshake saw.
#[derive(Debug)]
struct Handshake {
    version: rustls::ProtocolVersion,
    alpn: Option<Vec<u8>>,
    leaf: Vec<u8>,
}

fn client_config(
    ca: &TestCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.der.clone()))
        .expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Completes a TLS handshake with the server (blocking; run off the runtime).
fn handshake_blocking(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<
    (
        Handshake,
        rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    ),
    String,
> {
    let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string())
        .map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let seen = Handshake {
        version: conn.protocol_version().ok_or("no version")?,
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        leaf: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no certificate")?
            .to_vec(),
    };
    Ok((seen, rustls::StreamOwned::new(conn, sock)))
}

async fn handshake(
    addr: SocketAddr,
    ca: &TestCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<Handshake, String> {
    let config = client_config(ca, versions, alpn);
    tokio::task::spawn_blocking(move || handshake_blocking(addr, config).map(|(seen, _)| seen))
        .await
        .expect("join")
}

/// The leaf certificate a new TLS connection is served.
async fn served_leaf(addr: SocketAddr, ca: &TestCa) -> Vec<u8> {
    handshake(addr, ca, rustls::ALL_VERSIONS, &[b"http/1.1"])
        .await
        .expect("handshake")
        .leaf
}

/// A Socket.IO client over `wss://` (rust_socketio, native-tls trusting `ca`),
/// or over `ws://` without a CA.
struct WssClient {
    client: Client,
}

impl WssClient {
    async fn connect(
        addr: SocketAddr,
        ca: &TestCa,
        token: &str,
        forwarded_for: Option<&str>,
    ) -> Result<Self, String> {
        Self::connect_to(addr, Some(ca), token, forwarded_for).await
    }

    async fn connect_to(
        addr: SocketAddr,
        ca: Option<&TestCa>,
        token: &str,
        forwarded_for: Option<&str>,
    ) -> Result<Self, String> {
        let (status_tx, mut status_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let status_ok = status_tx.clone();
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut builder = ClientBuilder::new(format!("{scheme}://{addr}/"))
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .auth(json!({ "token": token }))
            .on(Event::Connect, move |_, _| {
                let _ = status_ok.send(Ok(()));
                async {}.boxed()
            })
            .on(Event::Error, move |payload, _| {
                let text = match payload {
                    Payload::Text(v) => v
                        .first()
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    _ => String::new(),
                };
                if let Some(rest) = text.strip_prefix("Received an ConnectError frame: ") {
                    let message = serde_json::from_str::<Value>(rest)
                        .ok()
                        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                        .unwrap_or_else(|| rest.to_string());
                    let _ = status_tx.send(Err(message));
                }
                async {}.boxed()
            });
        if let Some(ca) = ca {
            let pem = native_tls::Certificate::from_pem(ca.pem.as_bytes()).expect("CA");
            let tls = native_tls::TlsConnector::builder()
                .disable_built_in_roots(true)
                .add_root_certificate(pem)
                .build()
                .expect("tls connector");
            builder = builder.tls_config(tls);
        }
        if let Some(ip) = forwarded_for {
            builder = builder.opening_header("X-Forwarded-For", ip);
        }
        let client = builder
            .connect()
            .await
            .map_err(|e| format!("transport: {e}"))?;
        match tokio::time::timeout(WAIT, status_rx.recv()).await {
            Ok(Some(Ok(()))) => Ok(Self { client }),
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

    async fn emit_ack(&self, event: &str, payload: Value) -> Value {
        let (tx, rx) = oneshot::channel::<Value>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, payload, WAIT, move |p, _| {
                if let Some(tx) = tx.lock().expect("lock").take() {
                    let value = match p {
                        Payload::Text(mut v) if !v.is_empty() => match v.swap_remove(0) {
                            Value::Array(mut args) if args.len() == 1 => args.swap_remove(0),
                            other => other,
                        },
                        _ => Value::Null,
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

    async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}

/// A bare Engine.IO websocket over plain TCP, connected to the default
/// namespace with `token`: enough to see exactly what the server sends and
/// when it closes the connection.
async fn raw_socket(addr: SocketAddr, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: localhost\r\n\
          Upgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("upgrade");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The 101 response and the Engine.IO OPEN packet.
    while !String::from_utf8_lossy(&seen).contains("pingInterval") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("open in time")
            .expect("read");
        assert!(
            n > 0,
            "closed during the upgrade: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    // CONNECT to "/" with the token, as a masked text frame (mask 0).
    let payload = format!("40{}", json!({ "token": token }));
    let mut frame = vec![0x81];
    if payload.len() < 126 {
        frame.push(0x80 | u8::try_from(payload.len()).expect("len"));
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&u16::try_from(payload.len()).expect("len").to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload.as_bytes());
    s.write_all(&frame).await.expect("connect packet");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("40{\"sid\"") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("CONNECT answered in time")
            .expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

fn assert_ok(ack: &Value, what: &str) {
    assert_eq!(ack.get("ok"), Some(&Value::Bool(true)), "{what}: {ack}");
}

// ---------------------------------------------------------------------------
// A server built here, for the tests that need the App's TLS reloader
// (TestServer does not hand it out).
// ---------------------------------------------------------------------------

struct ReloadableServer {
    addr: SocketAddr,
    store: Store,
    reloader: Option<TlsReloader>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ReloadableServer {
    async fn spawn(files: &CertFiles) -> Self {
        Self::spawn_with(files.tls()).await
    }

    async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        tweak(&mut config);
        let mut policy = Policy::builtin().expect("policy");
        relax_limits(&mut policy);
        let app = App::build(config, policy).await.expect("server builds");
        let addr = app.local_addr().expect("addr");
        let store = app.store().clone();
        let reloader = app.tls_reloader().cloned();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            store,
            reloader,
            stop: Some(stop),
            served,
        }
    }

    fn reloader(&self) -> &TlsReloader {
        self.reloader.as_ref().expect("TLS is on")
    }

    async fn seed_user(&self, username: &str) -> User {
        self.store
            .create_user(NewUser {
                username: callgate::domain::Username::parse(username).expect("username"),
                display_name: callgate::domain::DisplayName::parse(username).expect("name"),
                password_hash: password_hash(),
            })
            .await
            .expect("user created")
    }
}

fn token(user: &User) -> String {
    mint(&claims_for(&user.id, 3600), SECRET)
}

// ---------------------------------------------------------------------------
// HTTPS and WSS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn https_serves_tls_1_3_and_1_2_with_alpn_h2_and_http1() {
    let ca = TestCa::new();
    let leaf = ca.leaf();
    let files = CertFiles::new(&leaf);
    let server = TestServer::spawn_with(files.tls()).await;
    let url = format!("https://{}/healthz", server.addr);

    for version in [
        reqwest::tls::Version::TLS_1_3,
        reqwest::tls::Version::TLS_1_2,
    ] {
        let resp = https_client(&ca, version)
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /healthz over {version:?}: {e:?}"));
        assert_eq!(resp.status(), 200, "{version:?}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["status"], "ok");
    }

    let both = [b"h2".as_slice(), b"http/1.1".as_slice()];
    let seen = handshake(server.addr, &ca, &[&rustls::version::TLS13], &both)
        .await
        .expect("TLS 1.3");
    assert_eq!(seen.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(seen.alpn.as_deref(), Some(b"h2".as_slice()));
    assert_eq!(seen.leaf, leaf.der);
    let seen = handshake(server.addr, &ca, &[&rustls::version::TLS12], &[b"http/1.1"])
        .await
        .expect("TLS 1.2");
    assert_eq!(seen.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(seen.alpn.as_deref(), Some(b"http/1.1".as_slice()));

    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err()
    );
    // A client that does not trust the CA is refused.
    let stranger = TestCa::new();
    assert!(
        https_client(&stranger, reqwest::tls::Version::TLS_1_3)
            .get(&url)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn wss_clients_connect_with_a_token_and_get_acks() {
    let ca = TestCa::new();
    let files = CertFiles::new(&ca.leaf());
    let server = TestServer::spawn_with(files.tls()).await;
    let alice = server.seed_user("alice").await;

    let client = WssClient::connect(server.addr, &ca, &server.token(&alice), None)
        .await
        .expect("connects over wss");
    assert_ok(
        &client.emit_ack("joinVideoRoom", json!({})).await,
        "joinVideoRoom",
    );
    client.disconnect().await;

    let refused = WssClient::connect(server.addr, &ca, "not-a-token", None).await;
    assert_eq!(refused.err().as_deref(), Some("unauthorized"));
}

#[tokio::test]
async fn https_login_works_and_handlers_see_the_peer_address_over_tls() {
    // The peer address (ConnectInfo) is what decides whether X-Forwarded-For is
    // believed: with a trusted loopback proxy, each forwarded address gets its
    // own rate-limit key, over HTTPS and over WSS (Socket.IO's req_parts).
    let ca = TestCa::new();
    let files = CertFiles::new(&ca.leaf());
    let tls = files.tls();
    let one = Rate {
        per_minute: 1,
        burst: 1,
    };
    let server = TestServer::spawn_with_policy(
        |c| {
            tls(c);
            c.server.trusted_proxies = vec!["127.0.0.1".into()];
        },
        |p| {
            p.rate_limits.login_per_ip = one;
            p.rate_limits.handshake_per_ip = one;
        },
    )
    .await;
    let alice = server.seed_user("alice").await;
    let client = https_client(&ca, reqwest::tls::Version::TLS_1_3);
    let login = |ip: &'static str| {
        client
            .post(format!("https://{}/auth/login", server.addr))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
    };
    let first = login("198.51.100.1").await.expect("login");
    assert_eq!(first.status(), 200);
    let body: Value = first.json().await.expect("json");
    assert!(body["token"].is_string(), "{body}");
    assert_eq!(login("198.51.100.2").await.expect("login").status(), 200);
    assert_eq!(login("198.51.100.1").await.expect("login").status(), 429);

    let token = server.token(&alice);
    let a = WssClient::connect(server.addr, &ca, &token, Some("198.51.100.1"))
        .await
        .expect("first address connects");
    let b = WssClient::connect(server.addr, &ca, &token, Some("198.51.100.2"))
        .await
        .expect("second address has its own budget");
    let again = WssClient::connect(server.addr, &ca, &token, Some("198.51.100.1")).await;
    assert_eq!(again.err().as_deref(), Some("rate_limited"));
    a.disconnect().await;
    b.disconnect().await;
}

// ---------------------------------------------------------------------------
// Certificate reload
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_reloaded_certificate_serves_new_connections_and_keeps_open_sockets() {
    let ca = TestCa::new();
    let (a, b) = (ca.leaf(), ca.leaf());
    let files = CertFiles::new(&a);
    let server = ReloadableServer::spawn(&files).await;
    let alice = server.seed_user("alice").await;
    assert_eq!(server.reloader().cert_file(), files.cert.as_path());

    let before = WssClient::connect(server.addr, &ca, &token(&alice), None)
        .await
        .expect("connects with certificate A");
    assert_ok(&before.emit_ack("joinVideoRoom", json!({})).await, "before");
    assert_eq!(served_leaf(server.addr, &ca).await, a.der);

    files.write(&b);
    server.reloader().reload().await.expect("reload");
    assert_eq!(
        served_leaf(server.addr, &ca).await,
        b.der,
        "new connections see certificate B"
    );
    assert_ok(
        &before.emit_ack("joinVideoRoom", json!({})).await,
        "a socket opened before the reload still works",
    );
    let after = WssClient::connect(server.addr, &ca, &token(&alice), None)
        .await
        .expect("connects with certificate B");
    assert_ok(&after.emit_ack("joinVideoRoom", json!({})).await, "after");

    // A broken key: the reload fails, names the file, quotes nothing from it,
    // and the previous certificate stays.
    let secret_looking =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    std::fs::write(&files.key, secret_looking).expect("write");
    let err = server
        .reloader()
        .reload()
        .await
        .expect_err("bad key refused");
    assert_eq!(err.key, "server.tls.key_file");
    let text = err.to_string();
    assert!(text.contains(&files.key.display().to_string()), "{text}");
    assert!(!text.contains("c2VjcmV0"), "{text}");
    assert_eq!(served_leaf(server.addr, &ca).await, b.der);

    // A key that is not the certificate's (a half-written update) is refused too.
    std::fs::write(&files.cert, &a.cert_pem).expect("write");
    std::fs::write(&files.key, &b.key_pem).expect("write");
    let err = server
        .reloader()
        .reload()
        .await
        .expect_err("mismatch refused");
    assert_eq!(err.key, "server.tls.key_file");
    std::fs::remove_file(&files.cert).expect("rm");
    let err = server
        .reloader()
        .reload()
        .await
        .expect_err("missing refused");
    assert_eq!(err.key, "server.tls.cert_file");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    assert_eq!(served_leaf(server.addr, &ca).await, b.der);
    assert_ok(
        &before.emit_ack("joinVideoRoom", json!({})).await,
        "still connected after failed reloads",
    );
    before.disconnect().await;
    after.disconnect().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    // A real SIGHUP reaches every TLS server in this test process; each one
    // reloads its own, unchanged files, which is harmless. The handler is
    // installed before the server accepts, so once a handshake succeeds the
    // signal cannot take its default action (terminating the process).
    let ca = TestCa::new();
    let (a, b) = (ca.leaf(), ca.leaf());
    let files = CertFiles::new(&a);
    let server = ReloadableServer::spawn(&files).await;
    assert_eq!(served_leaf(server.addr, &ca).await, a.der);

    files.write(&b);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if served_leaf(server.addr, &ca).await == b.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_stops_accepting_closes_sockets_and_bounds_the_wait() {
    for tls in [false, true] {
        let ca = TestCa::new();
        let files = CertFiles::new(&ca.leaf());
        let with_tls = files.tls();
        let mut server = ReloadableServer::spawn_with(|c| {
            if tls {
                with_tls(c);
            }
            c.server.shutdown_grace_secs = 2;
        })
        .await;
        let alice = server.seed_user("alice").await;
        let client = WssClient::connect_to(server.addr, tls.then_some(&ca), &token(&alice), None)
            .await
            .expect("connects");
        assert_ok(&client.emit_ack("joinVideoRoom", json!({})).await, "before");
        let mut raw = if tls {
            None
        } else {
            Some(raw_socket(server.addr, &token(&alice)).await)
        };
        // A connection in the middle of a request head holds the shutdown
        // until the grace period is over.
        let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
        if !tls {
            stuck
                .write_all(b"GET /healthz HTTP/1.1\r\nHo")
                .await
                .expect("write");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        let start = Instant::now();
        let _ = server.stop.take().expect("running").send(());
        if let Some(raw) = raw.as_mut() {
            // The socket gets an Engine.IO CLOSE packet (a text frame "1"),
            // then the connection ends.
            let last = read_to_close(raw, WAIT).await;
            assert!(
                last.windows(3).any(|w| w == [0x81, 0x01, b'1']),
                "{:?}",
                String::from_utf8_lossy(&last)
            );
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "closed late: {:?}",
                start.elapsed()
            );
        }
        // New connections are refused at once.
        let refused = loop {
            match TcpStream::connect(server.addr).await {
                Err(_) => break start.elapsed(),
                Ok(_) => {
                    assert!(start.elapsed() < Duration::from_secs(1), "still accepting");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert!(refused < Duration::from_secs(1), "tls: {tls}: {refused:?}");
        let served = tokio::time::timeout(WAIT, &mut server.served)
            .await
            .expect("run_until returns");
        served.expect("join").expect("run_until is Ok");
        let took = start.elapsed();
        if tls {
            // Nothing in flight (a stalled handshake is dropped at once).
            assert!(took < Duration::from_millis(1500), "tls: {took:?}");
        } else {
            assert!(
                took >= Duration::from_millis(1900) && took <= Duration::from_millis(3000),
                "plain: run_until returned after {took:?}"
            );
        }
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(1), stuck.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "tls: {tls}: the stalled connection is dropped: {closed:?}"
        );
        client.disconnect().await;
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tls_needs_both_files_and_they_must_hold_a_certificate_and_its_key() {
    let problems = |config: &Config| -> Vec<String> {
        config
            .validate()
            .err()
            .map(|p| p.0.into_iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    };
    let ca = TestCa::new();
    let files = CertFiles::new(&ca.leaf());

    let mut only_cert = test_config();
    only_cert.server.tls.cert_file = files.cert.clone();
    let got = problems(&only_cert);
    assert!(
        got.iter()
            .any(|p| p.starts_with("server.tls.key_file: is empty")),
        "{got:?}"
    );

    let mut only_key = test_config();
    only_key.server.tls.key_file = files.key.clone();
    let got = problems(&only_key);
    assert!(
        got.iter()
            .any(|p| p.starts_with("server.tls.cert_file: is empty")),
        "{got:?}"
    );

    let mut missing = test_config();
    missing.server.tls.cert_file = files.cert.with_file_name("nope.pem");
    missing.server.tls.key_file = files.key.clone();
    let got = problems(&missing);
    assert!(
        got.iter()
            .any(|p| p.starts_with("server.tls.cert_file: is not a readable file")),
        "{got:?}"
    );

    let mut timeout = test_config();
    timeout.server.header_read_timeout_secs = 0;
    let got = problems(&timeout);
    assert!(
        got.iter()
            .any(|p| p.starts_with("server.header_read_timeout_secs:")),
        "{got:?}"
    );

    // Set through the environment like every other key.
    let env = vec![
        ("CALLGATE_JWT_SECRET".to_string(), SECRET.to_string()),
        (
            "CALLGATE__SERVER__TLS__CERT_FILE".to_string(),
            files.cert.display().to_string(),
        ),
        (
            "CALLGATE__SERVER__TLS__KEY_FILE".to_string(),
            files.key.display().to_string(),
        ),
        (
            "CALLGATE__SERVER__HEADER_READ_TIMEOUT_SECS".to_string(),
            "3".to_string(),
        ),
    ];
    let config = Config::load_from(None, &Overrides::default(), &env).expect("loads");
    assert_eq!(config.server.tls.cert_file, files.cert);
    assert_eq!(config.server.header_read_timeout_secs, 3);
    assert!(problems(&config).is_empty());

    // A file that exists but holds no certificate stops start-up, naming it.
    std::fs::write(&files.cert, "not a certificate").expect("write");
    let mut config = test_config();
    files.tls()(&mut config);
    let err = App::build(config, Policy::builtin().expect("policy"))
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.starts_with("server.tls.cert_file: "), "{err}");
    assert!(err.contains(&files.cert.display().to_string()), "{err}");
}

// ---------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------

/// Opens a connection that sends a request head one byte at a time, every
/// `every`, and never finishes it. Returns how long after connecting the
/// server closed it, or `None` if it was still open after `give_up`.
async fn trickle(addr: SocketAddr, every: Duration, give_up: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'));
    let mut buf = [0u8; 1024];
    let mut next_byte = tokio::time::Instant::now();
    loop {
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(start.elapsed()),
                Ok(_) => {} // e.g. a 408 response before the close
            },
            () = tokio::time::sleep_until(next_byte) => {
                let byte = *head.next().expect("endless");
                if s.write_all(&[byte]).await.is_err() {
                    return Some(start.elapsed());
                }
                next_byte += every;
            }
        }
        if start.elapsed() > give_up {
            return None;
        }
    }
}

/// Opens a connection that sends nothing at all; as [`trickle`].
async fn silent(addr: SocketAddr, give_up: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(give_up.saturating_sub(start.elapsed()), s.read(&mut buf)).await
        {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Runs `conns` trickling and `silent_conns` silent connections against
/// `server` while a normal client connects and calls; returns the slowest
/// and fastest closing times.
async fn slowloris(
    server: &TestServer,
    conns: usize,
    silent_conns: usize,
    every: Duration,
    give_up: Duration,
) -> (Duration, Duration) {
    let addr = server.addr;
    let mut attack = Vec::new();
    // Opened 2 ms apart: a burst of hundreds of SYNs at once overflows the
    // listen backlog (128 here) and the kernel's 1 s SYN retry would be
    // counted against the server.
    for i in 0..conns + silent_conns {
        tokio::time::sleep(Duration::from_millis(2)).await;
        attack.push(if i < conns {
            tokio::spawn(trickle(addr, every, give_up))
        } else {
            tokio::spawn(silent(addr, give_up))
        });
    }

    // Meanwhile a normal client connects and calls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice = server.seed_user("alice").await;
    let started = Instant::now();
    let client = TestClient::connect(server, Some(&server.token(&alice)))
        .await
        .expect("a normal client connects during the attack");
    assert_ok(
        &client.emit_ack("joinVideoRoom", json!({})).await,
        "during the attack",
    );
    let normal = started.elapsed();
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, 200);

    let mut closed = Vec::new();
    for (i, task) in attack.into_iter().enumerate() {
        let kind = if i < conns { "trickling" } else { "silent" };
        match task.await.expect("join") {
            Some(after) => closed.push(after),
            None => panic!("{kind} connection {i} was still open after {give_up:?}"),
        }
    }
    // The client connected and called while the attack was on.
    assert!(
        normal < Duration::from_secs(2),
        "normal client took {normal:?}"
    );
    client.disconnect().await;
    let slowest = closed.iter().max().copied().unwrap_or_default();
    let fastest = closed.iter().min().copied().unwrap_or_default();
    eprintln!(
        "slowloris: {conns} trickling + {silent_conns} silent connections closed after {fastest:?} to {slowest:?}; normal client connected and called in {normal:?}"
    );
    (slowest, fastest)
}

#[tokio::test]
async fn slowloris_connections_are_closed_at_the_header_timeout_while_others_are_served() {
    // 2 s instead of the default 10 to keep the suite fast; a byte every 400 ms
    // shows that trickling does not extend the deadline.
    let server = TestServer::spawn_with(|c| c.server.header_read_timeout_secs = 2).await;
    let (slowest, fastest) = slowloris(
        &server,
        200,
        20,
        Duration::from_millis(400),
        Duration::from_secs(6),
    )
    .await;
    assert!(
        fastest >= Duration::from_millis(1900),
        "closed early: {fastest:?}"
    );
    assert!(
        slowest <= Duration::from_millis(3500),
        "closed late: {slowest:?}"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_that_trickles_its_next_request_is_closed() {
    // After a first, complete request the next head has the same bound (and an
    // idle keep-alive connection is closed after it too).
    let server = TestServer::spawn_with(|c| c.server.header_read_timeout_secs = 1).await;
    for trickle_next in [true, false] {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("response");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        let start = Instant::now();
        let mut head = b"GET /healthz HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        let closed = loop {
            tokio::select! {
                read = s.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break start.elapsed(),
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_millis(200)), if trickle_next => {
                    let byte = *head.next().expect("endless");
                    if s.write_all(&[byte]).await.is_err() {
                        break start.elapsed();
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(4),
                "still open (trickling: {trickle_next})"
            );
        };
        assert!(
            closed >= Duration::from_millis(900) && closed <= Duration::from_millis(2000),
            "trickling: {trickle_next}: closed after {closed:?}"
        );
    }
}

#[tokio::test]
async fn slowloris_at_the_default_timeout() {
    let server = TestServer::spawn().await;
    let (slowest, fastest) = slowloris(
        &server,
        200,
        0,
        Duration::from_secs(5),
        Duration::from_secs(15),
    )
    .await;
    assert!(
        fastest >= Duration::from_secs(9),
        "closed early: {fastest:?}"
    );
    assert!(
        slowest <= Duration::from_secs(11),
        "closed late: {slowest:?}"
    );
}

#[tokio::test]
async fn tls_connections_that_stall_are_closed_at_the_header_timeout() {
    let ca = TestCa::new();
    let files = CertFiles::new(&ca.leaf());
    let tls = files.tls();
    let server = TestServer::spawn_with(|c| {
        tls(c);
        c.server.header_read_timeout_secs = 1;
    })
    .await;
    // No ClientHello at all.
    let closed = silent(server.addr, Duration::from_secs(4))
        .await
        .expect("a silent TLS connection is closed");
    assert!(
        closed >= Duration::from_millis(900) && closed <= Duration::from_millis(2500),
        "{closed:?}"
    );

    // A completed handshake, then nothing.
    let config = client_config(&ca, rustls::ALL_VERSIONS, &[b"http/1.1"]);
    let addr = server.addr;
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let (_, mut stream) = handshake_blocking(addr, config).expect("handshake");
        let start = Instant::now();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => Some(start.elapsed()),
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Some(start.elapsed())
            }
            _ => None,
        }
    })
    .await
    .expect("join")
    .expect("an idle TLS connection is closed");
    assert!(closed <= Duration::from_millis(2500), "{closed:?}");

    // Meanwhile HTTPS works.
    let resp = https_client(&ca, reqwest::tls::Version::TLS_1_3)
        .get(format!("https://{}/healthz", server.addr))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sockets_outlive_the_header_timeout() {
    // The timeout is for request heads, not for open sockets: a websocket and
    // a long-polling client both stay connected well past it.
    let server = TestServer::spawn_with(|c| c.server.header_read_timeout_secs = 1).await;
    let alice = server.seed_user("alice").await;
    let ws = server.connect(&alice).await;
    let polling = TestClient::connect_with(
        &server,
        Some(json!({ "token": server.token(&alice) })),
        TransportType::Polling,
        None,
    )
    .await
    .expect("polling connects");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_ok(&ws.emit_ack("joinVideoRoom", json!({})).await, "websocket");
    assert_ok(
        &polling.emit_ack("joinVideoRoom", json!({})).await,
        "polling",
    );
    ws.disconnect().await;
    polling.disconnect().await;
}

#[tokio::test]
async fn a_plain_server_has_no_tls_reloader() {
    let mut policy = Policy::builtin().expect("policy");
    relax_limits(&mut policy);
    let app = App::build(test_config(), policy).await.expect("builds");
    assert!(app.tls_reloader().is_none());
}

// ---------------------------------------------------------------------------
// HTTP/2 connection bounds (issue 14, finding 7)
// ---------------------------------------------------------------------------

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("len").to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One GET /healthz over h2 (a hand-built HEADERS frame: indexed :method GET
/// and :scheme https, literal :path and :authority), answering the server's
/// SETTINGS and PINGs like a live browser. Returns whether the response
/// came, and how long after it the server closed the connection (`None`:
/// still open after `give_up`).
fn h2_request_then_idle(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    give_up: Duration,
) -> (bool, Option<Duration>, u32) {
    use std::io::{Read, Write};
    let (seen, mut tls) = handshake_blocking(addr, config).expect("handshake");
    assert_eq!(seen.alpn.as_deref(), Some(b"h2".as_slice()));
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut block = vec![0x82, 0x87, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, 9]);
    block.extend_from_slice(b"localhost");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(4, 0, 0, &[]));
    hello.extend(h2_frame(1, 0x5, 1, &block));
    tls.write_all(&hello).expect("request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut responded: Option<Instant> = None;
    let mut pings = 0;
    let start = Instant::now();
    loop {
        if start.elapsed() > give_up {
            return (responded.is_some(), None, pings);
        }
        match tls.read(&mut chunk) {
            Ok(0) => return (responded.is_some(), responded.map(|t| t.elapsed()), pings),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (responded.is_some(), responded.map(|t| t.elapsed()), pings),
        }
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match (kind, flags & 1) {
                (1, _) if responded.is_none() => responded = Some(Instant::now()),
                (4, 0) => tls
                    .write_all(&h2_frame(4, 1, 0, &[]))
                    .expect("settings ack"),
                (6, 0) => {
                    pings += 1;
                    tls.write_all(&h2_frame(6, 1, 0, &payload))
                        .expect("ping ack");
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_even_while_it_answers_pings() {
    let ca = TestCa::new();
    let files = CertFiles::new(&ca.leaf());
    let tls = files.tls();
    let server = ReloadableServer::spawn_with(move |c| {
        tls(c);
        c.socketio.ping_interval_secs = 1;
        c.server.idle_timeout_secs = 2;
        c.server.http2_keep_alive_interval_secs = 1;
        c.server.http2_keep_alive_timeout_secs = 5;
    })
    .await;
    let config = client_config(&ca, rustls::ALL_VERSIONS, &[b"h2"]);
    let addr = server.addr;
    let (responded, closed_after, pings) = tokio::task::spawn_blocking(move || {
        h2_request_then_idle(addr, config, Duration::from_secs(15))
    })
    .await
    .expect("join");
    assert!(responded, "the request was answered");
    let closed_after = closed_after.expect("the idle connection was closed");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
        "closed {closed_after:?} after its only request"
    );
    assert!(
        pings >= 1,
        "keep-alive PINGs were sent ({pings}) and answered"
    );
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_dropped() {
    let ca = TestCa::new();
    let files = CertFiles::new(&ca.leaf());
    let tls = files.tls();
    let server = ReloadableServer::spawn_with(move |c| {
        tls(c);
        c.server.idle_timeout_secs = 600;
        c.server.http2_keep_alive_interval_secs = 1;
        c.server.http2_keep_alive_timeout_secs = 1;
    })
    .await;
    let config = client_config(&ca, rustls::ALL_VERSIONS, &[b"h2"]);
    let addr = server.addr;
    // Opens h2 with a request whose stream stays open (no END_STREAM) and
    // then never reads or answers again.
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let (_, mut tls) = handshake_blocking(addr, config).expect("handshake");
        let mut block = vec![0x83, 0x87, 0x44, 8]; // :method POST
        block.extend_from_slice(b"/healthz");
        block.extend_from_slice(&[0x41, 9]);
        block.extend_from_slice(b"localhost");
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(h2_frame(4, 0, 0, &[]));
        hello.extend(h2_frame(1, 0x4, 1, &block));
        tls.write_all(&hello).expect("request");
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let start = Instant::now();
        let mut chunk = [0u8; 4096];
        // Reads only to see the close; PINGs go unanswered.
        while start.elapsed() < Duration::from_secs(12) {
            match tls.read(&mut chunk) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(start.elapsed()),
            }
        }
        None
    })
    .await
    .expect("join");
    let closed = closed.expect("a peer that does not answer PINGs is dropped");
    assert!(closed < Duration::from_secs(8), "{closed:?}");
}
