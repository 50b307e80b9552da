//! Memory per idle connection: opens `--conns` connections to an echo server, pings each
//! once (so that the server has read from it and answered), lets them sit for `--settle`, and
//! reports the growth of the server's resident memory (`/proc/PID/status` of `--pid`) divided
//! by the connections held. Plain blocking sockets, one after another: the point is the
//! server's memory, not the rate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use weft_bench::client::{ATTEMPT_TIMEOUT, Errors, Failure};
use weft_bench::procfs::{Rss, rss};
use weft_bench::{Latency, Summary, parse_addr, parse_duration, raise_nofile};

/// Descriptors kept free beside the connections (stdio, the runtime, /proc reads).
const SPARE_FDS: u64 = 64;

/// Idle connections: the server's resident memory per connection.
#[derive(Debug, Parser)]
struct Args {
    /// Echo server to connect to.
    #[arg(long, value_parser = parse_addr)]
    target: SocketAddr,
    /// The server's process id, whose /proc/PID/status is read.
    #[arg(long)]
    pid: u32,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Time to hold them before measuring.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    settle: Duration,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let limit = raise_nofile();
    if limit < args.conns as u64 + SPARE_FDS {
        return Err(format!(
            "RLIMIT_NOFILE is {limit}, {} connections need {}: raise the hard limit (ulimit -Hn)",
            args.conns,
            args.conns as u64 + SPARE_FDS
        ));
    }
    let before = rss(args.pid).map_err(|e| format!("server pid {}: {e}", args.pid))?;
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.conns);
    let mut errors = Errors::default();
    let mut latency = Latency::new();
    for _ in 0..args.conns {
        let t = Instant::now();
        match open_and_ping(args.target) {
            Ok(stream) => {
                latency.record(t.elapsed());
                held.push(stream);
            }
            Err(f) => errors.count(f),
        }
    }
    let opened = started.elapsed();
    std::thread::sleep(args.settle);
    let after = rss(args.pid).map_err(|e| format!("server pid {}: {e}", args.pid))?;
    // The connections must still be open when memory is read: check the server did not close them.
    let alive = held.iter().filter(|s| still_open(s)).count();
    let n = held.len().max(1) as f64;
    let growth = |f: fn(&Rss) -> u64| (f(&after) as f64 - f(&before) as f64) / n;
    let summary = Summary {
        requests: held.len() as u64,
        rps: held.len() as f64 / opened.as_secs_f64().max(1e-9),
        errors: errors.total(),
        latency: Some(latency),
        extra: Vec::new(),
    }
    .with("rss_per_conn_bytes", growth(|r| r.total))
    .with("anon_per_conn_bytes", growth(|r| r.anon))
    .with("rss_before_bytes", before.total as f64)
    .with("rss_after_bytes", after.total as f64)
    .with("alive", alive as f64)
    .with_errors(&errors);
    summary.emit(args.json.as_deref()).map_err(|e| e.to_string())
}

/// Connects and exchanges one byte.
fn open_and_ping(target: SocketAddr) -> Result<TcpStream, Failure> {
    let mut s = TcpStream::connect_timeout(&target, ATTEMPT_TIMEOUT).map_err(|_| Failure::Connect)?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(ATTEMPT_TIMEOUT))
        .map_err(|_| Failure::Io)?;
    s.write_all(b"!").map_err(|_| Failure::Io)?;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Ok(s),
        Ok(_) => Err(Failure::Io),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(Failure::Timeout)
        }
        Err(_) => Err(Failure::Io),
    }
}

/// True when the server has neither closed nor reset the connection (nothing to read yet).
fn still_open(mut s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
