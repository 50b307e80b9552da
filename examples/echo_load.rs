//! A minimal echo load generator for `bench/metrics_overhead.sh`: one thread, `poll(2)` over
//! many non-blocking connections, each keeping up to WINDOW bytes in flight (it tops the
//! window up with one write whenever echoed bytes come back, so small windows make many
//! small reads and writes on the server). Prints the echoed bytes per second after a warm-up.
//!
//! ```text
//! echo_load ADDR [CONNS=32] [WINDOW=512] [SECONDS=5] [WARMUP_SECONDS=1]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

struct Conn {
    stream: TcpStream,
    /// Bytes sent and not yet echoed back.
    in_flight: usize,
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: echo_load ADDR [CONNS] [WINDOW] [SECONDS] [WARMUP_SECONDS]");
    let conns: usize = arg(&args, 2, 32);
    let window: usize = arg(&args, 3, 512).max(1);
    let seconds: f64 = arg(&args, 4, 5.0);
    let warmup: f64 = arg(&args, 5, 1.0);

    let mut conns: Vec<Conn> = (0..conns.max(1))
        .map(|_| {
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).unwrap();
            stream.set_nonblocking(true).unwrap();
            Conn { stream, in_flight: 0 }
        })
        .collect();
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

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
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
                    Err(e) => panic!("write: {e}"),
                }
            }
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        assert!(ready >= 0, "poll: {}", std::io::Error::last_os_error());
        let counting = now >= measure_from;
        for (c, fd) in conns.iter_mut().zip(&mut fds) {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => panic!("the server closed a connection"),
                    Ok(n) => {
                        c.in_flight -= n.min(c.in_flight);
                        if counting {
                            echoed += n as u64;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
    println!("echoed_bytes_per_sec {:.0}", echoed as f64 / seconds);
}
