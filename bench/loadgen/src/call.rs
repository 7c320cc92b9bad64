//! One call set-up between two generated users, shared by the caller's and the
//! callee's socket tasks:
//!
//! ```text
//! caller: initiateVideoCall {receiverId, ...} (ack)   → server
//! callee: ← incomingVideoCall {callId, ...}           (initiate→incoming)
//! callee: acceptVideoCall {callId, callerId, ...}     → server
//! caller: ← videoCallAccepted                         (initiate→accepted)
//! caller: endVideoCall {callId, callerId, receiverId} → server
//! callee: ← videoCallEnded                            (the pair is free again)
//! ```
//!
//! Payloads carry the seed frontend's fields that every server under test
//! needs: callgate reads `receiverId` and `callId` (and checks the rest), the
//! seed's Node handlers route by `callerId` / `receiverId`, the bare relay too.
//! Latencies run from the moment the initiate is written, so a late generator
//! does not count against the server; how late it was is the send lag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;

use crate::phase::{PairPool, Phase};

/// A user taking part in calls.
#[derive(Debug)]
pub struct Person {
    /// The user id.
    pub id: String,
    /// The display name.
    pub name: String,
}

/// `initiateVideoCall` payload (the seed frontend's shape).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Initiate<'a> {
    room_name: &'a str,
    caller_id: &'a str,
    caller_name: &'a str,
    receiver_id: &'a str,
    receiver_name: &'a str,
    is_group_call: bool,
}

/// `acceptVideoCall` and `endVideoCall` payload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Follow<'a> {
    call_id: &'a str,
    room_name: &'a str,
    caller_id: &'a str,
    receiver_id: &'a str,
    is_group_call: bool,
}

/// How a call ended for the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The callee saw `videoCallEnded` after the full set-up.
    Completed,
    /// The server refused a step (`ok: false` ack or `videoCallFailed`).
    Failed,
}

/// One scheduled call.
#[derive(Debug)]
pub struct Call {
    room: String,
    caller: Arc<Person>,
    callee: Arc<Person>,
    pair: usize,
    scheduled: Instant,
    sent: OnceLock<Instant>,
    call_id: OnceLock<String>,
    finished: AtomicBool,
    phase: Arc<Phase>,
    pool: Arc<PairPool>,
}

impl Call {
    /// A call on `pair` of `pool`, due at `scheduled`, counted in `phase`.
    pub fn new(
        seq: u64,
        pair: usize,
        pool: Arc<PairPool>,
        phase: Arc<Phase>,
        scheduled: Instant,
    ) -> Self {
        let (caller, callee) = pool.people(pair);
        Self {
            room: format!("call-lg-{seq}"),
            caller,
            callee,
            pair,
            scheduled,
            sent: OnceLock::new(),
            call_id: OnceLock::new(),
            finished: AtomicBool::new(false),
            phase,
            pool,
        }
    }

    /// The caller's `initiateVideoCall` payload.
    pub fn initiate(&self) -> Initiate<'_> {
        Initiate {
            room_name: &self.room,
            caller_id: &self.caller.id,
            caller_name: &self.caller.name,
            receiver_id: &self.callee.id,
            receiver_name: &self.callee.name,
            is_group_call: false,
        }
    }

    /// The `acceptVideoCall` / `endVideoCall` payload, once the callee has
    /// learned the call id.
    pub fn follow(&self) -> Follow<'_> {
        Follow {
            call_id: self.call_id.get().map_or("", String::as_str),
            room_name: &self.room,
            caller_id: &self.caller.id,
            receiver_id: &self.callee.id,
            is_group_call: false,
        }
    }

    /// The caller is about to write the initiate: latencies start now.
    pub fn dialled(&self) {
        let now = Instant::now();
        if self.sent.set(now).is_ok() {
            self.phase
                .record_send_lag(now.saturating_duration_since(self.scheduled));
        }
    }

    /// The callee got `incomingVideoCall` carrying `call_id`.
    pub fn rang(&self, call_id: String) {
        let _ = self.call_id.set(call_id);
        if let Some(sent) = self.sent.get() {
            self.phase.record_incoming(sent.elapsed());
        }
    }

    /// The caller got `videoCallAccepted`.
    pub fn answered(&self) {
        if let Some(sent) = self.sent.get() {
            self.phase.record_accepted(sent.elapsed());
        }
    }

    /// Counts the outcome and frees the pair; only the first call counts.
    pub fn finish(&self, outcome: Outcome) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            self.phase.record_outcome(outcome);
            self.pool.release(self.pair);
        }
    }
}
