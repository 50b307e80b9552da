//! `weft serve`: a reference protocol on every selected core until SIGINT or SIGTERM, or until
//! a successor takes over its listeners.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use weft::handoff::{HandoffError, HandoffServer, Takeover};
use weft::health::HealthCheck;
use weft::metrics::{LatencyLog, MetricsHandle, PrometheusExporter, stats_line};
use weft::protocols::{Discard, Echo, Http, Relay, Whoami};
use weft::proxy::{Cidr, ProxyConfig};
use weft::{
    Address, Cores, Destination, Engine, EngineConfig, EngineError, Factory, FlowConfig, InheritedListeners,
    Keepalive, ShardInfo,
};

/// The reference protocols.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Proto {
    /// Echo every byte back.
    Echo,
    /// Read and drop everything.
    Discard,
    /// HTTP/1.1 plaintext `Hello, World!`.
    Http,
    /// A TCP proxy to --upstream, with back-pressure both ways.
    Relay,
    /// Write the peer's address and a newline, then close.
    Whoami,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("proxy_mode").args(["proxy_protocol", "proxy_listen"]).multiple(true)))]
pub(crate) struct ServeArgs {
    /// Protocol to serve.
    #[arg(long, value_enum, default_value = "echo")]
    proto: Proto,
    /// Address to listen on, e.g. 127.0.0.1:7000 or [::1]:7000 (repeatable). With --takeover,
    /// defaults to the addresses taken over.
    #[arg(long = "listen", required_unless_present_any = ["takeover", "proxy_listen"], value_parser = parse_addr)]
    listen: Vec<SocketAddr>,
    /// Where `--proto relay` forwards each connection (host:port).
    #[arg(long, required_if_eq("proto", "relay"))]
    upstream: Option<Destination>,
    /// Cores to run shards on: all, a count (2) or a list (0,2-3).
    #[arg(long, default_value = "all")]
    cores: Cores,
    /// Listen backlog per shard.
    #[arg(long, default_value_t = 1024)]
    backlog: u32,
    /// On SIGINT/SIGTERM, how long the health check fails while the service still accepts,
    /// before the listeners close (lets a balancer take the instance out first).
    #[arg(long, default_value = "0s", value_parser = super::duration)]
    drain_delay: Duration,
    /// On SIGINT/SIGTERM, how long open connections may finish before they are aborted.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    drain_timeout: Duration,
    /// Connections per shard above which new ones are accepted and closed at once.
    #[arg(long)]
    max_conns_per_core: Option<usize>,
    /// Close connections with nothing read or written for this long (default: never).
    #[arg(long, value_parser = super::duration)]
    idle_timeout: Option<Duration>,
    /// Close connections whose queued output makes no progress for this long.
    #[arg(long, default_value = "30s", value_parser = super::duration)]
    write_stall_timeout: Duration,
    /// Queued output above which reading pauses (back-pressure).
    #[arg(long, default_value = "64KiB", value_parser = super::size)]
    high_water: usize,
    /// Queued output at which reading resumes.
    #[arg(long, default_value = "16KiB", value_parser = super::size)]
    low_water: usize,
    /// Queued output above which the connection is closed.
    #[arg(long, default_value = "4MiB", value_parser = super::size)]
    max_output: usize,
    /// TCP keepalive: idle time before the first probe (turns keepalive on).
    #[arg(long, value_parser = super::duration)]
    keepalive_idle: Option<Duration>,
    /// TCP keepalive: time between probes.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    keepalive_interval: Duration,
    /// TCP keepalive: unanswered probes before the connection is dropped.
    #[arg(long, default_value_t = 3)]
    keepalive_count: u32,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged.
    #[arg(long, value_parser = super::duration)]
    tcp_user_timeout: Option<Duration>,
    /// Busy-poll this long before a shard's reactor sleeps (trades idle CPU for latency).
    #[arg(long, value_parser = super::duration)]
    spin_before_park: Option<Duration>,
    /// http: time a request head may take to arrive, from its first byte (then 408).
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    header_timeout: Duration,
    /// Require a PROXY protocol header (v1 or v2) on every --listen address (never
    /// auto-detected).
    #[arg(long, requires = "proxy_trusted")]
    proxy_protocol: bool,
    /// Also listen on ADDR, requiring a PROXY header there only (repeatable): a port for the
    /// balancer beside plain --listen ports.
    #[arg(long, value_name = "ADDR", requires = "proxy_trusted", value_parser = parse_addr)]
    proxy_listen: Vec<SocketAddr>,
    /// Peers allowed to send a PROXY header, e.g. 10.0.0.0/8,::1; others are closed unread.
    #[arg(long, value_name = "CIDR[,CIDR...]", requires = "proxy_mode", value_parser = parse_cidrs)]
    proxy_trusted: Option<Trusted>,
    /// Time from accept to a complete PROXY header.
    #[arg(long, default_value = "3s", value_parser = super::duration)]
    proxy_header_timeout: Duration,
    /// Largest PROXY v2 header accepted, TLVs included, in bytes.
    #[arg(long, default_value_t = weft::proxy::DEFAULT_MAX_HEADER)]
    proxy_max_header: usize,
    /// Answer HTTP health probes here: 200 while serving, 503 while draining.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    health: Option<SocketAddr>,
    /// Serve handoffs to a successor on this Unix socket (zero-downtime restart).
    #[arg(long, value_name = "PATH")]
    handoff_socket: Option<PathBuf>,
    /// Take over the listening sockets of the weft serving handoffs at PATH, then tell it to
    /// drain and exit.
    #[arg(long, value_name = "PATH")]
    takeover: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
    /// Print one line of stats to stdout every interval (e.g. 1s).
    #[arg(long, value_name = "DURATION", value_parser = stats_interval)]
    stats_interval: Option<Duration>,
    /// Write an HdrHistogram interval log of the latency metrics (one interval per second
    /// and metric, tagged with its name), readable by `weft hist FILE --tag NAME`.
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
}

/// The shortest `--stats-interval`.
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(10);
/// Shards report at least this often.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

fn stats_interval(s: &str) -> Result<Duration, String> {
    let d = super::duration(s)?;
    if d < MIN_STATS_INTERVAL {
        return Err(format!("invalid stats interval {s:?}: at least 10ms"));
    }
    Ok(d)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<Address>()
        .map(|a| a.socket_addr())
        .map_err(|e| e.to_string())
}

/// The value of `--proxy-trusted`: one list (a plain `Vec` would read as repeated values).
#[derive(Debug, Clone)]
struct Trusted(Vec<Cidr>);

fn parse_cidrs(s: &str) -> Result<Trusted, String> {
    match Cidr::parse_list(s) {
        Ok(list) if list.is_empty() => Err("an empty trusted list would close every connection".into()),
        Ok(list) => Ok(Trusted(list)),
        Err(e) => Err(e.to_string()),
    }
}

/// Why `weft serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Handoff(#[from] HandoffError),
    #[error("cannot serve the health check on {addr}: {source}")]
    Health { addr: Address, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot write the latency log {}: {source}", path.display())]
    HdrLog { path: PathBuf, source: std::io::Error },
}

/// Everything `serve` starts besides the engine.
struct Extras {
    health: Option<SocketAddr>,
    inherited_health: Option<TcpListener>,
    handoff_socket: Option<PathBuf>,
    takeover: Option<Takeover>,
    /// Where Prometheus scrapes `/metrics`.
    prometheus: Option<SocketAddr>,
    stats_interval: Option<Duration>,
    hdr_log: Option<PathBuf>,
    drain_delay: Duration,
}

pub(crate) fn run(args: ServeArgs) -> Result<(), ServeError> {
    let mut config = EngineConfig {
        listen: args.listen,
        cores: args.cores,
        drain_timeout: args.drain_timeout,
        ..Default::default()
    };
    config.accept.backlog = args.backlog;
    config.accept.max_conns_per_shard = args.max_conns_per_core;
    config.reactor.spin_before_park = args.spin_before_park;
    let c = &mut config.connection;
    c.idle_timeout = args.idle_timeout;
    c.write_stall_timeout = Some(args.write_stall_timeout).filter(|d| !d.is_zero());
    c.flow = FlowConfig {
        high_water: args.high_water,
        low_water: args.low_water.min(args.high_water),
        max_output: args.max_output.max(args.high_water),
    };
    c.keepalive = args.keepalive_idle.map(|idle| Keepalive {
        idle,
        interval: args.keepalive_interval,
        count: args.keepalive_count,
    });
    c.user_timeout = args.tcp_user_timeout;
    let header_timeout = args.header_timeout;
    // Metrics cost a collector thread and a timer per shard: only when they are shown.
    config.metrics.enabled =
        args.metrics.is_some() || args.stats_interval.is_some() || args.hdr_log.is_some();
    if let Some(every) = args.stats_interval {
        config.metrics.interval = every.min(REPORT_INTERVAL);
    }
    let mut takeover = args.takeover.as_ref().map(Takeover::connect).transpose()?;
    let mut inherited_health = None;
    if let Some(t) = takeover.as_mut() {
        config.inherited = InheritedListeners::new(t.take_listeners());
        if config.listen.is_empty() {
            config.listen = config.inherited.addresses();
        }
        inherited_health = t.take_health().map(TcpListener::from);
    }
    if let Some(Trusted(trusted)) = args.proxy_trusted {
        let proxy = ProxyConfig {
            trusted,
            header_timeout: args.proxy_header_timeout,
            max_header: args.proxy_max_header,
        };
        let proxied: Vec<SocketAddr> = if args.proxy_protocol {
            config.listen.iter().chain(&args.proxy_listen).copied().collect()
        } else {
            args.proxy_listen.clone()
        };
        for addr in &args.proxy_listen {
            if !config.listen.contains(addr) {
                config.listen.push(*addr);
            }
        }
        for addr in proxied {
            config.proxy_protocol.insert(addr, proxy.clone());
        }
    }
    let extras = Extras {
        health: args.health,
        inherited_health,
        handoff_socket: args.handoff_socket,
        takeover,
        prometheus: args.metrics,
        stats_interval: args.stats_interval,
        hdr_log: args.hdr_log,
        drain_delay: args.drain_delay,
    };
    match args.proto {
        Proto::Echo => serve(config, extras, "echo", |_| Echo::factory()),
        Proto::Discard => serve(config, extras, "discard", |_| Discard::factory()),
        Proto::Http => serve(config, extras, "http", move |_| {
            Http::factory_with(header_timeout)
        }),
        Proto::Whoami => serve(config, extras, "whoami", |_| Whoami::factory()),
        Proto::Relay => {
            let upstream = args.upstream.ok_or_else(|| EngineError::Shard {
                shard: 0,
                detail: "--proto relay needs --upstream HOST:PORT".into(),
            })?;
            serve(config, extras, "relay", move |_| Relay::factory(upstream.clone()))
        }
    }
}

fn serve<F, M>(config: EngineConfig, extras: Extras, name: &str, make: M) -> Result<(), ServeError>
where
    F: Factory,
    M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
{
    let drain = config.drain_timeout;
    let proxied = !config.proxy_protocol.is_empty();
    // Signals are taken before any shard runs, so none is missed.
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(ServeError::Signals)?;
    let engine = Engine::serve(config, make)?;
    let addrs: Vec<String> = engine
        .local_addrs()
        .iter()
        .map(|a| Address::from(*a).to_string())
        .collect();
    tracing::info!(
        "serving {name}{} on {} ({} shards on cores {:?}); SIGINT/SIGTERM drains for up to {drain:?}",
        if proxied { " behind the PROXY protocol" } else { "" },
        addrs.join(", "),
        engine.cores().len(),
        engine.cores()
    );
    let exporter = match (extras.prometheus, engine.metrics()) {
        (Some(addr), Some(metrics)) => {
            let exporter = PrometheusExporter::start(addr, metrics)?;
            let url = Address::from(exporter.local_addr());
            tracing::info!("metrics at http://{url}/metrics");
            Some(exporter)
        }
        _ => None,
    };
    // Dropping `stop` ends the stats printer.
    let (stop, stopped) = mpsc::channel::<()>();
    if let (Some(every), Some(metrics)) = (extras.stats_interval, engine.metrics()) {
        std::thread::spawn(move || print_stats(every, &metrics, &stopped));
    }
    let hdr_log = match (extras.hdr_log, engine.metrics()) {
        (Some(path), Some(metrics)) => {
            let log =
                LatencyLog::start(&path, metrics, REPORT_INTERVAL).map_err(|source| ServeError::HdrLog {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(
                "latency interval log in {} (tags: the metric names)",
                log.path().display()
            );
            Some(log)
        }
        _ => None,
    };
    let handle = engine.shutdown_handle();
    let health = match extras.health {
        None => None,
        Some(addr) => {
            let health_err = |source| ServeError::Health {
                addr: addr.into(),
                source,
            };
            let listener = match extras.inherited_health {
                Some(l) if l.local_addr().is_ok_and(|a| a == addr) => l,
                _ => TcpListener::bind(addr).map_err(health_err)?,
            };
            let check = HealthCheck::start(listener, handle.clone()).map_err(health_err)?;
            let at = check.local_addr().map_or(addr, |a| a);
            tracing::info!("health check on {}", Address::from(at));
            Some(Arc::new(check))
        }
    };
    let handoffs = match extras.handoff_socket {
        None => None,
        Some(path) => {
            let server = HandoffServer::start(path, handle.clone(), health.clone())?;
            tracing::info!("handoffs to a successor on {}", server.path().display());
            Some(server)
        }
    };
    if let Some(t) = extras.takeover {
        match t.finish() {
            Ok(()) => tracing::info!("took over the listeners; the previous weft is draining"),
            Err(e) => tracing::warn!("took over the listeners, but {e}"),
        }
    }
    let delay = extras.drain_delay;
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            // Log after acting, so that whoever reads the line sees the new state.
            if seen == 1 && !delay.is_zero() {
                handle.fail_health();
                tracing::info!("signal {sig}: health check failing; listeners close in {delay:?}");
                let handle = handle.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    handle.shutdown();
                    tracing::info!("listeners closed, draining open connections");
                });
            } else if seen == 1 {
                handle.shutdown();
                tracing::info!("signal {sig}: listeners closed, draining open connections");
            } else {
                handle.abort();
                tracing::info!("signal {sig} again: aborting open connections");
            }
        }
    });
    let report = engine.join()?;
    drop(handoffs);
    drop(health);
    drop(stop);
    drop(exporter);
    drop(hdr_log);
    let total = report.total();
    tracing::info!(
        "stopped: {} connections served, {} B in, {} B out, {} aborted at shutdown",
        total.accepted,
        total.bytes_in,
        total.bytes_out,
        total.closed_for("shutdown")
    );
    Ok(())
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
