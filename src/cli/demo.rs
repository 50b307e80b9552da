//! `weft demo`: an echo server and a few seconds of `weft load` against it, each on its own
//! half of the cores (as the benchmarks pin them), and the results.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;
use weft::load::report;
use weft::load::runner::{LoadConfig, run as run_load};
use weft::load::workload::Workload;
use weft::protocols::Echo;
use weft::{Cores, Engine, EngineConfig};

use super::CliError;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to drive load.
    #[arg(long, default_value = "3s", value_parser = super::duration)]
    duration: Duration,
    /// Client connections, spread over the load generator's cores.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

pub(crate) fn run(args: DemoArgs) -> Result<(), CliError> {
    let (server_cores, load_cores) = split_cores();
    let mut config = EngineConfig::default();
    config.cores = server_cores;
    let engine = Engine::builder(config)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)), |_| Echo::factory())
        .start()?;
    let target = engine.local_addrs()[0];
    println!(
        "weft demo: echo server on {target}, one shard on each of cores {:?}; weft load on cores {}: {} connections x {} B for {:?}",
        engine.cores(),
        load_cores_list(&load_cores),
        args.conns,
        args.size,
        args.duration
    );
    let mut load = LoadConfig::new(target, Workload::echo(args.size));
    load.conns = args.conns;
    load.cores = load_cores;
    load.duration = args.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let outcome = run_load(&load, &stop, |_, _| ()).map_err(|e| CliError::Failure(e.to_string()))?;
    engine.shutdown();
    let server = engine.join()?.total();
    print!("{}", report::summary(&load, "echo", &outcome));
    println!(
        "server      {} connections, {} B in, {} B out",
        server.accepted, server.bytes_in, server.bytes_out
    );
    Ok(())
}

/// The first half of the allowed cores serve, the rest load (one core: both share it).
fn split_cores() -> (Cores, Cores) {
    let mut ids = Cores::allowed();
    if ids.len() < 2 {
        return (Cores::All, Cores::All);
    }
    let load = ids.split_off(ids.len() / 2);
    (Cores::List(ids), Cores::List(load))
}

fn load_cores_list(cores: &Cores) -> String {
    match cores {
        Cores::List(ids) => format!("{ids:?}"),
        other => format!("{other:?}"),
    }
}
