//! Request heads that outlive their connection's read buffer.
//!
//! hyper parses a request without copying: the URI and every header value are
//! slices of the connection's read buffer (8–16 KiB). Engine.IO keeps the
//! request head of each session for the session's whole life, so one short
//! header slice would pin the whole buffer of every open socket: measured, it
//! was half the memory of an idle socket. [`detach_head`] (run by the
//! transport gate, [`super::transport`], on the headers it keeps) copies the
//! URI and the header values into one allocation sized to fit, and
//! the read buffer is freed as soon as hyper hands the connection over.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Uri};
use bytes::BytesMut;

/// The same URI and headers, sharing one fresh buffer instead of whatever
/// backed the originals. Header names are already owned by `http`.
pub fn detach_head(uri: &Uri, headers: &HeaderMap) -> (Uri, HeaderMap) {
    let uri_text = uri.to_string();
    let size = uri_text.len() + headers.values().map(HeaderValue::len).sum::<usize>();
    let mut buf = BytesMut::with_capacity(size);
    buf.extend_from_slice(uri_text.as_bytes());
    let mut spans = Vec::with_capacity(headers.len());
    for value in headers.values() {
        let start = buf.len();
        buf.extend_from_slice(value.as_bytes());
        spans.push((start, buf.len()));
    }
    let buf: Bytes = buf.freeze();

    let owned_uri = Uri::from_maybe_shared(buf.slice(..uri_text.len())).unwrap_or_else(|_| {
        // Unreachable: the text came from a valid URI. Keep the original.
        uri.clone()
    });
    let mut owned = HeaderMap::with_capacity(headers.len());
    for ((name, value), (start, end)) in headers.iter().zip(spans) {
        let mut copy =
            HeaderValue::from_maybe_shared(buf.slice(start..end)).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    (owned_uri, owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(outer: &Bytes, inner: &[u8]) -> bool {
        let range = outer.as_ptr_range();
        range.contains(&inner.as_ptr())
    }

    #[test]
    fn nothing_points_into_the_original_buffer_and_nothing_changes() {
        // A head whose URI and values are slices of one buffer, as hyper makes them.
        let wire = Bytes::from_static(b"/socket.io/?EIO=4&transport=websocketBearer abcwebsocketx");
        let uri = Uri::from_maybe_shared(wire.slice(0..37)).expect("uri");
        let mut headers = HeaderMap::new();
        let auth = HeaderValue::from_maybe_shared(wire.slice(37..47)).expect("value");
        headers.insert("authorization", auth);
        headers.append(
            "upgrade",
            HeaderValue::from_maybe_shared(wire.slice(47..56)).expect("value"),
        );
        headers.append("x-custom", HeaderValue::from_static("x"));
        headers.append("x-custom", HeaderValue::from_static("y"));
        assert!(within(&wire, uri.path().as_bytes()));

        let (owned_uri, owned) = detach_head(&uri, &headers);

        assert_eq!(owned_uri, uri);
        assert_eq!(owned, headers);
        assert!(!within(&wire, owned_uri.path().as_bytes()));
        for value in owned.values() {
            assert!(!within(&wire, value.as_bytes()));
        }
        let all: Vec<_> = owned.get_all("x-custom").iter().collect();
        assert_eq!(all, ["x", "y"]);
    }

    #[test]
    fn sensitivity_is_kept() {
        let mut headers = HeaderMap::new();
        let mut secret = HeaderValue::from_static("Bearer t");
        secret.set_sensitive(true);
        headers.insert("authorization", secret);
        let (_, owned) = detach_head(&Uri::from_static("/socket.io/"), &headers);
        assert!(
            owned
                .get("authorization")
                .is_some_and(HeaderValue::is_sensitive)
        );
    }
}
