//! Kv: a Redis-protocol (RESP2, and RESP3 after `HELLO 3`) in-memory key-value server on
//! the shards, `weft serve --proto kv`.
//!
//! Every key belongs to one shard: `slot(key) % shards`, with Redis Cluster's slots (CRC16 of
//! the key, or of its `{hash tag}`, modulo 16384; see [`route`]). Each shard keeps its keys in
//! its own [`KvShard`] (the engine's [shard state](crate::shard::state)) and runs their
//! commands alone, with no lock. A connection runs a command on a key of its own shard at
//! once; a command on another shard's key is sent there ([`submit_to`]) and answered when it
//! comes back; `MGET`, `MSET`, `DEL` and `EXISTS` are split by owning shard and gathered;
//! `SCAN` runs on the shard its cursor names; `DBSIZE`, `FLUSHALL`, `INFO`, `KEYS` and
//! `CLIENT LIST` run on every shard ([`invoke_on_all`]) once the connection's earlier
//! commands are done, and the commands after them wait for them (so a pipelined `FLUSHALL`
//! is not overtaken). `EXEC` waits the same way, then runs the commands queued since
//! `MULTI` in one call to the shard that owns their keys (atomic: the shard runs nothing
//! else meanwhile), or refuses them with `-CROSSSLOT` when their keys span shards.
//!
//! Commands for another shard are sent in batches: a connection has at most one call in
//! flight, to the shard whose queued command is the oldest, carrying every command for that
//! shard received meanwhile, in order. So the commands of one connection run on each shard
//! in the order they were sent, and a pipeline costs a few cross-shard calls rather than one
//! per command.
//!
//! Answers go out strictly in request order: a connection keeps one slot per command
//! received, fills the slots as the shards answer, and writes the ready prefix. At most
//! [`MAX_IN_FLIGHT`] commands wait per connection: above it the connection stops reading
//! until half of them are answered.
//!
//! Answers are bounded as on one shard, where the engine hands over no request while the
//! output is full ([`Framed`]): no command starts, here or on its shard, while the answers
//! written and not sent, those held for an earlier one, and the budget of the call in flight
//! pass the output's high-water mark (the connection stops reading meanwhile), and a call
//! carries a budget, half of the room left: the shard runs its commands until their answers
//! fill it and sends the rest back, to go when the output drains (see [`room`]). So answers
//! pass the high-water mark by two answers at most (one run here, one on another shard),
//! where eight pipelined `GET`s of another shard's 1 MiB values once came back together. Bad input is answered as redis answers it: a protocol
//! error with its `-ERR Protocol error: ...` and a close (after the answers to the commands
//! before it); an unknown command or wrong arguments with an error, and the connection stays.
//! On the engine's drain a connection reads no more, answers what it has received (including
//! commands waiting on other shards) and closes. Each shard sweeps expired keys
//! [`SWEEP_HZ`] times a second (sampling keys with a TTL, as redis does, for as long as many
//! of the samples had expired, within [`SWEEP_BUDGET`]), besides expiring them when they are
//! touched.
//!
//! Multi-key commands are atomic per shard, not across shards (as in Redis Cluster, where
//! they are refused across slots). Each answer is encoded in the protocol its connection
//! spoke when the command started, wherever it ran. `--maxmemory` is divided evenly between the shards; each
//! shard applies the policy to its part.
//!
//! What one connection may hold is bounded by [`KvConfig`]: a request by the parser's limits,
//! a transaction's queued commands by [`KvConfig::max_transaction`], its unsent answers by the
//! engine's output cap. Give the engine [`KvConfig::max_output`] as that cap (as `weft serve
//! --proto kv` does): the engine's default, 4 MiB, resets a client that asks for a larger
//! value before its first byte.
//!
//! On an engine with metrics on, each shard shows its keys, memory, expiries, evictions,
//! `-OOM` refusals and commands (see [`super::kv_metrics`]).
//!
//! ```no_run
//! use weft::protocols::{Kv, KvConfig};
//! use weft::{EngineConfig, Service};
//!
//! let kv = KvConfig::default();
//! let mut engine = EngineConfig::default();
//! engine.connection.flow.max_output = kv.max_output();
//! Service::new(engine)
//!     .shard_state(Kv::shard_state(kv))
//!     .listen("127.0.0.1:6379".parse::<std::net::SocketAddr>()?, |_| Kv::factory())
//!     .run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`route`]: crate::proto::kv::route
//! [`room`]: crate::proto::kv::room
//! [`submit_to`]: crate::shard::submit_to
//! [`invoke_on_all`]: crate::shard::invoke_on_all

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::rc::{Rc, Weak};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::driver::mesh::{invoke_on_all, submit_to};
use crate::driver::tasks::{counters, drain_started, interval, is_draining, sleep, spawn, state, yield_now};
use crate::metrics::ProcessStats;
use crate::proto::codec::{FrameHandler, Framed};
use crate::proto::kv::command::{ClientQuery, Command, Scan, Target, parse};
use crate::proto::kv::info::{ServerInfo, render};
use crate::proto::kv::keyspace::{EvictionPolicy, Keyspace, KeyspaceConfig, KeyspaceStats};
use crate::proto::kv::room::Room;
use crate::proto::kv::route::{Gather, key_owners, shard_of, split};
use crate::proto::kv::session::{MAX_QUEUED_BYTES, Outcome, ServerFacts, Session};
use crate::proto::protocol::{Factory, ShardInfo};
use crate::proto::resp::{ARG_OVERHEAD, Reply, Request, RespDecoder, RespError, RespLimits, RespVersion};
use crate::proto::settings::ConfigError;
use crate::proto::transport::{FlowConfig, Transport};
use crate::protocols::kv_metrics::{self, Published};

/// Most commands a connection may have unanswered before it stops reading (it reads again
/// once half are answered).
pub const MAX_IN_FLIGHT: usize = 1024;
/// How many times a second each shard samples its keys with a TTL for expired ones (redis's
/// `hz`).
pub const SWEEP_HZ: u32 = 10;
/// The most time one sweep may take: a quarter of the time between sweeps, as redis's
/// `activeExpireCycle` (25% of a CPU at most, however many keys expire).
pub const SWEEP_BUDGET: Duration = Duration::from_millis(1000 / SWEEP_HZ as u64 / 4);
/// Rounds of [`EXPIRE_SAMPLES`](crate::proto::kv::keyspace::EXPIRE_SAMPLES) keys a sweep takes
/// between looks at the clock, each followed by a chance for the shard's connections to run.
const SWEEP_SLICE_ROUNDS: usize = 16;
/// How long a sweep works before it lets the shard poll its sockets (a plain yield lets the
/// shard's ready tasks run, not its pending reads): commands wait at most about this long
/// behind a sweep.
const SWEEP_PAUSE_EVERY: Duration = Duration::from_millis(1);

/// The kv server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvConfig {
    /// Memory limit of the whole process, in accounted bytes (key + value + a fixed overhead
    /// per key), divided evenly between the shards; 0 for none.
    pub maxmemory: usize,
    /// What happens past the limit.
    pub policy: EvictionPolicy,
    /// The request parser's limits (redis's by default). The bulk limit also bounds the
    /// values `APPEND` makes, as redis's `proto-max-bulk-len` does.
    pub limits: RespLimits,
    /// Most bytes the commands queued by one transaction may hold (counted as the request
    /// limit counts them): the command past it is refused and `EXEC` aborts. Default:
    /// [`MAX_QUEUED_BYTES`]; the count is bounded by
    /// [`MAX_QUEUED`](crate::proto::kv::session::MAX_QUEUED).
    pub max_transaction: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            maxmemory: 0,
            policy: EvictionPolicy::default(),
            limits: RespLimits::default(),
            max_transaction: MAX_QUEUED_BYTES,
        }
    }
}

/// The smallest parser or transaction limit [`KvConfig::validate`] accepts: below it ordinary
/// commands would be refused.
pub const MIN_KV_LIMIT: usize = 1024;

impl KvConfig {
    /// The output cap ([`FlowConfig::max_output`](crate::FlowConfig::max_output)) an engine
    /// serving kv needs for the answer of any one value to go out whole, however long the
    /// value may be within these limits: the bulk limit, plus the 4 MiB any connection may
    /// queue by default. `weft serve --proto kv` uses it unless `--max-output` is given (the
    /// engine's default, 4 MiB, would reset a client reading a `GET` of a larger value).
    /// Answers gathered over many keys (`KEYS *`, an `MGET` over several shards, each part of
    /// which is refused past the value limit) are not bounded by it: past the cap the
    /// connection is reset.
    pub fn max_output(&self) -> usize {
        self.limits
            .max_bulk
            .saturating_add(FlowConfig::default().max_output)
    }

    /// Refuses limits under [`MIN_KV_LIMIT`], naming the setting (`kv.limits.max_bulk`,
    /// `kv.limits.max_inline`, `kv.limits.max_request`, `kv.max_transaction`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first limit too small, saying what to give instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let defaults = Self::default();
        for (setting, value, default, refused) in [
            (
                "kv.limits.max_bulk",
                self.limits.max_bulk,
                defaults.limits.max_bulk,
                "the arguments of ordinary commands",
            ),
            (
                "kv.limits.max_inline",
                self.limits.max_inline,
                defaults.limits.max_inline,
                "ordinary inline requests",
            ),
            (
                "kv.limits.max_request",
                self.limits.max_request,
                defaults.limits.max_request,
                "ordinary requests",
            ),
            (
                "kv.max_transaction",
                self.max_transaction,
                defaults.max_transaction,
                "ordinary transactions",
            ),
        ] {
            if value < MIN_KV_LIMIT {
                return Err(ConfigError::new(
                    setting,
                    value,
                    format!(
                        "would refuse {refused}: give at least {MIN_KV_LIMIT} bytes \
                         (default {default})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Facts about this process, for `INFO`.
struct Process {
    started: Instant,
    run_id: String,
    executable: String,
}

fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let state = RandomState::new();
        let run_id = (0..3u64)
            .map(|i| {
                let mut h = state.build_hasher();
                h.write_u64(i);
                format!("{:016x}", h.finish())
            })
            .collect::<String>()[..40]
            .to_owned();
        Process {
            started: Instant::now(),
            run_id,
            executable: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    })
}

/// Client ids, as `HELLO` reports them: unique in the process.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// One shard's part of the store: its keyspace and what its connections need to know.
#[derive(Debug)]
pub struct KvShard {
    keyspace: RefCell<Keyspace<ahash::RandomState>>,
    index: usize,
    shards: usize,
    config: KvConfig,
    facts: ServerFacts,
    /// The sweep task runs.
    sweeping: Cell<bool>,
    /// The time of the read being handled: its commands run at one time, read once.
    read_time: Cell<Option<i64>>,
    /// The keyspace's figures as the metrics last showed them.
    published: Published,
    /// The shard's connections by client id, for `CLIENT LIST`.
    clients: RefCell<BTreeMap<u64, Weak<Conn>>>,
    /// Commands its connections received (INFO's `total_commands_processed`).
    commands: Cell<u64>,
    /// `(when, commands)` at the last [`OPS_SAMPLES`] sweeps, for
    /// `instantaneous_ops_per_sec`.
    ops_samples: RefCell<VecDeque<(Instant, u64)>>,
}

/// Samples of the command count kept for `instantaneous_ops_per_sec` (taken at each sweep:
/// the rate over about 1.5 s, as redis's 16 samples a tenth of a second apart).
const OPS_SAMPLES: usize = 16;

/// One shard's figures for `INFO`.
#[derive(Debug, Clone, Copy)]
struct ShardFigures {
    keyspace: KeyspaceStats,
    commands: u64,
    ops_per_sec: u64,
    active: u64,
    accepted: u64,
    rejected: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl KvShard {
    /// The state of shard `info`, with its even part of the memory limit.
    pub fn new(info: &ShardInfo, config: &KvConfig) -> Self {
        // The process's start, for INFO's uptime.
        let _ = process();
        let mut seed = RandomState::new().build_hasher();
        seed.write_usize(info.index);
        let keyspace = KeyspaceConfig {
            maxmemory: config.maxmemory.div_ceil(info.shards.max(1)),
            policy: config.policy,
            shard: Some((info.index, info.shards)),
            max_value: config.limits.max_bulk,
        };
        let facts = ServerFacts {
            config: vec![
                ("maxmemory".into(), config.maxmemory.to_string()),
                ("maxmemory-policy".into(), config.policy.name().into()),
                ("maxmemory-samples".into(), "5".into()),
                ("proto-max-bulk-len".into(), config.limits.max_bulk.to_string()),
                (
                    "client-query-buffer-limit".into(),
                    config.limits.max_request.to_string(),
                ),
                ("hz".into(), SWEEP_HZ.to_string()),
                ("databases".into(), "1".into()),
                ("save".into(), String::new()),
                ("appendonly".into(), "no".into()),
            ],
        };
        Self {
            keyspace: RefCell::new(Keyspace::new(keyspace, ahash::RandomState::new(), seed.finish())),
            index: info.index,
            shards: info.shards.max(1),
            config: *config,
            facts,
            sweeping: Cell::new(false),
            read_time: Cell::new(None),
            published: Published::default(),
            clients: RefCell::new(BTreeMap::new()),
            commands: Cell::new(0),
            ops_samples: RefCell::new(VecDeque::with_capacity(OPS_SAMPLES + 1)),
        }
    }

    /// Now: the time of the read being handled, or the clock's.
    fn now(&self) -> i64 {
        self.read_time.get().unwrap_or_else(now_ms)
    }

    /// A connection's read is being handled: its commands run at the time read now.
    fn begin_read(&self) {
        if self.read_time.get().is_none() {
            self.read_time.set(Some(now_ms()));
        }
    }

    /// The read is handled: later commands read the clock again.
    fn end_read(&self) {
        self.read_time.set(None);
    }

    /// Runs a keyspace command on this shard's keys, now.
    pub fn execute(&self, cmd: Command) -> Reply {
        self.keyspace.borrow_mut().execute(cmd, self.now())
    }

    /// Runs a keyspace command on this shard's keys, now, and appends its answer's bytes in
    /// `protocol` to `out`.
    pub fn execute_into(&self, cmd: Command, protocol: RespVersion, out: &mut Vec<u8>) {
        self.keyspace
            .borrow_mut()
            .execute_into(cmd, self.now(), protocol, out);
    }

    /// Runs keyspace commands in order, at one time; their answers in order.
    pub fn execute_all(&self, cmds: Vec<Command>) -> Vec<Reply> {
        self.execute_within(cmds, usize::MAX).0
    }

    /// Runs keyspace commands in order, at one time, until their answers take `budget`
    /// bytes (the first always runs): their answers, and the commands not run, in order
    /// (see [`Keyspace::execute_within`]).
    pub fn execute_within(&self, cmds: Vec<Command>, budget: usize) -> (Vec<Reply>, Vec<Command>) {
        self.keyspace
            .borrow_mut()
            .execute_within(cmds, self.now(), budget)
    }

    /// The keyspace's figures.
    pub fn stats(&self) -> KeyspaceStats {
        self.keyspace.borrow().stats()
    }

    /// Samples the command count, for `instantaneous_ops_per_sec`.
    fn sample_ops(&self) {
        let mut samples = self.ops_samples.borrow_mut();
        samples.push_back((Instant::now(), self.commands.get()));
        while samples.len() > OPS_SAMPLES {
            samples.pop_front();
        }
    }

    /// This shard's figures for `INFO`.
    fn figures(&self) -> ShardFigures {
        let samples = self.ops_samples.borrow();
        let ops_per_sec = match (samples.front(), samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1.saturating_sub(*n0) as f64 / (*t1 - *t0).as_secs_f64()).round() as u64
            }
            _ => 0,
        };
        let c = counters();
        ShardFigures {
            keyspace: self.stats(),
            commands: self.commands.get(),
            ops_per_sec,
            active: c.active,
            accepted: c.accepted,
            rejected: c.refused + c.shed,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        }
    }

    /// The `CLIENT LIST` lines of this shard's connections (those of `ids`, or all), by id.
    fn client_lines(&self, ids: &[u64]) -> Vec<(u64, String)> {
        let now = now_ms();
        let mut clients = self.clients.borrow_mut();
        // Connections dropped without their close being seen: gone.
        clients.retain(|_, conn| conn.strong_count() > 0);
        clients
            .iter()
            .filter(|(id, _)| ids.is_empty() || ids.contains(id))
            .filter_map(|(id, conn)| {
                let conn = conn.upgrade()?;
                let line = conn.state.try_borrow().ok()?.session.client_line(now);
                Some((*id, line))
            })
            .collect()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keyspace.borrow().len()
    }

    /// True with no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every key.
    pub fn flush(&self) {
        self.keyspace.borrow_mut().flush();
    }

    /// One sweep of expired keys, adaptive as redis's: rounds of samples go on while more
    /// than a tenth of a sample had expired, for at most [`SWEEP_BUDGET`], and every
    /// `SWEEP_SLICE_ROUNDS` rounds the shard's other tasks (its connections) may run.
    /// Returns how many keys went.
    pub async fn sweep(&self) -> usize {
        let started = Instant::now();
        let mut paused = started;
        let mut removed = 0;
        loop {
            let cycle = self
                .keyspace
                .borrow_mut()
                .expire_cycle(now_ms(), SWEEP_SLICE_ROUNDS);
            removed += cycle.removed;
            let now = Instant::now();
            if !cycle.unfinished || now - started >= SWEEP_BUDGET {
                return removed;
            }
            if now - paused >= SWEEP_PAUSE_EVERY {
                // A real pause: the shard reads its sockets, and its connections answer.
                // (A zero duration would be ready at once: one microsecond is one pass.)
                sleep(Duration::from_micros(1)).await;
                paused = Instant::now();
            } else {
                yield_now().await;
            }
        }
    }

    /// Shows the keyspace's figures in the shard's metrics (see
    /// [`super::kv_metrics`]).
    pub fn publish(&self) {
        self.published.publish(self.stats());
    }

    /// Sweeps this shard's expired keys [`SWEEP_HZ`] times a second until the shard drains,
    /// and after each sweep [publishes](Self::publish) the keyspace's figures.
    pub async fn sweep_until_drain() {
        if let Some(s) = state::<KvShard>() {
            s.publish();
        }
        let mut ticks = interval(Duration::from_secs(1) / SWEEP_HZ);
        while !is_draining() {
            let tick = async {
                ticks.tick().await;
                true
            };
            let drain = async {
                drain_started().await;
                false
            };
            if !futures_lite::future::or(tick, drain).await {
                break;
            }
            if let Some(s) = state::<KvShard>() {
                s.sample_ops();
                s.sweep().await;
                s.publish();
            }
        }
        // The figures at the drain, for the shard's last report.
        if let Some(s) = state::<KvShard>() {
            s.publish();
        }
    }
}

/// The factory of one shard: builds a [`Kv`] protocol for every connection, on the shard's
/// [`KvShard`] state.
#[derive(Debug, Default)]
pub struct KvFactory {
    shard: Option<Rc<KvShard>>,
}

impl Factory for KvFactory {
    type Protocol = Framed<Kv>;

    fn start(&mut self, shard: &ShardInfo) {
        self.shard = state::<KvShard>();
        match &self.shard {
            Some(s) if !s.sweeping.replace(true) => {
                // The sweep ends with the shard's drain.
                spawn(KvShard::sweep_until_drain()).detach();
            }
            Some(_) => {}
            None => tracing::error!(
                shard = shard.index,
                "kv: the shard has no KvShard state (give the engine Kv::shard_state); refusing connections"
            ),
        }
    }

    fn build_protocol(&mut self, _peer: &crate::addr::Address) -> Option<Framed<Kv>> {
        let shard = self.shard.clone()?;
        let limits = shard.config.limits;
        Some(Framed::new(RespDecoder::new(limits), Kv::new(shard)))
    }

    /// Redis's answer to a client over `maxclients`.
    fn overload_answer(&self) -> Option<&[u8]> {
        Some(b"-ERR max number of clients reached\r\n")
    }
}

/// The kv protocol of one connection (framed by [`RespDecoder`]).
#[derive(Debug)]
pub struct Kv {
    conn: Rc<Conn>,
}

impl Kv {
    /// A connection to the store whose local part is `shard`.
    pub fn new(shard: Rc<KvShard>) -> Self {
        let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
        let shards = shard.shards;
        Self {
            conn: Rc::new(Conn {
                shard,
                state: RefCell::new(State {
                    session: Session::new(id),
                    outboxes: (0..shards).map(|_| Outbox::default()).collect(),
                    ..State::default()
                }),
            }),
        }
    }

    /// What builds each shard's state, for
    /// [`EngineBuilder::shard_state`](crate::EngineBuilder::shard_state) or
    /// [`Service::shard_state`](crate::Service::shard_state).
    pub fn shard_state(config: KvConfig) -> impl Fn(&ShardInfo) -> KvShard + Send + Sync + 'static {
        move |info| KvShard::new(info, &config)
    }

    /// The factory of a kv listener (on an engine given [`Kv::shard_state`]).
    pub fn factory() -> KvFactory {
        KvFactory::default()
    }
}

/// What one received command's answer is now.
#[derive(Debug)]
enum Slot {
    /// Not answered yet; to be answered in this protocol (the connection's when the command
    /// started: a `HELLO` after it does not change it).
    Pending(RespVersion),
    /// The answer's bytes.
    Ready(Vec<u8>),
}

/// Who waits for the answer of a command sent to another shard.
#[derive(Debug)]
enum Waiter {
    /// Command `seq`, whole.
    Whole(u64),
    /// One part of a command split over shards.
    Part(Rc<RefCell<Gathering>>, usize),
}

impl Waiter {
    /// The command waiting.
    fn seq(&self) -> u64 {
        match self {
            Waiter::Whole(seq) => *seq,
            Waiter::Part(gathering, _) => gathering.borrow().seq,
        }
    }
}

/// A command split over shards, while its parts' answers come in.
#[derive(Debug)]
struct Gathering {
    seq: u64,
    gather: Option<Gather>,
    replies: Vec<Option<Reply>>,
    left: usize,
}

/// The commands for one other shard not sent yet, in the order they started.
#[derive(Debug, Default)]
struct Outbox {
    queued: VecDeque<(Waiter, Command)>,
}

#[derive(Debug, Default)]
struct State {
    transport: Option<Transport>,
    session: Session,
    /// One slot per command received and not written yet, oldest first.
    slots: VecDeque<Slot>,
    /// The sequence number of `slots[0]`.
    first_seq: u64,
    /// Commands received and not started (those behind a command that runs on every
    /// shard): `(seq, command, its request's bytes)`.
    held: VecDeque<(u64, Command, usize)>,
    /// Commands started and not answered.
    in_flight: usize,
    /// A command on every shard runs: nothing after it starts.
    barrier: bool,
    /// By shard: the commands for it.
    outboxes: Vec<Outbox>,
    /// A task sends the outboxes' commands, one call at a time.
    calling: bool,
    /// The budget of the call under way (see [`Room`]).
    promised: usize,
    /// No more commands: close once every answer is written (QUIT, a protocol error, EOF).
    closing: bool,
    /// The engine drains: read no more, close once every answer is written.
    draining: bool,
    /// Reading paused: too many commands in flight, or those received wait for the output
    /// to drain.
    paused: bool,
    /// Bytes of the answers in `slots`, ready and waiting for one before them.
    held_bytes: usize,
}

#[derive(Debug)]
struct Conn {
    shard: Rc<KvShard>,
    state: RefCell<State>,
}

impl Conn {
    /// A command arrived.
    fn received(self: &Rc<Self>, request: Request) {
        {
            let mut st = self.state.borrow_mut();
            if st.closing {
                return;
            }
            // As the request limit counts it: what the command holds if a transaction queues it.
            let bytes = request.iter().map(|arg| arg.len() + ARG_OVERHEAD).sum();
            let cmd = match parse(request) {
                Ok(cmd) => {
                    kv_metrics::command(cmd.family());
                    self.shard.commands.set(self.shard.commands.get() + 1);
                    cmd
                }
                // Answered in its turn: inside MULTI it fails the transaction.
                Err(error) => Command::Invalid(error),
            };
            let seq = st.push_slot();
            st.held.push_back((seq, cmd, bytes));
            st.session.active(self.shard.now());
        };
        self.pump();
        self.flow();
    }

    /// Starts the held commands that may start, then the calls to other shards. In order:
    /// a command starts only while the output has room for its answer ([`Room::may_start`]),
    /// and none starts after a command for every shard until all before it are answered,
    /// and after it until it is.
    fn pump(self: &Rc<Self>) {
        while let Some((seq, cmd, bytes)) = self.next_held() {
            self.start(seq, cmd, bytes);
        }
        self.call();
    }

    /// The held command to start now, if one may.
    fn next_held(&self) -> Option<(u64, Command, usize)> {
        let mut st = self.state.borrow_mut();
        if st.barrier || !st.may_start_held() {
            return None;
        }
        let (_, front, _) = st.held.front()?;
        let queued = st.session.in_transaction() && front.queues();
        if front.target() == Target::All && !queued {
            if st.in_flight > 0 {
                return None;
            }
            st.barrier = true;
        }
        st.held.pop_front()
    }

    /// Runs or sends one command of `bytes` bytes (or queues it, inside `MULTI`).
    fn start(self: &Rc<Self>, seq: u64, cmd: Command, bytes: usize) {
        let shard = &self.shard;
        let (me, shards) = (shard.index, shard.shards);
        let cmd = {
            let mut st = self.state.borrow_mut();
            st.stamp(seq);
            st.session.queue(cmd, bytes, shard.config.max_transaction)
        };
        let cmd = match cmd {
            Ok(queued) => return self.answer(seq, &queued),
            Err(cmd) => cmd,
        };
        match cmd.target() {
            Target::Connection => {
                let outcome = {
                    let mut st = self.state.borrow_mut();
                    let outcome = st.session.execute(cmd, &shard.facts, shard.now());
                    // HELLO answers in the protocol it switched to.
                    st.stamp(seq);
                    outcome
                };
                match outcome {
                    Outcome::Reply(reply) => self.answer(seq, &reply),
                    Outcome::ReplyAndClose(reply) => {
                        self.state.borrow_mut().closing = true;
                        self.answer(seq, &reply);
                    }
                    Outcome::Close => self.refuse(Transport::abort_connection),
                }
            }
            Target::Key(key) => {
                let owner = shard_of(key, shards);
                self.run_on(owner, seq, cmd);
            }
            Target::Cursor(cursor) => {
                let owner = Scan::shard_of_cursor(cursor, shards);
                self.run_on(owner, seq, cmd.routed(owner, shards));
            }
            Target::Keys => {
                let (parts, gather) = split(cmd, shards);
                if parts.iter().all(|(owner, _)| *owner == me) {
                    let replies = parts.into_iter().map(|(_, c)| shard.execute(c)).collect();
                    self.answer(seq, &gather.merge(replies));
                    return;
                }
                // This shard's part runs now, the others' where they live.
                self.state.borrow_mut().in_flight += 1;
                let gathering = Rc::new(RefCell::new(Gathering {
                    seq,
                    gather: Some(gather),
                    replies: parts.iter().map(|_| None).collect(),
                    left: parts.len(),
                }));
                for (i, (owner, c)) in parts.into_iter().enumerate() {
                    if owner == me {
                        let reply = shard.execute(c);
                        self.deliver(Waiter::Part(gathering.clone(), i), reply);
                    } else {
                        self.send(owner, Waiter::Part(gathering.clone(), i), c);
                    }
                }
            }
            Target::All => {
                self.state.borrow_mut().in_flight += 1;
                let conn = self.clone();
                spawn(async move {
                    let reply = match cmd {
                        Command::Exec => conn.exec().await,
                        cmd => conn.everywhere(cmd).await,
                    };
                    conn.state.borrow_mut().barrier = false;
                    conn.deliver(Waiter::Whole(seq), reply);
                })
                .detach();
            }
        }
    }

    /// Runs command `seq` on shard `owner`: here at once, or sent there.
    fn run_on(self: &Rc<Self>, owner: usize, seq: u64, cmd: Command) {
        if owner == self.shard.index {
            self.answer_local(seq, cmd);
        } else {
            self.state.borrow_mut().in_flight += 1;
            self.send(owner, Waiter::Whole(seq), cmd);
        }
    }

    /// `EXEC`: the commands queued since `MULTI`, atomically. Their keys must live on one
    /// shard (as Redis Cluster requires one slot): the keyspace commands run there in one
    /// call, which nothing else interleaves (a shard runs one thing at a time); the
    /// connection's own commands and `INFO` run here, in their places in the answer.
    async fn exec(self: &Rc<Self>) -> Reply {
        let queued = match self.state.borrow_mut().session.take_transaction() {
            Ok(queued) => queued,
            Err(error) => return error,
        };
        let (me, shards) = (self.shard.index, self.shard.shards);
        let mut owner: Option<usize> = None;
        for cmd in &queued {
            let owners: Vec<usize> = match cmd.target() {
                Target::Key(key) => vec![shard_of(key, shards)],
                Target::Keys => key_owners(cmd, shards),
                Target::Cursor(cursor) => vec![Scan::shard_of_cursor(cursor, shards)],
                Target::All if cmd.on_keyspace() && shards > 1 => return WHOLE_KEYSPACE_IN_MULTI,
                Target::All | Target::Connection => Vec::new(),
            };
            for o in owners {
                if owner.is_some_and(|first| first != o) {
                    return CROSSSLOT;
                }
                owner = Some(o);
            }
        }
        let target = owner.unwrap_or(me);
        // The keyspace commands, in order, in one call; the others later, in their places.
        let mut replies: Vec<Option<Reply>> = vec![None; queued.len()];
        let (mut places, mut batch, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for (i, cmd) in queued.into_iter().enumerate() {
            if cmd.on_keyspace() {
                places.push(i);
                batch.push(cmd.routed(target, shards));
            } else {
                rest.push((i, cmd));
            }
        }
        if !batch.is_empty() {
            let results = if target == me {
                self.shard.execute_all(batch)
            } else {
                match submit_to(target, move |s: &KvShard| s.execute_all(batch)).await {
                    Ok(results) => results,
                    Err(e) => return call_failed(&e),
                }
            };
            for (place, reply) in places.into_iter().zip(results) {
                if let Some(slot) = replies.get_mut(place) {
                    *slot = Some(reply);
                }
            }
        }
        for (place, cmd) in rest {
            let reply = if cmd.target() == Target::All {
                self.everywhere(cmd).await
            } else {
                let now = self.shard.now();
                let outcome = self
                    .state
                    .borrow_mut()
                    .session
                    .execute(cmd, &self.shard.facts, now);
                match outcome {
                    Outcome::Reply(r) | Outcome::ReplyAndClose(r) => r,
                    Outcome::Close => Reply::error("ERR not allowed in a transaction"),
                }
            };
            if let Some(slot) = replies.get_mut(place) {
                *slot = Some(reply);
            }
        }
        Reply::Array(replies.into_iter().map(|r| r.unwrap_or(Reply::Nil)).collect())
    }

    /// Runs a command of every shard and gathers its answer.
    async fn everywhere(self: &Rc<Self>, cmd: Command) -> Reply {
        let port = self
            .state
            .borrow()
            .transport
            .as_ref()
            .map_or(0, |t| t.local_addr().socket_addr().port());
        everywhere(cmd, port, self.shard.config.policy).await
    }

    /// Queues `cmd` for shard `owner` (sent by [`call`](Self::call)).
    fn send(self: &Rc<Self>, owner: usize, waiter: Waiter, cmd: Command) {
        let mut st = self.state.borrow_mut();
        match st.outboxes.get_mut(owner) {
            Some(outbox) => outbox.queued.push_back((waiter, cmd)),
            None => {
                drop(st);
                self.deliver(waiter, Reply::error("ERR internal error: no such shard"));
            }
        }
    }

    /// Sends the commands queued for other shards, unless a task does already: one call at a
    /// time, while the output has room (see [`next_call`](Self::next_call)).
    fn call(self: &Rc<Self>) {
        {
            let mut st = self.state.borrow_mut();
            if st.calling || st.outboxes.iter().all(|o| o.queued.is_empty()) {
                return;
            }
            st.calling = true;
        }
        let conn = self.clone();
        // The task first runs after the current read is handled, so that its first call
        // carries every command of the read for that shard.
        spawn(async move {
            while let Some((owner, mut waiters, cmds, budget)) = conn.next_call() {
                let replies = submit_to(owner, move |s: &KvShard| s.execute_within(cmds, budget)).await;
                conn.state.borrow_mut().promised = 0;
                match replies {
                    Ok((replies, unrun)) => {
                        // The commands past the budget go back to the front, in order.
                        let unsent = waiters.split_off(replies.len().min(waiters.len()));
                        if let Some(outbox) = conn.state.borrow_mut().outboxes.get_mut(owner) {
                            for item in unsent.into_iter().zip(unrun).rev() {
                                outbox.queued.push_front(item);
                            }
                        }
                        for (waiter, reply) in waiters.into_iter().zip(replies) {
                            conn.deliver(waiter, reply);
                        }
                    }
                    Err(e) => {
                        let reply = call_failed(&e);
                        for waiter in waiters {
                            conn.deliver(waiter, reply.clone());
                        }
                    }
                }
            }
        })
        .detach();
    }

    /// The next call to make: every command queued for the shard whose first one is the
    /// oldest, with the budget the output leaves it ([`Room::call_budget`]). `None` when
    /// nothing is queued or the call must wait for the output to drain (the task ends; the
    /// next [`pump`](Self::pump) starts another).
    fn next_call(&self) -> Option<(usize, Vec<Waiter>, Vec<Command>, usize)> {
        let mut st = self.state.borrow_mut();
        let first = st
            .outboxes
            .iter()
            .enumerate()
            .filter_map(|(owner, o)| o.queued.front().map(|(waiter, _)| (waiter.seq(), owner)))
            .min();
        let call = first.and_then(|(seq, owner)| {
            let budget = st.room().call_budget(seq == st.first_seq)?;
            Some((owner, budget))
        });
        let Some((owner, budget)) = call else {
            st.calling = false;
            return None;
        };
        st.promised = budget;
        let (waiters, cmds) = st
            .outboxes
            .get_mut(owner)
            .map(|o| o.queued.drain(..).unzip())
            .unwrap_or_default();
        Some((owner, waiters, cmds, budget))
    }

    /// An answer came in for a command started earlier.
    fn deliver(self: &Rc<Self>, waiter: Waiter, reply: Reply) {
        let (seq, reply) = match waiter {
            Waiter::Whole(seq) => (seq, reply),
            Waiter::Part(gathering, part) => {
                let mut g = gathering.borrow_mut();
                if let Some(slot) = g.replies.get_mut(part) {
                    *slot = Some(reply);
                }
                g.left -= 1;
                if g.left > 0 {
                    return;
                }
                let replies = g.replies.iter_mut().filter_map(Option::take).collect();
                let Some(gather) = g.gather.take() else {
                    return;
                };
                (g.seq, gather.merge(replies))
            }
        };
        self.state.borrow_mut().in_flight -= 1;
        self.answer(seq, &reply);
        self.pump();
        self.flow();
    }

    /// Closes at once with `close` (a reset), dropping every answer not sent yet, as redis
    /// frees a client it refuses (an HTTP request, a request over the size limit:
    /// `abort_connection`), and as the transport closes a connection whose output passed its
    /// cap (`close_for_output`).
    fn refuse(&self, close: fn(&Transport)) {
        let mut st = self.state.borrow_mut();
        st.closing = true;
        st.slots.clear();
        st.held.clear();
        st.held_bytes = 0;
        if let Some(t) = &st.transport {
            close(t);
        }
    }

    /// Runs command `seq` on this shard's keys and answers it.
    fn answer_local(&self, seq: u64, cmd: Command) {
        self.answer_with(seq, |protocol, out| {
            self.shard.execute_into(cmd, protocol, out);
        });
    }

    /// Answers command `seq`.
    fn answer(&self, seq: u64, reply: &Reply) {
        self.answer_with(seq, |protocol, out| reply.encode_as(protocol, out));
    }

    /// Answers command `seq` with the bytes `encode` appends (it is always called): straight
    /// into the output when nothing before it waits, else into its slot.
    fn answer_with(&self, seq: u64, encode: impl FnOnce(RespVersion, &mut Vec<u8>)) {
        let mut st = self.state.borrow_mut();
        let protocol = st.protocol_of(seq);
        if st.first_seq == seq && st.slots.len() == 1 {
            match &st.transport {
                Some(t) => t.write_with(|out| encode(protocol, out)),
                None => encode(protocol, &mut Vec::new()),
            }
            st.slots.pop_front();
            st.first_seq += 1;
            drop(st);
            self.after_write();
            return;
        }
        drop(st);
        let mut bytes = Vec::new();
        encode(protocol, &mut bytes);
        self.fill(seq, Slot::Ready(bytes));
    }

    /// Fills command `seq`'s slot and writes every answer now ready in order.
    fn fill(&self, seq: u64, slot: Slot) {
        let mut st = self.state.borrow_mut();
        let Some(index) = seq
            .checked_sub(st.first_seq)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if let Slot::Ready(bytes) = &slot {
            st.held_bytes += bytes.len();
        }
        if let Some(s) = st.slots.get_mut(index) {
            *s = slot;
        }
        let Some(t) = st.transport.clone() else {
            return;
        };
        let (ready, bytes) = st
            .slots
            .iter()
            .map_while(|s| match s {
                Slot::Ready(b) => Some(b.len()),
                Slot::Pending(_) => None,
            })
            .fold((0, 0), |(n, sum), len| (n + 1, sum + len));
        st.held_bytes -= bytes;
        // Answers held back count as output: past the cap, the connection goes, as it would
        // had they been written.
        if st.held_bytes + t.buffered() > t.max_output() {
            drop(st);
            self.refuse(Transport::close_for_output);
            return;
        }
        t.write_with(|out| {
            for slot in st.slots.drain(..ready) {
                if let Slot::Ready(b) = slot {
                    out.extend_from_slice(&b);
                }
            }
        });
        st.first_seq += ready as u64;
        drop(st);
        self.after_write();
    }

    /// After answers went out: close if that was the last one a closing connection owed.
    fn after_write(&self) {
        let st = self.state.borrow();
        if (st.closing || st.draining)
            && st.slots.is_empty()
            && let Some(t) = &st.transport
        {
            t.lose_connection();
        }
    }

    /// Pauses reading while too many commands wait (resumes when half are answered), or
    /// while the commands received cannot start until the output drains (their answers would
    /// pass its high-water mark).
    fn flow(&self) {
        let mut st = self.state.borrow_mut();
        let waiting = st.slots.len();
        let Some(t) = st.transport.clone() else {
            return;
        };
        let too_many = waiting >= MAX_IN_FLIGHT || (st.paused && waiting > MAX_IN_FLIGHT / 2);
        let output_full = !st.held.is_empty() && !st.may_start_held();
        let pause = too_many || output_full;
        if pause == st.paused {
            return;
        }
        st.paused = pause;
        if pause {
            t.pause_reading();
        } else if !st.draining {
            t.resume_reading();
        }
    }
}

impl State {
    /// The answers against the output's high-water mark (no bound once the connection is
    /// gone: its answers are dropped).
    fn room(&self) -> Room {
        let (high_water, written, output_full) =
            self.transport.as_ref().map_or((usize::MAX, 0, false), |t| {
                (t.high_water(), t.buffered(), t.is_output_full())
            });
        Room {
            high_water,
            written,
            held: self.held_bytes,
            promised: self.promised,
            output_full,
        }
    }

    /// The first held command may start now, as far as the output goes.
    fn may_start_held(&self) -> bool {
        self.held
            .front()
            .is_some_and(|(seq, ..)| self.room().may_start(*seq == self.first_seq))
    }

    /// A new pending slot at the back; its sequence number.
    fn push_slot(&mut self) -> u64 {
        self.slots.push_back(Slot::Pending(self.session.protocol()));
        self.first_seq + self.slots.len() as u64 - 1
    }

    /// The slot of command `seq`, if it waits.
    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.slots.get_mut(index)
    }

    /// Command `seq` is answered in the protocol the connection speaks now.
    fn stamp(&mut self, seq: u64) {
        let protocol = self.session.protocol();
        if let Some(slot @ Slot::Pending(_)) = self.slot_mut(seq) {
            *slot = Slot::Pending(protocol);
        }
    }

    /// The protocol command `seq` is answered in.
    fn protocol_of(&mut self, seq: u64) -> RespVersion {
        match self.slot_mut(seq) {
            Some(Slot::Pending(p)) => *p,
            _ => self.session.protocol(),
        }
    }
}

/// `EXEC` of commands on keys of several shards, refused as Redis Cluster refuses keys of
/// several slots.
const CROSSSLOT: Reply = Reply::error("CROSSSLOT Keys in request don't hash to the same slot");

/// `EXEC` of a command on every shard's keys (`DBSIZE`, `FLUSHALL`, `FLUSHDB`, `KEYS`) with
/// more than one shard: it cannot be atomic.
const WHOLE_KEYSPACE_IN_MULTI: Reply = Reply::error(
    "CROSSSLOT DBSIZE, FLUSHALL, FLUSHDB and KEYS in a transaction need a server with one shard",
);

/// The answer when another shard could not run a command.
fn call_failed(e: &impl std::fmt::Display) -> Reply {
    Reply::err(format!("internal error: {e}"))
}

/// Runs a command of every shard (`DBSIZE`, `FLUSHALL`, `INFO`) and gathers its answer.
async fn everywhere(cmd: Command, port: u16, policy: EvictionPolicy) -> Reply {
    match cmd {
        Command::DbSize => match invoke_on_all(|s: &KvShard| s.len()).await {
            Ok(lens) => Reply::Integer(lens.iter().sum::<usize>() as i64),
            Err(e) => call_failed(&e),
        },
        Command::FlushAll => match invoke_on_all(|s: &KvShard| s.flush()).await {
            Ok(_) => Reply::OK,
            Err(e) => call_failed(&e),
        },
        Command::Keys(pattern) => {
            let keys = invoke_on_all(move |s: &KvShard| s.execute(Command::Keys(pattern.clone()))).await;
            match keys {
                Ok(replies) => Reply::Array(
                    replies
                        .into_iter()
                        .flat_map(|r| match r {
                            Reply::Array(keys) => keys,
                            _ => Vec::new(),
                        })
                        .collect(),
                ),
                Err(e) => call_failed(&e),
            }
        }
        Command::Client(ClientQuery::List { ids, none }) => {
            if none {
                return Reply::Verbatim(Vec::new());
            }
            match invoke_on_all(move |s: &KvShard| s.client_lines(&ids)).await {
                Ok(per_shard) => {
                    let mut lines: Vec<(u64, String)> = per_shard.into_iter().flatten().collect();
                    lines.sort_by_key(|(id, _)| *id);
                    let text: String = lines.into_iter().map(|(_, l)| l).collect();
                    Reply::Verbatim(text.into_bytes())
                }
                Err(e) => call_failed(&e),
            }
        }
        Command::Info(sections) => {
            let per_shard = match invoke_on_all(|s: &KvShard| s.figures()).await {
                Ok(p) => p,
                Err(e) => return call_failed(&e),
            };
            let mut total = KeyspaceStats::default();
            for f in &per_shard {
                total.add(&f.keyspace);
            }
            let sum = |field: fn(&ShardFigures) -> u64| per_shard.iter().map(field).sum::<u64>();
            let p = process();
            let proc_stats = ProcessStats::read();
            let server = ServerInfo {
                weft_version: env!("CARGO_PKG_VERSION").to_owned(),
                process_id: std::process::id(),
                run_id: p.run_id.clone(),
                tcp_port: port,
                server_time_usec: now_ms().saturating_mul(1000),
                uptime_secs: p.started.elapsed().as_secs(),
                hz: SWEEP_HZ,
                shards: per_shard.len(),
                executable: p.executable.clone(),
                connected_clients: sum(|f| f.active),
                total_connections_received: sum(|f| f.accepted),
                policy,
                total_commands_processed: sum(|f| f.commands),
                instantaneous_ops_per_sec: sum(|f| f.ops_per_sec),
                rejected_connections: sum(|f| f.rejected),
                total_net_input_bytes: sum(|f| f.bytes_in),
                total_net_output_bytes: sum(|f| f.bytes_out),
                used_memory_rss: proc_stats.resident_bytes.unwrap_or(0),
                maxmemory_per_shard: per_shard.first().map_or(0, |f| f.keyspace.maxmemory),
                used_memory_fullest_shard: per_shard
                    .iter()
                    .map(|f| f.keyspace.used_memory)
                    .max()
                    .unwrap_or(0),
                cpu_user_system: proc_stats.cpu_user_system.unwrap_or_default(),
                started_unix: (now_ms() / 1000).saturating_sub(p.started.elapsed().as_secs() as i64),
            };
            render(&sections, &server, &total)
        }
        _ => Reply::error("ERR not a command of every shard"),
    }
}

impl FrameHandler for Kv {
    type Decoder = RespDecoder;

    fn connection_made(&mut self, transport: &Transport) {
        let mut st = self.conn.state.borrow_mut();
        st.transport = Some(transport.clone());
        let (peer, local) = (transport.peer_addr(), transport.local_addr());
        st.session
            .connected(peer.to_string(), local.to_string(), now_ms());
        let id = st.session.id();
        self.conn
            .shard
            .clients
            .borrow_mut()
            .insert(id, Rc::downgrade(&self.conn));
    }

    fn frame_received(&mut self, request: Request, _transport: &Transport) {
        self.conn.shard.begin_read();
        self.conn.received(request);
    }

    fn read_decoded(&mut self, _decoder: &RespDecoder, _buffered: usize, _transport: &Transport) {
        self.conn.shard.end_read();
    }

    fn decode_failed(&mut self, error: RespError, _transport: &Transport) {
        // After QUIT (or a refusal) redis parses no further: nothing to answer.
        if self.conn.state.borrow().closing {
            return;
        }
        // Past the request limit: no answer (redis frees such a client at once).
        let Some(bytes) = error.reply() else {
            self.conn.refuse(Transport::abort_connection);
            return;
        };
        let seq = {
            let mut st = self.conn.state.borrow_mut();
            st.closing = true;
            st.push_slot()
        };
        self.conn.fill(seq, Slot::Ready(bytes));
    }

    fn read_connection_lost(&mut self, transport: &Transport) {
        // Answer what was received, then close.
        let mut st = self.conn.state.borrow_mut();
        st.closing = true;
        if st.slots.is_empty() {
            transport.lose_connection();
        }
    }

    fn drain_requested(&mut self, transport: &Transport) {
        let mut st = self.conn.state.borrow_mut();
        st.draining = true;
        transport.pause_reading();
        if st.slots.is_empty() {
            transport.lose_connection();
        }
    }

    fn output_drained(&mut self, _transport: &Transport) {
        // The commands waiting for room start, and the calls waiting for it go.
        self.conn.pump();
        self.conn.flow();
    }

    fn connection_lost(&mut self, _reason: &crate::proto::close::CloseReason) {
        self.conn.shard.end_read();
        let mut st = self.conn.state.borrow_mut();
        self.conn.shard.clients.borrow_mut().remove(&st.session.id());
        st.transport = None;
        st.held.clear();
    }
}
