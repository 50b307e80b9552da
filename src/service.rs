//! A service's whole production lifecycle around an [`Engine`]: signals, a health check that
//! fails before the listeners close, the drain, a second signal that aborts, zero-downtime
//! handoff to a successor, the Prometheus exporter, the stats line and the latency log.
//!
//! ```no_run
//! use std::time::Duration;
//! use weft::{EngineConfig, Service, protocols::Echo};
//!
//! let report = Service::new(EngineConfig::default())
//!     .listen("127.0.0.1:7000".parse::<std::net::SocketAddr>()?, |_shard| Echo::factory())
//!     .health_check("127.0.0.1:7001".parse()?)
//!     .drain_delay(Duration::from_secs(5))
//!     .prometheus("127.0.0.1:9100".parse()?)
//!     .run()?; // until SIGINT or SIGTERM, and the drain that follows
//! println!("served {} connections", report.total().accepted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On the first SIGINT or SIGTERM the health check fails at once; after the
//! [drain delay](Service::drain_delay) every listener closes and open connections get the
//! engine's drain timeout to finish; the rest are aborted. A second signal aborts at once.
//! SIGHUP reloads the certificates of every TLS listener
//! ([`TlsConfig::reload`](crate::tls::TlsConfig::reload)), once for listeners that share them,
//! reopens the latency interval log ([`hdr_log`](Service::hdr_log), for log rotation: move
//! the file away, then signal), and logs one line per certificate set with each
//! certificate's subject and expiry (a warning for an
//! expired or not yet valid one, which is served anyway). The Prometheus exporter adds
//! `weft_tls_certificate_expiry_seconds{name,file,subject}` (each certificate's notAfter, in
//! Unix seconds) and `weft_tls_reloads_total{result="ok|failed"}`.
//!
//! SIGUSR1, SIGUSR2 and SIGQUIT mean nothing to a service, but their default action kills the
//! process at once, without a drain (and leaves a handoff socket behind), and supervisors send
//! them for their own meanings: nginx reopens its logs on SIGUSR1 and stops gracefully on
//! SIGQUIT, HAProxy soft-stops on SIGUSR1. The service catches them and logs a warning that
//! says what each signal does instead ([`IGNORED_SIGNALS`]). SIGPIPE is ignored by every Rust
//! program: a write to a closed socket fails with EPIPE instead.

use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle as SignalsHandle, Signals};
use signal_hook::low_level::signal_name;

use crate::addr::Address;
use crate::config::{EngineConfig, InheritedListeners, Layers, ListenerConfig};
use crate::driver::engine::{Engine, EngineBuilder, EngineControl, EngineReport};
use crate::error::{EngineError, bind_failure};
use crate::handoff::{HandoffError, HandoffServer, Takeover};
use crate::health::HealthCheck;
use crate::metrics::{
    LatencyLog, MetricsHandle, PrometheusExporter, Reopener, render_serving, render_tls, stats_line,
};
use crate::proto::protocol::{Factory, ShardInfo};
use crate::tls::TlsSet;

/// The shortest [`Service::stats_interval`].
pub const MIN_STATS_INTERVAL: Duration = Duration::from_millis(10);
/// The signals a [`Service`] catches only to log a warning that they mean nothing to it, with
/// what SIGINT, SIGTERM and SIGHUP do: their default action kills the process at once, without
/// a drain, and supervisors send them for their own meanings (nginx reopens its logs on
/// SIGUSR1 and stops gracefully on SIGQUIT, HAProxy soft-stops on SIGUSR1). SIGPIPE needs no
/// handling: every Rust program ignores it (a write to a closed socket fails with EPIPE).
pub const IGNORED_SIGNALS: [i32; 3] = [SIGUSR1, SIGUSR2, SIGQUIT];
/// Shards report at least this often while an exporter, stats line or latency log reads
/// their metrics; it is also the latency log's interval.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Why a [`Service`] could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The engine could not start, or a shard failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Taking over from a predecessor, or serving handoffs, failed.
    #[error(transparent)]
    Handoff(#[from] HandoffError),
    /// The Prometheus listener could not be bound.
    #[error("cannot serve the metrics on {addr}: {}", bind_failure(addr.socket_addr(), source))]
    Metrics {
        /// The address asked for.
        addr: Address,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The health-check listener could not be bound or started.
    #[error("cannot serve the health check on {addr}: {}", bind_failure(addr.socket_addr(), source))]
    Health {
        /// The address asked for.
        addr: Address,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// SIGINT and SIGTERM handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The latency interval log could not be created.
    #[error("cannot write the latency log {}: {source}", path.display())]
    HdrLog {
        /// The log's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A lifecycle thread (stats printer, signal handler) could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stats interval shorter than [`MIN_STATS_INTERVAL`].
    #[error("stats interval {0:?} is too short: at least 10ms")]
    StatsInterval(Duration),
    /// A port taken over from a predecessor would change its role (a TLS port served in
    /// plaintext, say): the clients of that port expect what the predecessor served.
    #[error(
        "{addr} is a {was} port in the running weft and would be {now} here: a handoff keeps \
         each port's role (repeat the running weft's --listen/--tls-listen/--proxy-listen flags, \
         with --tls-cert and --tls-key for a TLS port and --proxy-trusted for a PROXY one), or \
         stop it and start this one without --takeover"
    )]
    RoleChanged {
        /// The port taken over.
        addr: Address,
        /// What the predecessor's listener put before the protocol.
        was: Layers,
        /// What this service's would.
        now: Layers,
    },
    /// The running weft serves a health check and this service, taking over, would not: its
    /// balancer or orchestrator would take the instance out of rotation (or restart it).
    #[error(
        "the running weft serves a health check on {0} and this one has none: repeat --health \
         {0} (a successor without it would fail every health probe), or stop it and start this \
         one without --takeover"
    )]
    HealthDropped(Address),
    /// The running weft serves a health check on another address than this service, taking
    /// over, would: the probes of its balancer would find nothing once it exits.
    #[error(
        "the running weft serves a health check on {was} and this one would serve it on {now}: \
         the balancer probes {was}, which stops answering when the running weft exits; repeat \
         --health {was}, or, to move the health check, stop it and start this one without \
         --takeover (and move the balancer's probe)"
    )]
    HealthMoved {
        /// Where the running weft's health check listens.
        was: Address,
        /// Where this service's would.
        now: Address,
    },
}

/// Builds a service: an engine's listeners and shard tasks, plus the lifecycle pieces to run
/// with it. [`run`](Self::run) serves until a signal and the drain that follows;
/// [`start`](Self::start) returns a [`RunningService`] instead.
pub struct Service {
    name: String,
    engine: EngineBuilder,
    health: Option<SocketAddr>,
    drain_delay: Duration,
    prometheus: Option<SocketAddr>,
    stats_interval: Option<Duration>,
    hdr_log: Option<PathBuf>,
    handoff_socket: Option<PathBuf>,
    takeover: Option<Takeover>,
    inherited: InheritedListeners,
    /// Each listener's address and layers, in the order added.
    listeners: Vec<(SocketAddr, Layers)>,
    signals: bool,
    /// The TLS settings of the listeners, reloaded on SIGHUP.
    tls: TlsSet,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("engine", &self.engine)
            .field("health", &self.health)
            .field("drain_delay", &self.drain_delay)
            .field("prometheus", &self.prometheus)
            .field("stats_interval", &self.stats_interval)
            .field("hdr_log", &self.hdr_log)
            .field("handoff_socket", &self.handoff_socket)
            .field("signals", &self.signals)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service whose engine runs with `config`; add listeners before starting it.
    pub fn new(mut config: EngineConfig) -> Self {
        let inherited = config.inherited.clone();
        // Metrics cost a collector thread and a timer per shard: on only when something
        // reads them (see `prometheus`, `stats_interval`, `hdr_log`) or the caller kept them.
        config.metrics.interval = config.metrics.interval.min(REPORT_INTERVAL);
        Self {
            name: "service".into(),
            engine: Engine::builder(config),
            health: None,
            drain_delay: Duration::ZERO,
            prometheus: None,
            stats_interval: None,
            hdr_log: None,
            handoff_socket: None,
            takeover: None,
            inherited,
            listeners: Vec::new(),
            signals: true,
            tls: TlsSet::default(),
        }
    }

    /// The name the service logs itself under (`serving NAME on ADDR ...`). Default:
    /// `service`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a listener served by the factory `make_factory` builds on each shard (see
    /// [`EngineBuilder::listen`]).
    #[must_use]
    pub fn listen<F, M>(mut self, listener: impl Into<ListenerConfig>, make_factory: M) -> Self
    where
        F: Factory,
        M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
    {
        let listener = listener.into();
        self.listeners.push((listener.addr, listener.layers()));
        if let Some(tls) = &listener.tls {
            self.tls.add(tls);
        }
        self.engine = self.engine.listen(listener, make_factory);
        self
    }

    /// Gives every shard a service state (see [`EngineBuilder::shard_state`]).
    #[must_use]
    pub fn shard_state<T, M>(mut self, make_state: M) -> Self
    where
        T: 'static,
        M: Fn(&ShardInfo) -> T + Send + Sync + 'static,
    {
        self.engine = self.engine.shard_state(make_state);
        self
    }

    /// Runs a task on every shard (see [`EngineBuilder::on_each_shard`]).
    #[must_use]
    pub fn on_each_shard<T, M>(mut self, make_task: M) -> Self
    where
        T: Future<Output = ()> + 'static,
        M: Fn(&ShardInfo) -> T + Send + Sync + 'static,
    {
        self.engine = self.engine.on_each_shard(make_task);
        self
    }

    /// Answers HTTP health probes on `addr`: 200 while serving, 503 from the first signal on
    /// (see [`HealthCheck`]). Default: none.
    #[must_use]
    pub fn health_check(mut self, addr: SocketAddr) -> Self {
        self.health = Some(addr);
        self
    }

    /// On the first signal, how long the health check fails while the listeners still
    /// accept, before they close: time for a balancer to take the instance out. Default: 0.
    #[must_use]
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Serves Prometheus metrics at `http://ADDR/metrics` (turns metrics on). Default: none.
    #[must_use]
    pub fn prometheus(mut self, addr: SocketAddr) -> Self {
        self.prometheus = Some(addr);
        self
    }

    /// Prints one [`stats_line`] to stdout every `every` (turns metrics on; at least
    /// [`MIN_STATS_INTERVAL`]). Default: none.
    #[must_use]
    pub fn stats_interval(mut self, every: Duration) -> Self {
        self.stats_interval = Some(every);
        self
    }

    /// Writes an HdrHistogram interval log of the latency metrics to `path`: one interval per
    /// second and metric, tagged with its name (turns metrics on). Default: none. `{pid}` in
    /// the path becomes the process id: a successor taking over (a reload) would otherwise
    /// truncate the file its predecessor still writes. SIGHUP reopens the file (rotation).
    #[must_use]
    pub fn hdr_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.hdr_log = Some(path.into());
        self
    }

    /// Serves handoffs to a successor on the Unix socket `path` (see [`crate::handoff`]).
    /// Default: none.
    #[must_use]
    pub fn handoff_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.handoff_socket = Some(path.into());
        self
    }

    /// Takes over the listening sockets (and health-check socket) of the weft serving
    /// handoffs at `path`, now: the engine adopts them when it starts, and the predecessor
    /// is told to drain once this service serves. [`inherited`](Self::inherited) then lists
    /// what was taken, to listen on the same addresses with the same layers (a port taken over
    /// must keep them: [`start`](Self::start) fails with [`ServiceError::RoleChanged`]
    /// otherwise).
    ///
    /// # Errors
    ///
    /// [`ServiceError::Handoff`] if no weft serves handoffs there or it refuses.
    pub fn takeover(mut self, path: impl AsRef<Path>) -> Result<Self, ServiceError> {
        let mut takeover = Takeover::connect(path)?;
        self.inherited.add(takeover.take_listeners());
        self.takeover = Some(takeover);
        Ok(self)
    }

    /// The addresses of the listening sockets taken over (see [`takeover`](Self::takeover)),
    /// in order, each with what the predecessor's listener put before the protocol.
    pub fn inherited(&self) -> Vec<(SocketAddr, Layers)> {
        self.takeover
            .as_ref()
            .map_or_else(Vec::new, |t| t.roles().to_vec())
    }

    /// Whether the service handles SIGINT and SIGTERM itself (and SIGHUP, and the
    /// [`IGNORED_SIGNALS`] it logs). Off, stop it with [`RunningService::control`]; a program
    /// that gives SIGUSR1 a meaning of its own turns this off. Default: on.
    #[must_use]
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Starts the engine and every lifecycle piece; returns once the service serves.
    ///
    /// # Errors
    ///
    /// Whatever failed to start; nothing is left running then (a predecessor being taken
    /// over goes on serving).
    pub fn start(self) -> Result<RunningService, ServiceError> {
        self.check_roles()?;
        self.check_hdr_log()?;
        crate::config::require_drain("drain_delay", self.drain_delay).map_err(EngineError::from)?;
        if let Some(every) = self.stats_interval
            && every < MIN_STATS_INTERVAL
        {
            return Err(ServiceError::StatsInterval(every));
        }
        let mut engine = self.engine;
        let wants_metrics =
            self.prometheus.is_some() || self.stats_interval.is_some() || self.hdr_log.is_some();
        engine.update_config(|c| {
            c.metrics.enabled |= wants_metrics;
            if let Some(every) = self.stats_interval {
                c.metrics.interval = c.metrics.interval.min(every);
            }
        });
        let mut takeover = self.takeover;
        let inherited_health = takeover
            .as_mut()
            .and_then(Takeover::take_health)
            .map(TcpListener::from);
        // The side ports and the handoff socket are bound before the engine starts, so that
        // one this process cannot have fails the start before anything serves.
        let scrapes = match self.prometheus {
            Some(addr) => Some(bind_exporter(addr, takeover.is_some())?),
            None => None,
        };
        let health = match self.health {
            Some(addr) => Some(match inherited_health {
                Some(l) if l.local_addr().is_ok_and(|a| adopts(addr, a)) => l,
                _ => TcpListener::bind(addr).map_err(|source| ServiceError::Health {
                    addr: addr.into(),
                    source,
                })?,
            }),
            None => None,
        };
        // Created before the predecessor is told to drain (a failure leaves it serving), put
        // in place after (a successor that dies in between leaves the predecessor's socket).
        let handoffs = self.handoff_socket.map(HandoffServer::prepare).transpose()?;
        // Signals are taken before any shard runs, so none is missed.
        let signals = if self.signals {
            let handled = [SIGINT, SIGTERM, SIGHUP].into_iter().chain(IGNORED_SIGNALS);
            Some(Signals::new(handled).map_err(ServiceError::Signals)?)
        } else {
            None
        };
        let engine = engine.start()?;
        let control = engine.control();
        let addrs: Vec<String> = engine
            .local_addrs()
            .iter()
            .zip(&self.listeners)
            .map(|(a, (_, layers))| match layers {
                Layers {
                    proxy: false,
                    tls: false,
                } => Address::from(*a).to_string(),
                _ => format!("{} ({layers})", Address::from(*a)),
            })
            .collect();
        let on = if addrs.is_empty() {
            "shard tasks (no listener)".to_owned()
        } else {
            format!("on {}", addrs.join(", "))
        };
        let serving = format!(
            "serving {} {on} ({} shard{} on cores {:?}); a signal drains for up to {:?}",
            self.name,
            engine.cores().len(),
            if engine.cores().len() == 1 { "" } else { "s" },
            engine.cores(),
            engine.drain_timeout(),
        );
        if let Some(was) = takeover.as_ref().and_then(Takeover::shards)
            && was != engine.cores().len()
        {
            tracing::info!(
                "the running weft ran {was} shard{} and this one runs {}: the listening sockets \
                 taken over are spread over its shards",
                if was == 1 { "" } else { "s" },
                engine.cores().len()
            );
        }
        let tls = Arc::new(self.tls);
        tls.log_loaded();
        let mut running = RunningService {
            engine: Some(engine),
            control: control.clone(),
            exporter: None,
            hdr_log: None,
            stats: None,
            health: None,
            handoffs: None,
            signals: None,
        };
        let metrics = running.metrics();
        if let (Some(listener), Some(metrics)) = (scrapes, metrics.clone()) {
            let (certificates, state) = (tls.clone(), control.clone());
            let extra = move |out: &mut String| {
                render_serving(out, state.is_serving());
                render_tls(out, &certificates);
            };
            let exporter = PrometheusExporter::serve_on(listener, metrics, extra)?;
            tracing::info!(
                "metrics at http://{}/metrics",
                Address::from(exporter.local_addr())
            );
            running.exporter = Some(exporter);
        }
        if let (Some(every), Some(metrics)) = (self.stats_interval, metrics.clone()) {
            running.stats = Some(StatsPrinter::start(every, metrics)?);
        }
        if let (Some(path), Some(metrics)) = (self.hdr_log, metrics) {
            let path = with_pid(&path);
            let log = LatencyLog::start(&path, metrics, REPORT_INTERVAL)
                .map_err(|source| ServiceError::HdrLog { path, source })?;
            tracing::info!(
                "latency interval log in {} (tags: the metric names)",
                log.path().display()
            );
            running.hdr_log = Some(log);
        }
        if let (Some(listener), Some(addr)) = (health, self.health) {
            let check =
                HealthCheck::start(listener, control.clone()).map_err(|source| ServiceError::Health {
                    addr: addr.into(),
                    source,
                })?;
            let at = check.local_addr().map_or(addr, |a| a);
            tracing::info!("health check on {}", Address::from(at));
            running.health = Some(Arc::new(check));
        }
        // Said before the predecessor is told to drain: from then on systemd follows this
        // process, so that its death (killed during the handoff, say) is the service's failure,
        // which Restart=on-failure covers, and not the predecessor's clean exit after its drain.
        crate::notify::ready();
        if let Some(t) = takeover {
            match t.finish() {
                Ok(()) => tracing::info!("took over the listeners; the previous weft is draining"),
                Err(e) => tracing::warn!(
                    "took over the listeners; the previous weft did not confirm its drain ({e}): \
                     it may have exited already. This one serves"
                ),
            }
        }
        if let Some(prepared) = handoffs {
            match prepared.place(control.clone(), running.health.clone()) {
                Ok(server) => {
                    tracing::info!("handoffs to a successor on {}", server.path().display());
                    running.handoffs = Some(server);
                }
                // Serving already (and a predecessor may be draining): not a reason to stop.
                Err(e) => tracing::error!("serving, but no successor can take over from this process: {e}"),
            }
        }
        tracing::info!("{serving}");
        if let Some(signals) = signals {
            let hdr_log = running.hdr_log.as_ref().and_then(LatencyLog::reopener);
            running.signals = Some(SignalThread::start(
                signals,
                control,
                self.drain_delay,
                tls,
                hdr_log,
            )?);
        }
        Ok(running)
    }

    /// Tries the files the start creates, changing none: the handoff socket (bound beside
    /// its path and removed again) and the latency log (opened without being truncated, or
    /// created and removed again). For a configuration check before a deployment (`weft
    /// serve --check`): what it refuses, the start refuses too.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Handoff`] or [`ServiceError::HdrLog`], as the start would fail.
    pub fn check_files(&self) -> Result<(), ServiceError> {
        if let Some(path) = &self.handoff_socket {
            drop(HandoffServer::prepare(path.clone())?);
        }
        self.check_hdr_log()
    }

    /// Whether the latency log can be written, before anything serves (the log itself
    /// starts once the engine does).
    fn check_hdr_log(&self) -> Result<(), ServiceError> {
        if let Some(path) = &self.hdr_log {
            let path = with_pid(path);
            LatencyLog::check(&path).map_err(|source| ServiceError::HdrLog { path, source })?;
        }
        Ok(())
    }

    /// Refuses a listener on a port taken over whose layers differ from the predecessor's,
    /// and a takeover that would drop the predecessor's health check or move it elsewhere.
    fn check_roles(&self) -> Result<(), ServiceError> {
        let Some(takeover) = &self.takeover else {
            return Ok(());
        };
        if let Some(was) = takeover.health_addr() {
            match self.health {
                None => return Err(ServiceError::HealthDropped(was.into())),
                Some(now) if !adopts(now, was) => {
                    return Err(ServiceError::HealthMoved {
                        was: was.into(),
                        now: now.into(),
                    });
                }
                Some(_) => {}
            }
        }
        for &(addr, now) in &self.listeners {
            if let Some(&(_, was)) = takeover.roles().iter().find(|(a, _)| *a == addr)
                && was != now
            {
                return Err(ServiceError::RoleChanged {
                    addr: addr.into(),
                    was,
                    now,
                });
            }
        }
        Ok(())
    }

    /// Starts the service and serves until it stops: after a signal and its drain (or a
    /// handoff to a successor), and returns the engine's final counters.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start) and [`RunningService::wait`].
    pub fn run(self) -> Result<EngineReport, ServiceError> {
        self.start()?.wait()
    }
}

/// A started [`Service`]. Dropping it shuts the service down and waits for it.
#[derive(Debug)]
pub struct RunningService {
    engine: Option<Engine>,
    control: EngineControl,
    exporter: Option<PrometheusExporter>,
    hdr_log: Option<LatencyLog>,
    stats: Option<StatsPrinter>,
    health: Option<Arc<HealthCheck>>,
    handoffs: Option<HandoffServer>,
    signals: Option<SignalThread>,
}

impl RunningService {
    /// The bound listen addresses, in listener order, with port 0 resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.engine.as_ref().map_or(&[], |e| e.local_addrs())
    }

    /// Where the health check answers, if it runs.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().and_then(|h| h.local_addr().ok())
    }

    /// Where Prometheus scrapes, if the exporter runs.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.exporter.as_ref().map(PrometheusExporter::local_addr)
    }

    /// Controls the engine from any thread: shut down, abort, hand off, fail health checks.
    pub fn control(&self) -> EngineControl {
        self.control.clone()
    }

    /// The merged metrics of every shard, when metrics are on.
    pub fn metrics(&self) -> Option<MetricsHandle> {
        self.engine.as_ref().and_then(Engine::metrics)
    }

    /// Waits until the engine stops (after a signal, [`control`](Self::control)'s shutdown,
    /// or a handoff), then stops every lifecycle piece and returns the final counters.
    ///
    /// # Errors
    ///
    /// The first shard that failed.
    pub fn wait(mut self) -> Result<EngineReport, ServiceError> {
        let Some(engine) = self.engine.take() else {
            return Ok(EngineReport::default());
        };
        let report = engine.join();
        self.stop_pieces();
        let report = report?;
        let total = report.total();
        tracing::info!(
            "stopped: {} connections served, {} B in, {} B out, {} aborted at shutdown",
            total.accepted,
            total.bytes_in,
            total.bytes_out,
            total.closed_for("shutdown")
        );
        Ok(report)
    }

    /// Stops the lifecycle threads, in the reverse order of their start.
    fn stop_pieces(&mut self) {
        self.signals.take();
        self.handoffs.take();
        self.health.take();
        self.stats.take();
        self.exporter.take();
        self.hdr_log.take();
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
            let _ = engine.join();
        }
        self.stop_pieces();
    }
}

/// Prints one [`stats_line`] every interval until dropped.
#[derive(Debug)]
struct StatsPrinter {
    /// Dropping this ends the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StatsPrinter {
    fn start(every: Duration, metrics: MetricsHandle) -> Result<Self, ServiceError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weft-stats".into())
            .spawn(move || print_stats(every, &metrics, &stopped))
            .map_err(|source| ServiceError::Thread {
                name: "stats",
                source,
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for StatsPrinter {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Prints one [`stats_line`] every `every` until `stop` is dropped.
fn print_stats(every: Duration, metrics: &MetricsHandle, stop: &mpsc::Receiver<()>) {
    let mut prev = metrics.snapshot();
    let mut at = Instant::now();
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let cur = metrics.snapshot();
        let now = Instant::now();
        let line = stats_line(&prev, &cur, now.duration_since(at));
        // A closed stdout ends the printing, not the server.
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return;
        }
        (prev, at) = (cur, now);
    }
}

/// Turns SIGINT and SIGTERM into the engine's lifecycle until dropped: the first fails the
/// health check and, after the drain delay, shuts the engine down; the next aborts. SIGHUP
/// reloads the TLS certificates (a file that fails to load is logged, and the certificates
/// in use stay) and reopens the latency interval log. The [`IGNORED_SIGNALS`] are logged.
#[derive(Debug)]
struct SignalThread {
    handle: SignalsHandle,
    thread: Option<JoinHandle<()>>,
}

impl SignalThread {
    fn start(
        mut signals: Signals,
        control: EngineControl,
        delay: Duration,
        tls: Arc<TlsSet>,
        hdr_log: Option<Reopener>,
    ) -> Result<Self, ServiceError> {
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("weft-signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    let name = signal_name(sig).unwrap_or("a signal");
                    if IGNORED_SIGNALS.contains(&sig) {
                        tracing::warn!(
                            "{name} ignored: it means nothing to weft (SIGTERM or SIGINT: drain and \
                             exit, a second one aborts; SIGHUP: reload the TLS certificates and \
                             reopen the latency log; a restart is a handoff: --takeover)"
                        );
                        continue;
                    }
                    if sig == SIGHUP {
                        tls.reload();
                        if let Some(log) = &hdr_log {
                            log.reopen();
                        }
                        continue;
                    }
                    seen += 1;
                    if seen == 1 {
                        crate::notify::stopping();
                    }
                    // Log after acting, so that whoever reads the line sees the new state.
                    if seen > 1 {
                        control.abort();
                        tracing::info!("{name} again: aborting open connections");
                    } else if delay.is_zero() {
                        control.fail_health();
                        control.shutdown();
                        tracing::info!("{name}: listeners closed, draining open connections");
                    } else {
                        control.fail_health();
                        tracing::info!("{name}: health check failing; listeners close in {delay:?}");
                        let control = control.clone();
                        std::thread::spawn(move || {
                            std::thread::sleep(delay);
                            control.shutdown();
                            tracing::info!("listeners closed, draining open connections");
                        });
                    }
                }
            })
            .map_err(|source| ServiceError::Thread {
                name: "signal handler",
                source,
            })?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }
}

/// Whether a listener asked for at `asked` takes over the predecessor's at `inherited`: the
/// same address, or the same IP with port 0 (any port: the one taken over).
fn adopts(asked: SocketAddr, inherited: SocketAddr) -> bool {
    asked == inherited || (asked.port() == 0 && asked.ip() == inherited.ip())
}

/// `path` with `{pid}` replaced by this process's id.
fn with_pid(path: &Path) -> PathBuf {
    let text = path.as_os_str().to_string_lossy();
    if text.contains("{pid}") {
        PathBuf::from(text.replace("{pid}", &std::process::id().to_string()))
    } else {
        path.to_path_buf()
    }
}

impl Drop for SignalThread {
    /// Unregisters the handlers and ends the thread.
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The metrics exporter's listening socket, bound before the service starts. It shares its
/// port (SO_REUSEPORT) with a predecessor's during a takeover; otherwise a port in use is
/// another process's, whose scrapes it would take half of, and is refused.
fn bind_exporter(addr: SocketAddr, takeover: bool) -> Result<TcpListener, ServiceError> {
    let refused = |source| ServiceError::Metrics {
        addr: addr.into(),
        source,
    };
    if !takeover && crate::sys::socket::has_listener(addr).unwrap_or(false) {
        return Err(refused(std::io::Error::from_raw_os_error(libc::EADDRINUSE)));
    }
    PrometheusExporter::bind(addr).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_placeholder_names_this_process() {
        let pid = std::process::id();
        assert_eq!(
            with_pid(Path::new("/var/log/weft-{pid}.hlog")),
            PathBuf::from(format!("/var/log/weft-{pid}.hlog"))
        );
        assert_eq!(with_pid(Path::new("plain.hlog")), PathBuf::from("plain.hlog"));
    }

    #[test]
    fn check_files_tries_the_start_files_and_leaves_none() {
        let dir = std::env::temp_dir().join(format!("weft-check-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Service::new(EngineConfig::default())
            .handoff_socket(dir.join("h.sock"))
            .hdr_log(dir.join("lat-{pid}.hlog"));
        ok.check_files().unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing left behind");
        let bad = Service::new(EngineConfig::default()).hdr_log("/proc/x.hlog");
        assert!(matches!(bad.check_files(), Err(ServiceError::HdrLog { .. })));
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_health_check_is_taken_over_at_its_address_or_any_port() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(adopts(at("127.0.0.1:24781"), at("127.0.0.1:24781")));
        assert!(adopts(at("127.0.0.1:0"), at("127.0.0.1:24781")));
        assert!(!adopts(at("127.0.0.1:24783"), at("127.0.0.1:24781")));
        assert!(!adopts(at("0.0.0.0:24781"), at("127.0.0.1:24781")));
        assert!(!adopts(at("[::1]:0"), at("127.0.0.1:24781")));
    }
}
