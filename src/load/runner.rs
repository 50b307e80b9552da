//! Runs a load: an engine of tasks, one shard per load core, with the connections spread
//! over them; each core sends the main thread its sample every interval over a channel, and
//! the main thread merges them. It reaches the reactor only through the engine's shard API
//! ([`EngineBuilder::on_each_shard`](crate::EngineBuilder::on_each_shard), [`crate::shard`]).
//!
//! ```text
//!   core A: slots 0, 2, 4 ...  ──┐ Interval every second (histograms, counts, bytes)
//!   core B: slots 1, 3, 5 ...  ──┼──────────────────────────────▶ main: Aggregator ─▶ on_interval
//!                                 └ Stopped at the end (or when a core dies)
//! ```

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::aggregate::{Aggregator, Bytes, Interval};
use super::conn::{self, Core, FirstContact, Slot};
use super::exchange::Exchange;
use super::matcher::Framing;
use super::recorder::ErrorKind;
use super::schedule::{Pacing, Schedule};
use super::workload::{Expect, RandomKeys, Workload};
use crate::addr::Address;
use crate::config::{Cores, EngineConfig, ReactorConfig};
use crate::driver::engine::Engine;
use crate::driver::tasks::{counters, sleep, spawn};
use crate::error::EngineError;
use crate::proto::client::{ConnectError, ConnectorState};
use crate::proto::tls::ClientTls;
use crate::sys::limits::{Limit, raise_soft};

/// How often a core checks for the end of the run, Ctrl-C and timed-out requests.
const TICK: Duration = Duration::from_millis(20);
/// Time given to the cores to start and connect before the schedule begins: a run started
/// at a given time ([`LoadConfig::start_at`]) is started this much before it.
pub const STARTUP: Duration = Duration::from_millis(100);
/// How long a stopping core waits for its connections to close, and how often it looks.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// How long, at most, the end of a run waits for the answers to requests in flight (less if
/// the request timeout is shorter).
const ANSWER_GRACE: Duration = Duration::from_secs(1);
const STOP_POLL: Duration = Duration::from_millis(5);
/// How much longer than the connect timeout the start waits for the first connection's
/// outcome (the cores start, then connect) before it lets the run go on regardless.
const FIRST_CONTACT_SLACK: Duration = Duration::from_secs(1);

/// The OS error behind a first connection that failed, for [`LoadError::Unreachable`].
fn unreachable_source(e: &ConnectError) -> std::io::Error {
    match (e.os_error(), e) {
        (Some(errno), _) => std::io::Error::from_raw_os_error(errno),
        (None, ConnectError::TimedOut { .. }) => std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
        (None, e) => std::io::Error::other(e.to_string()),
    }
}

/// The most requests in flight per connection ([`LoadConfig::pipeline`]): 65536, far above
/// what pipelining benchmarks use (memtier and redis-benchmark run 1 to a few hundred).
/// Every connection holds room for that many requests and every core a batch of them, so a
/// value such as 10^9 would exhaust memory before the run starts.
pub const MAX_PIPELINE: usize = 65536;

/// The highest `--rate`: a billion requests a second, one a nanosecond, the resolution of
/// the schedule's clock. Servers answer thousands to millions a second; for the most a
/// server can do, leave the rate out (a closed loop).
pub const MAX_RATE: f64 = 1e9;

/// The longest wait between one connection's requests at a fixed rate
/// (`conns / rate`): a day. A rate far below that would put requests centuries apart, past
/// what the schedule's clock can add.
pub const MAX_REQUEST_INTERVAL: Duration = Duration::from_secs(86_400);

/// What to run. Start from [`LoadConfig::new`] and set what matters (the type is
/// `#[non_exhaustive]`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadConfig {
    /// Where to connect.
    pub target: SocketAddr,
    /// What to send and how responses end.
    pub workload: Workload,
    /// Connections, spread over the cores. Default: 16.
    pub conns: usize,
    /// Cores generating load (never more than there are connections); a count takes the last
    /// allowed cores ([`Cores::resolve_last`]). Default: 1.
    pub cores: Cores,
    /// How long to measure, after the warm-up. Default: 10 s.
    pub duration: Duration,
    /// How long to run before measuring. Default: none.
    pub warmup: Duration,
    /// Open loop at this many requests per second in total; `None`: closed loop. Default:
    /// closed loop.
    pub rate: Option<f64>,
    /// Requests in flight per connection, at most [`MAX_PIPELINE`]. Default: 1.
    pub pipeline: usize,
    /// A request without a response for this long counts as a timeout, and its connection
    /// is reopened. Default: 10 s.
    pub timeout: Duration,
    /// Connect timeout. Default: 5 s.
    pub connect_timeout: Duration,
    /// Reporting interval. Default: 1 s.
    pub interval: Duration,
    /// Speak TLS to the target. Default: none.
    pub tls: Option<ClientTls>,
    /// Open a new connection for every batch of `pipeline` requests (with TLS: a handshake
    /// per request, resumed unless [`ClientTls::without_resumption`]), closing each once
    /// answered; an HTTP workload for it is [`Workload::http_get_once`](super::workload::Workload::http_get_once).
    /// Default: off (keep-alive).
    pub new_conn_per_request: bool,
    /// The load cores' reactors (each is a shard of an engine). Default: the engine's.
    pub reactor: ReactorConfig,
    /// Each request sent has every `__rand_int__` of the workload's request replaced by a
    /// random number below this ([`RandomKeys`]: redis-benchmark's `-r`). Default: none
    /// (the request is sent as it is).
    pub keyspace: Option<u64>,
    /// When the run begins (the schedule's time zero, and the start of the warm-up): the
    /// cores start and connect from [`STARTUP`] before it, so start the run then. Default:
    /// [`STARTUP`] after [`Load::start`].
    pub start_at: Option<SystemTime>,
}

impl LoadConfig {
    /// The defaults, against `target` with `workload`.
    pub fn new(target: SocketAddr, workload: Workload) -> Self {
        Self {
            target,
            workload,
            conns: 16,
            cores: Cores::Count(1),
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            rate: None,
            pipeline: 1,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            interval: Duration::from_secs(1),
            tls: None,
            new_conn_per_request: false,
            reactor: ReactorConfig::default(),
            keyspace: None,
            start_at: None,
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        let bad = |what: &str| Err(LoadError::Config(what.to_owned()));
        if self.conns == 0 {
            return bad("--conns must be at least 1");
        }
        if self.pipeline == 0 {
            return bad("--pipeline must be at least 1");
        }
        if self.pipeline > MAX_PIPELINE {
            return Err(LoadError::Config(format!(
                "--pipeline {} is too deep: at most {MAX_PIPELINE} (every connection holds room \
                 for that many requests in flight, and every core a batch of them)",
                self.pipeline
            )));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return bad("--rate must be a positive number of requests per second");
        }
        if let Some(rate) = self.rate.filter(|r| *r > MAX_RATE) {
            return Err(LoadError::Config(format!(
                "--rate {rate} is beyond what can be scheduled: at most {MAX_RATE} requests/s \
                 (one a nanosecond); {} connections with --pipeline {} carry as many as the \
                 server answers, to find that leave out --rate (a closed loop)",
                self.conns, self.pipeline
            )));
        }
        if let Some(rate) = self.rate
            && self.conns as f64 / rate > MAX_REQUEST_INTERVAL.as_secs_f64()
        {
            return Err(LoadError::Config(format!(
                "--rate {rate} over {} connections sends each one request every {:.0} s: at \
                 least one a day per connection (raise --rate or lower --conns)",
                self.conns,
                self.conns as f64 / rate
            )));
        }
        if self.keyspace.is_some() && matches!(self.workload.expect, Expect::Raw(Framing::Echo(_))) {
            return bad(
                "--keyspace changes every request, and an echo is checked against the request: \
                 use --proto raw with --response-size instead of --proto echo",
            );
        }
        if self.duration.is_zero() {
            return bad("--duration must be more than 0");
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be more than 0");
        }
        if self.connect_timeout.is_zero() {
            return bad("the connect timeout must be more than 0");
        }
        if self.interval.is_zero() {
            return bad("the report interval must be more than 0");
        }
        Ok(())
    }
}

/// Why a load could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The settings do not make sense (a usage error).
    #[error("{0}")]
    Config(String),
    /// The target did not accept a first connection.
    #[error("cannot connect to {target}: {source} (is the server running?)")]
    Unreachable {
        /// The target.
        target: Address,
        /// The OS error.
        source: std::io::Error,
    },
    /// The first TLS handshake failed in a way every connection would (a certificate
    /// refused, nothing in common).
    #[error("TLS handshake with {target} failed: {why}")]
    Handshake {
        /// The target.
        target: Address,
        /// Why, and what to do about it.
        why: String,
    },
    /// The connections would need more descriptors than the process may open.
    #[error(
        "{conns} connections need about {need} open descriptors, and this process may open \
         {limit} (RLIMIT_NOFILE, already raised to its hard limit): open fewer connections, \
         raise the hard limit (ulimit -Hn, systemd LimitNOFILE=), or run several load \
         processes together (--start-at)"
    )]
    Descriptors {
        /// The connections asked for.
        conns: usize,
        /// The descriptors they and the load cores need.
        need: u64,
        /// The soft limit, raised to the hard one.
        limit: u64,
    },
    /// The load cores could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Descriptors a load core holds besides its connections (its rings, eventfd, timers), with
/// room to spare (one core with one connection holds 13 in all).
const FDS_PER_CORE: u64 = 16;
/// Descriptors the process holds besides its cores (standard streams, signal pipes, output
/// files), with room to spare.
const FDS_BASE: u64 = 32;

/// Checks that `conns` connections on `cores` cores fit in the descriptor limit (raising the
/// soft limit to the hard one first). An unreadable limit is not checked.
fn check_descriptors(conns: usize, cores: usize) -> Result<(), LoadError> {
    let (limit, _) = raise_soft(Limit::NoFile);
    let need = conns as u64 + FDS_PER_CORE * cores as u64 + FDS_BASE;
    if limit != 0 && need > limit {
        return Err(LoadError::Descriptors { conns, need, limit });
    }
    Ok(())
}

impl LoadError {
    /// True for errors in the settings, which the command line reports as usage errors.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}

/// What a finished (or interrupted) run measured.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// Everything measured after the warm-up, merged.
    pub total: Interval,
    /// The CPU cores that generated load.
    pub cores: Vec<usize>,
    /// When measuring began (the end of the warm-up), for interval logs.
    pub measured_from: SystemTime,
    /// The run was stopped early (Ctrl-C).
    pub interrupted: bool,
}

/// A running load (see [`Load::start`]).
#[derive(Debug)]
pub struct Load {
    rx: crossbeam_channel::Receiver<CoreMsg>,
    /// The engine whose shards generate the load; taken by [`wait`](Self::wait).
    engine: Option<Engine>,
    cpus: Vec<usize>,
    measured_from: SystemTime,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Starts the load described by `config`: starts one pinned reactor per load core, and
    /// waits for the first of its connections to reach the target (an unreachable target
    /// stops it there; no extra connection is made to check). It runs until its duration is over or
    /// `stop` is set; [`wait`](Self::wait) collects the results.
    ///
    /// # Errors
    ///
    /// Bad settings, an unreachable target, or reactors that cannot start.
    pub fn start(config: &LoadConfig, stop: &Arc<AtomicBool>) -> Result<Self, LoadError> {
        config.validate()?;
        let cpus = config
            .cores
            .resolve_last(&Cores::allowed())
            .map_err(|e| LoadError::Config(e.to_string()))?;
        let cpus: Vec<usize> = cpus.into_iter().take(config.conns).collect();
        check_descriptors(config.conns, cpus.len())?;
        // One reading of both clocks, so that the wall-clock time of the start (the interval
        // log's StartTime) is that of the schedule's.
        let (now, wall) = (Instant::now(), SystemTime::now());
        let lead = config
            .start_at
            .map_or(STARTUP, |at| at.duration_since(wall).unwrap_or_default());
        let start = now + lead;
        let measure_start = start + config.warmup;
        let keys = config
            .keyspace
            .map(|n| RandomKeys::find(&config.workload.request, n))
            .transpose()
            .map_err(|e| LoadError::Config(e.to_string()))?;
        let plan = Arc::new(Plan {
            target: config.target,
            workload: config.workload.clone(),
            conns: config.conns,
            pipeline: config.pipeline,
            rate: config.rate,
            start,
            measure_start,
            end: measure_start + config.duration,
            interval: config.interval,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            tls: config.tls.clone(),
            new_conn_per_request: config.new_conn_per_request,
            stop: stop.clone(),
            abort: AtomicBool::new(false),
            first: Arc::default(),
            keys,
        });
        let checked = plan.clone();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut engine = EngineConfig {
            cores: Cores::List(cpus.clone()),
            // Each core closes its connections itself; the drain only catches stragglers.
            drain_timeout: STOP_GRACE,
            reactor: config.reactor.clone(),
            ..EngineConfig::default()
        };
        engine.metrics.enabled = false;
        let engine = Engine::builder(engine)
            .on_each_shard(move |shard| core_main(plan.clone(), shard.index, shard.shards, tx.clone()))
            .start()?;
        // The target is checked with the run's first connection, not a probe of its own
        // (which the server would count as a connection, and log as a failed handshake on a
        // TLS port): a first attempt that fails stops the run before it measures.
        if let Err(e) = checked.first.wait(config.connect_timeout + FIRST_CONTACT_SLACK) {
            checked.abort.store(true, Ordering::Relaxed);
            let _ = engine.join();
            let target = config.target.into();
            return Err(match e {
                ConnectError::Tls { detail, .. } => LoadError::Handshake {
                    target,
                    why: conn::handshake_failure_text(&detail),
                },
                e => LoadError::Unreachable {
                    target,
                    source: unreachable_source(&e),
                },
            });
        }
        Ok(Self {
            rx,
            engine: Some(engine),
            cpus,
            measured_from: wall + lead + config.warmup,
            stop: stop.clone(),
        })
    }

    /// The CPU cores generating load.
    pub fn cores(&self) -> &[usize] {
        &self.cpus
    }

    /// When measuring begins (the end of the warm-up): the time base of the intervals.
    pub fn measured_from(&self) -> SystemTime {
        self.measured_from
    }

    /// Waits for the run to end, calling `on_interval` with each completed interval (all
    /// cores merged) as it arrives, and the total so far (that interval included).
    ///
    /// # Errors
    ///
    /// A load core that failed.
    pub fn wait(
        mut self,
        mut on_interval: impl FnMut(&Interval, &Interval),
    ) -> Result<LoadOutcome, LoadError> {
        let cores = self.cpus.len();
        let mut aggregator = Aggregator::new(cores);
        let mut stopped = 0;
        while stopped < cores {
            let ready = match self.rx.recv_timeout(TICK * 5) {
                Ok(CoreMsg::Interval(core, interval)) => aggregator.add(core, *interval),
                Ok(CoreMsg::Stopped(core)) => {
                    stopped += 1;
                    aggregator.stop(core)
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            for interval in &ready {
                on_interval(interval, aggregator.total());
            }
        }
        for interval in &aggregator.flush() {
            on_interval(interval, aggregator.total());
        }
        if let Some(engine) = self.engine.take() {
            engine.join()?;
        }
        Ok(LoadOutcome {
            total: aggregator.total().clone(),
            cores: std::mem::take(&mut self.cpus),
            measured_from: self.measured_from,
            interrupted: self.stop.load(Ordering::Relaxed),
        })
    }
}

impl Drop for Load {
    /// A load dropped before [`wait`](Load::wait) stops its cores and joins them.
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = engine.join();
        }
    }
}

/// Runs a load to its end: [`Load::start`], then [`Load::wait`].
///
/// # Errors
///
/// As those two.
pub fn run(
    config: &LoadConfig,
    stop: &Arc<AtomicBool>,
    on_interval: impl FnMut(&Interval, &Interval),
) -> Result<LoadOutcome, LoadError> {
    Load::start(config, stop)?.wait(on_interval)
}

/// Everything the cores share, fixed for the run.
struct Plan {
    target: SocketAddr,
    workload: Workload,
    conns: usize,
    pipeline: usize,
    rate: Option<f64>,
    /// The open-loop schedule's time zero.
    start: Instant,
    measure_start: Instant,
    end: Instant,
    interval: Duration,
    timeout: Duration,
    connect_timeout: Duration,
    tls: Option<ClientTls>,
    new_conn_per_request: bool,
    stop: Arc<AtomicBool>,
    /// The target did not answer the first connection: stop without measuring.
    abort: AtomicBool,
    /// How the first connection attempt ended.
    first: Arc<FirstContact>,
    /// The random keys of each request sent.
    keys: Option<RandomKeys>,
}

impl Plan {
    /// Pacing of connection `j`: its share of the rate, offset so that the connections'
    /// requests interleave evenly.
    fn pacing(&self, j: usize) -> Pacing {
        match self.rate {
            None => Pacing::Closed,
            Some(rate) => {
                let offset = Duration::from_secs_f64(j as f64 / rate);
                Pacing::Open(Schedule::new(self.start + offset, rate / self.conns as f64))
            }
        }
    }
}

#[derive(Debug)]
enum CoreMsg {
    Interval(usize, Box<Interval>),
    Stopped(usize),
}

/// Tells the main thread a core is done, however it ends (a panic included).
struct StopGuard {
    tx: Sender<CoreMsg>,
    core: usize,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(CoreMsg::Stopped(self.core));
    }
}

/// The run ended at `end` and sends nothing more: waits up to `grace` for the answers to the
/// requests in flight, then counts each request still unanswered (written, or due by `end`
/// and never sent) at its wait so far, so that a server stalled at the end of a run is
/// charged for the stall instead of leaving it out.
async fn settle(core: &Core, slots: &[Rc<RefCell<Slot>>], end: Instant, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && slots.iter().any(|s| s.borrow().awaiting()) {
        sleep(STOP_POLL).await;
    }
    let at = Instant::now();
    let mut recorder = core.recorder.borrow_mut();
    for slot in slots {
        let backlog = slot
            .borrow_mut()
            .unanswered(end, |sent| recorder.unanswered(&sent, at));
        if let Some(backlog) = backlog {
            recorder.unsent(&backlog, at);
        }
    }
}

/// Bytes written and read by every connection of this thread's executor so far.
fn bytes() -> Bytes {
    let shard = counters();
    Bytes {
        sent: shard.bytes_out,
        received: shard.bytes_in,
    }
}

/// A seed for load core `index`'s random keys: the clock's nanoseconds, apart per core.
fn seed(index: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

async fn core_main(plan: Arc<Plan>, index: usize, cores: usize, tx: Sender<CoreMsg>) {
    let guard = StopGuard { tx, core: index };
    let core = Rc::new(Core::new(
        &plan.workload.request,
        plan.pipeline,
        plan.new_conn_per_request,
        plan.start,
        plan.first.clone(),
        plan.keys.clone(),
        seed(index),
    ));
    let mut slots: Vec<Rc<RefCell<Slot>>> = Vec::new();
    let mut connectors = Vec::new();
    for j in (index..plan.conns).step_by(cores) {
        let pacing = plan.pacing(j);
        let open = matches!(pacing, Pacing::Open(_));
        let slot = Slot::new(Exchange::new(plan.pipeline, pacing, plan.workload.reader()));
        connectors.push(conn::open(
            core.clone(),
            slot.clone(),
            plan.target,
            plan.connect_timeout,
            plan.tls.clone(),
        ));
        if open {
            spawn(conn::pace(core.clone(), slot.clone()));
        }
        slots.push(slot);
    }

    // Connections opened during the start-up send their first requests when the run
    // starts, so that every request of the run is measured (after the warm-up, if any).
    let now = Instant::now();
    if plan.start > now {
        sleep(plan.start - now).await;
    }
    let now = Instant::now();
    for slot in &slots {
        slot.borrow_mut().send(&core, now);
    }

    let mut active = false;
    let mut k: u64 = 0;
    let mut interval_start = plan.measure_start;
    let mut bytes_base = Bytes::default();
    loop {
        let now = Instant::now();
        let stopping =
            plan.stop.load(Ordering::Relaxed) || plan.abort.load(Ordering::Relaxed) || now >= plan.end;
        if !active && now >= plan.measure_start {
            // The warm-up is over: forget it, and measure the requests due from now on.
            let mut recorder = core.recorder.borrow_mut();
            let _ = recorder.take();
            recorder.measure_from(Some(plan.measure_start));
            bytes_base = bytes();
            active = true;
        }
        let boundary = plan.measure_start
            + plan
                .interval
                .saturating_mul(u32::try_from(k + 1).unwrap_or(u32::MAX));
        if active && (stopping || now >= boundary) {
            let end = if stopping { now.min(plan.end) } else { boundary };
            if stopping {
                core.stopping.set(true);
                settle(&core, &slots, end, plan.timeout.min(ANSWER_GRACE)).await;
            }
            let bytes = bytes();
            let report = Interval {
                index: k,
                start: interval_start - plan.measure_start,
                end: end.saturating_duration_since(plan.measure_start),
                sample: core.recorder.borrow_mut().take(),
                bytes: Bytes {
                    sent: bytes.sent - bytes_base.sent,
                    received: bytes.received - bytes_base.received,
                },
            };
            bytes_base = bytes;
            let _ = guard.tx.send(CoreMsg::Interval(index, Box::new(report)));
            k += 1;
            interval_start = end;
            if stopping {
                break;
            }
            continue;
        }
        if stopping {
            break;
        }
        for slot in &slots {
            let mut recorder = core.recorder.borrow_mut();
            if slot.borrow_mut().check_timeout(now, plan.timeout, &mut recorder) {
                recorder.error(ErrorKind::Timeout);
            }
        }
        let wake = [boundary, plan.end, plan.measure_start.max(now), now + TICK]
            .into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + TICK);
        sleep(wake - now).await;
    }

    // The run is over: count nothing more, close every connection (orderly), and give them
    // a moment; those still open when the executor ends are dropped, which resets them.
    core.stopping.set(true);
    core.recorder.borrow_mut().measure_from(None);
    for (connector, slot) in connectors.iter().zip(&slots) {
        connector.disconnect();
        slot.borrow_mut().wake_pacer();
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline
        && connectors
            .iter()
            .any(|c| c.state() != ConnectorState::Disconnected)
    {
        sleep(STOP_POLL).await;
    }
    drop(guard);
}
