//! One shard: its ports, its connections, its factory, and its part of the shutdown.

use std::cell::{Cell, RefCell};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, UnixStream};
use slab::Slab;

use super::monitor::Monitor;
use super::port::{Listener, Port};
use super::reservation::FdReservation;
use crate::accept::{NullReservation, Reservation};
use crate::config::{ConnectionConfig, EngineConfig};
use crate::metrics::{self, ShardLink};
use crate::stats::{ShardStats, StatsSnapshot};
use crate::{CloseReason, Factory, ShardInfo, Transport};

/// Control bytes the engine handle sends to a shard.
pub(crate) const DRAIN: u8 = b'D';
/// Abort every connection now.
pub(crate) const ABORT: u8 = b'A';
/// A successor process accepts on the listeners now: stop accepting without closing them,
/// then drain.
pub(crate) const HANDOFF: u8 = b'H';

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
    pub(crate) stats: ShardStats,
    /// Live connections.
    pub(crate) conns: RefCell<Slab<Transport>>,
    /// Accepted connections still reading their PROXY header (not yet in `conns`).
    pub(crate) handshakes: Cell<usize>,
    /// Ports still accepting; after a handoff, each stops once its accept in flight is done.
    pub(crate) accepting: Cell<usize>,
    pub(crate) draining: Cell<bool>,
}

thread_local! {
    /// The shard context of the executor on this thread: installed by [`run`] for an engine
    /// shard, or made on first use by client code on a bare executor.
    static CURRENT: RefCell<Option<Rc<ShardCtx>>> = const { RefCell::new(None) };
}

impl ShardCtx {
    /// The shard's counters now, with its live connections.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(self.conns.borrow().len())
    }

    fn new(info: ShardInfo, config: ConnectionConfig) -> Self {
        Self {
            info,
            read_buf: RefCell::new(vec![0u8; config.read_size.max(1)].into_boxed_slice()),
            config,
            stats: ShardStats::default(),
            conns: RefCell::new(Slab::new()),
            handshakes: Cell::new(0),
            accepting: Cell::new(0),
            draining: Cell::new(false),
        }
    }

    /// The context of this thread's executor: its engine shard's, or, on an executor that
    /// no engine runs, one made now with the default [`ConnectionConfig`] (shard 0 of 1).
    pub(crate) fn current() -> Rc<Self> {
        CURRENT.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| {
                    // SAFETY: plain syscall without arguments.
                    let cpu = unsafe { libc::sched_getcpu() };
                    let info = ShardInfo {
                        index: 0,
                        core: usize::try_from(cpu).unwrap_or(0),
                        shards: 1,
                    };
                    Rc::new(Self::new(info, ConnectionConfig::default()))
                })
                .clone()
        })
    }

    fn install(ctx: Option<Rc<Self>>) {
        CURRENT.with(|c| *c.borrow_mut() = ctx);
    }
}

/// What a shard thread starts from.
pub(crate) struct ShardBoot {
    pub(crate) info: ShardInfo,
    pub(crate) sockets: Vec<Listener>,
    pub(crate) control: StdUnixStream,
    pub(crate) config: Arc<EngineConfig>,
    /// Told the shard's index once its ports accept and its reserved descriptor is held.
    pub(crate) ready: std::sync::mpsc::Sender<usize>,
    /// The link to the metrics collector, when metrics are on.
    pub(crate) metrics: Option<ShardLink>,
}

/// Runs a shard until the engine shuts it down; returns its final counters.
pub(crate) async fn run<F: Factory>(boot: ShardBoot, factory: F) -> StatsSnapshot {
    let config = boot.config;
    let shard = Rc::new(ShardCtx::new(boot.info.clone(), config.connection.clone()));
    // Client connections made on this shard (from `Factory::start` on) join its registry,
    // so they drain and abort with it.
    ShardCtx::install(Some(shard.clone()));
    let monitor = boot.metrics.map(|link| {
        metrics::install_recorder();
        Monitor::new(shard.clone(), link, &config.metrics)
    });
    let monitor_task = monitor.clone().map(|m| glommio::spawn_local(m.run()));
    let factory = Rc::new(RefCell::new(factory));
    factory.borrow_mut().start(&boot.info);
    let reservation: Rc<RefCell<dyn Reservation>> = if config.accept.reserve_fd {
        Rc::new(RefCell::new(FdReservation::new()))
    } else {
        Rc::new(RefCell::new(NullReservation))
    };

    let mut listener_fds = Vec::new();
    let mut ports = Vec::new();
    let mut port_tasks = Vec::new();
    for Listener { socket, local, index } in boot.sockets {
        let proxy = config
            .listen
            .get(index)
            .and_then(|addr| config.proxy_protocol.get(addr))
            .map(|p| Rc::new(p.clone()));
        let fd = socket.into_raw_fd();
        listener_fds.push(fd);
        // SAFETY: `fd` is a bound, listening, non-blocking socket whose ownership moves here;
        // glommio needs it adopted inside this executor.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        let port = Rc::new(Port {
            listener,
            fd,
            local,
            shard: shard.clone(),
            factory: factory.clone(),
            reservation: reservation.clone(),
            config: config.accept.clone(),
            proxy,
        });
        port_tasks.push(glommio::spawn_local(port.clone().run()));
        ports.push(port);
    }
    let _ = boot.ready.send(boot.info.index);

    // SAFETY: the control socket's descriptor moves into glommio's stream.
    let mut control = unsafe { UnixStream::from_raw_fd(boot.control.into_raw_fd()) };
    let mut cmd = [0u8; 1];
    // EOF (the handle is gone) or any byte starts the drain.
    let first = control.read(&mut cmd).await.unwrap_or(0);

    let handoff = first == 1 && cmd[0] == HANDOFF;
    // From here each port serves what its accept in flight brings, then stops.
    shard.draining.set(true);
    if !handoff {
        // 1. Stop listening at once: serve the clients already queued (they connected while
        // the listener was open), then close, so that new connects are refused.
        for port in &ports {
            port.accept_queued();
        }
        for fd in listener_fds {
            // SAFETY: plain syscall on our own listening descriptor; shutdown(2) on a listener
            // makes the kernel refuse new connections and fails the accept in flight.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        let deadline = Instant::now() + PORT_GRACE;
        while shard.accepting.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(DRAIN_POLL).await;
        }
        port_tasks.clear();
    }
    // With a handoff, a successor accepts on these very sockets (same accept queues): they
    // stay open, and each port stops after its accept in flight, which the drain waits for.
    drop(ports);

    // 2. Let open connections finish, up to the drain timeout (or an abort command).
    if first == 1 && cmd[0] != ABORT {
        shard.draining.set(true);
        for (_, t) in shard.conns.borrow().iter() {
            t.wake();
        }
        let deadline = Instant::now() + config.drain_timeout;
        let mut abort = Box::pin(control.read(&mut cmd));
        let busy =
            || !shard.conns.borrow().is_empty() || shard.handshakes.get() > 0 || shard.accepting.get() > 0;
        while busy() && Instant::now() < deadline {
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
    let left: Vec<Transport> = shard.conns.borrow().iter().map(|(_, t)| t.clone()).collect();
    for t in &left {
        t.force_close(CloseReason::Shutdown);
    }
    let deadline = Instant::now() + ABORT_GRACE;
    while !shard.conns.borrow().is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    factory.borrow_mut().stop();
    ShardCtx::install(None);
    drop(monitor_task);
    if let Some(m) = monitor {
        m.report_last();
        metrics::uninstall_recorder();
    }
    shard.snapshot()
}
