//! Answers to client events: an ack (`{ok: true, ...}` or `{ok: false, error}`)
//! and, for clients that send no ack, an error event on the sending socket.

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;

use super::events;
use crate::error::ClientError;
use crate::metrics::Metrics;

/// Which error event a failure is reported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Call events: `videoCallFailed {code, message, callId?, roomName?, receiverId?}`.
    Call,
    /// Other events: `error {code, message, event}`.
    General,
}

/// Extractor: whether the client asked for an ack with this event, so a
/// success the ack already carries need not be sent again as an event.
#[derive(Debug, Clone, Copy)]
pub struct WantsAck(pub bool);

impl<A: Adapter> FromMessageParts<A> for WantsAck {
    type Error = Infallible;

    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Self(ack_id.is_some()))
    }
}

/// `{ok: true, ...fields}`, serialised straight into the ack packet.
#[derive(Serialize)]
struct OkReply<T> {
    ok: bool,
    #[serde(flatten)]
    fields: T,
}

/// Sends `{ok: true, ...fields}` as the ack; `fields` serialises as a map
/// (a JSON object or a struct).
pub fn ok<A: Adapter, T: Serialize>(
    metrics: &Metrics,
    event: &'static str,
    ack: AckSender<A>,
    fields: T,
) {
    metrics.event(event, "ok");
    // A client that asked for no ack gets none; a closed socket is not an error here.
    let _ = ack.send(&OkReply { ok: true, fields });
}

/// Context fields that are also copied inside the ack's `error`.
const ERROR_DETAILS: &[&str] = &["retryAfterMs"];

/// Reports `error` by ack and by event on the sending socket. `context`
/// carries extra fields for the event and ack (e.g. `callId`, `existingCallId`).
pub fn fail<A: Adapter>(
    metrics: &Metrics,
    socket: &SocketRef<A>,
    ack: AckSender<A>,
    event: &'static str,
    channel: Channel,
    error: &ClientError,
    context: Map<String, Value>,
) {
    metrics.event(event, error.code.as_str());
    let mut details = Map::new();
    details.insert("code".into(), json!(error.code));
    details.insert("message".into(), json!(error.message));
    // Fields that say how to retry belong to the error, where a client reading
    // `error` looks; they stay beside it too, where clients of 0.1 read them.
    for field in ERROR_DETAILS {
        if let Some(value) = context.get(*field) {
            details.insert((*field).into(), value.clone());
        }
    }
    let mut ack_body = Map::new();
    ack_body.insert("ok".into(), json!(false));
    ack_body.insert("error".into(), Value::Object(details));
    ack_body.extend(context.clone());
    let ack_body = Value::Object(ack_body);
    let _ = ack.send(&ack_body);

    let mut body = Map::new();
    body.insert("code".into(), json!(error.code));
    body.insert("message".into(), json!(error.message));
    body.extend(context);
    let name = match channel {
        Channel::Call => events::VIDEO_CALL_FAILED,
        Channel::General => {
            body.insert("event".into(), json!(event));
            events::ERROR
        }
    };
    let _ = socket.emit(name, &Value::Object(body));
}
