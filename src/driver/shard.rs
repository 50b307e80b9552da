//! One shard: its ports, its connections, its factory, and its part of the shutdown.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, UnixStream};
use slab::Slab;

use super::digest::Digest;
use super::listener_stop::{Listeners, ShardListening};
use super::mesh::{Calls, InboxRx, Mesh, serve_inbox};
use super::monitor::Monitor;
use super::port::{Listener, Port};
use super::reservation::FdReservation;
use super::tasks::Tasks;
use super::tls::ServerTls;
use crate::config::{AcceptConfig, ConnectionConfig, EngineConfig, ListenerConfig};
use crate::metrics::{self, ShardLink};
use crate::proto::accept::{NullReservation, Reservation, Spares};
use crate::proto::close::CloseReason;
use crate::proto::control::{self, Command};
use crate::proto::drain::{self, Leg};
use crate::proto::protocol::{Factory, ShardInfo};
use crate::proto::proxy::ProxyConfig;
use crate::proto::transport::Transport;
use crate::stats::{ShardStats, StatsSnapshot};
use crate::sys;

/// How often a draining shard checks whether its connections are gone.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// How long a closed port's accept in flight gets to report back before it is cancelled.
const PORT_GRACE: Duration = Duration::from_millis(200);
/// How long aborted connections get to run their `connection_lost`.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// State shared by everything on one shard. Never leaves its thread.
pub(crate) struct ShardCtx {
    pub(crate) info: ShardInfo,
    pub(crate) config: ConnectionConfig,
    /// The one read buffer of the shard: a connection reads into it and hands the bytes to
    /// its protocol before any other connection runs, so idle connections hold none.
    pub(crate) read_buf: RefCell<Box<[u8]>>,
    /// Connections receive into the ring's provided buffers ([`ReactorConfig::recv_buffers`]).
    ///
    /// [`ReactorConfig::recv_buffers`]: crate::config::ReactorConfig::recv_buffers
    pub(crate) provided: bool,
    /// Connections send through the ring ([`ReactorConfig::ring_sends`]).
    ///
    /// [`ReactorConfig::ring_sends`]: crate::config::ReactorConfig::ring_sends
    pub(crate) ring_sends: bool,
    pub(crate) stats: ShardStats,
    /// Live connections.
    pub(crate) conns: RefCell<Slab<Transport>>,
    /// Accepted connections still in their PROXY header or TLS handshake (not yet in
    /// `conns`).
    pub(crate) handshakes: Cell<usize>,
    /// Connections refused for overload whose answer is being read (see `shed`).
    pub(crate) lingering: Cell<usize>,
    /// Failed TLS handshakes, logged at most once a second.
    pub(crate) tls_failures: RefCell<Digest>,
    /// Connections reset because their queued output passed its cap, logged at most once a
    /// second.
    pub(crate) output_resets: RefCell<Digest>,
    /// Connections reset because their peer read nothing for the write-stall timeout,
    /// logged at most once a second.
    pub(crate) stall_resets: RefCell<Digest>,
    /// Ports still accepting (during a shutdown's grace period for the queued connections).
    pub(crate) accepting: Cell<usize>,
    pub(crate) draining: Cell<bool>,
    /// Where the shard stands at the engine's drain barrier.
    leg: Cell<Leg>,
    /// The barrier passed, or the drain timeout is near: connections that follow the drain
    /// are told too.
    followers_released: Cell<bool>,
    /// Tasks spawned on the shard, which its drain waits for.
    pub(crate) tasks: Rc<Tasks>,
    /// The inboxes of every shard, for cross-shard calls (none on a bare executor).
    pub(crate) mesh: Option<Arc<Mesh>>,
    /// Calls this shard made and awaits.
    pub(crate) calls: Calls,
    /// Per-shard service state, one value per type.
    states: RefCell<Vec<Rc<dyn Any>>>,
    /// Woken when the drain begins: one slot per waiting future, which frees it when dropped.
    pub(crate) drain_waiters: RefCell<Slab<Waker>>,
    /// An engine's shard, not the context of a bare executor's client connections.
    engine: bool,
}

thread_local! {
    /// The shard context of the executor on this thread: installed by [`run`] for an engine
    /// shard, or made on first use by client code on a bare executor.
    static CURRENT: RefCell<Option<Rc<ShardCtx>>> = const { RefCell::new(None) };
}

impl ShardCtx {
    /// The shard's counters now, with its live connections.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot(self.conns.borrow().len());
        s.calls_queued = self.mesh.as_ref().map_or(0, |m| m.queued(self.info.index)) as u64;
        s
    }

    /// This shard's state of type `T`, if the engine built one.
    pub(crate) fn state<T: 'static>(&self) -> Option<Rc<T>> {
        let states = self.states.borrow();
        let any = states.iter().find(|s| (***s).type_id() == TypeId::of::<T>())?;
        any.clone().downcast::<T>().ok()
    }

    /// Marks the start of the shard's drain and tells whoever waits for it.
    fn begin_drain(&self) {
        self.draining.set(true);
        let waiters: Vec<Waker> = self.drain_waiters.borrow_mut().drain().collect();
        for w in waiters {
            w.wake();
        }
    }

    /// True when connection `t` is to be told that the shard drains: it is draining, and `t`
    /// does not follow the drain or its followers were released.
    #[inline]
    pub(crate) fn drains(&self, t: &Transport) -> bool {
        self.draining.get() && (self.followers_released.get() || !t.follows_drain())
    }

    /// True while the shard has work its drain waits for.
    fn busy(&self) -> bool {
        !self.conns.borrow().is_empty()
            || self.handshakes.get() > 0
            || self.accepting.get() > 0
            || self.tasks.running() > 0
            || self.calls.in_flight() > 0
    }

    /// True while the shard has work other than its followers (the connections that follow
    /// the drain and their tasks): what holds the engine's drain barrier. A connection that
    /// is closing (it reads no more, and its protocol gets no more data) does not. It walks
    /// the connections and tasks up to the first that leads.
    fn leading(&self) -> bool {
        self.handshakes.get() > 0
            || self.accepting.get() > 0
            || self.calls.in_flight() > 0
            || self
                .conns
                .borrow()
                .iter()
                .any(|(_, t)| !t.follows_drain() && t.is_connected())
            || self.tasks.leading()
    }

    /// Work that holds the drain barrier started on a draining shard (a task, a cross-shard
    /// call): a shard that was done with its leaders leads again, unless the barrier passed.
    pub(crate) fn lead_again(&self) {
        if let Some(mesh) = self.mesh.as_ref().filter(|_| self.draining.get()) {
            self.leg.set(mesh.barrier.report(self.leg.get(), true));
        }
    }

    /// Reports the shard's leader work to the drain barrier, and releases the followers once
    /// it passed, or at `release` whatever the other shards.
    fn follow_barrier(&self, release: Instant) {
        if self.followers_released.get() {
            return;
        }
        let passed = self.mesh.as_ref().is_none_or(|mesh| {
            self.leg.set(mesh.barrier.report(self.leg.get(), self.leading()));
            mesh.barrier.passed()
        });
        if passed || Instant::now() >= release {
            self.followers_released.set(true);
            for (_, t) in self.conns.borrow().iter().filter(|(_, t)| t.follows_drain()) {
                t.wake();
            }
        }
    }

    /// The shard stops: it no longer holds the drain barrier. Once is enough; again does
    /// nothing.
    fn leave_barrier(&self) {
        if let Some(mesh) = &self.mesh {
            self.leg.set(mesh.barrier.leave(self.leg.get()));
        }
    }

    fn new(info: ShardInfo, config: ConnectionConfig) -> Self {
        Self {
            info,
            read_buf: RefCell::new(vec![0u8; config.read_size.max(1)].into_boxed_slice()),
            provided: false,
            ring_sends: false,
            config,
            stats: ShardStats::default(),
            conns: RefCell::new(Slab::new()),
            handshakes: Cell::new(0),
            lingering: Cell::new(0),
            tls_failures: RefCell::default(),
            output_resets: RefCell::default(),
            stall_resets: RefCell::default(),
            accepting: Cell::new(0),
            draining: Cell::new(false),
            leg: Cell::new(Leg::Leading),
            followers_released: Cell::new(false),
            tasks: Rc::new(Tasks::default()),
            mesh: None,
            calls: Calls::default(),
            states: RefCell::new(Vec::new()),
            drain_waiters: RefCell::new(Slab::new()),
            engine: false,
        }
    }

    /// The context of this thread's executor: its engine shard's, or, on an executor that
    /// no engine runs, one made now with the default [`ConnectionConfig`] (shard 0 of 1).
    pub(crate) fn current() -> Rc<Self> {
        CURRENT.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| {
                    let info = ShardInfo {
                        index: 0,
                        core: sys::process::current_cpu().unwrap_or(0),
                        shards: 1,
                    };
                    Rc::new(Self::new(info, ConnectionConfig::default()))
                })
                .clone()
        })
    }

    /// The context of this thread's engine shard, if it runs one.
    pub(crate) fn installed() -> Option<Rc<Self>> {
        CURRENT.with(|c| c.borrow().clone()).filter(|s| s.engine)
    }

    fn install(ctx: Option<Rc<Self>>) {
        CURRENT.with(|c| *c.borrow_mut() = ctx);
    }
}

/// One listener of the engine: its options, and how each shard builds the factory that
/// serves it and starts its ports (erased over the factory's type).
pub(crate) struct ListenerSpec {
    pub(crate) config: ListenerConfig,
    /// The TLS sessions' configuration, built once at the engine's start.
    pub(crate) tls: Option<ServerTls>,
    open: Box<dyn OpenPorts>,
}

impl std::fmt::Debug for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSpec")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ListenerSpec {
    pub(crate) fn new<F, M>(config: ListenerConfig, make_factory: M) -> Self
    where
        F: Factory,
        M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
    {
        Self {
            config,
            tls: None,
            open: Box::new(MakeFactory(make_factory)),
        }
    }
}

/// Builds a listener's factory on a shard and starts its ports there.
trait OpenPorts: Send + Sync {
    fn open(&self, boot: PortBoot) -> Box<dyn ShardPorts>;
}

/// A closure that builds a factory for each shard.
struct MakeFactory<M>(M);

impl<F, M> OpenPorts for MakeFactory<M>
where
    F: Factory,
    M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
{
    fn open(&self, boot: PortBoot) -> Box<dyn ShardPorts> {
        let mut factory = (self.0)(&boot.shard.info);
        factory.start(&boot.shard.info);
        let factory = Rc::new(RefCell::new(factory));
        let mut ports = Vec::new();
        for Listener { socket, local, .. } in boot.sockets {
            let fd = socket.as_raw_fd();
            // A bound, listening, non-blocking socket whose ownership moves here; glommio
            // needs it adopted inside this executor.
            let listener: TcpListener = sys::fd::adopt(OwnedFd::from(socket));
            let port = Rc::new(Port {
                listener,
                fd,
                local,
                shard: boot.shard.clone(),
                factory: factory.clone(),
                reservation: boot.reservation.clone(),
                config: boot.accept.clone(),
                proxy: boot.proxy.clone(),
                tls: boot.tls.clone(),
                closed: Cell::new(false),
                accepting: Cell::new(0),
            });
            let task = glommio::spawn_local(port.clone().run());
            ports.push((port, task));
        }
        Box::new(FactoryPorts { factory, ports })
    }
}

/// What a shard hands a listener to start its ports with.
struct PortBoot {
    shard: Rc<ShardCtx>,
    sockets: Vec<Listener>,
    reservation: Rc<RefCell<dyn Reservation<OwnedFd>>>,
    accept: AcceptConfig,
    proxy: Option<Rc<ProxyConfig>>,
    tls: Option<Rc<ServerTls>>,
}

/// One listener's ports on one shard, whatever its factory type.
trait ShardPorts {
    /// Stops accepting: serves the connections already queued, then shuts the listening
    /// sockets down (see [`Port::close`]).
    fn close(&self);
    /// True while an accept loop runs.
    fn accepting(&self) -> bool;
    /// Drops the accept loops (after their grace period), and with them the listening
    /// sockets, unless a successor holds them too.
    fn cancel(&mut self);
    /// Tells the factory the shard's drain began.
    fn drain_started(&self);
    /// Tells the factory the shard stopped.
    fn stop(&self);
}

struct FactoryPorts<F: Factory> {
    factory: Rc<RefCell<F>>,
    ports: Vec<(Rc<Port<F>>, glommio::Task<()>)>,
}

impl<F: Factory> ShardPorts for FactoryPorts<F> {
    fn close(&self) {
        for (port, _) in &self.ports {
            port.close();
        }
    }

    fn accepting(&self) -> bool {
        self.ports.iter().any(|(port, _)| port.accepting.get() > 0)
    }

    fn cancel(&mut self) {
        self.ports.clear();
    }

    fn drain_started(&self) {
        self.factory.borrow_mut().drain_started();
    }

    fn stop(&self) {
        self.factory.borrow_mut().stop();
    }
}

/// A task every shard runs (see [`EngineBuilder::on_each_shard`](crate::EngineBuilder)).
pub(crate) trait StartTask: Send + Sync {
    fn start(&self, info: &ShardInfo) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// A closure that builds a shard's task.
pub(crate) struct TaskFn<M>(pub(crate) M);

impl<T, M> StartTask for TaskFn<M>
where
    T: Future<Output = ()> + 'static,
    M: Fn(&ShardInfo) -> T + Send + Sync + 'static,
{
    fn start(&self, info: &ShardInfo) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin((self.0)(info))
    }
}

/// Builds one shard's service state (see [`EngineBuilder::shard_state`](crate::EngineBuilder)).
pub(crate) trait MakeState: Send + Sync {
    fn make(&self, info: &ShardInfo) -> Rc<dyn Any>;
}

/// A closure that builds a shard's state.
pub(crate) struct StateFn<M>(pub(crate) M);

impl<T, M> MakeState for StateFn<M>
where
    T: 'static,
    M: Fn(&ShardInfo) -> T + Send + Sync + 'static,
{
    fn make(&self, info: &ShardInfo) -> Rc<dyn Any> {
        Rc::new((self.0)(info))
    }
}

/// What a shard thread starts from.
pub(crate) struct ShardBoot {
    pub(crate) info: ShardInfo,
    /// This shard's listening sockets; each names its listener by index.
    pub(crate) sockets: Vec<Listener>,
    pub(crate) listeners: Arc<[ListenerSpec]>,
    pub(crate) tasks: Arc<[Arc<dyn StartTask>]>,
    pub(crate) states: Arc<[Arc<dyn MakeState>]>,
    pub(crate) mesh: Arc<Mesh>,
    pub(crate) inbox: InboxRx,
    pub(crate) control: StdUnixStream,
    /// The engine's listeners, counted down as this shard stops accepting on each.
    pub(crate) listening: Arc<Listeners>,
    pub(crate) config: Arc<EngineConfig>,
    /// The engine's reserved descriptors, one per shard (`None` without
    /// [`AcceptConfig::reserve_fd`](crate::config::AcceptConfig::reserve_fd)).
    pub(crate) spares: Option<Arc<Spares<OwnedFd>>>,
    /// Told the shard's index once its ports accept and its reserved descriptor is held.
    pub(crate) ready: std::sync::mpsc::Sender<usize>,
    /// The link to the metrics collector, when metrics are on.
    pub(crate) metrics: Option<ShardLink>,
}

/// The most provided buffers a ring takes.
const MAX_RECV_BUFFERS: u16 = 1 << 15;

/// Registers the shard's receive buffers with its ring; false (reads fall back to a `recv`
/// per read) where they are off or the kernel has none.
fn enable_provided_buffers(config: &crate::config::ReactorConfig, shard: usize) -> bool {
    if config.recv_buffers == 0 {
        return false;
    }
    let count = config
        .recv_buffers
        .checked_next_power_of_two()
        .unwrap_or(MAX_RECV_BUFFERS);
    let size = u32::try_from(config.recv_buffer_size.max(1)).unwrap_or(u32::MAX);
    match glommio::net::enable_provided_buffers(count.min(MAX_RECV_BUFFERS), size) {
        Ok(()) => {
            glommio::net::set_recv_multishot(config.recv_multishot);
            true
        }
        Err(e) => {
            tracing::debug!(shard, error = %e, "io_uring provided buffers unavailable; reading with recv");
            false
        }
    }
}

/// The next command on the control socket; the socket's end (the handle is gone) or an error
/// aborts.
async fn next_command(control: &mut UnixStream) -> Command {
    let mut bytes = [0u8; control::MAX_LEN];
    if !matches!(control.read(&mut bytes[..1]).await, Ok(1)) {
        return Command::Abort;
    }
    let len = Command::len(bytes[0]);
    match control.read_exact(&mut bytes[1..len]).await {
        Ok(()) => Command::decode(&bytes[..len]),
        Err(_) => Command::Abort,
    }
}

/// A drain's first step, for `listeners`: each serves the clients already queued (they
/// connected while it was open) and shuts its sockets down, so that the kernel refuses new
/// connects; then the accepts in flight get up to [`PORT_GRACE`] to end.
async fn close(listeners: &[Box<dyn ShardPorts>]) {
    for ports in listeners {
        ports.close();
    }
    let deadline = Instant::now() + PORT_GRACE;
    while listeners.iter().any(|ports| ports.accepting()) && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
}

/// Stops listener `index` alone, as a drain's first step stops them all, and closes its
/// sockets (the engine's handle lends them no more): its connections, its factory and the
/// other listeners go on.
async fn stop_listening(listeners: &mut [Box<dyn ShardPorts>], index: usize, listening: &mut ShardListening) {
    let Some(ports) = listeners.get_mut(index) else {
        return;
    };
    close(std::slice::from_ref(ports)).await;
    ports.cancel();
    if let Some(addr) = listening.stopped(index) {
        // The last shard to stop says it, once for the engine.
        tracing::info!(
            listener = %crate::addr::Address::from(addr),
            "stopped listening: new connections are refused; those open go on"
        );
    }
}

/// Leaves the drain barrier when dropped: at the end of [`run`], or as a panic unwinds it.
struct LeavesBarrier(Rc<ShardCtx>);

impl Drop for LeavesBarrier {
    fn drop(&mut self) {
        self.0.leave_barrier();
    }
}

/// Runs a shard until the engine shuts it down (or, without listeners, until its tasks are
/// done); returns its final counters.
pub(crate) async fn run(boot: ShardBoot) -> StatsSnapshot {
    let config = boot.config;
    let mut shard = ShardCtx::new(boot.info.clone(), config.connection.clone());
    shard.engine = true;
    shard.ring_sends = config.reactor.ring_sends;
    shard.provided = enable_provided_buffers(&config.reactor, boot.info.index);
    shard.mesh = Some(boot.mesh.clone());
    let shard = Rc::new(shard);
    // First: a shard that panics from here on still counts its listeners down, and leaves
    // the drain barrier (the other shards' followers would wait for it until their release).
    let mut listening = ShardListening::new(boot.listening);
    let _barrier = LeavesBarrier(shard.clone());
    // Client connections made on this shard (from the factories' construction on) join its
    // registry, so they drain and abort with it.
    ShardCtx::install(Some(shard.clone()));
    let monitor = boot.metrics.map(|link| {
        metrics::install_recorder();
        Monitor::new(shard.clone(), link, &config.metrics)
    });
    let monitor_task = monitor.clone().map(|m| glommio::spawn_local(m.run()));
    let reservation: Rc<RefCell<dyn Reservation<OwnedFd>>> = match boot.spares {
        Some(spares) => Rc::new(RefCell::new(FdReservation::new(spares))),
        None => Rc::new(RefCell::new(NullReservation)),
    };

    // The state first: factories, tasks and calls from other shards all reach it.
    for make in boot.states.iter() {
        shard.states.borrow_mut().push(make.make(&boot.info));
    }
    let inbox_task = glommio::spawn_local(serve_inbox(shard.clone(), boot.mesh.clone(), boot.inbox));
    let mut sockets = boot.sockets;
    let mut listeners: Vec<Box<dyn ShardPorts>> = Vec::with_capacity(boot.listeners.len());
    for (index, spec) in boot.listeners.iter().enumerate() {
        let (mine, rest) = sockets.into_iter().partition(|l| l.index == index);
        sockets = rest;
        listeners.push(spec.open.open(PortBoot {
            shard: shard.clone(),
            sockets: mine,
            reservation: reservation.clone(),
            accept: config.accept.clone(),
            proxy: spec.config.proxy.clone().map(Rc::new),
            tls: spec.tls.clone().map(Rc::new),
        }));
    }
    for task in boot.tasks.iter() {
        shard.tasks.spawn(task.start(&boot.info), None);
    }
    let _ = boot.ready.send(boot.info.index);

    // The control socket's descriptor moves into glommio's stream.
    let mut control: UnixStream = sys::fd::adopt(OwnedFd::from(boot.control));
    // Commands until one that stops the shard. A listener's stop leaves the rest as it is; a
    // shard of tasks only also drains once its tasks are done (by itself, not told to stop).
    let (stop, by_itself) = loop {
        let next = if listeners.is_empty() {
            let done = async {
                shard.tasks.idle().await;
                None
            };
            futures_lite::future::or(async { Some(next_command(&mut control).await) }, done).await
        } else {
            Some(next_command(&mut control).await)
        };
        match next {
            Some(Command::StopListening(index)) => {
                stop_listening(&mut listeners, index, &mut listening).await;
            }
            Some(cmd) => break (cmd, false),
            None => break (Command::Drain, true),
        }
    };

    // From here a port that wakes accepts nothing more (see `Port::run`).
    shard.begin_drain();
    for ports in &listeners {
        ports.drain_started();
    }
    if stop != Command::HandOff {
        // 1. Stop listening at once (a listener stopped before has no ports left).
        close(&listeners).await;
    }
    // With a handoff, a successor accepts on these very sockets (same accept queues), so they
    // stay open for it; a port waits for readiness without taking a connection, so it stops at
    // once: whatever is queued, or arrives later, is the successor's.
    for ports in &mut listeners {
        ports.cancel();
    }
    // No listener accepts on this shard any more.
    drop(listening);
    // From here any byte on the control socket (a second shutdown, an abort), or its end,
    // cuts the wait short.
    let mut cmd = [0u8; 1];

    // 2. Let open connections and tasks finish, up to the drain timeout (or an abort).
    if stop != Command::Abort {
        for (_, t) in shard.conns.borrow().iter() {
            t.wake();
        }
        let start = Instant::now();
        let deadline = start + config.drain_timeout;
        let release = drain::release_at(start, config.drain_timeout);
        let mut abort = Box::pin(control.read(&mut cmd));
        loop {
            // Followers last: told once every shard's other work is done (or time runs out).
            shard.follow_barrier(release);
            if !shard.busy() || Instant::now() >= deadline {
                break;
            }
            let tick = async {
                glommio::timer::sleep(DRAIN_POLL).await;
                false
            };
            let aborted = async { (&mut abort).await.is_ok() };
            if futures_lite::future::or(aborted, tick).await {
                break;
            }
        }
    }

    // 3. Abort whatever is left, and let each report its loss.
    shard.leave_barrier();
    shard.tasks.cancel();
    let left: Vec<Transport> = shard.conns.borrow().iter().map(|(_, t)| t.clone()).collect();
    for t in &left {
        t.force_close(CloseReason::Shutdown);
    }
    let deadline = Instant::now() + ABORT_GRACE;
    while !shard.conns.borrow().is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    // 4. Serve calls from shards still draining (this shard's state may be what they need),
    // then close the inbox: calls queued or sent later fail with `ShardStopped`.
    boot.mesh.finish_drain();
    // Told to stop, the wait is bounded; a shard whose tasks ended by themselves serves the
    // others for as long as they run, until the engine is told to stop.
    let bound = if stop == Command::Abort {
        ABORT_GRACE
    } else {
        config.drain_timeout
    };
    let mut deadline = (!by_itself).then(|| Instant::now() + bound);
    let mut told = Box::pin(control.read(&mut cmd));
    while boot.mesh.any_draining() && deadline.is_none_or(|d| Instant::now() < d) {
        let tick = async {
            glommio::timer::sleep(DRAIN_POLL).await;
            false
        };
        if deadline.is_some() {
            tick.await;
        } else if futures_lite::future::or(async { (&mut told).await.is_ok() }, tick).await {
            deadline = Some(Instant::now() + bound);
        }
    }
    drop(told);
    drop(inbox_task);
    for ports in &listeners {
        ports.stop();
    }
    drop(listeners);
    ShardCtx::install(None);
    drop(monitor_task);
    if let Some(m) = monitor {
        m.report_last();
        metrics::uninstall_recorder();
    }
    shard.snapshot()
}
