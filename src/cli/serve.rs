//! `weft serve`: a reference protocol on every selected core until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use weft::protocols::{Discard, Echo, Http};
use weft::{Address, Cores, Engine, EngineConfig, EngineError, Factory, ShardInfo};

/// The reference protocols.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Proto {
    /// Echo every byte back.
    Echo,
    /// Read and drop everything.
    Discard,
    /// HTTP/1.1 plaintext `Hello, World!`.
    Http,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Protocol to serve.
    #[arg(long, value_enum, default_value = "echo")]
    proto: Proto,
    /// Address to listen on, e.g. 127.0.0.1:7000 or [::1]:7000 (repeatable).
    #[arg(long = "listen", required = true, value_parser = parse_addr)]
    listen: Vec<SocketAddr>,
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
    match args.proto {
        Proto::Echo => serve(config, "echo", |_| Echo::factory()),
        Proto::Discard => serve(config, "discard", |_| Discard::factory()),
        Proto::Http => serve(config, "http", |_| Http::factory()),
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
