//! Cluster mode, black box: two or three real `callgate` processes on
//! loopback sharing one real Redis, real Socket.IO clients each connected to
//! a named node, real JWTs and real argon2 hashes.
//!
//! Every test here is `#[ignore]`d and named `redis_*`: a bare `cargo test`
//! lists them as ignored, never as passed. `bash scripts/test` starts a
//! throwaway redis-server, sets `CALLGATE_TEST_REDIS_URL` (and
//! `CALLGATE_TEST_REDIS_SERVER`, the binary, for the tests that restart a
//! Redis of their own) and runs them with `--include-ignored`. Run by hand:
//!
//! ```text
//! CALLGATE_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test --test cluster -- --include-ignored
//! ```
//!
//! Each test uses a key prefix of its own, so tests run in parallel on one
//! Redis; every test asserts which node each of its clients is on.

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
mod directory;
mod faults;
mod harness;
mod limits;
