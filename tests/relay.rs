//! The relay protocol: a TCP proxy with back-pressure end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use util::{Rng, connect, engine, free_port, read_to_end, serve_command, spawn_listening, wait_exit};
use weft::protocols::Echo;

fn relay_to(upstream: SocketAddr) -> (std::process::Child, SocketAddr) {
    let upstream = upstream.to_string();
    let (cmd, addr) = serve_command("1", &["--proto", "relay", "--upstream", &upstream]);
    (spawn_listening(cmd, addr), addr)
}

fn stop(mut child: std::process::Child) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn relays_both_ways_byte_exact_with_half_close() {
    let (_echo, echo_addr) = engine(1, |_| Echo::factory());
    let (relay, addr) = relay_to(echo_addr);
    let data = Rng::new(3).bytes(1 << 20);
    let mut s = connect(addr);
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || read_to_end(&mut r).unwrap());
    s.write_all(&data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "relayed echo differs");
    stop(relay);
}

#[test]
fn unreachable_upstream_closes_the_client() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (relay, addr) = relay_to(dead);
    let mut s = connect(addr);
    let _ = s.write_all(b"anyone?");
    let mut b = [0u8; 8];
    assert!(
        matches!(s.read(&mut b), Ok(0) | Err(_)),
        "closed when the upstream is refused"
    );
    stop(relay);
}

#[test]
fn sixty_four_mib_to_a_slow_reader_keeps_relay_memory_bounded() {
    const TOTAL: usize = 64 << 20;
    // A fast upstream: writes 64 MiB as quickly as the relay takes it.
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let source_addr = source.local_addr().unwrap();
    std::thread::spawn(move || {
        // Bounded: the readiness probe's connection, then the test's.
        for _ in 0..4 {
            let Ok((mut s, _)) = source.accept() else { return };
            std::thread::spawn(move || {
                let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 239) as u8).collect();
                for _ in 0..TOTAL >> 20 {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (relay, addr) = relay_to(source_addr);
    let pid = relay.id();
    let rss0 = util::rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(rss0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(util::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut s = connect(addr);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let mut next_pause = 0usize;
    let started = Instant::now();
    while got < TOTAL && started.elapsed() < Duration::from_secs(60) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {got} bytes");
        assert!(
            buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((got + i) % (1 << 20) % 239) as u8)
        );
        got += n;
        // Slower than the upstream: a pause after every 256 KiB.
        if got >= next_pause {
            next_pause += 256 << 10;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    drop(s);
    assert_eq!(got, TOTAL);
    let growth_mib = (peak.load(Ordering::Relaxed).saturating_sub(rss0)) as f64 / 1024.0;
    assert!(
        growth_mib < 8.0,
        "relay RSS grew {growth_mib:.1} MiB relaying 64 MiB to a slow reader"
    );
    stop(relay);
}
