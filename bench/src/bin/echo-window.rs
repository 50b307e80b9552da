//! Echo load with a fixed window: one thread, `poll(2)` over many non-blocking connections,
//! each keeping up to `--window` bytes in flight (it tops the window up with one write
//! whenever echoed bytes come back, so small windows make many small reads and writes on the
//! server). Prints the echoed bytes per second of the measured window, after `--warmup`.
//! `bench/metrics_overhead.sh` drives it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::Parser;
use weft_bench::{parse_addr, parse_duration, raise_nofile};

/// Echo load that keeps a fixed number of bytes in flight per connection.
#[derive(Debug, Parser)]
struct Args {
    /// Echo server to load.
    #[arg(long, value_parser = parse_addr)]
    target: SocketAddr,
    /// Connections.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Bytes in flight per connection.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Measured time.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
}

struct Conn {
    stream: TcpStream,
    /// Bytes sent and not yet echoed back.
    in_flight: usize,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    raise_nofile();
    let window = args.window.max(1);
    let mut conns = Vec::new();
    for _ in 0..args.conns.max(1) {
        let stream = TcpStream::connect(args.target).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        conns.push(Conn { stream, in_flight: 0 });
    }
    let msg = vec![b'w'; window];
    let mut buf = vec![0u8; 64 * 1024];
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let measure_from = Instant::now() + args.warmup;
    let end = measure_from + args.duration;
    let mut echoed = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for c in &mut conns {
            while c.in_flight < window {
                match c.stream.write(&msg[c.in_flight..]) {
                    Ok(n) => c.in_flight += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready < 0 {
            return Err(format!("poll: {}", std::io::Error::last_os_error()));
        }
        let counting = now >= measure_from;
        for (c, fd) in conns.iter_mut().zip(&mut fds) {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => return Err("the server closed a connection".into()),
                    Ok(n) => {
                        c.in_flight -= n.min(c.in_flight);
                        if counting {
                            echoed += n as u64;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        }
    }
    println!(
        "echoed_bytes_per_sec {:.0}",
        echoed as f64 / args.duration.as_secs_f64()
    );
    Ok(())
}
