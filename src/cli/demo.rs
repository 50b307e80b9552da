//! `weft demo`: an echo server on every core, a few seconds of load, and the results.
//!
//! The load is a minimal built-in closed-loop client (one blocking thread per connection,
//! one message in flight): enough to show the engine working end to end on a fresh machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use weft::protocols::Echo;
use weft::{Engine, EngineConfig, EngineError};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to drive load.
    #[arg(long, default_value = "3s", value_parser = super::duration)]
    duration: Duration,
    /// Client connections (one thread each).
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

/// What one client connection measured.
struct ClientResult {
    hist: Histogram<u64>,
    errors: u64,
}

pub(crate) fn run(args: DemoArgs) -> Result<(), EngineError> {
    let config = EngineConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        ..Default::default()
    };
    let engine = Engine::serve(config, |_| Echo::factory())?;
    let target = engine.local_addrs()[0];
    println!(
        "weft demo: echo server on {target} ({} shards on cores {:?}); {} connections x {} B for {:?}",
        engine.cores().len(),
        engine.cores(),
        args.conns,
        args.size,
        args.duration
    );
    let started = Instant::now();
    let deadline = started + args.duration;
    let clients: Vec<_> = (0..args.conns.max(1))
        .map(|_| {
            let size = args.size.max(1);
            std::thread::spawn(move || client(target, size, deadline))
        })
        .collect();
    let mut hist = new_histogram();
    let mut errors = 0;
    for c in clients {
        match c.join() {
            Ok(r) => {
                let _ = hist.add(&r.hist);
                errors += r.errors;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    engine.shutdown();
    let report = engine.join()?;
    let n = hist.len();
    println!(
        "requests:   {n} in {elapsed:.2} s = {:.0} req/s, {errors} errors",
        n as f64 / elapsed
    );
    println!(
        "throughput: {:.1} MiB/s each way",
        (n as f64 * args.size as f64) / elapsed / (1024.0 * 1024.0)
    );
    println!(
        "latency (µs): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.9),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    let total = report.total();
    println!(
        "server:     {} connections, {} B in, {} B out",
        total.accepted, total.bytes_in, total.bytes_out
    );
    Ok(())
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits: constant bounds that hdrhistogram accepts.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid constant histogram bounds")
}

fn client(target: SocketAddr, size: usize, deadline: Instant) -> ClientResult {
    let mut result = ClientResult {
        hist: new_histogram(),
        errors: 0,
    };
    let Ok(mut stream) = TcpStream::connect(target) else {
        result.errors += 1;
        return result;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let msg = vec![b'w'; size];
    let mut reply = vec![0u8; size];
    while Instant::now() < deadline {
        let t0 = Instant::now();
        if stream.write_all(&msg).is_err() || stream.read_exact(&mut reply).is_err() {
            result.errors += 1;
            break;
        }
        let _ = result.hist.record(t0.elapsed().as_micros() as u64);
    }
    result
}
