//! Abuse limits: keyed rate limiters (governor) and connection caps.
//!
//! Limits are checked before any directory lookup or relay. The keyed
//! limiters would keep ~70 bytes per key forever, so a background task
//! ([`Limits::spawn_cleanup`]) forgets keys whose bucket is full again.
//! Connection slots are RAII guards: dropping one (when its socket is
//! dropped) frees the slot, whatever path the socket took out.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::cluster::rates::ClusterRates;
use crate::domain::{UserId, Username};
use crate::policy::{ConnectionPolicy, GroupPolicy, Rate, RateLimitPolicy};

/// What a limited request must wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Milliseconds, rounded up, at least 1.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whole seconds, rounded up, at least 1 (for `Retry-After`).
    pub fn as_secs_ceil(self) -> u64 {
        self.as_millis().div_ceil(1000).max(1)
    }
}

/// The key of a per-IP limit or cap: an IPv4 address, or the IPv6 network
/// of `server.ipv6_prefix_len` bits (a /64 by default) that holds the
/// address. One subscriber commonly gets a whole /64, so keying by the full
/// IPv6 address would give them 2^64 separate budgets. Made only by
/// [`IpKey::new`], so no per-IP limit can be keyed by a raw address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpKey(IpAddr);

impl IpKey {
    /// The key of `ip` when IPv6 addresses are grouped by their first
    /// `ipv6_prefix_len` bits (0 to 128; larger counts as 128). IPv4-mapped
    /// IPv6 addresses count as IPv4.
    pub fn new(ip: IpAddr, ipv6_prefix_len: u8) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let bits = u32::from(ipv6_prefix_len.min(128));
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    Self(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)))
                }
            },
        }
    }

    /// The address or network address the key stands for.
    pub fn addr(self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for IpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Per-user Socket.IO event classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// initiate events.
    CallInitiate,
    /// accept, reject, end.
    CallControl,
    /// room events.
    Rooms,
}

/// The governor quota of a rate. Policy validation refuses 0 for either half;
/// the fallback to 1 only keeps this total for policies built in code.
fn quota(rate: Rate) -> Quota {
    let per_minute = NonZeroU32::new(rate.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

fn check<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), RetryAfter> {
    limiter
        .check_key(key)
        .map_err(|not_until| RetryAfter(not_until.wait_time_from(DefaultClock::default().now())))
}

/// The keyed limiters of one policy.
#[derive(Debug)]
pub struct RateLimiters {
    call_initiate: DefaultKeyedRateLimiter<UserId>,
    call_control: DefaultKeyedRateLimiter<UserId>,
    rooms: DefaultKeyedRateLimiter<UserId>,
    handshake_per_ip: DefaultKeyedRateLimiter<IpKey>,
    session_open_per_ip: DefaultKeyedRateLimiter<IpKey>,
    login_per_ip: DefaultKeyedRateLimiter<IpKey>,
    login_per_username: DefaultKeyedRateLimiter<(Username, IpKey)>,
    register_per_ip: DefaultKeyedRateLimiter<IpKey>,
    group_changes: DefaultKeyedRateLimiter<UserId>,
    disconnect_after: u32,
}

impl RateLimiters {
    /// Fresh limiters for `policy`.
    pub fn new(policy: &RateLimitPolicy) -> Self {
        Self {
            call_initiate: RateLimiter::keyed(quota(policy.call_initiate)),
            call_control: RateLimiter::keyed(quota(policy.call_control)),
            rooms: RateLimiter::keyed(quota(policy.rooms)),
            handshake_per_ip: RateLimiter::keyed(quota(policy.handshake_per_ip)),
            session_open_per_ip: RateLimiter::keyed(quota(policy.session_open_per_ip)),
            group_changes: RateLimiter::keyed(quota(policy.group_changes)),
            login_per_ip: RateLimiter::keyed(quota(policy.login_per_ip)),
            login_per_username: RateLimiter::keyed(quota(policy.login_per_username)),
            register_per_ip: RateLimiter::keyed(quota(policy.register_per_ip)),
            disconnect_after: policy.disconnect_after,
        }
    }

    /// A Socket.IO event of `class` by `user`.
    ///
    /// # Errors
    /// How long to wait when limited.
    pub fn event(&self, class: EventClass, user: &UserId) -> Result<(), RetryAfter> {
        let limiter = match class {
            EventClass::CallInitiate => &self.call_initiate,
            EventClass::CallControl => &self.call_control,
            EventClass::Rooms => &self.rooms,
        };
        check(limiter, user)
    }

    /// A Socket.IO handshake (namespace CONNECT) from `ip`.
    ///
    /// # Errors
    /// How long to wait when limited.
    pub fn handshake(&self, ip: IpKey) -> Result<(), RetryAfter> {
        check(&self.handshake_per_ip, &ip)
    }

    /// An Engine.IO session open (a transport request without a session
    /// id) from `ip`, before any CONNECT.
    ///
    /// # Errors
    /// How long to wait when limited.
    pub fn session_open(&self, ip: IpKey) -> Result<(), RetryAfter> {
        check(&self.session_open_per_ip, &ip)
    }

    /// A login from `ip` for `username` (when it parses).
    ///
    /// The IP bucket is checked first, and a request it refuses is refused
    /// without touching the username bucket: an address already limited
    /// cannot spend anyone's budget. The username bucket is keyed by the
    /// pair (username, IP), as OWASP suggests for failed logins, so guessing
    /// from one address cannot lock the user out from every other address;
    /// a distributed guesser is bounded by each address's IP bucket and by
    /// argon2's cost.
    ///
    /// # Errors
    /// The wait when limited.
    pub fn login(&self, ip: IpKey, username: Option<&Username>) -> Result<(), RetryAfter> {
        check(&self.login_per_ip, &ip)?;
        match username {
            Some(u) => check(&self.login_per_username, &(u.clone(), ip)),
            None => Ok(()),
        }
    }

    /// A registration from `ip`.
    ///
    /// # Errors
    /// How long to wait when limited.
    pub fn register(&self, ip: IpKey) -> Result<(), RetryAfter> {
        check(&self.register_per_ip, &ip)
    }

    /// A group creation or membership change by `user`.
    ///
    /// # Errors
    /// How long to wait when limited.
    pub fn group_change(&self, user: &UserId) -> Result<(), RetryAfter> {
        check(&self.group_changes, user)
    }

    /// Consecutive refused events before a socket is disconnected (0: never).
    pub fn disconnect_after(&self) -> u32 {
        self.disconnect_after
    }

    /// Forgets keys whose buckets are full again and returns the memory.
    pub fn retain_recent(&self) {
        self.call_initiate.retain_recent();
        self.call_control.retain_recent();
        self.rooms.retain_recent();
        self.handshake_per_ip.retain_recent();
        self.session_open_per_ip.retain_recent();
        self.group_changes.retain_recent();
        self.login_per_ip.retain_recent();
        self.login_per_username.retain_recent();
        self.register_per_ip.retain_recent();
        self.call_initiate.shrink_to_fit();
        self.call_control.shrink_to_fit();
        self.rooms.shrink_to_fit();
        self.handshake_per_ip.shrink_to_fit();
        self.session_open_per_ip.shrink_to_fit();
        self.group_changes.shrink_to_fit();
        self.login_per_ip.shrink_to_fit();
        self.login_per_username.shrink_to_fit();
        self.register_per_ip.shrink_to_fit();
    }

    /// Keys held across every limiter.
    pub fn len(&self) -> usize {
        self.call_initiate.len()
            + self.call_control.len()
            + self.rooms.len()
            + self.handshake_per_ip.len()
            + self.session_open_per_ip.len()
            + self.group_changes.len()
            + self.login_per_ip.len()
            + self.login_per_username.len()
            + self.register_per_ip.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapExceeded {
    /// `connections.max_per_user`.
    PerUser,
    /// `connections.max_per_ip`.
    PerIp,
    /// `connections.max_total`.
    Total,
}

impl CapExceeded {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerUser => "per_user",
            Self::PerIp => "per_ip",
            Self::Total => "total",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_user: HashMap<UserId, usize>,
    per_ip: HashMap<IpKey, usize>,
}

/// Live connection counts, per user, per IP and in total.
#[derive(Debug, Default)]
pub struct Connections {
    counts: Mutex<Counts>,
    total: AtomicUsize,
}

/// A held connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Connections>,
    user: UserId,
    ip: IpKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.release(&self.user, self.ip);
    }
}

fn decrement<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Connections {
    /// Takes a slot for `user` from `ip` if every cap allows it.
    ///
    /// # Errors
    /// Which cap is full.
    pub fn acquire(
        self: &Arc<Self>,
        user: &UserId,
        ip: IpKey,
        caps: &ConnectionPolicy,
    ) -> Result<Slot, CapExceeded> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.total.load(Ordering::Relaxed) >= caps.max_total {
            return Err(CapExceeded::Total);
        }
        if counts.per_user.get(user).copied().unwrap_or(0) >= caps.max_per_user {
            return Err(CapExceeded::PerUser);
        }
        if counts.per_ip.get(&ip).copied().unwrap_or(0) >= caps.max_per_ip {
            return Err(CapExceeded::PerIp);
        }
        *counts.per_user.entry(user.clone()).or_insert(0) += 1;
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            owner: self.clone(),
            user: user.clone(),
            ip,
        })
    }

    fn release(&self, user: &UserId, ip: IpKey) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        decrement(&mut counts.per_user, user);
        decrement(&mut counts.per_ip, &ip);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections held now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// The limits in force: swapped whole when the policy is reloaded.
#[derive(Debug)]
pub struct Limits {
    rates: RwLock<Arc<RateLimiters>>,
    caps: RwLock<ConnectionPolicy>,
    /// Live connection counts (kept across policy reloads).
    pub connections: Arc<Connections>,
    groups: RwLock<GroupPolicy>,
    ipv6_prefix_len: u8,
    /// Cluster mode: the same rate limits across every node, checked after
    /// the local ones (see [`crate::cluster::rates`]).
    cluster: OnceLock<ClusterRates>,
}

impl Limits {
    /// Limits for a policy, with IPv6 clients keyed by their /64.
    pub fn new(rates: &RateLimitPolicy, caps: ConnectionPolicy) -> Self {
        Self {
            rates: RwLock::new(Arc::new(RateLimiters::new(rates))),
            caps: RwLock::new(caps),
            connections: Arc::new(Connections::default()),
            groups: RwLock::new(GroupPolicy::default()),
            ipv6_prefix_len: 64,
            cluster: OnceLock::new(),
        }
    }

    /// The same limits with IPv6 clients keyed by their first `bits` bits
    /// (`server.ipv6_prefix_len`).
    #[must_use]
    pub fn with_ipv6_prefix_len(mut self, bits: u8) -> Self {
        self.ipv6_prefix_len = bits;
        self
    }

    /// Cluster mode: adds the cluster-wide rate limits (once, at start-up).
    pub fn set_cluster(&self, rates: ClusterRates) {
        let _ = self.cluster.set(rates);
    }

    /// The cluster-wide rate limits, in cluster mode.
    pub fn cluster(&self) -> Option<&ClusterRates> {
        self.cluster.get()
    }

    /// The group caps in force.
    pub fn groups(&self) -> GroupPolicy {
        *self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs new group caps (at start-up and on policy reload).
    pub fn set_groups(&self, groups: GroupPolicy) {
        *self
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = groups;
    }

    /// The per-IP key of a client address.
    pub fn ip_key(&self, ip: IpAddr) -> IpKey {
        IpKey::new(ip, self.ipv6_prefix_len)
    }

    /// The current rate limiters.
    pub fn rates(&self) -> Arc<RateLimiters> {
        self.rates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current connection caps.
    pub fn caps(&self) -> ConnectionPolicy {
        *self
            .caps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs a new policy's limits (fresh buckets; connection counts stay).
    pub fn replace(&self, rates: &RateLimitPolicy, caps: ConnectionPolicy) {
        *self
            .rates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(RateLimiters::new(rates));
        if let Some(cluster) = self.cluster.get() {
            cluster.replace(rates);
        }
        *self
            .caps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = caps;
    }

    /// Every `period`, forgets limiter keys whose buckets are full again.
    pub fn spawn_cleanup(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let limits = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limits) = limits.upgrade() else {
                    break;
                };
                limits.rates().retain_recent();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(per_minute: u32, burst: u32) -> RateLimitPolicy {
        let r = Rate { per_minute, burst };
        RateLimitPolicy {
            call_initiate: r,
            call_control: r,
            rooms: r,
            handshake_per_ip: r,
            session_open_per_ip: r,
            group_changes: r,
            login_per_ip: r,
            login_per_username: r,
            register_per_ip: r,
            disconnect_after: 0,
        }
    }

    #[test]
    fn a_burst_passes_then_the_next_waits() {
        let limiters = RateLimiters::new(&rates(60, 3));
        let user = UserId::parse("u").expect("id");
        for _ in 0..3 {
            assert!(limiters.event(EventClass::Rooms, &user).is_ok());
        }
        let wait = limiters
            .event(EventClass::Rooms, &user)
            .expect_err("limited");
        assert!(
            wait.0 <= Duration::from_secs(1) && wait.as_millis() >= 1,
            "{wait:?}"
        );
        assert!(
            limiters.event(EventClass::CallControl, &user).is_ok(),
            "classes are separate"
        );
    }

    #[test]
    fn slots_are_capped_and_freed_on_drop() {
        let conns = Arc::new(Connections::default());
        let caps = ConnectionPolicy {
            max_per_user: 2,
            max_per_ip: 3,
            max_total: 4,
        };
        let a = UserId::parse("a").expect("id");
        let b = UserId::parse("b").expect("id");
        let ip = IpKey::new("10.0.0.1".parse().expect("ip"), 64);
        let s1 = conns.acquire(&a, ip, &caps).expect("1");
        let _s2 = conns.acquire(&a, ip, &caps).expect("2");
        assert_eq!(
            conns.acquire(&a, ip, &caps).err(),
            Some(CapExceeded::PerUser)
        );
        let _s3 = conns.acquire(&b, ip, &caps).expect("3");
        assert_eq!(conns.acquire(&b, ip, &caps).err(), Some(CapExceeded::PerIp));
        drop(s1);
        assert_eq!(conns.total(), 2);
        assert!(conns.acquire(&a, ip, &caps).is_ok());
    }

    fn key(s: &str, bits: u8) -> IpKey {
        IpKey::new(s.parse().expect("ip"), bits)
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        assert_eq!(
            key("2001:db8:1:2:aaaa::1", 64),
            key("2001:db8:1:2:ffff::9", 64)
        );
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 48), key("2001:db8:1:3::1", 48));
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8::1", 0), key("::1", 0));
        assert_eq!(key("::ffff:10.0.0.1", 64), key("10.0.0.1", 64));
        assert_ne!(key("10.0.0.1", 64), key("10.0.0.2", 64));
        assert_eq!(key("2001:db8:1:2::1", 64).to_string(), "2001:db8:1:2::");
    }

    #[test]
    fn a_limited_ip_cannot_drain_a_username_and_usernames_are_per_ip() {
        let mut p = rates(60, 100);
        p.login_per_ip = Rate {
            per_minute: 1,
            burst: 2,
        };
        p.login_per_username = Rate {
            per_minute: 1,
            burst: 3,
        };
        let limiters = RateLimiters::new(&p);
        let carol = Username::parse("carol").expect("name");
        let attacker = key("203.0.113.1", 64);
        let other = key("203.0.113.2", 64);
        let home = key("198.51.100.7", 64);
        for _ in 0..2 {
            assert!(limiters.login(attacker, Some(&carol)).is_ok());
        }
        for _ in 0..20 {
            assert!(limiters.login(attacker, Some(&carol)).is_err());
        }
        // The attacker's refused requests charged nothing: carol's pair
        // bucket from `other` and from her home are whole.
        for _ in 0..2 {
            assert!(limiters.login(other, Some(&carol)).is_ok());
        }
        for _ in 0..2 {
            assert!(limiters.login(home, Some(&carol)).is_ok());
        }
    }
}

/// The default policy admits a real office behind one NAT address; its
/// per-user limits stay strict.
#[cfg(test)]
mod office {
    use super::*;
    use crate::policy::Policy;
    use governor::clock::FakeRelativeClock;

    const PEOPLE: usize = 1000;
    const TABS: usize = 2;

    fn office_ip() -> IpKey {
        IpKey::new("203.0.113.7".parse().expect("ip"), 64)
    }

    /// How many of `events`, evenly spread over `over`, `rate` admits.
    fn admitted(rate: Rate, events: u32, over: Duration) -> u32 {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(rate), clock.clone());
        let gap = over / events;
        let mut ok = 0;
        for _ in 0..events {
            ok += u32::from(limiter.check().is_ok());
            clock.advance(gap);
        }
        ok
    }

    #[test]
    fn every_tab_of_the_office_connects_at_once() {
        let policy = Policy::builtin().expect("default policy");
        let limiters = RateLimiters::new(&policy.rate_limits);
        for tab in 0..PEOPLE * TABS {
            assert!(
                limiters.handshake(office_ip()).is_ok(),
                "handshake {tab} refused"
            );
        }
        let conns = Arc::new(Connections::default());
        let mut slots = Vec::new();
        for person in 0..PEOPLE {
            let user = UserId::parse(&format!("u{person}")).expect("id");
            for _ in 0..TABS {
                slots.push(
                    conns
                        .acquire(&user, office_ip(), &policy.connections)
                        .expect("the office fits the caps"),
                );
            }
        }
        assert_eq!(conns.total(), PEOPLE * TABS);
    }

    #[test]
    fn the_office_logs_in_and_connects_within_a_minute() {
        let policy = Policy::builtin().expect("default policy");
        let minute = Duration::from_secs(60);
        let mut checked = Vec::new();
        // Every per-IP rate a connecting client meets: one login per person,
        // one transport session and one handshake per tab. Registration is
        // not part of a morning (it is sized on its own, see the policy).
        for (key, rate) in policy.rate_limits.rates() {
            if !key.ends_with("_per_ip") || key == "rate_limits.register_per_ip" {
                continue;
            }
            let per_person = if key.starts_with("rate_limits.login") {
                1
            } else {
                TABS
            };
            let n = u32::try_from(PEOPLE * per_person).expect("fits");
            assert_eq!(
                admitted(rate, n, minute),
                n,
                "{key} refuses the office within a minute"
            );
            assert_eq!(
                admitted(rate, n, Duration::ZERO),
                n.min(rate.burst),
                "{key}"
            );
            // A flood from one address, ten times the office, is still cut off.
            assert!(
                admitted(rate, 10 * n, Duration::from_secs(10)) < 10 * n,
                "{key}"
            );
            checked.push(key);
        }
        assert!(
            checked.contains(&"rate_limits.handshake_per_ip"),
            "{checked:?}"
        );
        assert!(checked.contains(&"rate_limits.login_per_ip"), "{checked:?}");
    }

    #[test]
    fn per_user_limits_stay_strict() {
        let policy = Policy::builtin().expect("default policy");
        let caps = policy.connections;
        assert!(caps.max_per_user <= 10, "{caps:?}");
        let conns = Arc::new(Connections::default());
        let user = UserId::parse("one").expect("id");
        let _slots: Vec<_> = (0..caps.max_per_user)
            .map(|_| conns.acquire(&user, office_ip(), &caps).expect("slot"))
            .collect();
        assert_eq!(
            conns.acquire(&user, office_ip(), &caps).err(),
            Some(CapExceeded::PerUser)
        );
        let r = &policy.rate_limits;
        assert!(r.login_per_username.burst <= 5 && r.login_per_username.per_minute <= 10);
        assert!(r.call_initiate.burst <= 5 && r.call_initiate.per_minute <= 10);
        // Guessing one account's password: at most burst + per_minute a minute.
        assert!(admitted(r.login_per_username, 1000, Duration::from_secs(60)) <= 15);
    }
}
