//! The engine: starts one pinned glommio reactor per shard and stops them together.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::{GlommioError, LocalExecutorBuilder, Placement, ReactorErrorKind};

use super::listener_stop::{ListenerStop, Listeners};
use super::mesh::{Mesh, ShardHandle};
use super::port::bind_listeners;
use super::shard::{self, ListenerSpec, MakeState, ShardBoot, StartTask, StateFn, TaskFn};
use super::tls::ServerTls;
use crate::config::{Cores, EngineConfig, Layers, ListenerConfig, ReactorConfig};
use crate::error::{EngineError, IoUringError, ShardError, StopListeningError};
use crate::metrics::{self, MetricsHandle};
use crate::proto::accept::Spares;
use crate::proto::control::Command;
use crate::proto::protocol::{Factory, ShardInfo};
use crate::stats::StatsSnapshot;
use crate::sys;
use crate::sys::limits::Limit;

/// glommio refuses to start a reactor below this RLIMIT_MEMLOCK soft limit.
const MEMLOCK_NEEDED: u64 = 512 * 1024;

/// A running engine: one pinned glommio reactor per shard, each serving every listener with
/// that listener's own factory. Build one with [`Engine::builder`].
///
/// # Examples
///
/// ```no_run
/// use weft::{Engine, EngineConfig, protocols::Echo};
///
/// let engine = Engine::builder(EngineConfig::default())
///     .listen("127.0.0.1:7000".parse::<std::net::SocketAddr>()?, |_shard| Echo::factory())
///     .start()?;
/// println!("echo on {:?}", engine.local_addrs());
/// engine.shutdown();
/// let report = engine.join()?;
/// println!("served {} connections", report.total().accepted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    mesh: Arc<Mesh>,
    drain_timeout: Duration,
    control: EngineControl,
    shards: Vec<glommio::ExecutorJoinHandle<StatsSnapshot>>,
    cores: Vec<usize>,
    metrics: Option<MetricsHandle>,
    /// The metrics collector thread; it ends after the last shard.
    collector: Option<JoinHandle<()>>,
}

/// Sets up an [`Engine`]: its listeners, each with the factory that serves it, and the tasks
/// every shard runs. Made by [`Engine::builder`].
pub struct EngineBuilder {
    config: EngineConfig,
    listeners: Vec<ListenerSpec>,
    tasks: Vec<Arc<dyn StartTask>>,
    states: Vec<Arc<dyn MakeState>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .field("tasks", &self.tasks.len())
            .field("states", &self.states.len())
            .finish()
    }
}

impl EngineBuilder {
    /// Adds a listener: every shard listens on `listener`'s address (a `SocketAddr`, or a
    /// [`ListenerConfig`] with options such as the PROXY protocol) and serves its connections
    /// with the factory `make_factory` builds for that shard.
    ///
    /// `make_factory` runs once on each shard's own thread, after the shard is set up (so a
    /// factory may open client connections with [`connect_tcp`](crate::connect_tcp)): the
    /// factory need not be `Send`. Listeners may serve different protocol types.
    #[must_use]
    pub fn listen<F, M>(mut self, listener: impl Into<ListenerConfig>, make_factory: M) -> Self
    where
        F: Factory,
        M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
    {
        self.listeners
            .push(ListenerSpec::new(listener.into(), make_factory));
        self
    }

    /// Runs `task` on every shard once it is listening: `make_task` builds the task's future
    /// on the shard's own thread (it need not be `Send`) and may use [`shard`](crate::shard)'s
    /// functions and open client connections. A shard's shutdown waits for its task up to
    /// the drain timeout, then drops it. An engine with tasks and no listener stops by itself
    /// once every shard's task has ended and its connections have closed.
    #[must_use]
    pub fn on_each_shard<T, M>(mut self, make_task: M) -> Self
    where
        T: Future<Output = ()> + 'static,
        M: Fn(&ShardInfo) -> T + Send + Sync + 'static,
    {
        self.tasks.push(Arc::new(TaskFn(make_task)));
        self
    }

    /// Gives every shard a service state: `make_state` builds one `T` on each shard's own
    /// thread (it need not be `Send`), before the shard's factories and tasks. Code on the
    /// shard reaches it without locks with [`shard::state`](crate::shard::state); other
    /// shards run closures against it with [`shard::submit_to`](crate::shard::submit_to) and
    /// [`shard::invoke_on_all`](crate::shard::invoke_on_all) (Seastar's `sharded<T>`). Use
    /// one state type per call; several types may be added.
    #[must_use]
    pub fn shard_state<T, M>(mut self, make_state: M) -> Self
    where
        T: 'static,
        M: Fn(&ShardInfo) -> T + Send + Sync + 'static,
    {
        self.states.push(Arc::new(StateFn(make_state)));
        self
    }

    /// Changes the configuration the engine will start with.
    pub(crate) fn update_config(&mut self, change: impl FnOnce(&mut EngineConfig)) {
        change(&mut self.config);
    }

    /// Binds every listener on every selected core and starts serving. Returns once every
    /// shard is listening.
    ///
    /// # Errors
    ///
    /// [`EngineError::CannotListen`] naming the address, [`EngineError::AddressInUse`] where
    /// another socket listens already (see [`ListenerConfig::share_port`]),
    /// [`EngineError::NoListenAddress`]
    /// without listeners or tasks, [`EngineError::DuplicateListener`],
    /// [`EngineError::Cores`] for a core selection that does not fit,
    /// [`EngineError::MemLock`] or [`EngineError::IoUring`] when the reactor cannot start.
    pub fn start(self) -> Result<Engine, EngineError> {
        let Self {
            config,
            mut listeners,
            tasks,
            states,
        } = self;
        config.validate()?;
        for l in &listeners {
            l.config.validate()?;
        }
        for l in &mut listeners {
            if let Some(tls) = &l.config.tls {
                l.tls = Some(ServerTls {
                    config: tls.server_config().map_err(EngineError::Tls)?,
                    timeout: tls.handshake_timeout,
                });
            }
        }
        if listeners.is_empty() && tasks.is_empty() {
            return Err(EngineError::NoListenAddress);
        }
        for (i, l) in listeners.iter().enumerate() {
            let addr = l.config.addr;
            if addr.port() != 0 && listeners[..i].iter().any(|o| o.config.addr == addr) {
                return Err(EngineError::DuplicateListener(addr.into()));
            }
        }
        let cores = config.cores.resolve(&Cores::allowed())?;
        raise_limits()?;
        if !listeners.is_empty()
            && let Some(warning) = low_nofile_warning(
                sys::limits::raise_soft(Limit::NoFile).0,
                config.accept.max_conns_per_shard,
                cores.len(),
            )
        {
            tracing::warn!("{warning}");
        }
        let addrs: Vec<(SocketAddr, bool)> = listeners
            .iter()
            .map(|l| (l.config.addr, l.config.share_port))
            .collect();
        let bound = bind_listeners(
            &addrs,
            cores.len(),
            config.accept.backlog,
            config.accept.migrate_queued,
            config.inherited.take(),
        )?;
        match &bound.migrate_error {
            // Said once at start, at info level, unless the sysctl does the program's work.
            Some(e) if !sys_migrate_req() => tracing::info!(
                "crash migration is off: the connections queued on this process's listeners \
                 when it crashes or is killed are reset, not moved to another listener (the \
                 migrate program cannot be attached: {e}); to keep them, set sysctl \
                 net.ipv4.tcp_migrate_req=1, or grant CAP_BPF (systemd: \
                 AmbientCapabilities=CAP_BPF; root works too)"
            ),
            Some(e) => tracing::debug!(
                "the migrate program cannot be attached ({e}); net.ipv4.tcp_migrate_req=1 moves \
                 a closing listener's queue instead"
            ),
            None if config.accept.migrate_queued => {
                tracing::debug!("a closing listener's queue moves to the others (reuseport program)")
            }
            None => {}
        }
        let listener_fds: Vec<ListeningFd> = bound
            .per_shard
            .iter()
            .flatten()
            .map(|l| ListeningFd {
                listener: l.index,
                fd: l.socket.as_raw_fd(),
                layers: listeners
                    .get(l.index)
                    .map(|s| s.config.layers())
                    .unwrap_or_default(),
            })
            .collect();
        let shard_cores: Vec<(usize, usize)> = cores.iter().copied().enumerate().collect();
        let (metrics, collector, links) = if config.metrics.enabled {
            let c = metrics::start_collector(&shard_cores, config.metrics.queue_per_shard)
                .map_err(EngineError::Metrics)?;
            (Some(c.handle), Some(c.thread), c.links)
        } else {
            (None, None, Vec::new())
        };
        let mut links = links.into_iter();
        let mut ours = Vec::with_capacity(cores.len());
        let mut theirs = Vec::with_capacity(cores.len());
        for index in 0..cores.len() {
            let (a, b) = StdUnixStream::pair().map_err(|e| EngineError::Shard {
                shard: index,
                source: ShardError::Start(e),
            })?;
            ours.push(a);
            theirs.push(b);
        }
        let listening = Listeners::new(bound.addrs, cores.len());
        let control = EngineControl::new(ours, listener_fds, listening.clone());
        let (mesh, inboxes) = Mesh::new(cores.len(), config.call_queue).map_err(|e| EngineError::Shard {
            shard: 0,
            source: ShardError::Start(e),
        })?;
        let states: Arc<[Arc<dyn MakeState>]> = states.into();
        let config = Arc::new(config);
        let listeners: Arc<[ListenerSpec]> = listeners.into();
        let tasks: Arc<[Arc<dyn StartTask>]> = tasks.into();
        let (ready_tx, ready_rx) = mpsc::channel::<usize>();
        let mut engine = Engine {
            mesh: mesh.clone(),
            drain_timeout: config.drain_timeout,
            control,
            shards: Vec::new(),
            cores: cores.clone(),
            metrics,
            collector,
        };
        let count = cores.len();
        // One reserved descriptor per shard, shared: the descriptor table is the process's.
        let spares = config.accept.reserve_fd.then(|| Arc::new(Spares::new(count)));
        for (((index, (core, sockets)), control), inbox) in cores
            .iter()
            .copied()
            .zip(bound.per_shard)
            .enumerate()
            .zip(theirs)
            .zip(inboxes)
        {
            let boot = ShardBoot {
                info: ShardInfo {
                    index,
                    core,
                    shards: count,
                },
                sockets,
                listeners: listeners.clone(),
                tasks: tasks.clone(),
                states: states.clone(),
                mesh: mesh.clone(),
                inbox,
                control,
                listening: listening.clone(),
                config: config.clone(),
                spares: spares.clone(),
                ready: ready_tx.clone(),
                metrics: links.next(),
            };
            let name = format!("weft-shard-{index}");
            let spawned =
                executor_builder(&config.reactor, config.pin, &name, core).spawn(move || shard::run(boot));
            match spawned {
                Ok(handle) => engine.shards.push(handle),
                // Dropping `engine` stops the shards already running.
                Err(e) => return Err(reactor_error(index, e)),
            }
        }
        drop(ready_tx);
        for _ in 0..count {
            if ready_rx.recv().is_err() {
                // A shard died before it was ready: report the first failure.
                engine.shutdown();
                return Err(engine.first_failure());
            }
        }
        Ok(engine)
    }
}

/// Controls a running engine from any thread (a signal-handling thread, say): starts its
/// shutdown or abort, stops one of its listeners, hands its listeners to a successor process,
/// lends them while it still accepts, and fails its health checks ahead of a shutdown. Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct EngineControl {
    inner: Arc<Control>,
}

#[derive(Debug)]
struct Control {
    shards: Vec<StdUnixStream>,
    /// Every shard's listening descriptors, in shard order. Each stays open until a stop
    /// command names it, which is written under `state`'s lock.
    listeners: Vec<ListeningFd>,
    /// The listeners' addresses, and how many shards still accept on each.
    listening: Arc<Listeners>,
    /// Held while the listeners are lent and while a command is written.
    state: Mutex<State>,
    /// Set by [`EngineControl::fail_health`]: health checks fail while the engine still
    /// serves, so that balancers stop sending before the listeners close.
    unhealthy: AtomicBool,
}

/// A listening descriptor of one shard.
#[derive(Debug)]
struct ListeningFd {
    /// Its listener's index, in the order the listeners were added.
    listener: usize,
    fd: RawFd,
    /// What its listener puts before the protocol.
    layers: Layers,
}

/// What [`Control`]'s lock guards.
#[derive(Debug)]
struct State {
    /// True until a shutdown, abort or handoff starts.
    serving: bool,
    /// By listener: true once [`EngineControl::stop_listening`] stopped it; its descriptors
    /// are no longer lent, and the shards close them.
    stopped: Vec<bool>,
}

impl EngineControl {
    /// See [`Engine::shutdown`].
    pub fn shutdown(&self) {
        self.stop(Command::Drain);
    }

    /// See [`Engine::abort`].
    pub fn abort(&self) {
        self.stop(Command::Abort);
    }

    /// Stops accepting on one listener (`listener`, its index in the order the listeners
    /// were added, as in [`Engine::local_addrs`]) while the engine goes on serving: Twisted's
    /// `Port.stopListening()`. On every shard the listener serves the clients already queued
    /// on it, its sockets are shut down (from then on connects to its address are refused)
    /// and closed; its connections, its factory, the other listeners and the health check
    /// ([`is_serving`](Self::is_serving)) go on, and a later shutdown drains its connections
    /// with the others. A handoff no longer lends its sockets ([`with_listeners`](Self::with_listeners)):
    /// a successor that listens on its address binds a new socket.
    ///
    /// Returns once every shard has been told, with a [`ListenerStop`] that is done once
    /// every shard stopped accepting on it (about 200 ms at most after each shard gets to
    /// run): await it, or [`wait`](ListenerStop::wait) for it with a bound. Twisted's
    /// `stopListening` returns a `Deferred` the same way; unlike Twisted, the factory's
    /// [`stop`](crate::Factory::stop) still comes at the shard's end, after its connections.
    ///
    /// # Errors
    ///
    /// [`StopListeningError::UnknownListener`] for an index past the last listener,
    /// [`StopListeningError::AlreadyStopped`] for a listener stopped before,
    /// [`StopListeningError::EngineStopping`] once a shutdown, abort or handoff started.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use std::time::Duration;
    /// use weft::{Engine, EngineConfig, protocols::Echo};
    ///
    /// let engine = Engine::builder(EngineConfig::default())
    ///     .listen("127.0.0.1:7000".parse::<SocketAddr>()?, |_shard| Echo::factory())
    ///     .listen("127.0.0.1:7001".parse::<SocketAddr>()?, |_shard| Echo::factory())
    ///     .start()?;
    /// // Port 7000 refuses new connects from now on; its open connections and port 7001 go on.
    /// let stop = engine.control().stop_listening(0)?;
    /// assert!(stop.wait(Duration::from_secs(5)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop_listening(&self, listener: usize) -> Result<ListenerStop, StopListeningError> {
        let mut state = self.lock();
        let addrs = self.inner.listening.addrs();
        let Some(&addr) = addrs.get(listener) else {
            return Err(StopListeningError::UnknownListener {
                listener,
                listeners: addrs.len(),
            });
        };
        if !state.serving {
            return Err(StopListeningError::EngineStopping);
        }
        if std::mem::replace(&mut state.stopped[listener], true) {
            return Err(StopListeningError::AlreadyStopped(addr.into()));
        }
        // Under the lock: whoever borrowed the listener's descriptors has returned them, and
        // no one borrows them again, so the shards may close them.
        self.send(Command::StopListening(listener));
        Ok(ListenerStop::new(self.inner.listening.clone(), listener, addr))
    }

    /// Stops accepting without closing the listening sockets, for a successor process that
    /// now accepts on them (same accept queues: no client is refused), then drains like
    /// [`shutdown`](Self::shutdown). Each shard stops after the accept it has in flight, whose
    /// connection it serves. Once a shutdown or handoff started, a shutdown or handoff does
    /// nothing more; only [`abort`](Self::abort) cuts the drain short.
    pub fn hand_off(&self) {
        self.stop(Command::HandOff);
    }

    /// True until a shutdown, abort or handoff starts, or [`fail_health`](Self::fail_health):
    /// what a health check reports.
    pub fn is_serving(&self) -> bool {
        self.lock().serving && !self.inner.unhealthy.load(Ordering::Relaxed)
    }

    /// Makes health checks fail from now on while the engine goes on serving: the first step
    /// of a graceful stop behind a balancer, which then stops sending new connections before
    /// [`shutdown`](Self::shutdown) closes the listeners.
    pub fn fail_health(&self) {
        self.inner.unhealthy.store(true, Ordering::Relaxed);
    }

    /// Runs `f` with every shard's listening sockets (shard by shard, each shard's in
    /// listener order), each with what its listener puts before the protocol; they stay open
    /// until `f` returns: to pass them to a successor process. A listener stopped by
    /// [`stop_listening`](Self::stop_listening) is left out. `None`, without calling `f`,
    /// once the engine is stopping.
    pub fn with_listeners<R>(&self, f: impl FnOnce(&[(BorrowedFd<'_>, Layers)]) -> R) -> Option<R> {
        let state = self.lock();
        if !state.serving {
            return None;
        }
        // The shards close a listener only after a stop command names it, which waits for
        // the lock held here: each one lent stays open while `state` is borrowed.
        let fds: Vec<(BorrowedFd<'_>, Layers)> = self
            .inner
            .listeners
            .iter()
            .filter(|l| !state.stopped[l.listener])
            .map(|l| (sys::fd::borrow_raw(&*state, l.fd), l.layers))
            .collect();
        Some(f(&fds))
    }

    fn new(shards: Vec<StdUnixStream>, listeners: Vec<ListeningFd>, listening: Arc<Listeners>) -> Self {
        let state = State {
            serving: true,
            stopped: vec![false; listening.addrs().len()],
        };
        Self {
            inner: Arc::new(Control {
                shards,
                listeners,
                listening,
                state: Mutex::new(state),
                unhealthy: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a stop; once one started, only an abort is told to the shards (a draining
    /// shard takes any further command as an abort: a second shutdown must not cut its
    /// drain short).
    fn stop(&self, cmd: Command) {
        let mut state = self.lock();
        if state.serving || cmd == Command::Abort {
            self.send(cmd);
        }
        state.serving = false;
    }

    /// Writes `cmd` to every shard; the caller holds the lock, so commands never interleave.
    fn send(&self, cmd: Command) {
        let (bytes, len) = cmd.encode();
        for mut c in self.inner.shards.iter() {
            // A shard that already stopped has closed its end; nothing to tell it.
            let _ = c.write_all(&bytes[..len]);
        }
    }
}

/// What an engine reports when it has stopped.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EngineReport {
    /// Final counters of each shard, by shard index.
    pub shards: Vec<StatsSnapshot>,
}

impl EngineReport {
    /// The counters of all shards added up.
    pub fn total(&self) -> StatsSnapshot {
        StatsSnapshot::sum(&self.shards)
    }
}

impl Engine {
    /// Starts setting up an engine that runs with `config`; add listeners (and tasks) to the
    /// builder, then [`start`](EngineBuilder::start) it.
    pub fn builder(config: EngineConfig) -> EngineBuilder {
        EngineBuilder {
            config,
            listeners: Vec::new(),
            tasks: Vec::new(),
            states: Vec::new(),
        }
    }

    /// The bound listen addresses, in listener order (a stopped listener's too), with port 0
    /// resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.control.inner.listening.addrs()
    }

    /// How long a shutdown lets open connections finish.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// The cores the shards run on, by shard index.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// Starts a graceful shutdown: every listener closes at once, open connections get the
    /// drain timeout to finish, then the rest are aborted. Idempotent; returns at once.
    pub fn shutdown(&self) {
        self.control.shutdown();
    }

    /// Aborts every open connection now (a second Ctrl-C).
    pub fn abort(&self) {
        self.control.abort();
    }

    /// Stops accepting on the listener of index `listener` while everything else goes on
    /// (Twisted's `Port.stopListening()`); see [`EngineControl::stop_listening`].
    ///
    /// # Errors
    ///
    /// See [`EngineControl::stop_listening`].
    pub fn stop_listening(&self, listener: usize) -> Result<ListenerStop, StopListeningError> {
        self.control.stop_listening(listener)
    }

    /// A handle that runs closures on the shards' states from any thread (see
    /// [`ShardHandle::call`]).
    pub fn shards(&self) -> ShardHandle {
        ShardHandle::new(self.mesh.clone())
    }

    /// A handle that controls the engine from another thread.
    pub fn control(&self) -> EngineControl {
        self.control.clone()
    }

    /// A handle that reads the merged metrics of every shard from any thread, also after the
    /// engine stopped; `None` when [`MetricsConfig::enabled`](crate::MetricsConfig::enabled)
    /// is off.
    pub fn metrics(&self) -> Option<MetricsHandle> {
        self.metrics.clone()
    }

    /// Waits for every shard to stop (after [`shutdown`](Self::shutdown), or by itself for an
    /// engine of tasks only) and returns their counters. With metrics on, it also waits until
    /// the collector has taken the shards' final reports, so that [`metrics`](Self::metrics)
    /// shows the final counters unless a final report was dropped.
    ///
    /// # Errors
    ///
    /// The first shard that failed.
    ///
    /// A shard that fails (a panic outside the protocol callbacks, which are caught per
    /// connection) shuts the others down, so that the process does not serve on with fewer
    /// shards; the collector thread, which may then never hear from that shard again, is left
    /// behind instead of waited for.
    pub fn join(mut self) -> Result<EngineReport, EngineError> {
        /// How often the shards are looked at while none has ended.
        const WATCH: Duration = Duration::from_millis(20);
        let mut stats = vec![None; self.shards.len()];
        let mut failure = None;
        let mut running: Vec<_> = std::mem::take(&mut self.shards).into_iter().enumerate().collect();
        while !running.is_empty() {
            let Some(i) = running.iter().position(|(_, h)| h.is_finished()) else {
                std::thread::sleep(WATCH);
                continue;
            };
            let (index, handle) = running.swap_remove(i);
            match handle.join() {
                Ok(s) => stats[index] = Some(s),
                Err(e) => {
                    if failure.is_none() {
                        let e = reactor_error(index, e);
                        tracing::error!("{e}: stopping the other shards");
                        self.control.shutdown();
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(collector) = self.collector.take()
            && failure.is_none()
        {
            // The collector ends once the last shard dropped its link; it cannot panic.
            let _ = collector.join();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(EngineReport {
                shards: stats.into_iter().flatten().collect(),
            }),
        }
    }

    fn first_failure(&mut self) -> EngineError {
        let mut first = None;
        for (index, handle) in std::mem::take(&mut self.shards).into_iter().enumerate() {
            if let Err(e) = handle.join() {
                first.get_or_insert(reactor_error(index, e));
            }
        }
        first.unwrap_or(EngineError::Shard {
            shard: 0,
            source: ShardError::StoppedEarly,
        })
    }
}

impl Drop for Engine {
    /// Dropping a running engine shuts it down and waits for its shards.
    fn drop(&mut self) {
        if self.shards.is_empty() {
            return;
        }
        self.shutdown();
        for handle in std::mem::take(&mut self.shards) {
            let _ = handle.join();
        }
    }
}

/// A reactor thread named `name` on `core` (pinned to it when `pin`); the engine's shards and
/// the load generator's cores start the same way.
pub(crate) fn executor_builder(
    r: &ReactorConfig,
    pin: bool,
    name: &str,
    core: usize,
) -> LocalExecutorBuilder {
    let placement = if pin {
        Placement::Fixed(core)
    } else {
        Placement::Unbound
    };
    let mut b = LocalExecutorBuilder::new(placement)
        .name(name)
        .ring_depth(r.ring_depth)
        .io_memory(r.io_memory.max(64 * 1024))
        .preempt_timer(r.preempt_timer)
        .ring_setup(r.ring.into());
    if let Some(spin) = r.spin_before_park {
        b = b.spin_before_park(spin);
    }
    b
}

/// The oldest kernel glommio's reactor runs on.
const KERNEL_NEEDED: (u32, u32) = (5, 8);

/// Fails with a clear message where glommio would panic: a kernel without io_uring, older
/// than 5.8, or with io_uring disabled for this process (sysctl, seccomp).
fn check_io_uring() -> Result<(), IoUringError> {
    let release = kernel_release();
    if !kernel_at_least(&release, KERNEL_NEEDED) {
        return Err(IoUringError::KernelTooOld { release });
    }
    // The probe runs on a thread of its own: tearing a ring down queues kernel task work on
    // the thread that made it, which would interrupt that thread's next blocking system call
    // (EINTR) if it were the caller's.
    let setup = |source| IoUringError::Setup { shard: 0, source };
    let probe = std::thread::Builder::new()
        .name("weft-io-uring-probe".into())
        .spawn(sys::uring::probe)
        .map_err(setup)?;
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(refusal(e, io_uring_disabled(), seccomp_filtered())),
        Err(_) => Err(setup(std::io::Error::other("the io_uring probe thread panicked"))),
    }
}

/// Why `io_uring_setup` failed with `e`, given the `kernel.io_uring_disabled` sysctl (absent
/// on kernels before 6.6) and whether a seccomp filter is in place. A filter runs before the
/// kernel looks at the sysctl; with both, the sysctl is named, since a filter that allowed
/// io_uring would still meet it.
fn refusal(e: std::io::Error, io_uring_disabled: Option<u32>, seccomp_filtered: bool) -> IoUringError {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => match io_uring_disabled {
            Some(value @ 1..) => IoUringError::DisabledBySysctl { value },
            _ if seccomp_filtered => IoUringError::Seccomp(e),
            _ => IoUringError::Disabled(e),
        },
        // Some profiles answer ENOSYS, as the kernel without io_uring does.
        Some(libc::ENOSYS) if seccomp_filtered => IoUringError::Seccomp(e),
        Some(libc::ENOSYS) => IoUringError::Unsupported,
        _ => IoUringError::Setup { shard: 0, source: e },
    }
}

/// The `kernel.io_uring_disabled` sysctl, where the kernel has it.
fn io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Whether this process runs under a seccomp filter (`Seccomp: 2` in /proc/self/status).
fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.strip_prefix("Seccomp:").is_some_and(|v| v.trim() == "2"))
    })
}

/// The running kernel's release string (`6.1.0-18-amd64`).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// True when `release` (`6.1.0-18-amd64`) is at least `major.minor`; an unreadable release
/// passes, and the io_uring probe decides.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

/// Checks that io_uring can run here, then raises the soft RLIMIT_MEMLOCK (io_uring) and
/// RLIMIT_NOFILE (connections) to their hard limits, which needs no privilege.
/// Whether `net.ipv4.tcp_migrate_req` is on: the kernel then moves a closing listener's
/// queue itself, without the migrate program.
fn sys_migrate_req() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// Descriptors a shard holds besides its connections (its rings, eventfds, timers,
/// listeners, the reserved descriptor), with room to spare.
const FDS_PER_SHARD: u64 = 16;
/// Descriptors the process holds besides its shards (standard streams, signal pipes, the
/// health check, the exporter, log files), with room to spare.
const FDS_BASE: u64 = 64;
/// A descriptor limit below this is low for a server whatever its cap: 1024 is the soft
/// limit most distributions start a process with.
const LOW_NOFILE: u64 = 1024;

/// The warning for a descriptor limit (`nofile`, already raised to its hard limit) too low
/// for `shards` shards with a cap of `max_conns` each (or, without a cap, below
/// [`LOW_NOFILE`]); `None` if it is not low. Past it, accepts fail with EMFILE and queued
/// connections are closed.
fn low_nofile_warning(nofile: u64, max_conns: Option<usize>, shards: usize) -> Option<String> {
    let shards = shards as u64;
    let (need, for_what) = match max_conns {
        Some(cap) => (
            (cap as u64).saturating_mul(shards) + FDS_PER_SHARD * shards + FDS_BASE,
            format!("{cap} connections per shard on {shards} shard(s) need about"),
        ),
        None => (LOW_NOFILE, "a server should have at least".to_owned()),
    };
    (nofile != 0 && nofile < need).then(|| {
        format!(
            "the descriptor limit is {nofile} (RLIMIT_NOFILE, raised to its hard limit), and \
             {for_what} {need}: past it, new connections are closed at once (EMFILE); raise it \
             (systemd LimitNOFILE=, ulimit -n, docker --ulimit nofile=)"
        )
    })
}

pub(crate) fn raise_limits() -> Result<(), EngineError> {
    // The limit first: without CAP_IPC_LOCK the probe's ring is charged to it, and a limit too
    // low makes the probe fail with a bare ENOMEM.
    let (soft, hard) = sys::limits::raise_soft(Limit::MemLock);
    if soft < MEMLOCK_NEEDED {
        return Err(EngineError::MemLock {
            soft,
            hard,
            need: MEMLOCK_NEEDED,
        });
    }
    check_io_uring().map_err(EngineError::IoUring)?;
    sys::limits::raise_soft(Limit::NoFile);
    Ok(())
}

/// Classifies a glommio executor failure by its kind: too little locked memory, a ring
/// that could not be set up, or a shard that failed otherwise.
pub(crate) fn reactor_error(shard: usize, e: GlommioError<()>) -> EngineError {
    match e {
        GlommioError::ReactorError(ReactorErrorKind::MemLockLimit(..)) => {
            let (soft, hard) = sys::limits::raise_soft(Limit::MemLock);
            EngineError::MemLock {
                soft,
                hard,
                need: MEMLOCK_NEEDED,
            }
        }
        GlommioError::IoError(source) => EngineError::IoUring(IoUringError::Setup { shard, source }),
        other => EngineError::Shard {
            shard,
            source: ShardError::Failed(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_descriptor_limit_is_warned_about() {
        assert!(low_nofile_warning(1 << 20, None, 2).is_none());
        assert!(
            low_nofile_warning(0, None, 2).is_none(),
            "unreadable: not checked"
        );
        let low = low_nofile_warning(40, None, 1).unwrap();
        assert!(low.contains("is 40") && low.contains("LimitNOFILE="), "{low}");
        // 1000 per shard on 2 shards: 2000 + 2 * 16 + 64.
        let capped = low_nofile_warning(2048, Some(1000), 2).unwrap();
        assert!(capped.contains("need about 2096"), "{capped}");
        assert!(low_nofile_warning(2096, Some(1000), 2).is_none());
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v657", (5, 8)));
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(!kernel_at_least("5.4.0-150-generic", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(kernel_at_least("", (5, 8)), "unknown: let the probe decide");
    }

    #[test]
    fn refusals_name_their_cause_and_the_fix() {
        let err = |errno| std::io::Error::from_raw_os_error(errno);
        let text = |e: IoUringError| EngineError::IoUring(e).to_string();
        // kernel.io_uring_disabled, simulated: tests never change the host's sysctls.
        let sysctl2 = text(refusal(err(libc::EPERM), Some(2), false));
        assert_eq!(
            sysctl2,
            "cannot start an io_uring reactor: io_uring is disabled by the sysctl \
             kernel.io_uring_disabled=2: set it to 0 (sysctl -w kernel.io_uring_disabled=0)"
        );
        let sysctl1 = text(refusal(err(libc::EPERM), Some(1), true));
        assert!(sysctl1.contains("io_uring_disabled=1") && sysctl1.contains("kernel.io_uring_group"));
        for errno in [libc::EPERM, libc::EACCES, libc::ENOSYS] {
            let seccomp = text(refusal(err(errno), Some(0), true));
            assert!(
                seccomp.contains("seccomp filter blocks io_uring")
                    && seccomp.contains("deploy/seccomp-weft.json"),
                "{seccomp}"
            );
            let old_kernel = text(refusal(err(errno), None, true));
            assert_eq!(seccomp, old_kernel, "no sysctl before Linux 6.6");
        }
        assert!(matches!(
            refusal(err(libc::ENOSYS), None, false),
            IoUringError::Unsupported
        ));
        assert!(text(refusal(err(libc::EPERM), Some(0), false)).contains("security modules"));
        assert!(matches!(
            refusal(err(libc::ENOMEM), Some(0), true),
            IoUringError::Setup { shard: 0, .. }
        ));
        for e in [
            refusal(err(libc::EPERM), Some(2), false),
            refusal(err(libc::EPERM), Some(0), true),
            refusal(err(libc::EPERM), Some(0), false),
            IoUringError::Unsupported,
            IoUringError::KernelTooOld {
                release: "5.4.0".into(),
            },
        ] {
            assert_eq!(text(e).lines().count(), 1);
        }
    }

    #[test]
    fn io_uring_is_available_here() {
        check_io_uring().expect("the test machines run io_uring");
    }
}
