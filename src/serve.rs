//! The accept loop: plain HTTP, or HTTPS/WSS with rustls when `[server.tls]`
//! names a certificate and a key, served on the listener that
//! [`crate::app::App::build`] bound.
//!
//! - Every accepted socket gets `TCP_NODELAY` (signaling is small messages both
//!   ways; Nagle plus delayed ACKs added ~16 ms to each reply).
//! - Handlers see `ConnectInfo<SocketAddr>` in request extensions, over TLS too
//!   (Socket.IO's `req_parts` included).
//! - Slow clients: a request's headers must arrive within
//!   `server.header_read_timeout_secs` (this also closes idle keep-alive
//!   connections after that time), and a new connection must complete its
//!   first request within the same time. With TLS the handshake gets that
//!   time as well, before the first-request clock starts.
//! - Idle connections: an HTTP/1 or HTTP/2 connection with no request in
//!   flight for `server.idle_timeout_secs`, or a websocket on which no byte
//!   moved for that long, is closed ([`Guarded`], [`Tracked`]); HTTP/2 also
//!   sends keep-alive PINGs and drops a peer that does not answer them
//!   (answered PINGs do not count as activity). hyper's own
//!   `header_read_timeout` covers HTTP/1 only, so without this an HTTP/2
//!   connection that made one request stayed open for ever.
//! - At most `server.max_connections` TCP connections are open at once; one
//!   over the cap is closed as soon as it is accepted ([`GuardAcceptor`]).
//! - TLS: 1.2 and 1.3, ALPN `h2` and `http/1.1`, ring as the crypto provider.
//!   The certificate is reloaded on SIGHUP (or [`TlsReloader::reload`])
//!   without dropping connections; a failed reload keeps the old one.
//! - Shutdown: stop accepting, run the shutdown hook (close Socket.IO sockets),
//!   give in-flight connections at most `server.shutdown_grace_secs`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::Server;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::config::{Problem, Problems, TlsConfig};

/// ALPN protocols offered, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How the listener is served.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time allowed for a request's headers, a new connection's first
    /// request, and a TLS handshake.
    pub header_read_timeout: Duration,
    /// Longest wait for connections to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive PING interval.
    pub http2_keep_alive_interval: Duration,
    /// HTTP/2 keep-alive PING answer timeout.
    pub http2_keep_alive_timeout: Duration,
    /// Concurrent TCP connections.
    pub max_connections: usize,
    /// The TLS certificate, when TLS is on.
    pub tls: Option<TlsReloader>,
}

/// Why a certificate or key could not be loaded. Names the file and the
/// problem, never any key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsError {
    /// The configuration key that names the file.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl TlsError {
    fn cert(path: &Path, problem: impl Into<String>) -> Self {
        Self {
            key: "server.tls.cert_file",
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    fn key(path: &Path, problem: impl Into<String>) -> Self {
        Self {
            key: "server.tls.key_file",
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// The same error as a configuration problem.
    pub fn to_problem(&self) -> Problem {
        let fix = if self.key == "server.tls.cert_file" {
            "give a PEM certificate chain, leaf first (see certs/README.md)"
        } else {
            "give the PEM private key of the certificate (see certs/README.md)"
        };
        Problem::new(self.key, self.to_string(), fix)
    }
}

/// Admits accepted TCP streams under the connection cap, sets `TCP_NODELAY`,
/// and pairs each connection's stream ([`Guarded`]) with its service
/// ([`Tracked`]) so the idle bound knows when requests are in flight. Runs
/// before TLS, so the cap and the idle bound hold for TLS connections too.
#[derive(Debug, Clone)]
pub struct GuardAcceptor {
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl GuardAcceptor {
    /// At most `max_connections` at once, each closed after `idle` without
    /// a request in flight (or, once upgraded to a websocket, without a byte).
    pub fn new(max_connections: usize, idle: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            idle,
        }
    }
}

impl<S> Accept<TcpStream, S> for GuardAcceptor {
    type Stream = Guarded;
    type Service = Tracked<S>;
    type Future = std::future::Ready<io::Result<(Guarded, Tracked<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => stream.set_nodelay(true).map(|()| {
                let activity = Arc::new(Activity::new());
                (
                    Guarded::new(stream, permit, self.idle, activity.clone()),
                    Tracked {
                        inner: service,
                        activity,
                    },
                )
            }),
            // Dropping the stream closes it.
            Err(_) => Err(io::Error::other("server.max_connections reached")),
        };
        std::future::ready(admitted)
    }
}

/// What one connection's stream and service share: requests in flight,
/// whether it became a websocket, and when it was last active.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    upgraded: AtomicBool,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection becomes idle, or `None` if it is idle now.
    fn idle_at(&self, idle: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(now + idle);
        }
        let at = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
        (at > now).then_some(at)
    }
}

/// Counts a request in flight until dropped (a cancelled request included).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's service, counting its requests in flight for the idle
/// bound and noting a switch to the websocket protocol.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for Tracked<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let in_flight = InFlight::start(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            if let Ok(r) = &response
                && r.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS
            {
                in_flight.0.upgraded.store(true, Ordering::Relaxed);
            }
            drop(in_flight);
            response
        })
    }
}

/// A TCP stream that holds a connection slot while it lives, and fails with
/// `TimedOut` once the connection has been idle for the idle time: no
/// request in flight (HTTP/1 and HTTP/2: keep-alive PINGs do not count), or,
/// on a websocket, no byte either way. Checked whenever the connection waits
/// to read, which hyper, h2 and websockets always do.
#[derive(Debug)]
pub struct Guarded {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(
        inner: TcpStream,
        permit: OwnedSemaphorePermit,
        idle: Duration,
        activity: Arc<Activity>,
    ) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            activity,
            _permit: permit,
        }
    }

    fn moved(&self, bytes: usize) {
        if bytes > 0 && self.activity.upgraded.load(Ordering::Relaxed) {
            self.activity.touch();
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.moved(buf.filled().len() - before);
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match this.activity.idle_at(this.idle) {
                    Some(at) => this.deadline.as_mut().reset(at),
                    None => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connection idle",
                        )));
                    }
                }
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let out = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = out {
            this.moved(n);
        }
        out
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let out = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = out {
            this.moved(n);
        }
        out
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Reads and checks a certificate chain and its key, building the rustls
/// configuration served: TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`.
///
/// # Errors
/// An unreadable file, no certificate, no or an unsupported private key, or
/// a key that is not the leaf certificate's.
pub fn load_server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = std::fs::read(cert_file)
        .map_err(|e| TlsError::cert(cert_file, format!("cannot be read: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::cert(cert_file, "is not valid PEM"))?;
    if chain.is_empty() {
        return Err(TlsError::cert(cert_file, "holds no PEM CERTIFICATE block"));
    }
    let key_pem = std::fs::read(key_file)
        .map_err(|e| TlsError::key(key_file, format!("cannot be read: {e}")))?;
    // Parse errors are reduced to a fixed text: pem::Error can quote input.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::key(
            key_file,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        ),
        _ => TlsError::key(key_file, "is not a valid PEM private key"),
    })?;
    drop(key_pem);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::cert(cert_file, format!("TLS set-up failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::key(
                key_file,
                format!(
                    "cannot be used with the certificate in {}: {e}",
                    cert_file.display()
                ),
            )
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The served certificate, and the files it is (re)loaded from. Clones share
/// the certificate: a reload through any clone applies to new handshakes on
/// the server; connections already open keep theirs.
#[derive(Clone)]
pub struct TlsReloader {
    config: RustlsConfig,
    cert_file: Arc<PathBuf>,
    key_file: Arc<PathBuf>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// The reloader for `[server.tls]`: `None` when TLS is off (both paths
    /// empty; [`crate::config::Config::validate`] refuses one without the other).
    ///
    /// # Errors
    /// The certificate or key cannot be used, as a configuration problem.
    pub async fn from_config(tls: &TlsConfig) -> Result<Option<Self>, Problems> {
        if tls.cert_file.as_os_str().is_empty() && tls.key_file.as_os_str().is_empty() {
            return Ok(None);
        }
        Self::load(&tls.cert_file, &tls.key_file)
            .await
            .map(Some)
            .map_err(|e| Problems(vec![e.to_problem()]))
    }

    /// Loads `cert_file` and `key_file`.
    ///
    /// # Errors
    /// As [`load_server_config`].
    pub async fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let cert_file = Arc::new(cert_file.to_path_buf());
        let key_file = Arc::new(key_file.to_path_buf());
        let config = load_blocking(cert_file.clone(), key_file.clone()).await?;
        Ok(Self {
            config: RustlsConfig::from_config(Arc::new(config)),
            cert_file,
            key_file,
        })
    }

    /// Reads the files again and serves the new certificate to new
    /// connections. On failure the previous certificate stays and an error
    /// naming the file is logged. SIGHUP calls this.
    ///
    /// # Errors
    /// As [`load_server_config`].
    pub async fn reload(&self) -> Result<(), TlsError> {
        match load_blocking(self.cert_file.clone(), self.key_file.clone()).await {
            Ok(config) => {
                self.config.reload_from_config(Arc::new(config));
                tracing::info!(
                    cert_file = %self.cert_file.display(),
                    "TLS certificate reloaded"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "TLS certificate reload failed; still serving the previous certificate"
                );
                Err(e)
            }
        }
    }

    /// The certificate chain file.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The private key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
}

async fn load_blocking(
    cert_file: Arc<PathBuf>,
    key_file: Arc<PathBuf>,
) -> Result<rustls::ServerConfig, TlsError> {
    let cert = cert_file.clone();
    tokio::task::spawn_blocking(move || load_server_config(&cert_file, &key_file))
        .await
        .unwrap_or_else(|_| Err(TlsError::cert(&cert, "loading panicked")))
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reloads the certificate on each SIGHUP while the guard lives. The handler
/// is installed before this returns, so a SIGHUP arriving once serving has
/// begun never takes the default action (terminating the process).
#[cfg(unix)]
fn reload_on_sighup(tls: &TlsReloader) -> Option<AbortOnDrop> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            let tls = tls.clone();
            Some(AbortOnDrop(tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    // `reload` logs the outcome.
                    let _ = tls.reload().await;
                }
            })))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS certificate reload is off");
            None
        }
    }
}

#[cfg(not(unix))]
fn reload_on_sighup(_tls: &TlsReloader) -> Option<AbortOnDrop> {
    None
}

fn log_accept_error(peer: Option<&SocketAddr>, error: &io::Error) {
    match peer {
        // TLS handshakes that fail or time out: scanners, wrong trust stores.
        Some(peer) => tracing::debug!(%peer, %error, "connection set-up failed"),
        // The listener itself (e.g. out of file descriptors); retried in 50 ms.
        None => tracing::warn!(%error, "accepting a connection failed"),
    }
}

/// Applies the slow-client bounds and the shared handle to a server.
fn configure<A>(
    mut server: Server<SocketAddr, A>,
    settings: &Settings,
    handle: &Handle<SocketAddr>,
) -> Server<SocketAddr, A> {
    // axum-server installs hyper_util's TokioTimer on the HTTP/1 and HTTP/2
    // builders; header_read_timeout needs it (hyper ignores or panics without).
    server
        .http_builder()
        .http1()
        .header_read_timeout(settings.header_read_timeout);
    server
        .http_builder()
        .http2()
        .keep_alive_interval(settings.http2_keep_alive_interval)
        .keep_alive_timeout(settings.http2_keep_alive_timeout);
    server
        .handle(handle.clone())
        // Covers the time hyper takes to tell HTTP/1 from HTTP/2 (unbounded
        // otherwise) and a client that connects and sends nothing.
        .first_request_timeout(settings.header_read_timeout)
        .accept_error_handler(log_accept_error)
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, runs `on_shutdown` (which closes the Socket.IO sockets) and
/// waits at most `settings.shutdown_grace` for it and for open connections,
/// dropping whatever is left.
///
/// # Errors
/// When the server fails (accept errors are logged and retried, not returned).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
    on_shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = Handle::<SocketAddr>::new();
    let grace = settings.shutdown_grace;
    match &settings.tls {
        Some(tls) => {
            let _sighup = reload_on_sighup(tls);
            tracing::info!(
                cert_file = %tls.cert_file().display(),
                "TLS on: HTTPS and WSS (TLS 1.2 and 1.3; ALPN h2, http/1.1)"
            );
            let acceptor = RustlsAcceptor::new(tls.config.clone())
                .handshake_timeout(settings.header_read_timeout)
                .acceptor(GuardAcceptor::new(
                    settings.max_connections,
                    settings.idle_timeout,
                ));
            let server = configure(
                Server::from_listener(listener).acceptor(acceptor),
                &settings,
                &handle,
            );
            drive(
                server.serve(make_service),
                &handle,
                grace,
                shutdown,
                on_shutdown,
            )
            .await
        }
        None => {
            let server = configure(
                Server::from_listener(listener).acceptor(GuardAcceptor::new(
                    settings.max_connections,
                    settings.idle_timeout,
                )),
                &settings,
                &handle,
            );
            drive(
                server.serve(make_service),
                &handle,
                grace,
                shutdown,
                on_shutdown,
            )
            .await
        }
    }
}

/// Runs `serving` until `shutdown`, then shuts down within `grace`.
async fn drive(
    serving: impl Future<Output = io::Result<()>>,
    handle: &Handle<SocketAddr>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(serving);
    tokio::select! {
        res = &mut serving => return res,
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new connections; closing sockets");
    // Stops the accept loop and drops the listener at once; idle keep-alive
    // connections close; requests in flight may finish.
    handle.graceful_shutdown(Some(grace));
    let drained = async {
        let ((), res) = tokio::join!(on_shutdown, &mut serving);
        res
    };
    match tokio::time::timeout(grace, drained).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!("shutdown grace period over; dropping remaining connections");
            handle.shutdown();
            Ok(())
        }
    }
}
