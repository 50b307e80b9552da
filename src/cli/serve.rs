//! `weft serve`: a reference protocol on every selected core until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use weft::protocols::{Discard, Echo, Http, Relay};
use weft::{
    Address, Cores, Destination, Engine, EngineConfig, EngineError, Factory, FlowConfig, Keepalive, ShardInfo,
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
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Protocol to serve.
    #[arg(long, value_enum, default_value = "echo")]
    proto: Proto,
    /// Address to listen on, e.g. 127.0.0.1:7000 or [::1]:7000 (repeatable).
    #[arg(long = "listen", required = true, value_parser = parse_addr)]
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
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<Address>()
        .map(|a| a.socket_addr())
        .map_err(|e| e.to_string())
}

pub(crate) fn run(args: ServeArgs) -> Result<(), EngineError> {
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
    match args.proto {
        Proto::Echo => serve(config, "echo", |_| Echo::factory()),
        Proto::Discard => serve(config, "discard", |_| Discard::factory()),
        Proto::Http => serve(config, "http", move |_| Http::factory_with(header_timeout)),
        Proto::Relay => {
            let upstream = args.upstream.ok_or_else(|| EngineError::Shard {
                shard: 0,
                detail: "--proto relay needs --upstream HOST:PORT".into(),
            })?;
            serve(config, "relay", move |_| Relay::factory(upstream.clone()))
        }
    }
}

fn serve<F, M>(config: EngineConfig, name: &str, make: M) -> Result<(), EngineError>
where
    F: Factory,
    M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
{
    let drain = config.drain_timeout;
    // Signals are taken before any shard runs, so none is missed.
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| EngineError::Shard {
        shard: 0,
        detail: format!("cannot install signal handlers: {e}"),
    })?;
    let engine = Engine::serve(config, make)?;
    let addrs: Vec<String> = engine
        .local_addrs()
        .iter()
        .map(|a| Address::from(*a).to_string())
        .collect();
    tracing::info!(
        "serving {name} on {} ({} shards on cores {:?}); SIGINT/SIGTERM drains for up to {drain:?}",
        addrs.join(", "),
        engine.cores().len(),
        engine.cores()
    );
    let handle = engine.shutdown_handle();
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen == 1 {
                tracing::info!("signal {sig}: listeners closed, draining open connections");
                handle.shutdown();
            } else {
                tracing::info!("signal {sig} again: aborting open connections");
                handle.abort();
            }
        }
    });
    let report = engine.join()?;
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
