//! callgate: a Socket.IO call-signaling server for Jitsi Meet video calls that
//! trusts nothing a client says about who it is.
//!
//! # Layout
//! - [`config`]: the one typed configuration and its validation.
//! - [`domain`]: parsed ids, names and passwords (no I/O).
//! - [`auth`]: JWT issuing and verification, argon2id hashing.
//! - [`policy`]: the declarative policy files (`policies/*.toml`).
//! - [`store`]: the directory of users and groups (embedded or MongoDB).
//! - [`limits`]: rate limiters and connection caps.
//! - [`metrics`]: Prometheus metrics.
//! - [`http`]: the HTTP API (axum) and its tower stack.
//! - [`signaling`]: the Socket.IO handshake, rooms and call events.
//! - [`jitsi`]: Jitsi room tokens (HS256, RS256/ASAP, JaaS) for call participants.
//! - [`error`]: client-visible error codes, and the one mapping to them.
//! - [`serve`]: the accept loop: plain HTTP or TLS, slow-client bounds, shutdown.
//! - [`telemetry`]: the log subscriber, capped so no filter can log a secret.
//! - [`app`]: wiring; the only module that depends on all the others.

pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod jitsi;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod serve;
pub mod signaling;
pub mod store;
pub mod telemetry;
