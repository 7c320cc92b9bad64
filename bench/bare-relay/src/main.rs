//! A bare socketioxide relay of the seed's call events: the baseline that tells
//! how much of callgate's cost is its own checks and state.
//!
//! The handshake verifies an HS256 token exactly as callgate's does (issuer and
//! audience `callgate`, `exp`, `iss`, `aud`, `sub` required) and joins the
//! socket to a room named after the token's `sub`. After that, nothing is
//! checked and nothing is remembered: each event is relayed to the user room
//! its payload names, the way the seed's handlers relay to `userSocketMap`.
//!
//! With `--redis`, the relay runs on socketioxide's Redis adapter configured
//! as a callgate node configures it ([`cluster`]): two such nodes on one Redis
//! relay across nodes, and cost what the adapter costs, with no callgate logic.
//!
//! ```text
//! CALLGATE_JWT_SECRET=... callgate-bare-relay --listen 127.0.0.1:4103
//! CALLGATE_JWT_SECRET=... callgate-bare-relay --listen 127.0.0.1:4107 --redis redis://127.0.0.1:6379
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef, State};
use socketioxide::handler::ConnectHandler;

mod cluster;
mod handshake;

use cluster::ClusterAdapter;

use handshake::Verifier;

/// A call event's payload: any JSON object, relayed as it came.
type Payload = Map<String, Value>;

/// The user id a payload names under `key`, if it is a string.
fn user_in(payload: &Payload, key: &str) -> Option<String> {
    payload.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Emits `event` with `payload` to the room of the user named by `key`.
async fn relay<A: Adapter>(io: &SocketIo<A>, payload: &Payload, key: &str, event: &'static str) {
    if let Some(user) = user_in(payload, key) {
        // A relay has nobody to tell about a failed broadcast.
        let _ = io.to(user).emit(event, payload).await;
    }
}

/// `initiateVideoCall`: rings the receiver with a fresh `callId` and acks it.
async fn initiate_video_call<A: Adapter>(
    io: SocketIo<A>,
    Data(mut call): Data<Payload>,
    ack: AckSender<A>,
) {
    let call_id = uuid::Uuid::new_v4().to_string();
    call.insert("callId".into(), Value::String(call_id.clone()));
    relay(&io, &call, "receiverId", "incomingVideoCall").await;
    let _ = ack.send(&json!({ "ok": true, "callId": call_id }));
}

/// `acceptVideoCall`: tells the caller.
async fn accept_video_call<A: Adapter>(io: SocketIo<A>, Data(call): Data<Payload>) {
    relay(&io, &call, "callerId", "videoCallAccepted").await;
}

/// `rejectVideoCall`: tells the caller.
async fn reject_video_call<A: Adapter>(io: SocketIo<A>, Data(call): Data<Payload>) {
    relay(&io, &call, "callerId", "videoCallRejected").await;
}

/// `endVideoCall`: tells both parties.
async fn end_video_call<A: Adapter>(io: SocketIo<A>, Data(call): Data<Payload>) {
    relay(&io, &call, "callerId", "videoCallEnded").await;
    relay(&io, &call, "receiverId", "videoCallEnded").await;
}

/// Registers the call events on a socket that passed the handshake.
async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    socket.on("initiateVideoCall", initiate_video_call::<A>);
    socket.on("acceptVideoCall", accept_video_call::<A>);
    socket.on("rejectVideoCall", reject_video_call::<A>);
    socket.on("endVideoCall", end_video_call::<A>);
}

/// The CONNECT packet's auth payload.
#[derive(Deserialize)]
struct Auth {
    token: String,
}

/// The connect middleware: a valid token, then the socket joins its user's room.
async fn authenticate<A: Adapter>(
    socket: SocketRef<A>,
    Data(auth): Data<Auth>,
    State(verifier): State<Arc<Verifier>>,
) -> Result<(), handshake::Refused> {
    let user = verifier.verify(&auth.token)?;
    socket.join(user);
    Ok(())
}

/// The command line.
struct Options {
    /// Where to listen.
    listen: SocketAddr,
    /// The Redis URL of cluster mode, if any.
    redis: Option<String>,
}

const USAGE: &str = "usage: callgate-bare-relay [--listen ADDR:PORT] [--redis redis://HOST:PORT]";

/// Command line: `--listen ADDR:PORT` (default 127.0.0.1:4103) and
/// `--redis URL`, in either order.
fn options() -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 4103)),
        redis: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--listen" => {
                options.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?;
            }
            "--redis" => options.redis = Some(value),
            _ => return Err(USAGE.into()),
        }
    }
    Ok(options)
}

/// The HTTP routes, under the Socket.IO layer.
fn routes() -> Router {
    Router::new().route(
        "/healthz",
        get(|| async { axum::Json(json!({ "status": "ok" })) }),
    )
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let options = options()?;
    let addr = options.listen;
    let secret = std::env::var("CALLGATE_JWT_SECRET")
        .map_err(|_| "set CALLGATE_JWT_SECRET (HS256 secret)".to_string())?;
    let verifier = Arc::new(Verifier::hs256(secret.as_bytes()));

    let builder = SocketIo::builder().with_state(verifier);
    let app = match &options.redis {
        None => {
            let (layer, io) = builder.build_layer();
            io.ns("/", on_connect.with(authenticate));
            routes().layer(layer)
        }
        Some(url) => {
            let ctr = cluster::adapter(url).await?;
            let (layer, io) = builder.with_adapter::<ClusterAdapter>(ctr).build_layer();
            // The adapter subscribes to its channels before anyone connects.
            io.ns(
                "/",
                on_connect::<ClusterAdapter>.with(authenticate::<ClusterAdapter>),
            )
            .await
            .map_err(|e| format!("the Redis adapter could not subscribe: {e}"))?;
            routes().layer(layer)
        }
    };

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?
        // The same socket option as callgate: small messages both ways.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    let mode = if options.redis.is_some() {
        " (Redis adapter)"
    } else {
        ""
    };
    eprintln!("bare relay listening on {addr}{mode}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}
