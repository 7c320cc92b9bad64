//! Engine.IO v4 / Socket.IO v5 text packets on a websocket, default namespace.
//!
//! Engine.IO: `0` open, `1` close, `2` ping (the server's), `3` pong, `4`
//! message. A Socket.IO packet rides in a message: `40` connect, `41`
//! disconnect, `42[id]["event",data]` event, `43id[data]` ack, `44{...}`
//! connect error.

use serde::Serialize;

/// The reply to the server's ping.
pub const PONG: &str = "3";

/// A packet from the server, borrowing the frame's text.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Engine.IO open (`0{...}`).
    Open,
    /// Engine.IO ping: answer [`PONG`].
    Ping,
    /// Engine.IO close, or Socket.IO disconnect.
    Closed,
    /// Socket.IO CONNECT accepted.
    Connected,
    /// Socket.IO CONNECT refused; the JSON body (`{"message": ...}`).
    ConnectError(&'a str),
    /// An event: its name and the raw JSON of its first argument (empty if none).
    Event {
        /// The event name.
        name: &'a str,
        /// The first argument, raw JSON.
        data: &'a str,
    },
    /// An ack: its id and the raw JSON array of its arguments.
    Ack {
        /// The ack id the client sent.
        id: u64,
        /// The arguments, raw JSON array.
        args: &'a str,
    },
    /// Anything else (binary packets, other namespaces, noise).
    Other,
}

/// Parses one websocket text frame.
pub fn parse(text: &str) -> Inbound<'_> {
    match text.as_bytes().first() {
        Some(b'0') => Inbound::Open,
        Some(b'1') => Inbound::Closed,
        Some(b'2') => Inbound::Ping,
        Some(b'4') => parse_socketio(&text[1..]),
        _ => Inbound::Other,
    }
}

fn parse_socketio(packet: &str) -> Inbound<'_> {
    let Some(kind) = packet.as_bytes().first() else {
        return Inbound::Other;
    };
    let body = &packet[1..];
    match kind {
        b'0' => Inbound::Connected,
        b'1' => Inbound::Closed,
        b'2' => parse_event(skip_ack_id(body).1),
        b'3' => match skip_ack_id(body) {
            (Some(id), args) => Inbound::Ack { id, args },
            (None, _) => Inbound::Other,
        },
        b'4' => Inbound::ConnectError(body),
        _ => Inbound::Other,
    }
}

/// Splits a leading decimal ack id off a packet body.
fn skip_ack_id(body: &str) -> (Option<u64>, &str) {
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    (body[..digits].parse().ok(), &body[digits..])
}

/// `["name",data,...]` → name and the raw text after the name's comma.
/// Event names here never hold escapes, so the name ends at the next quote.
fn parse_event(array: &str) -> Inbound<'_> {
    let Some(rest) = array.strip_prefix("[\"") else {
        return Inbound::Other;
    };
    let Some(end) = rest.find('"') else {
        return Inbound::Other;
    };
    let name = &rest[..end];
    let after = &rest[end + 1..];
    let data = after
        .strip_prefix(',')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or("");
    Inbound::Event { name, data }
}

/// The CONNECT packet carrying the token: `40{"token":"..."}`.
pub fn connect(token: &str) -> String {
    #[derive(Serialize)]
    struct Auth<'a> {
        token: &'a str,
    }
    // Serialising a struct of one string cannot fail.
    format!(
        "40{}",
        serde_json::to_string(&Auth { token }).unwrap_or_default()
    )
}

/// An event packet, asking for an ack when `ack` is given:
/// `42["name",data]` or `42<ack>["name",data]`.
///
/// # Errors
/// When `data` does not serialise.
pub fn event(name: &str, data: &impl Serialize, ack: Option<u64>) -> serde_json::Result<String> {
    let data = serde_json::to_string(data)?;
    Ok(match ack {
        Some(id) => format!("42{id}[\"{name}\",{data}]"),
        None => format!("42[\"{name}\",{data}]"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_control_packets() {
        assert_eq!(parse(r#"0{"sid":"x","pingInterval":25000}"#), Inbound::Open);
        assert_eq!(parse("2"), Inbound::Ping);
        assert_eq!(parse("1"), Inbound::Closed);
    }

    #[test]
    fn socket_io_connect_and_refusal() {
        assert_eq!(parse(r#"40{"sid":"abc"}"#), Inbound::Connected);
        assert_eq!(
            parse(r#"44{"message":"unauthorized"}"#),
            Inbound::ConnectError(r#"{"message":"unauthorized"}"#)
        );
    }

    #[test]
    fn events_with_and_without_data() {
        assert_eq!(
            parse(r#"42["incomingVideoCall",{"callId":"c1","x":[1,2]}]"#),
            Inbound::Event {
                name: "incomingVideoCall",
                data: r#"{"callId":"c1","x":[1,2]}"#
            }
        );
        assert_eq!(
            parse(r#"42["ping"]"#),
            Inbound::Event {
                name: "ping",
                data: ""
            }
        );
    }

    #[test]
    fn acks_carry_their_id() {
        assert_eq!(
            parse(r#"4317[{"ok":false}]"#),
            Inbound::Ack {
                id: 17,
                args: r#"[{"ok":false}]"#
            }
        );
    }

    #[test]
    fn outbound_packets() {
        assert_eq!(connect("t.o.k"), r#"40{"token":"t.o.k"}"#);
        let data = serde_json::json!({"callId": "c"});
        assert_eq!(
            event("endVideoCall", &data, None).unwrap(),
            r#"42["endVideoCall",{"callId":"c"}]"#
        );
        assert_eq!(
            event("initiateVideoCall", &data, Some(3)).unwrap(),
            r#"423["initiateVideoCall",{"callId":"c"}]"#
        );
    }
}
