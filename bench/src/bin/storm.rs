//! Accept storm: `--established` connections ping the echo server at `--ping-rate` each
//! (open loop) through two phases of `--duration`: quiet, then a storm of `--storm-rate` new
//! connections per second (each connects, exchanges `--size` bytes and closes). Reports the
//! established clients' latency in both phases; a ping that falls behind its schedule is
//! measured from its intended send time, so a stalled server is not hidden by the client
//! waiting (coordinated omission). One pinned tokio current-thread runtime per `--cores` core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use weft_bench::cli::LoadArgs;
use weft_bench::client::{self, Tally};
use weft_bench::{Summary, parse_duration, per_core, raise_nofile, resolve_cores};

/// Accept storm with established clients' latency.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
    /// Established connections that ping throughout.
    #[arg(long, default_value_t = 50)]
    established: usize,
    /// Pings per second per established connection.
    #[arg(long, default_value_t = 100.0)]
    ping_rate: f64,
    /// New connections per second during the storm, over all cores.
    #[arg(long, default_value_t = 5000.0)]
    storm_rate: f64,
    /// Most storm connections in flight at once, over all cores (beyond it they are skipped).
    #[arg(long, default_value_t = 512)]
    max_inflight: usize,
    /// Length of each phase (quiet, then storm).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
}

/// Time the established connections get to connect before the quiet phase starts.
const SETUP: Duration = Duration::from_millis(500);

/// The phases of a run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    quiet: Instant,
    storm: Instant,
    end: Instant,
}

/// What one core measured.
#[derive(Default)]
struct CoreResult {
    quiet: Tally,
    storm: Tally,
    conns: Tally,
    skipped: u64,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let cores = resolve_cores(&args.load.cores)?;
    raise_nofile();
    let quiet = Instant::now() + SETUP;
    let plan = Plan {
        quiet,
        storm: quiet + args.duration,
        end: quiet + 2 * args.duration,
    };
    let interval = Duration::from_secs_f64(1.0 / args.ping_rate.max(0.001));
    let n = cores.len();
    let (target, size, established) = (args.load.target, args.load.size, args.established);
    let (rate, cap) = (args.storm_rate / n as f64, args.max_inflight.div_ceil(n).max(1));
    let results = per_core(&cores, move |index, _| async move {
        let m = client::share(established, n, index);
        let pingers: Vec<_> = (0..m)
            .map(|i| {
                // Spread the clients' schedules over one interval.
                let first = plan.quiet + interval.mul_f64(i as f64 / m as f64);
                tokio::spawn(pinger(target, size, interval, first, plan))
            })
            .collect();
        let (conns, skipped) = storm(target, size, rate, cap, plan).await;
        let mut r = CoreResult {
            conns,
            skipped,
            ..Default::default()
        };
        for p in pingers {
            if let Ok([q, s]) = p.await {
                r.quiet.merge(&q);
                r.storm.merge(&s);
            }
        }
        r
    })
    .map_err(|e| e.to_string())?;
    let mut total = CoreResult::default();
    for r in &results {
        total.quiet.merge(&r.quiet);
        total.storm.merge(&r.storm);
        total.conns.merge(&r.conns);
        total.skipped += r.skipped;
    }
    let summary = Summary {
        requests: total.conns.requests,
        rps: total.conns.requests as f64 / args.duration.as_secs_f64(),
        errors: total.conns.errors.total() + total.quiet.errors.total() + total.storm.errors.total(),
        latency: Some(total.storm.latency.clone()),
        extra: Vec::new(),
    }
    .with("quiet_p50_us", total.quiet.latency.quantile_us(0.5))
    .with("quiet_p99_us", total.quiet.latency.quantile_us(0.99))
    .with("pings_quiet", total.quiet.requests as f64)
    .with("pings_storm", total.storm.requests as f64)
    .with(
        "ping_errors",
        (total.quiet.errors.total() + total.storm.errors.total()) as f64,
    )
    .with("storm_conn_p99_us", total.conns.latency.quantile_us(0.99))
    .with("storm_skipped", total.skipped as f64)
    .with_errors(&total.conns.errors);
    summary.emit(args.load.json.as_deref()).map_err(|e| e.to_string())
}

/// One established connection pinging on schedule; returns the quiet and storm tallies.
async fn pinger(
    target: SocketAddr,
    size: usize,
    interval: Duration,
    first: Instant,
    plan: Plan,
) -> [Tally; 2] {
    let mut tallies: [Tally; 2] = Default::default();
    let request = client::payload(size);
    let mut reply = vec![0u8; request.len()];
    let mut stream = match client::connect(target).await {
        Ok(s) => s,
        Err(f) => {
            tallies[0].errors.count(f);
            return tallies;
        }
    };
    let mut next = first;
    while next < plan.end {
        let now = Instant::now();
        // On schedule: wait, then time from the actual send (the timer's lateness is the
        // client's). Behind schedule (the last reply was late): send at once and time from the
        // intended send.
        let from = if next > now {
            tokio::time::sleep_until(next.into()).await;
            Instant::now()
        } else {
            next
        };
        let t = &mut tallies[usize::from(next >= plan.storm)];
        match client::exchange(&mut stream, &request, &mut reply).await {
            Ok(()) => {
                t.requests += 1;
                t.latency.record(from.elapsed());
            }
            Err(f) => {
                t.errors.count(f);
                return tallies;
            }
        }
        next += interval;
    }
    tallies
}

/// Opens `rate` connections per second during the storm phase, at most `cap` in flight;
/// returns their tally (latency: connect to reply) and how many were skipped at the cap.
async fn storm(target: SocketAddr, size: usize, rate: f64, cap: usize, plan: Plan) -> (Tally, u64) {
    tokio::time::sleep_until(plan.storm.into()).await;
    let inflight = Arc::new(AtomicUsize::new(0));
    let request: Arc<[u8]> = client::payload(size).into();
    let (mut launched, mut skipped) = (0u64, 0u64);
    let mut tasks = Vec::new();
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        let due = ((now - plan.storm).as_secs_f64() * rate) as u64;
        while launched < due {
            launched += 1;
            if inflight.load(Ordering::Relaxed) >= cap {
                skipped += 1;
                continue;
            }
            inflight.fetch_add(1, Ordering::Relaxed);
            let (inflight, request) = (inflight.clone(), request.clone());
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let mut reply = vec![0u8; request.len()];
                let r = client::one_shot(target, &request, &mut reply, client::Close::Fin).await;
                inflight.fetch_sub(1, Ordering::Relaxed);
                r.map(|()| start.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut tally = Tally::default();
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => {
                tally.requests += 1;
                tally.latency.record(d);
            }
            Ok(Err(f)) => tally.errors.count(f),
            Err(_) => {}
        }
    }
    (tally, skipped)
}
