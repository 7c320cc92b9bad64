//! Memory held by the keyed rate limiters before and after cleanup.
//!
//! A counting global allocator (stats_alloc) tracks live heap bytes while 100 000 distinct
//! client IPs each make one login attempt, then again after the refill window
//! and `retain_recent` + `shrink_to_fit` (what the cleanup task runs).
//!
//! Run with: `cargo bench --bench limiter_memory`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use callgate::limits::RateLimiters;
use callgate::policy::{Policy, Rate};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    const KEYS: u32 = 100_000;
    let mut policy = Policy::builtin().expect("policy");
    // One cell per millisecond: each bucket is full again 1 ms after its use.
    policy.rate_limits.login_per_ip = Rate {
        per_minute: 60_000,
        burst: 1,
    };
    let limiters = RateLimiters::new(&policy.rate_limits);
    let region = Region::new(GLOBAL);
    let live = || {
        let c = region.change();
        c.bytes_allocated as isize - c.bytes_deallocated as isize + c.bytes_reallocated
    };
    let empty = live();
    for i in 0..KEYS {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        limiters
            .login(callgate::limits::IpKey::new(ip, 64), None)
            .expect("first use passes");
    }
    let full = live();
    std::thread::sleep(Duration::from_millis(20));
    limiters.retain_recent();
    let cleaned = live();
    let kib = |b: isize| b as f64 / 1024.0;
    println!("## Keyed rate-limiter memory ({KEYS} distinct keys)\n");
    println!("| state | keys held | heap bytes held by the limiters |");
    println!("|---|--:|--:|");
    println!(
        "| after {KEYS} keys | {} | {:.0} KiB ({:.1} bytes/key) |",
        KEYS,
        kib(full - empty),
        (full - empty) as f64 / f64::from(KEYS)
    );
    println!(
        "| after cleanup | {} | {:.1} KiB |",
        limiters.len(),
        kib(cleaned - empty)
    );
}
