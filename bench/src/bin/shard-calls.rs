//! The cost of weft's cross-shard calls (`weft::shard::submit_to`): a two-shard engine of
//! tasks, shard 0 holding a counter, shard 1 calling it. First one call at a time (the round
//! trip, p50 and p99), then `--concurrency` calls in flight (the throughput between two
//! shards). Prints one Markdown table, the form `bench/run.sh shard-calls` appends to
//! RESULTS.md.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use weft::{Cores, Engine, EngineConfig, shard};

/// Cross-shard call round trip and throughput.
#[derive(Debug, Parser)]
struct Args {
    /// Calls made one at a time (round-trip latency).
    #[arg(long, default_value_t = 100_000)]
    sequential: u64,
    /// Calls made with `--concurrency` in flight (throughput).
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Calls in flight in the throughput run.
    #[arg(long, default_value_t = 256)]
    concurrency: u64,
    /// The two cores the shards run on.
    #[arg(long, default_value = "0,1")]
    cores: String,
}

/// What shard 1 measured.
struct Measured {
    rtt: Histogram<u64>,
    rate: f64,
    elapsed: Duration,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut config = EngineConfig::default();
    config.cores = args.cores.parse::<Cores>()?;
    config.metrics.enabled = false;
    let (tx, rx) = mpsc::channel();
    let (sequential, calls, concurrency) = (args.sequential, args.calls, args.concurrency.max(1));
    let engine = Engine::builder(config)
        .shard_state(|_| Cell::new(0u64))
        .on_each_shard(move |info| {
            let run = (info.index == 1).then(|| tx.clone());
            async move {
                if let Some(tx) = run {
                    let _ = tx.send(measure(sequential, calls, concurrency).await);
                }
            }
        })
        .start()?;
    engine.join()?;
    let m = rx.recv()?.map_err(|e| format!("a call failed: {e}"))?;
    let us = |q: f64| m.rtt.value_at_quantile(q) as f64 / 1000.0;
    println!("| cross-shard call (2 shards) | value |");
    println!("|---|---:|");
    println!("| round trip p50, one call at a time | {:.1} µs |", us(0.5));
    println!("| round trip p99 | {:.1} µs |", us(0.99));
    println!("| round trip p99.9 | {:.1} µs |", us(0.999));
    println!(
        "| throughput, {concurrency} in flight | {:.0} calls/s ({calls} calls in {:.2} s) |",
        m.rate,
        m.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Runs on shard 1: the sequential calls, then the concurrent ones.
async fn measure(sequential: u64, calls: u64, concurrency: u64) -> Result<Measured, shard::CallError> {
    let mut rtt = Histogram::<u64>::new(3).map_err(|_| shard::CallError::NotOnShard)?;
    for _ in 0..sequential {
        let t = Instant::now();
        shard::submit_to(0, |c: &Cell<u64>| c.set(c.get() + 1)).await?;
        let _ = rtt.record(t.elapsed().as_nanos() as u64);
    }
    let done = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(false));
    let start = Instant::now();
    for w in 0..concurrency {
        let (done, failed) = (done.clone(), failed.clone());
        let mine = calls / concurrency + u64::from(w < calls % concurrency);
        shard::spawn(async move {
            for _ in 0..mine {
                if shard::submit_to(0, |c: &Cell<u64>| c.set(c.get() + 1))
                    .await
                    .is_err()
                {
                    failed.set(true);
                }
            }
            done.set(done.get() + mine);
        });
    }
    while done.get() < calls && !failed.get() {
        shard::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let total = shard::submit_to(0, |c: &Cell<u64>| c.get()).await?;
    if failed.get() || total != sequential + calls {
        return Err(shard::CallError::ShardStopped(0));
    }
    Ok(Measured {
        rtt,
        rate: calls as f64 / elapsed.as_secs_f64(),
        elapsed,
    })
}
