//! Events for other nodes, published by the commit that makes them true.
//!
//! An event for a user with sockets on other nodes reaches them through
//! socketioxide's Redis adapter. Emitted the usual way, it leaves only once
//! the transition's commit has answered: the node then publishes the
//! adapter's broadcast request, one more round trip to Redis before any
//! other node hears of it, on the critical path of every call set-up.
//!
//! Instead, the node encodes that same request ([`Relay::encode`]: the
//! adapter's own `RequestOut`, as MessagePack, what `emit` would have sent)
//! for each event of the transition, and the commit script publishes it on
//! the adapter's request channel the moment the commit applies, for each
//! recipient it finds with a socket on another live node; for the others it
//! publishes nothing. The other nodes' adapters take it as any broadcast and
//! deliver it to their sockets; this node delivers to its own
//! ([`crate::signaling::registry::Outcome::here_only`] then names every
//! recipient). The event is published only if the commit applied, in the
//! transition's order.
//!
//! The wire format is the adapter's, built with its own types
//! (socketioxide-core, pinned with the adapter): `tests/cluster.rs` checks
//! delivery across real nodes, and a unit test below decodes what is
//! encoded as the adapter decodes it.

use socketioxide_core::Uid;
use socketioxide_core::adapter::BroadcastOptions;
use socketioxide_core::adapter::remote_packet::{RequestOut, RequestTypeOut};
use socketioxide_core::packet::Packet;
use socketioxide_core::parser::Parse;

/// The namespace every callgate socket is on.
const NAMESPACE: &str = "/";

/// Encodes events as the adapter of one node publishes them.
#[derive(Debug, Clone)]
pub struct Relay {
    server: Uid,
    channel: String,
}

impl Relay {
    /// The relay of the node whose Socket.IO server is `server`
    /// (`SocketIoConfig::server_id`), its adapter's channels prefixed with
    /// `adapter_prefix`.
    pub fn new(server: Uid, adapter_prefix: &str) -> Self {
        Self {
            server,
            channel: format!("{adapter_prefix}-request#{NAMESPACE}#"),
        }
    }

    /// The adapter's request channel, that every node subscribes to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The adapter's broadcast of `event` with `payload` to `room`; `None`
    /// when the payload does not serialize.
    pub fn encode<T: serde::Serialize + ?Sized>(
        &self,
        room: String,
        event: &str,
        payload: &T,
    ) -> Option<Vec<u8>> {
        let data = socketioxide_parser_common::CommonParser
            .encode_value(payload, Some(event))
            .ok()?;
        let packet = Packet::event(NAMESPACE, data);
        let mut opts = BroadcastOptions::default();
        opts.rooms.push(room.into());
        let request = RequestOut::new(self.server, RequestTypeOut::Broadcast(&packet), &opts);
        rmp_serde::to_vec(&request).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketioxide_core::adapter::remote_packet::{RequestIn, RequestTypeIn};

    #[test]
    fn an_event_is_encoded_as_the_adapter_decodes_a_broadcast() {
        let server = Uid::new();
        let relay = Relay::new(server, "cg:sio");
        assert_eq!(relay.channel(), "cg:sio-request#/#");
        let bytes = relay
            .encode(
                "user:42".into(),
                "incomingVideoCall",
                &serde_json::json!({"callId": "c1"}),
            )
            .expect("encodes");
        let request: RequestIn = rmp_serde::from_slice(&bytes).expect("the adapter decodes it");
        assert_eq!(request.node_id, server);
        let opts = request.opts.expect("options");
        assert_eq!(opts.rooms.as_slice(), ["user:42"]);
        assert!(opts.except.is_empty());
        let RequestTypeIn::Broadcast(packet) = request.r#type else {
            panic!("a broadcast");
        };
        assert_eq!(&*packet.ns, "/");
        let text = format!("{packet:?}");
        assert!(
            text.contains("incomingVideoCall") && text.contains("c1"),
            "{text}"
        );
    }
}
