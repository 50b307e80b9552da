//! Connection churn: every request on a new connection. Each of `--conns` concurrent workers
//! loops connect, send `--size` bytes, read the echo, close; the rate counts completed
//! request-connections in the measured window (after `--warmup`), latency is connect to
//! reply. One pinned tokio current-thread runtime per `--cores` core.
//!
//! The client closes first, so each of its connections leaves a TIME_WAIT socket on its
//! side, and an ephemeral port is reused only a second later (`net.ipv4.tcp_tw_reuse`): with
//! the default port range connect() then finds about 14k free ports a second, whatever the
//! server. `--reset` closes with a reset (SO_LINGER 0) instead, which leaves no TIME_WAIT, so
//! that the rate measures the server rather than the port range.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use weft_bench::cli::LoadArgs;
use weft_bench::client::{self, Tally};
use weft_bench::{Summary, parse_duration, per_core, raise_nofile, resolve_cores};

/// Connection churn load: a new connection per request.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
    /// Connections in flight at once, over all cores.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Measured time.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Close each connection with a reset (SO_LINGER 0) after its reply, leaving no TIME_WAIT
    /// socket to hold its port.
    #[arg(long)]
    reset: bool,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let cores = resolve_cores(&args.load.cores)?;
    raise_nofile();
    let measure_from = Instant::now() + args.warmup;
    let deadline = measure_from + args.duration;
    let (target, size, conns, n) = (args.load.target, args.load.size, args.conns.max(1), cores.len());
    let close = if args.reset {
        client::Close::Reset
    } else {
        client::Close::Fin
    };
    let tallies = per_core(&cores, move |index, _| async move {
        let workers: Vec<_> = (0..client::share(conns, n, index))
            .map(|_| tokio::spawn(worker(target, size, close, measure_from, deadline)))
            .collect();
        let mut sum = Tally::default();
        for w in workers {
            if let Ok(t) = w.await {
                sum.merge(&t);
            }
        }
        sum
    })
    .map_err(|e| e.to_string())?;
    let mut total = Tally::default();
    tallies.iter().for_each(|t| total.merge(t));
    let summary = Summary {
        requests: total.requests,
        rps: total.requests as f64 / args.duration.as_secs_f64(),
        errors: total.errors.total(),
        latency: Some(total.latency),
        extra: Vec::new(),
    }
    .with_errors(&total.errors);
    summary.emit(args.load.json.as_deref()).map_err(|e| e.to_string())
}

async fn worker(
    target: SocketAddr,
    size: usize,
    close: client::Close,
    measure_from: Instant,
    deadline: Instant,
) -> Tally {
    let request = client::payload(size);
    let mut reply = vec![0u8; request.len()];
    let mut tally = Tally::default();
    loop {
        let start = Instant::now();
        if start >= deadline {
            return tally;
        }
        let result = client::one_shot(target, &request, &mut reply, close).await;
        let end = Instant::now();
        let measured = start >= measure_from && end <= deadline;
        match result {
            Ok(()) if measured => {
                tally.requests += 1;
                tally.latency.record(end - start);
            }
            Ok(()) => {}
            Err(f) => {
                if measured {
                    tally.errors.count(f);
                }
                // Back off briefly so that a refused or exhausted port range is not spun on.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}
