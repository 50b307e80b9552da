//! Engine configuration: every field documents its default.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::proto::proxy::ProxyConfig;
pub use crate::proto::transport::{ConnectionConfig, FlowConfig, FlowError, Keepalive};
use crate::tls::TlsConfig;

/// Which CPU cores run shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cores {
    /// One shard on every core this process may run on (its affinity mask). The default.
    #[default]
    All,
    /// One shard on each of the first N allowed cores.
    Count(usize),
    /// One shard on each listed core id.
    List(Vec<usize>),
}

/// Why a core selection or duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl FromStr for Cores {
    type Err = ParseError;

    /// Parses `all`, a count (`2`), or a list of ids and ranges (`0,2-3`). A list is told from
    /// a count by its comma or dash; a single core id is written `3,`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "all" {
            return Ok(Self::All);
        }
        let bad = || {
            ParseError(format!(
                "invalid cores {s:?}: expected all, a count (2) or a list (0,2-3)"
            ))
        };
        if !s.contains([',', '-']) {
            let n: usize = s.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(ParseError(
                    "invalid cores \"0\": a count of cores is at least 1; for core 0 alone, \
                     write a list: 0, (a trailing comma)"
                        .into(),
                ));
            }
            return Ok(Self::Count(n));
        }
        let mut ids = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (usize, usize) =
                        (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                    if a > b || b - a > 4096 {
                        return Err(bad());
                    }
                    ids.extend(a..=b);
                }
                None => ids.push(part.parse().map_err(|_| bad())?),
            }
        }
        if ids.is_empty() {
            return Err(bad());
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Self::List(ids))
    }
}

impl Cores {
    /// The cores this process may run on (its affinity mask, as `taskset` restricts it), in
    /// ascending order.
    pub fn allowed() -> Vec<usize> {
        let mut ids: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Resolves the selection against the cores this process may run on.
    ///
    /// # Errors
    ///
    /// A count above the allowed cores, or a listed core the process may not run on.
    pub fn resolve(&self, allowed: &[usize]) -> Result<Vec<usize>, CoresError> {
        if allowed.is_empty() {
            return Err(CoresError::NoneAvailable);
        }
        match self {
            Self::All => Ok(allowed.to_vec()),
            Self::Count(n) if *n <= allowed.len() => Ok(allowed[..*n].to_vec()),
            Self::Count(n) => Err(CoresError::TooMany {
                requested: *n,
                allowed: allowed.to_vec(),
            }),
            Self::List(ids) => match ids.iter().find(|id| !allowed.contains(id)) {
                Some(&core) => Err(CoresError::NotAllowed {
                    core,
                    allowed: allowed.to_vec(),
                }),
                None => Ok(ids.clone()),
            },
        }
    }

    /// As [`resolve`](Self::resolve), except that a count takes the *last* allowed cores: a
    /// load generator beside a server that took the first ones (`weft load --cores 1` on two
    /// cores runs on core 1).
    ///
    /// # Errors
    ///
    /// As [`resolve`](Self::resolve).
    pub fn resolve_last(&self, allowed: &[usize]) -> Result<Vec<usize>, CoresError> {
        match self {
            Self::Count(n) if *n <= allowed.len() => Ok(allowed[allowed.len() - *n..].to_vec()),
            _ => self.resolve(allowed),
        }
    }
}

/// Why a core selection does not fit the CPUs this process may run on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoresError {
    /// The affinity mask is empty or could not be read.
    #[error("no CPU core is available to this process")]
    NoneAvailable,
    /// More cores were asked for than the process may use.
    #[error("{requested} cores requested but only {} are available ({allowed:?})", allowed.len())]
    TooMany {
        /// How many were asked for.
        requested: usize,
        /// The cores the process may run on.
        allowed: Vec<usize>,
    },
    /// A listed core is outside the process's affinity mask.
    #[error("core {core} is not available to this process (allowed: {allowed:?})")]
    NotAllowed {
        /// The core that was asked for.
        core: usize,
        /// The cores the process may run on.
        allowed: Vec<usize>,
    },
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1h` or `250us`: a number and its unit
/// (`ns`, `us`, `ms`, `s`, `m`, `h`). A number without a unit is refused, but for `0`: tools
/// disagree on what it means (seconds for systemd and nginx, milliseconds for HAProxy), and a
/// drain of 10 ms taken for 10 s is an outage.
///
/// # Errors
///
/// A negative duration, a number without a unit, or anything else, with a message naming the
/// accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let t = s.trim();
    if t.strip_prefix('-')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
    {
        return Err(ParseError(format!(
            "invalid duration {s:?}: a duration cannot be negative"
        )));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        ParseError(format!(
            "invalid duration {s:?}: expected e.g. 10s, 500ms, 2m, 1h"
        ))
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" if num.bytes().all(|b| b == b'0' || b == b'.') => 0.0,
        "" => {
            return Err(ParseError(format!(
                "invalid duration {s:?}: give its unit, e.g. {num}s or {num}ms (units: ns, us, \
                 ms, s, m, h)"
            )));
        }
        "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size such as `65536`, `64KiB`, `4MiB`, `1GiB` (also `k`, `KB`, `M`, `MB`).
///
/// # Errors
///
/// Anything else, with a message naming the accepted forms.
pub fn parse_size(s: &str) -> Result<usize, ParseError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || ParseError(format!("invalid size {s:?}: expected e.g. 65536, 64KiB, 4MiB"));
    let n: usize = num.parse().map_err(|_| bad())?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" | "KiB" => 1 << 10,
        "m" | "M" | "MB" | "MiB" => 1 << 20,
        "g" | "G" | "GB" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// The longest drain (`drain_timeout`, and a service's drain delay) a configuration may ask
/// for: 1 hour. A stop that takes longer is a hang to whatever stops the process: systemd
/// kills it after `TimeoutStopSec` (90 s by default), Kubernetes after
/// `terminationGracePeriodSeconds` (30 s).
pub const MAX_DRAIN: Duration = Duration::from_secs(3600);

/// The longest busy-poll before a shard's reactor sleeps
/// ([`ReactorConfig::spin_before_park`]): 10 ms. The spin trades idle CPU for wake-up latency
/// and was measured at 50 to 200 µs (tuning.md); one of 10 ms already keeps the core busy
/// through every gap between requests at 100 requests/s, and a longer one is a busy loop, not
/// a trade.
pub const MAX_SPIN_BEFORE_PARK: Duration = Duration::from_millis(10);

/// Linux's largest TCP keepalive probe count (`TCP_KEEPCNT`, `MAX_TCP_KEEPCNT`): the kernel
/// refuses more with `EINVAL`.
pub const MAX_KEEPALIVE_COUNT: u32 = 127;

/// Linux's largest TCP keepalive idle time and interval (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `MAX_TCP_KEEPIDLE`: 32767 s); the kernel counts both in whole seconds from 1.
pub const MAX_KEEPALIVE_TIME: Duration = Duration::from_secs(32767);

use crate::proto::settings::seconds;
pub use crate::proto::settings::{ConfigError, require_positive};

/// Refuses a drain longer than [`MAX_DRAIN`] for `setting` (`drain_timeout`, a service's
/// drain delay).
///
/// # Errors
///
/// A [`ConfigError`] for a `d` above [`MAX_DRAIN`].
pub fn require_drain(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    at_most(
        setting,
        d,
        MAX_DRAIN,
        "systemd and Kubernetes kill a stop that takes that long well before it ends",
    )
}

/// Refuses a duration above `max`: `why` says why that is the bound.
fn at_most(setting: &'static str, d: Duration, max: Duration, why: &str) -> Result<(), ConfigError> {
    if d > max {
        return Err(ConfigError::new(
            setting,
            seconds(d),
            format!("is too long: at most {} ({why})", seconds(max)),
        ));
    }
    Ok(())
}

/// Refuses a keepalive time the kernel would refuse (`EINVAL`, then no keepalive at all):
/// whole seconds from 1 to [`MAX_KEEPALIVE_TIME`].
fn keepalive_time(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d < Duration::from_secs(1) || d > MAX_KEEPALIVE_TIME || d.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            setting,
            seconds(d),
            format!(
                "would be refused by the kernel on every connection, which would then get no \
                 keepalive: give whole seconds from 1s to {}",
                seconds(MAX_KEEPALIVE_TIME)
            ),
        ));
    }
    Ok(())
}

impl EngineConfig {
    /// Refuses settings that would make an engine that serves nothing (every connection
    /// closed at once, nothing ever read), settings the kernel would refuse on every
    /// connection, and absurd bounds ([`MAX_DRAIN`], [`MAX_SPIN_BEFORE_PARK`]).
    /// [`EngineBuilder::start`](crate::EngineBuilder::start) calls it.
    ///
    /// # Errors
    ///
    /// The first such setting, as a [`ConfigError`] that says what to give instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.accept;
        if a.max_conns_per_shard == Some(0) {
            return Err(ConfigError::new(
                "accept.max_conns_per_shard",
                0,
                "would close every connection as soon as it is accepted: give at least 1, or \
                 leave it unset for no limit",
            ));
        }
        if a.max_burst == 0 {
            return Err(ConfigError::new(
                "accept.max_burst",
                0,
                "would accept no connection: give at least 1",
            ));
        }
        require_drain("drain_timeout", self.drain_timeout)?;
        if let Some(spin) = self.reactor.spin_before_park {
            at_most(
                "reactor.spin_before_park",
                spin,
                MAX_SPIN_BEFORE_PARK,
                "the spin trades idle CPU for wake-up latency, measured at 50 to 200us; a longer \
                 one keeps the core busy through every pause",
            )?;
        }
        let c = &self.connection;
        if c.read_size == 0 {
            return Err(ConfigError::new(
                "connection.read_size",
                0,
                "would read nothing from any connection: give at least 1 (64KiB by default)",
            ));
        }
        if c.reads_per_wakeup == 0 {
            return Err(ConfigError::new(
                "connection.reads_per_wakeup",
                0,
                "would read nothing from any connection: give at least 1 (16 by default)",
            ));
        }
        if c.flow.max_output == 0 {
            return Err(ConfigError::new(
                "connection.flow.max_output",
                0,
                "would close every connection at its first write: give at least the high-water \
                 mark (4MiB by default)",
            ));
        }
        if let Some(idle) = c.idle_timeout {
            require_positive(
                "connection.idle_timeout",
                idle,
                "would close every connection as soon as it opens",
                "5m, or leave it unset for none",
            )?;
        }
        if let Some(stall) = c.write_stall_timeout {
            require_positive(
                "connection.write_stall_timeout",
                stall,
                "would close every connection whose output waits at all",
                "30s, or leave it unset for none",
            )?;
        }
        if let Some(k) = c.keepalive {
            keepalive_time("connection.keepalive.idle", k.idle)?;
            keepalive_time("connection.keepalive.interval", k.interval)?;
            if !(1..=MAX_KEEPALIVE_COUNT).contains(&k.count) {
                return Err(ConfigError::new(
                    "connection.keepalive.count",
                    k.count,
                    format!(
                        "would be refused by the kernel on every connection, which would then \
                         get no keepalive: give 1 to {MAX_KEEPALIVE_COUNT} (Linux's TCP_KEEPCNT \
                         maximum)"
                    ),
                ));
            }
        }
        if let Some(t) = c.user_timeout
            && t.as_millis() > i32::MAX as u128
        {
            return Err(ConfigError::new(
                "connection.user_timeout",
                seconds(t),
                format!(
                    "would be refused by the kernel on every connection (TCP_USER_TIMEOUT is \
                     at most {} ms): give less, or leave it unset for the kernel's",
                    i32::MAX
                ),
            ));
        }
        Ok(())
    }
}

impl ListenerConfig {
    /// Refuses PROXY protocol and TLS settings that would close or fail every connection of
    /// this listener, or cost every handshake too much ([`ProxyConfig::validate`],
    /// [`TlsConfig::validate`]).
    /// [`EngineBuilder::start`](crate::EngineBuilder::start) calls it.
    ///
    /// # Errors
    ///
    /// The first such setting, as a [`ConfigError`] that says what to give instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.proxy {
            p.validate()?;
        }
        if let Some(t) = &self.tls {
            t.validate()?;
        }
        Ok(())
    }
}

/// The accept path's knobs (see `tuning.md`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcceptConfig {
    /// Listen backlog per shard and address. Default: 1024 (the kernel caps it at
    /// `net.core.somaxconn`; Linux queues one connection more than the backlog, so 0 works as
    /// a queue of one).
    pub backlog: u32,
    /// Most connections a shard accepts in one burst before it serves established ones.
    /// The burst starts at 100 and adapts below this bound (Twisted's `numberAccepts`):
    /// +20 while bursts fill up, down to what was accepted otherwise. Default: 1000.
    pub max_burst: usize,
    /// Connections per shard above which new ones are accepted and closed at once.
    /// Default: none.
    pub max_conns_per_shard: Option<usize>,
    /// Pause after an accept error that freeing the reserved descriptor did not cure (EMFILE
    /// again, ENFILE, ENOBUFS, ENOMEM, or a full table with nothing queued), so that the
    /// shard never spins. Default: 20 ms.
    pub error_backoff: Duration,
    /// Hold one reserved descriptor per shard for EMFILE recovery. Default: on.
    pub reserve_fd: bool,
    /// Attach to each listening address's SO_REUSEPORT group an eBPF program that makes the
    /// kernel move the connections queued on a closing listener (a crashed or killed
    /// process's, too) to another listener of the group instead of resetting them: what
    /// `net.ipv4.tcp_migrate_req=1` does, without the sysctl. Needs CAP_BPF (or root) and
    /// Linux >= 5.14; without them it is skipped, said once at info level at start (unless
    /// `net.ipv4.tcp_migrate_req=1` does the same). It replaces any
    /// reuseport program the group had. Default: on.
    pub migrate_queued: bool,
}

impl Default for AcceptConfig {
    fn default() -> Self {
        Self {
            backlog: 1024,
            max_burst: 1000,
            max_conns_per_shard: None,
            error_backoff: Duration::from_millis(20),
            reserve_fd: true,
            migrate_queued: true,
        }
    }
}

/// glommio reactor knobs for each shard.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReactorConfig {
    /// io_uring submission queue depth. Default: 256.
    pub ring_depth: usize,
    /// Registered DMA memory per shard; sockets do not use it. Default: 256 KiB.
    pub io_memory: usize,
    /// Busy-poll this long before the reactor sleeps. Default: none.
    pub spin_before_park: Option<Duration>,
    /// How long one task may run before the reactor checks for I/O. Default: 100 ms.
    pub preempt_timer: Duration,
    /// Receive buffers the shard shares with the kernel (io_uring provided buffers, Linux
    /// 5.19): a connection's receive is submitted to the ring and the kernel picks a buffer
    /// only when data arrives, so receiving takes no system call and a waiting connection
    /// holds no buffer. Rounded up to a power of two, at most 32768; 0 turns them off (each
    /// read is then a `recv` after a readiness poll, as on older kernels, where weft falls
    /// back by itself).
    /// When every buffer is in use, a connection reads the old way until one is free.
    /// Default: 256.
    pub recv_buffers: u16,
    /// The size of each receive buffer, at most the most one receive delivers. Memory per
    /// shard: `recv_buffers` times this. Default: 16 KiB.
    pub recv_buffer_size: usize,
    /// With receive buffers on, a connection's receive stays armed (io_uring multishot
    /// receive, Linux 6.0): it is submitted once and posts a completion each time data
    /// arrives, instead of being submitted again after every read. At most four completions
    /// wait per connection: a connection that does not read (flow control) has its receive
    /// stopped until it does, holding at most four buffers (the rest of its data waits in
    /// the kernel, as without multishot). If paused connections hold every buffer, the others
    /// read with a `recv` each until buffers come back. Off, or where the kernel refuses it,
    /// one receive is submitted per read. Default: on.
    pub recv_multishot: bool,
    /// Connections send through the ring: queued bytes are copied into a send submitted
    /// with the ring's next batch, so a loop iteration's sends of every connection cost one
    /// `io_uring_enter` rather than a `send` system call each; the bytes count as queued
    /// (flow control, the write-stall timeout) until their send completes. Off, each flush
    /// is a `send`. Default: on.
    pub ring_sends: bool,
    /// The io_uring set-up features the shard's rings use where the kernel has them. Default:
    /// every one but `defer_taskrun` ([`RingFeatures::default`]).
    /// [`shard::ring_features`](crate::shard::ring_features) tells what a shard got.
    pub ring: RingFeatures,
}

/// io_uring set-up features. Each is used where the kernel has it and skipped where it does
/// not; one turned off makes the rings as a kernel without it would, to rule it out or to
/// test that fallback. Parsed from `all`, `none` or a comma list of `coop-taskrun`,
/// `single-issuer`, `defer-taskrun` and `registered-fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingFeatures {
    /// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19): completions that arrive while the shard runs
    /// wait for its next kernel entry instead of interrupting it.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SINGLE_ISSUER` (Linux 6.0): only the shard's thread submits.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (Linux 6.1, with `single_issuer`) on the ring sockets
    /// use: completions are posted in one batch when the shard enters the kernel, and a
    /// sleeping shard is woken once rather than for each.
    pub defer_taskrun: bool,
    /// `IORING_REGISTER_RING_FDS` (Linux 5.18): each ring's descriptor is registered with
    /// the shard's thread, sparing a descriptor lookup per `io_uring_enter`.
    pub registered_fd: bool,
}

impl RingFeatures {
    /// Every feature (where the kernel has it).
    pub const ALL: Self = Self {
        coop_taskrun: true,
        single_issuer: true,
        defer_taskrun: true,
        registered_fd: true,
    };
    /// No feature: the rings of a kernel before 5.18.
    pub const NONE: Self = Self {
        coop_taskrun: false,
        single_issuer: false,
        defer_taskrun: false,
        registered_fd: false,
    };

    /// The names and fields, in the order they are written.
    fn fields(&mut self) -> [(&'static str, &mut bool); 4] {
        [
            ("coop-taskrun", &mut self.coop_taskrun),
            ("single-issuer", &mut self.single_issuer),
            ("defer-taskrun", &mut self.defer_taskrun),
            ("registered-fd", &mut self.registered_fd),
        ]
    }
}

impl Default for RingFeatures {
    /// Every feature but `defer_taskrun`, which measured no faster here (tuning.md, "The
    /// io_uring ring set-up") and took 1.5 kernel entries per request at a fixed rate
    /// against 1.0 without it.
    fn default() -> Self {
        Self {
            defer_taskrun: false,
            ..Self::ALL
        }
    }
}

impl FromStr for RingFeatures {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" => return Ok(Self::ALL),
            "none" => return Ok(Self::NONE),
            _ => {}
        }
        let bad = |what: &str| {
            ParseError(format!(
                "{what}: expected all, none or a list of coop-taskrun, single-issuer, \
                 defer-taskrun, registered-fd"
            ))
        };
        let mut features = Self::NONE;
        let mut named = false;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some((_, on)) = features.fields().into_iter().find(|(n, _)| *n == name) else {
                return Err(bad(&format!("unknown ring feature {name:?}")));
            };
            *on = true;
            named = true;
        }
        if !named {
            return Err(bad("no ring feature named"));
        }
        Ok(features)
    }
}

impl fmt::Display for RingFeatures {
    /// The comma list [`FromStr`] reads (`none` for none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut copy = *self;
        let on: Vec<&str> = copy
            .fields()
            .into_iter()
            .filter(|(_, on)| **on)
            .map(|(n, _)| n)
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

impl Default for ReactorConfig {
    fn default() -> Self {
        Self {
            ring_depth: 256,
            io_memory: 256 * 1024,
            spin_before_park: None,
            preempt_timer: Duration::from_millis(100),
            recv_buffers: 256,
            recv_buffer_size: 16 * 1024,
            recv_multishot: true,
            ring_sends: true,
            ring: RingFeatures::default(),
        }
    }
}

/// How shards report their metrics (see [`crate::metrics`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Run the collector thread, the per-shard reports and the reactor-lag probe. Off, the
    /// engine keeps only its plain per-shard counters (reported by
    /// [`Engine::join`](crate::Engine::join)) and [`Engine::metrics`](crate::Engine::metrics)
    /// is `None`. Default: on.
    pub enabled: bool,
    /// How often each shard sends its counters and histogram deltas to the collector.
    /// Default: 1 s.
    pub interval: Duration,
    /// Reports each shard may have queued for the collector; a shard that finds the queue
    /// full drops its report and counts it, and never waits. Default: 4.
    pub queue_per_shard: usize,
    /// How often each shard's lag probe wakes to measure how late its reactor runs it.
    /// Default: 10 ms.
    pub lag_tick: Duration,
    /// A wake-up later than this is a reactor stall: counted and logged with the shard and
    /// its duration (at most one line per shard every 10 s). Default: 25 ms.
    pub stall_threshold: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(1),
            queue_per_shard: 4,
            lag_tick: Duration::from_millis(10),
            stall_threshold: Duration::from_millis(25),
        }
    }
}

/// How an [`Engine`](crate::Engine) runs its shards: everything but its listeners, which
/// [`EngineBuilder::listen`](crate::EngineBuilder::listen) adds one by one, each with its own
/// factory.
///
/// Start from [`EngineConfig::default()`] and set the fields that matter; the type is
/// `#[non_exhaustive]`, so new knobs are not breaking changes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Which cores run shards. Default: all allowed cores.
    pub cores: Cores,
    /// Pin each shard's thread to its core. Default: on.
    pub pin: bool,
    /// On shutdown, how long open connections may finish before they are aborted.
    /// Default: 10 s.
    pub drain_timeout: Duration,
    /// Per-connection options.
    pub connection: ConnectionConfig,
    /// Accept-path options.
    pub accept: AcceptConfig,
    /// Reactor options.
    pub reactor: ReactorConfig,
    /// Listening sockets handed over by a predecessor process: the engine accepts on these
    /// instead of binding new ones for the addresses they are bound to. Default: none.
    pub inherited: InheritedListeners,
    /// Metrics collection.
    pub metrics: MetricsConfig,
    /// Cross-shard calls each shard may have queued; a caller finding the queue full waits
    /// for room. Default: 1024.
    pub call_queue: usize,
}

/// One listening address and how its connections are received, before they reach their
/// protocol (a PROXY header, TLS). Build it with [`ListenerConfig::new`] (or from a `SocketAddr`) and the methods
/// that add options.
///
/// ```
/// use weft::ListenerConfig;
/// use weft::proxy::{Cidr, ProxyConfig};
///
/// let balancer = Cidr::parse_list("10.0.0.0/8")?;
/// let l = ListenerConfig::new("0.0.0.0:8443".parse()?).proxy(ProxyConfig::trusting(balancer));
/// assert!(l.proxy.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// The address every shard listens on (one SO_REUSEPORT socket per shard). Port 0 picks
    /// a free port, the same for every shard. An address that another socket listens on
    /// already (another process, another engine) is refused with
    /// [`EngineError::AddressInUse`](crate::EngineError::AddressInUse) unless
    /// [`share_port`](Self::share_port) is set: SO_REUSEPORT would otherwise let both bind and
    /// silently split the connections between them.
    pub addr: SocketAddr,
    /// Require a PROXY protocol header (v1 or v2) from trusted balancers before a connection
    /// reaches its protocol. Default: none (a header is never expected nor detected).
    pub proxy: Option<ProxyConfig>,
    /// Speak TLS on every connection (after the PROXY header, if one is required). Default:
    /// none (plain TCP).
    pub tls: Option<TlsConfig>,
    /// Join the SO_REUSEPORT group of sockets that already listen on the address (other weft
    /// processes of the same user), and share its connections with them: several instances
    /// on one port, so that one of them crashing or restarting leaves the others serving.
    /// Default: false, and an address in use is an error. Sockets taken over from a
    /// predecessor ([`InheritedListeners`]) are always shared.
    pub share_port: bool,
}

impl ListenerConfig {
    /// A plain listener on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            proxy: None,
            tls: None,
            share_port: false,
        }
    }

    /// Shares the address with sockets already listening on it; see
    /// [`share_port`](Self::share_port).
    #[must_use]
    pub fn share_port(mut self, share: bool) -> Self {
        self.share_port = share;
        self
    }

    /// Serves TLS on this listener, with these certificates and settings.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The layers this listener puts before its protocol.
    pub fn layers(&self) -> Layers {
        Layers {
            proxy: self.proxy.is_some(),
            tls: self.tls.is_some(),
        }
    }

    /// Requires a PROXY protocol header on this listener, with these settings.
    #[must_use]
    pub fn proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = Some(proxy);
        self
    }
}

/// What a listener does to a connection before its protocol: a PROXY header, TLS, both or
/// neither. A handoff passes it on with each listening socket, so that a successor serves each
/// port as its predecessor did ([`Service`](crate::Service) refuses to start otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layers {
    /// A PROXY protocol header is required.
    pub proxy: bool,
    /// Connections speak TLS.
    pub tls: bool,
}

impl fmt::Display for Layers {
    /// `plain`, `TLS`, `PROXY` or `PROXY+TLS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.proxy, self.tls) {
            (false, false) => "plain",
            (false, true) => "TLS",
            (true, false) => "PROXY",
            (true, true) => "PROXY+TLS",
        })
    }
}

impl From<SocketAddr> for ListenerConfig {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

/// Listening sockets an engine adopts instead of binding (a zero-downtime restart: see
/// [`crate::handoff`]). Adopting a socket keeps its accept queue, so no queued client is lost.
///
/// For each listen address, the sockets bound to it are spread over the shards; a shard left
/// without one binds a new SO_REUSEPORT socket beside them. Shared by clones of the config
/// and taken by the first engine that starts from it.
#[derive(Debug, Clone, Default)]
pub struct InheritedListeners {
    fds: Arc<Mutex<Vec<OwnedFd>>>,
}

impl InheritedListeners {
    /// Wraps listening TCP sockets (bound, listening, any blocking mode).
    pub fn new(fds: Vec<OwnedFd>) -> Self {
        Self {
            fds: Arc::new(Mutex::new(fds)),
        }
    }

    /// Adds more sockets to adopt.
    pub fn add(&self, fds: Vec<OwnedFd>) {
        self.fds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(fds);
    }

    /// The distinct local addresses of the sockets, in order (unreadable ones left out).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let fds = self.fds.lock().unwrap_or_else(PoisonError::into_inner);
        let mut addrs = Vec::new();
        for fd in fds.iter() {
            if let Some(a) = crate::sys::socket::local_ip_addr(fd.as_fd())
                && !addrs.contains(&a)
            {
                addrs.push(a);
            }
        }
        addrs
    }

    /// Takes the sockets out, leaving none.
    pub(crate) fn take(&self) -> Vec<OwnedFd> {
        std::mem::take(&mut *self.fds.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cores: Cores::All,
            pin: true,
            drain_timeout: Duration::from_secs(10),
            connection: ConnectionConfig::default(),
            accept: AcceptConfig::default(),
            reactor: ReactorConfig::default(),
            inherited: InheritedListeners::default(),
            metrics: MetricsConfig::default(),
            call_queue: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_parse() {
        assert_eq!("all".parse::<Cores>().unwrap(), Cores::All);
        assert_eq!("2".parse::<Cores>().unwrap(), Cores::Count(2));
        assert_eq!("0,2-3".parse::<Cores>().unwrap(), Cores::List(vec![0, 2, 3]));
        assert_eq!("1,".parse::<Cores>().unwrap(), Cores::List(vec![1]));
        assert_eq!("0,".parse::<Cores>().unwrap(), Cores::List(vec![0]));
        let zero = "0".parse::<Cores>().unwrap_err().to_string();
        assert!(zero.contains("for core 0 alone") && zero.contains("0,"), "{zero}");
        for bad in ["0", "x", "3-1", "", ",", "1-a"] {
            assert!(bad.parse::<Cores>().is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_that_serve_nothing_are_refused() {
        assert!(EngineConfig::default().validate().is_ok());
        let refused = |change: &dyn Fn(&mut EngineConfig), setting: &str| {
            let mut c = EngineConfig::default();
            change(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.setting, setting, "{e}");
            assert!(e.to_string().starts_with(setting), "{e}");
        };
        refused(
            &|c| c.accept.max_conns_per_shard = Some(0),
            "accept.max_conns_per_shard",
        );
        refused(&|c| c.accept.max_burst = 0, "accept.max_burst");
        refused(
            &|c| c.drain_timeout = MAX_DRAIN + Duration::from_secs(1),
            "drain_timeout",
        );
        refused(
            &|c| c.reactor.spin_before_park = Some(Duration::from_secs(10)),
            "reactor.spin_before_park",
        );
        refused(&|c| c.connection.read_size = 0, "connection.read_size");
        refused(
            &|c| c.connection.reads_per_wakeup = 0,
            "connection.reads_per_wakeup",
        );
        refused(
            &|c| c.connection.idle_timeout = Some(Duration::ZERO),
            "connection.idle_timeout",
        );
        refused(
            &|c| c.connection.write_stall_timeout = Some(Duration::ZERO),
            "connection.write_stall_timeout",
        );
        let k = |idle, interval, count| Some(Keepalive::new(idle, interval, count));
        let s = Duration::from_secs;
        refused(
            &|c| c.connection.keepalive = k(s(0), s(10), 3),
            "connection.keepalive.idle",
        );
        refused(
            &|c| c.connection.keepalive = k(s(10), Duration::from_millis(1500), 3),
            "connection.keepalive.interval",
        );
        refused(
            &|c| c.connection.keepalive = k(s(10), s(10), 128),
            "connection.keepalive.count",
        );
        refused(
            &|c| c.connection.user_timeout = Some(s(30 * 86400)),
            "connection.user_timeout",
        );
        let mut c = EngineConfig::default();
        c.connection.keepalive = k(s(1), MAX_KEEPALIVE_TIME, MAX_KEEPALIVE_COUNT);
        c.connection.write_stall_timeout = None;
        c.accept.backlog = 0;
        c.drain_timeout = MAX_DRAIN;
        c.reactor.spin_before_park = Some(MAX_SPIN_BEFORE_PARK);
        assert!(c.validate().is_ok());
        let renamed = ConfigError::new("drain_timeout", "2h", "is too long").with_name("--drain-timeout");
        assert_eq!(renamed.to_string(), "--drain-timeout 2h is too long");
    }

    #[test]
    fn listener_settings_that_fail_every_connection_are_refused() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut p = ProxyConfig::default();
        assert!(ListenerConfig::new(addr).proxy(p.clone()).validate().is_ok());
        p.max_header = crate::proto::proxy::MIN_MAX_HEADER - 1;
        let e = ListenerConfig::new(addr).proxy(p.clone()).validate().unwrap_err();
        assert_eq!(e.setting, "proxy.max_header");
        p.max_header = crate::proto::proxy::DEFAULT_MAX_HEADER;
        p.header_timeout = Duration::ZERO;
        let e = ListenerConfig::new(addr).proxy(p).validate().unwrap_err();
        assert_eq!(e.setting, "proxy.header_timeout");
        let tickets = crate::tls::check_settings(Duration::from_secs(10), 17).unwrap_err();
        assert_eq!(tickets.setting, "tls.tls13_tickets");
        assert!(crate::tls::check_settings(Duration::from_secs(10), 16).is_ok());
        let zero = crate::tls::check_settings(Duration::ZERO, 1).unwrap_err();
        assert!(zero.to_string().contains("would fail every handshake"), "{zero}");
    }

    #[test]
    fn ring_features_parse_and_print() {
        assert_eq!("all".parse::<RingFeatures>().unwrap(), RingFeatures::ALL);
        assert_eq!("none".parse::<RingFeatures>().unwrap(), RingFeatures::NONE);
        let some: RingFeatures = "coop-taskrun, registered-fd".parse().unwrap();
        assert!(some.coop_taskrun && some.registered_fd && !some.single_issuer && !some.defer_taskrun);
        assert_eq!(some.to_string(), "coop-taskrun,registered-fd");
        assert_eq!(RingFeatures::NONE.to_string(), "none");
        for f in [RingFeatures::ALL, RingFeatures::NONE, some] {
            assert_eq!(f.to_string().parse::<RingFeatures>().unwrap(), f);
        }
        for bad in ["", ",", "coop", "all,none"] {
            assert!(bad.parse::<RingFeatures>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cores_resolve() {
        let allowed = [0, 1];
        assert_eq!(Cores::All.resolve(&allowed).unwrap(), vec![0, 1]);
        assert_eq!(Cores::Count(1).resolve(&allowed).unwrap(), vec![0]);
        assert!(Cores::Count(3).resolve(&allowed).is_err());
        assert!(Cores::List(vec![5]).resolve(&allowed).is_err());
        assert!(Cores::All.resolve(&[]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        for bad in ["", "x", "4 TiB", "-1", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "10x", "1e999s", "ms10", "10", "1.5", "--check"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let unitless = parse_duration("10").unwrap_err().to_string();
        assert!(unitless.contains("give its unit, e.g. 10s or 10ms"), "{unitless}");
        for negative in ["-1s", "-0", " -5ms"] {
            let e = parse_duration(negative).unwrap_err().to_string();
            assert!(e.contains("a duration cannot be negative"), "{e}");
        }
    }
}
