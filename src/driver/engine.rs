//! The engine: starts one pinned glommio reactor per shard and stops them together.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use glommio::{GlommioError, LocalExecutorBuilder, Placement};

use super::port::bind_listeners;
use super::shard::{self, ABORT, DRAIN, HANDOFF, ShardBoot};
use crate::config::{Cores, EngineConfig, ReactorConfig};
use crate::metrics::{self, MetricsHandle};
use crate::stats::StatsSnapshot;
use crate::{EngineError, Factory, ShardInfo};

/// glommio refuses to start a reactor below this RLIMIT_MEMLOCK soft limit.
const MEMLOCK_NEEDED: u64 = 512 * 1024;

/// Entry point: serves a [`Factory`] on every configured core.
///
/// # Examples
///
/// ```no_run
/// use weft::{Engine, EngineConfig, protocols::Echo};
///
/// let config = EngineConfig { listen: vec!["127.0.0.1:7000".parse()?], ..Default::default() };
/// let engine = Engine::serve(config, |_shard| Echo::factory())?;
/// println!("echo on {:?}", engine.local_addrs());
/// engine.shutdown();
/// let report = engine.join()?;
/// println!("served {} connections", report.total().accepted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    addrs: Vec<SocketAddr>,
    control: ShutdownHandle,
    shards: Vec<glommio::ExecutorJoinHandle<StatsSnapshot>>,
    cores: Vec<usize>,
    metrics: Option<MetricsHandle>,
    /// The metrics collector thread; it ends after the last shard.
    collector: Option<JoinHandle<()>>,
}

/// Starts an engine's shutdown from any thread (a signal handler thread, say), and lends its
/// listening sockets to a successor process while it still accepts on them.
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    inner: Arc<Control>,
}

#[derive(Debug, Default)]
struct Control {
    shards: Vec<StdUnixStream>,
    /// Every shard's listening descriptors, in shard order. They stay open while `serving`.
    listeners: Vec<RawFd>,
    /// True until a shutdown, abort or handoff starts; held while the listeners are lent.
    serving: Mutex<bool>,
    /// Set by [`ShutdownHandle::fail_health`]: health checks fail while the engine still
    /// serves, so that balancers stop sending before the listeners close.
    unhealthy: std::sync::atomic::AtomicBool,
}

impl ShutdownHandle {
    /// See [`Engine::shutdown`].
    pub fn shutdown(&self) {
        self.stop(DRAIN);
    }

    /// See [`Engine::abort`].
    pub fn abort(&self) {
        self.stop(ABORT);
    }

    /// Stops accepting without closing the listening sockets, for a successor process that
    /// now accepts on them (same accept queues: no client is refused), then drains like
    /// [`shutdown`](Self::shutdown). Each shard stops after the accept it has in flight, whose
    /// connection it serves.
    pub fn hand_off(&self) {
        self.stop(HANDOFF);
    }

    /// True until a shutdown, abort or handoff starts, or [`fail_health`](Self::fail_health):
    /// what a health check reports.
    pub fn is_serving(&self) -> bool {
        *self.lock() && !self.inner.unhealthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes health checks fail from now on while the engine goes on serving: the first step
    /// of a graceful stop behind a balancer, which then stops sending new connections before
    /// [`shutdown`](Self::shutdown) closes the listeners.
    pub fn fail_health(&self) {
        self.inner
            .unhealthy
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` with every shard's listening sockets (shard by shard, each shard's in
    /// configuration order), which stay open until `f` returns: to pass them to a successor
    /// process. `None`, without calling `f`, once the engine is stopping.
    pub fn with_listeners<R>(&self, f: impl FnOnce(&[BorrowedFd<'_>]) -> R) -> Option<R> {
        let serving = self.lock();
        if !*serving {
            return None;
        }
        // SAFETY: the shards close their listeners only after a stop command, which waits for
        // the lock held here.
        let fds: Vec<BorrowedFd<'_>> = self
            .inner
            .listeners
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        Some(f(&fds))
    }

    fn new(shards: Vec<StdUnixStream>, listeners: Vec<RawFd>) -> Self {
        Self {
            inner: Arc::new(Control {
                shards,
                listeners,
                serving: Mutex::new(true),
                unhealthy: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.inner.serving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop(&self, cmd: u8) {
        let mut serving = self.lock();
        *serving = false;
        for mut c in self.inner.shards.iter() {
            // A shard that already stopped has closed its end; nothing to tell it.
            let _ = c.write_all(&[cmd]);
        }
    }
}

/// What an engine reports when it has stopped.
#[derive(Debug, Clone, Default)]
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
    /// Binds every listen address on every selected core and starts serving.
    ///
    /// `make_factory` runs once on each shard's own thread, so the factory it returns need
    /// not be `Send`. Returns once every shard is listening.
    ///
    /// # Errors
    ///
    /// [`EngineError::CannotListen`] naming the address, [`EngineError::Cores`] for a core
    /// selection that does not fit, [`EngineError::MemLock`] or [`EngineError::IoUring`] when
    /// the reactor cannot start.
    pub fn serve<F, M>(config: EngineConfig, make_factory: M) -> Result<Self, EngineError>
    where
        F: Factory,
        M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
    {
        if config.listen.is_empty() {
            return Err(EngineError::NoListenAddress);
        }
        if let Some(addr) = config.proxy_protocol.keys().find(|a| !config.listen.contains(a)) {
            return Err(EngineError::Config(format!(
                "PROXY protocol is configured for {}, which is not a listen address",
                crate::Address::from(*addr)
            )));
        }
        let cores = config
            .cores
            .resolve(&Cores::allowed())
            .map_err(EngineError::Cores)?;
        raise_limits()?;
        let bound = bind_listeners(
            &config.listen,
            cores.len(),
            config.accept.backlog,
            config.inherited.take(),
        )?;
        let listeners: Vec<RawFd> = bound
            .per_shard
            .iter()
            .flatten()
            .map(|l| l.socket.as_raw_fd())
            .collect();
        let (addrs, sockets) = (bound.addrs, bound.per_shard);
        let shard_cores: Vec<(usize, usize)> = cores.iter().copied().enumerate().collect();
        let (metrics, collector, links) = if config.metrics.enabled {
            let c = metrics::start_collector(&shard_cores, config.metrics.queue_per_shard)
                .map_err(|e| shard_error(0, format!("cannot start the metrics collector thread: {e}")))?;
            (Some(c.handle), Some(c.thread), c.links)
        } else {
            (None, None, Vec::new())
        };
        let mut links = links.into_iter();
        let config = Arc::new(config);
        let make_factory = Arc::new(make_factory);
        let (ready_tx, ready_rx) = mpsc::channel::<usize>();
        let mut controls = Vec::new();
        let mut engine = Self {
            addrs,
            control: ShutdownHandle::default(),
            shards: Vec::new(),
            cores: cores.clone(),
            metrics,
            collector,
        };
        let count = cores.len();
        for (index, (core, sockets)) in cores.iter().copied().zip(sockets).enumerate() {
            let (ours, theirs) = StdUnixStream::pair().map_err(|e| shard_error(index, e))?;
            let boot = ShardBoot {
                info: ShardInfo {
                    index,
                    core,
                    shards: count,
                },
                sockets,
                control: theirs,
                config: config.clone(),
                ready: ready_tx.clone(),
                metrics: links.next(),
            };
            let make_factory = make_factory.clone();
            let name = format!("weft-shard-{index}");
            let spawned =
                executor_builder(&config.reactor, config.pin, &name, core).spawn(move || async move {
                    let factory = make_factory(&boot.info);
                    shard::run(boot, factory).await
                });
            controls.push(ours);
            match spawned {
                Ok(handle) => engine.shards.push(handle),
                Err(e) => {
                    // Dropping `engine` stops the shards already running.
                    engine.control = ShutdownHandle::new(controls, listeners);
                    return Err(reactor_error(index, e));
                }
            }
        }
        engine.control = ShutdownHandle::new(controls, listeners);
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

    /// The bound listen addresses, in configuration order, with port 0 resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
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

    /// A handle that can start the shutdown from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.control.clone()
    }

    /// A handle that reads the merged metrics of every shard from any thread, also after the
    /// engine stopped; `None` when [`MetricsConfig::enabled`](crate::MetricsConfig::enabled)
    /// is off.
    pub fn metrics(&self) -> Option<MetricsHandle> {
        self.metrics.clone()
    }

    /// Waits for every shard to stop (after [`shutdown`](Self::shutdown)) and returns their
    /// counters. With metrics on, it also waits until the collector has taken the shards'
    /// final reports, so that [`metrics`](Self::metrics) shows the final counters unless a
    /// final report was dropped.
    ///
    /// # Errors
    ///
    /// The first shard that failed.
    pub fn join(mut self) -> Result<EngineReport, EngineError> {
        let mut report = EngineReport::default();
        let mut failure = None;
        for (index, handle) in std::mem::take(&mut self.shards).into_iter().enumerate() {
            match handle.join() {
                Ok(stats) => report.shards.push(stats),
                Err(e) => {
                    failure.get_or_insert(reactor_error(index, e));
                }
            }
        }
        if let Some(collector) = self.collector.take() {
            // The collector ends once the last shard dropped its link; it cannot panic.
            let _ = collector.join();
        }
        failure.map_or(Ok(report), Err)
    }

    fn first_failure(&mut self) -> EngineError {
        let mut first = None;
        for (index, handle) in std::mem::take(&mut self.shards).into_iter().enumerate() {
            if let Err(e) = handle.join() {
                first.get_or_insert(reactor_error(index, e));
            }
        }
        first.unwrap_or_else(|| EngineError::Shard {
            shard: 0,
            detail: "a shard stopped before it was ready".into(),
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
        .preempt_timer(r.preempt_timer);
    if let Some(spin) = r.spin_before_park {
        b = b.spin_before_park(spin);
    }
    b
}

/// The oldest kernel glommio's reactor runs on.
const KERNEL_NEEDED: (u32, u32) = (5, 8);

/// Fails with a clear message where glommio would panic: a kernel without io_uring, older
/// than 5.8, or with io_uring disabled for this process (sysctl, seccomp).
fn check_io_uring() -> Result<(), EngineError> {
    let fail = |detail: String| EngineError::IoUring { shard: 0, detail };
    let release = kernel_release();
    if !kernel_at_least(&release, KERNEL_NEEDED) {
        return Err(fail(format!("kernel {release} is older than 5.8")));
    }
    // The probe runs on a thread of its own: tearing a ring down queues kernel task work on
    // the thread that made it, which would interrupt that thread's next blocking system call
    // (EINTR) if it were the caller's.
    let probe = std::thread::Builder::new()
        .name("weft-io-uring-probe".into())
        .spawn(probe_io_uring)
        .map_err(|e| fail(format!("cannot start the io_uring probe thread: {e}")))?;
    match probe.join() {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail("the io_uring probe failed".into())),
    }
}

/// Creates and closes a one-entry ring.
fn probe_io_uring() -> Result<(), String> {
    // struct io_uring_params is 120 bytes; the kernel fills it in.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup(2) with 1 entry writes only into `params`.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "this kernel was built without io_uring".into(),
            Some(libc::EPERM) | Some(libc::EACCES) => format!("io_uring is disabled for this process ({e})"),
            _ => format!("io_uring_setup failed: {e}"),
        });
    }
    // SAFETY: `fd` is the ring descriptor just created and owned here.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
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
pub(crate) fn raise_limits() -> Result<(), EngineError> {
    check_io_uring()?;
    let (soft, hard) = raise_soft_limit(libc::RLIMIT_MEMLOCK);
    if soft < MEMLOCK_NEEDED {
        return Err(EngineError::MemLock {
            soft,
            hard,
            need: MEMLOCK_NEEDED,
        });
    }
    raise_soft_limit(libc::RLIMIT_NOFILE);
    Ok(())
}

/// Raises one soft limit to its hard limit; returns `(soft, hard)` after.
pub(crate) fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only `lim`.
    unsafe {
        if libc::getrlimit(resource, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(resource, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

fn shard_error(shard: usize, e: impl std::fmt::Display) -> EngineError {
    EngineError::Shard {
        shard,
        detail: e.to_string(),
    }
}

pub(crate) fn reactor_error(shard: usize, e: GlommioError<()>) -> EngineError {
    match e {
        GlommioError::ReactorError(kind) => {
            let detail = kind.to_string();
            if detail.contains("MemLock") || detail.to_ascii_lowercase().contains("memlock") {
                let (soft, hard) = raise_soft_limit(libc::RLIMIT_MEMLOCK);
                EngineError::MemLock {
                    soft,
                    hard,
                    need: MEMLOCK_NEEDED,
                }
            } else {
                EngineError::IoUring { shard, detail }
            }
        }
        GlommioError::IoError(io) => EngineError::IoUring {
            shard,
            detail: io.to_string(),
        },
        other => shard_error(shard, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v657", (5, 8)));
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(!kernel_at_least("5.4.0-150-generic", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(kernel_at_least("", (5, 8)), "unknown: let the probe decide");
    }

    #[test]
    fn io_uring_is_available_here() {
        check_io_uring().expect("the test machines run io_uring");
    }
}
