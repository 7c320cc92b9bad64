//! What the generator reads from the kernel: the server's resident memory and
//! CPU time (`/proc/<pid>/status`, `/proc/<pid>/stat`), its own CPU time
//! (`getrusage`), the whole machine's busy time (`/proc/stat`, to see other
//! processes competing for the cores) and the listen-queue overflow counter
//! (`/proc/net/netstat`).

use std::time::{Duration, Instant};

/// The server process being measured.
#[derive(Debug, Clone, Copy)]
pub struct ServerProbe {
    pid: u32,
    /// A second server process (the other node of a cluster), summed in.
    peer: Option<u32>,
    ticks_per_sec: u64,
}

impl ServerProbe {
    /// A probe of process `pid`.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            peer: None,
            ticks_per_sec: clock_ticks_per_sec(),
        }
    }

    /// Also counts process `peer` (RSS and CPU are the sum of both).
    pub fn with_peer(self, peer: Option<u32>) -> Self {
        Self { peer, ..self }
    }

    fn pids(&self) -> impl Iterator<Item = u32> {
        std::iter::once(self.pid).chain(self.peer)
    }

    /// Resident set size (`VmRSS`), in KiB, of the server (both nodes summed
    /// for a cluster); `None` once a process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pids().map(rss_kib_of).sum()
    }

    /// User plus system CPU time so far (`utime + stime`, every thread; both
    /// nodes summed for a cluster).
    pub fn cpu(&self) -> Option<Duration> {
        self.pids().map(|p| cpu_of(p, self.ticks_per_sec)).sum()
    }
}

fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn cpu_of(pid: u32, ticks_per_sec: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; fields[0] is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_sec as f64,
    ))
}

/// The kernel's `USER_HZ`, the unit of `/proc/<pid>/stat` times.
fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Busy CPU time of the whole machine so far, every core (`/proc/stat`: user,
/// nice, system, irq, softirq, steal).
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    Some(Duration::from_secs_f64(
        busy as f64 / clock_ticks_per_sec() as f64,
    ))
}

/// This process's user plus system CPU time so far, from `getrusage`.
pub fn own_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF is a valid target.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.unsigned_abs())
            + Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// `TcpExt: ListenOverflows` from `/proc/net/netstat`: connections dropped
/// because a listen queue was full (system-wide, so a delta over a run).
pub fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let index = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(index)?.parse().ok();
    }
    None
}

/// The available cores, as the scheduler affinity allows.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// CPU used by the server and the generator over a stretch of wall time.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    /// Wall time.
    pub wall: Duration,
    /// The server's CPU time, when a server pid was given.
    pub server: Option<Duration>,
    /// The generator's CPU time.
    pub own: Duration,
    /// CPU time of every other process on the machine.
    pub others: Option<Duration>,
}

impl CpuWindow {
    /// The server's CPU as a percentage of one core.
    pub fn server_pct(&self) -> Option<f64> {
        self.server.map(|s| percent(s, self.wall))
    }

    /// Every other process's CPU as a percentage of one core.
    pub fn others_pct(&self) -> Option<f64> {
        self.others.map(|o| percent(o, self.wall))
    }

    /// The generator's CPU as a percentage of all the cores it may use.
    pub fn own_pct_of_capacity(&self) -> f64 {
        percent(self.own, self.wall) / cores() as f64
    }
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    }
}

/// A started measurement of a [`CpuWindow`].
#[derive(Debug)]
pub struct CpuMeter {
    probe: Option<ServerProbe>,
    start: Instant,
    server: Option<Duration>,
    own: Duration,
    machine: Option<Duration>,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(probe: Option<ServerProbe>) -> Self {
        Self {
            probe,
            start: Instant::now(),
            server: probe.and_then(|p| p.cpu()),
            own: own_cpu(),
            machine: machine_busy(),
        }
    }

    /// The window from the start until now.
    pub fn stop(self) -> CpuWindow {
        let since = |now: Option<Duration>, then: Option<Duration>| {
            now.zip(then).map(|(now, then)| now.saturating_sub(then))
        };
        let server = since(self.probe.and_then(|p| p.cpu()), self.server);
        let own = own_cpu().saturating_sub(self.own);
        let others = since(machine_busy(), self.machine)
            .map(|machine| machine.saturating_sub(own + server.unwrap_or_default()));
        CpuWindow {
            wall: self.start.elapsed(),
            server,
            own,
            others,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let probe = ServerProbe::new(std::process::id());
        assert!(probe.rss_kib().is_some_and(|kib| kib > 0));
        assert!(probe.cpu().is_some());
    }

    #[test]
    fn machine_busy_time_is_readable() {
        assert!(machine_busy().is_some_and(|busy| busy > Duration::ZERO));
    }

    #[test]
    fn listen_overflows_are_readable() {
        assert!(listen_overflows().is_some());
    }

    #[test]
    fn own_cpu_grows_with_work() {
        let before = own_cpu();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(own_cpu() > before);
    }
}
