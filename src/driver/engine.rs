//! The engine: starts one pinned glommio reactor per shard and stops them together.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::mpsc;

use glommio::{GlommioError, LocalExecutorBuilder, Placement};

use super::port::bind_listeners;
use super::shard::{self, ABORT, DRAIN, ShardBoot};
use crate::config::EngineConfig;
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
}

/// Starts an engine's shutdown from any thread (a signal handler thread, say).
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    controls: Arc<Vec<StdUnixStream>>,
}

impl ShutdownHandle {
    /// See [`Engine::shutdown`].
    pub fn shutdown(&self) {
        self.send(DRAIN);
    }

    /// See [`Engine::abort`].
    pub fn abort(&self) {
        self.send(ABORT);
    }

    fn send(&self, cmd: u8) {
        for mut c in self.controls.iter() {
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
        let mut total = StatsSnapshot::default();
        for s in &self.shards {
            total.merge(s);
        }
        total
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
        let cores = config
            .cores
            .resolve(&allowed_cores())
            .map_err(EngineError::Cores)?;
        raise_limits()?;
        let sockets = bind_listeners(&config.listen, cores.len(), config.accept.backlog)?;
        let addrs = sockets
            .first()
            .map(|s| s.iter().map(|(_, a)| *a).collect())
            .unwrap_or_default();
        let config = Arc::new(config);
        let make_factory = Arc::new(make_factory);
        let (ready_tx, ready_rx) = mpsc::channel::<usize>();
        let mut controls = Vec::new();
        let mut engine = Self {
            addrs,
            control: ShutdownHandle::default(),
            shards: Vec::new(),
            cores: cores.clone(),
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
            };
            let make_factory = make_factory.clone();
            let ready = ready_tx.clone();
            let spawned = executor_builder(&config, index, core).spawn(move || async move {
                let factory = make_factory(&boot.info);
                let _ = ready.send(index);
                shard::run(boot, factory).await
            });
            controls.push(ours);
            match spawned {
                Ok(handle) => engine.shards.push(handle),
                Err(e) => {
                    // Dropping `engine` stops the shards already running.
                    engine.control = ShutdownHandle {
                        controls: Arc::new(controls),
                    };
                    return Err(reactor_error(index, e));
                }
            }
        }
        engine.control = ShutdownHandle {
            controls: Arc::new(controls),
        };
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

    /// Waits for every shard to stop (after [`shutdown`](Self::shutdown)) and returns their
    /// counters.
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

fn executor_builder(config: &EngineConfig, index: usize, core: usize) -> LocalExecutorBuilder {
    let placement = if config.pin {
        Placement::Fixed(core)
    } else {
        Placement::Unbound
    };
    let r = &config.reactor;
    let mut b = LocalExecutorBuilder::new(placement)
        .name(&format!("weft-shard-{index}"))
        .ring_depth(r.ring_depth)
        .io_memory(r.io_memory.max(64 * 1024))
        .preempt_timer(r.preempt_timer);
    if let Some(spin) = r.spin_before_park {
        b = b.spin_before_park(spin);
    }
    b
}

/// The cores this process may run on (its affinity mask).
pub(crate) fn allowed_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Raises the soft RLIMIT_MEMLOCK (io_uring) and RLIMIT_NOFILE (connections) to their hard
/// limits, which needs no privilege.
fn raise_limits() -> Result<(), EngineError> {
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

fn reactor_error(shard: usize, e: GlommioError<()>) -> EngineError {
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
