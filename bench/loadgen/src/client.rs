//! One Socket.IO client over a websocket: the authenticated handshake, then a
//! task that answers pings and plays the caller's or the callee's part of the
//! calls it is handed (see [`crate::call`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::call::{Call, Outcome};
use crate::protocol::{self, Inbound};

/// Event names (the seed frontend's).
mod events {
    pub const INITIATE: &str = "initiateVideoCall";
    pub const ACCEPT: &str = "acceptVideoCall";
    pub const END: &str = "endVideoCall";
    pub const INCOMING: &str = "incomingVideoCall";
    pub const ACCEPTED: &str = "videoCallAccepted";
    pub const ENDED: &str = "videoCallEnded";
    pub const FAILED: &str = "videoCallFailed";
}

type Ws = WebSocketStream<TcpStream>;

/// The server's Socket.IO endpoint and the websocket settings for it.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    url: String,
    config: WebSocketConfig,
}

impl Endpoint {
    /// The default namespace of the server at `addr`, websocket transport.
    pub fn new(addr: SocketAddr) -> Self {
        // Signaling frames are well under 1 KiB: small buffers keep 10 000s of
        // sockets cheap; frames are written at once (no write batching).
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        Self {
            addr,
            url: format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
            config,
        }
    }
}

/// Why a socket could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP bind or connect failed.
    Tcp(std::io::Error),
    /// The websocket upgrade failed.
    Websocket(tokio_tungstenite::tungstenite::Error),
    /// The server answered CONNECT with `connect_error` (its JSON body).
    Refused(String),
    /// The server closed, or said something out of turn.
    Protocol,
}

impl ConnectError {
    /// A short label, for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Websocket(_) => "websocket",
            Self::Refused(_) => "refused",
            Self::Protocol => "protocol",
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(e) => write!(f, "tcp: {e}"),
            Self::Websocket(e) => write!(f, "websocket: {e}"),
            Self::Refused(body) => write!(f, "connect_error {body}"),
            Self::Protocol => f.write_str("unexpected packet during the handshake"),
        }
    }
}

/// Opens a websocket from `source` (the kernel's choice when `None`) and
/// completes the Engine.IO open and the Socket.IO CONNECT with `token`.
///
/// # Errors
/// Any failure on the way, as a [`ConnectError`].
pub async fn connect(
    endpoint: &Endpoint,
    source: Option<Ipv4Addr>,
    token: &str,
) -> Result<Ws, ConnectError> {
    let socket = TcpSocket::new_v4().map_err(ConnectError::Tcp)?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .map_err(ConnectError::Tcp)?;
    }
    let tcp = socket
        .connect(endpoint.addr)
        .await
        .map_err(ConnectError::Tcp)?;
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let (mut ws, _) = client_async_with_config(endpoint.url.as_str(), tcp, Some(endpoint.config))
        .await
        .map_err(ConnectError::Websocket)?;
    let mut sent_connect = false;
    while let Some(frame) = ws.next().await {
        let frame = frame.map_err(ConnectError::Websocket)?;
        let Message::Text(text) = frame else { continue };
        match protocol::parse(&text) {
            Inbound::Open if !sent_connect => {
                ws.send(Message::text(protocol::connect(token)))
                    .await
                    .map_err(ConnectError::Websocket)?;
                sent_connect = true;
            }
            Inbound::Ping => ws
                .send(Message::text(protocol::PONG))
                .await
                .map_err(ConnectError::Websocket)?,
            Inbound::Connected if sent_connect => return Ok(ws),
            Inbound::ConnectError(body) => return Err(ConnectError::Refused(body.to_owned())),
            _ => return Err(ConnectError::Protocol),
        }
    }
    Err(ConnectError::Protocol)
}

/// What a socket task is told to do.
#[derive(Debug)]
pub enum Command {
    /// Be the callee of this call: accept it when it rings.
    Answer(Arc<Call>),
    /// Be the caller: initiate it now.
    Dial(Arc<Call>),
}

/// The handle of a running socket task.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
}

impl Client {
    /// Runs `ws` in its own task. `dropped` counts sockets the server closed.
    pub fn spawn(ws: Ws, dropped: Arc<AtomicU64>) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut session = Session {
                ws,
                next_ack: 0,
                dialing: None,
                answering: None,
            };
            if session.run(inbox).await == End::ServerClosed {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self { commands }
    }

    /// Hands the task a command (ignored if the socket is gone).
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Whether the socket task is still running.
    pub fn is_alive(&self) -> bool {
        !self.commands.is_closed()
    }
}

/// Why a socket task stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The generator dropped every handle: the run is over.
    Released,
    /// The server closed the socket, or it failed.
    ServerClosed,
}

/// The `callId` of an `incomingVideoCall` (all three servers send one).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    call_id: String,
}

/// The first argument of an ack: `{ok: bool, ...}` (callgate, bare relay).
#[derive(Deserialize)]
struct AckBody {
    ok: bool,
}

/// A socket's state: the call it is placing and the call it is taking.
struct Session {
    ws: Ws,
    next_ack: u64,
    /// As caller: the call and the ack id of its initiate, until accepted.
    dialing: Option<(Arc<Call>, u64)>,
    /// As callee: the call, until it ends.
    answering: Option<Arc<Call>>,
}

impl Session {
    async fn run(&mut self, mut inbox: mpsc::UnboundedReceiver<Command>) -> End {
        loop {
            let step = tokio::select! {
                biased;
                command = inbox.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return End::Released,
                },
                frame = self.ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.inbound(&text).await,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Err(()),
                    Some(Ok(_)) => Ok(()),
                },
            };
            if step.is_err() {
                return End::ServerClosed;
            }
        }
    }

    async fn emit(
        &mut self,
        event: &str,
        data: &impl serde::Serialize,
        ack: Option<u64>,
    ) -> Result<(), ()> {
        let packet = protocol::event(event, data, ack).map_err(|_| ())?;
        self.ws.send(Message::text(packet)).await.map_err(|_| ())
    }

    async fn command(&mut self, command: Command) -> Result<(), ()> {
        match command {
            Command::Answer(call) => {
                self.answering = Some(call);
                Ok(())
            }
            Command::Dial(call) => {
                let ack = self.next_ack;
                self.next_ack += 1;
                call.dialled();
                let sent = self
                    .emit(events::INITIATE, &call.initiate(), Some(ack))
                    .await;
                self.dialing = Some((call, ack));
                sent
            }
        }
    }

    async fn inbound(&mut self, text: &str) -> Result<(), ()> {
        match protocol::parse(text) {
            Inbound::Ping => self
                .ws
                .send(Message::text(protocol::PONG))
                .await
                .map_err(|_| ()),
            Inbound::Closed => Err(()),
            Inbound::Event { name, data } => self.event(name, data).await,
            Inbound::Ack { id, args } => {
                self.ack(id, args);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn event(&mut self, name: &str, data: &str) -> Result<(), ()> {
        match name {
            events::INCOMING => {
                let (Some(call), Ok(incoming)) =
                    (&self.answering, serde_json::from_str::<Incoming>(data))
                else {
                    return Ok(());
                };
                let call = call.clone();
                call.rang(incoming.call_id);
                self.emit(events::ACCEPT, &call.follow(), None).await
            }
            events::ACCEPTED => {
                let Some((call, _)) = self.dialing.take() else {
                    return Ok(());
                };
                call.answered();
                self.emit(events::END, &call.follow(), None).await
            }
            events::ENDED => {
                if let Some(call) = self.answering.take() {
                    call.finish(Outcome::Completed);
                }
                Ok(())
            }
            events::FAILED => {
                if let Some((call, _)) = self.dialing.take() {
                    call.finish(Outcome::Failed);
                }
                if let Some(call) = self.answering.take() {
                    call.finish(Outcome::Failed);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// An `ok: false` ack to the pending initiate fails the call.
    fn ack(&mut self, id: u64, args: &str) {
        let refused = serde_json::from_str::<(AckBody,)>(args).is_ok_and(|(body,)| !body.ok);
        if refused
            && self.dialing.as_ref().is_some_and(|(_, ack)| *ack == id)
            && let Some((call, _)) = self.dialing.take()
        {
            call.finish(Outcome::Failed);
        }
    }
}
