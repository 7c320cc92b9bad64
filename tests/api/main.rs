//! Black-box tests: the real server on port 0, real HTTP and Socket.IO clients.

// A failed expectation is the point of a test; helpers serve many test files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

mod attacks;
mod calls;
mod demo;
mod docs;
mod edges;
mod handshake;
mod helpers;
mod http;
mod limits;
mod mongo;
mod observability;
mod operators;
mod startup;
mod tls;
mod transport;
