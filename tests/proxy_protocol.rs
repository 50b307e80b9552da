#![allow(clippy::unwrap_used, clippy::expect_used)]
//! PROXY protocol listeners over real loopback sockets: the protocol sees the client the header
//! names and exactly the bytes after it; malformed, stalled and untrusted connections are
//! closed without any protocol being built, and without leaking a descriptor.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use util::connect;
use weft::proxy::{Cidr, ProxyConfig, V2_SIGNATURE};
use weft::{Engine, EngineConfig, ListenerConfig, Protocol, Transport, factory_fn};

mod util;

/// Writes `peer real_peer\n`, then echoes.
struct Report;

impl Protocol for Report {
    fn connection_made(&mut self, t: &Transport) {
        t.write(format!("{} {}\n", t.peer_addr(), t.real_peer_addr()).as_bytes());
    }
    fn data_received(&mut self, data: &[u8], t: &Transport) {
        t.write(data);
    }
}

/// The tests run one at a time: one of them counts this process's descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

struct Server {
    _serial: MutexGuard<'static, ()>,
    engine: Engine,
    addr: SocketAddr,
    built: Arc<AtomicUsize>,
}

fn start(trusted: &str, header_timeout: Duration) -> Server {
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mut proxy = ProxyConfig::trusting(Cidr::parse_list(trusted).unwrap());
    proxy.header_timeout = header_timeout;
    let built = Arc::new(AtomicUsize::new(0));
    let counter = built.clone();
    let tweak = |config: &mut EngineConfig| {
        config.pin = false;
        config.drain_timeout = Duration::from_millis(200);
    };
    let listener = ListenerConfig::new("127.0.0.1:0".parse().unwrap()).proxy(proxy);
    let (engine, addr) = util::engine_at(1, listener, tweak, move |_| {
        let counter = counter.clone();
        factory_fn(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Some(Report)
        })
    });
    Server {
        _serial: serial,
        engine,
        addr,
        built,
    }
}

/// Reads until EOF (or reset); returns what came and whether it ended by reset.
fn read_all(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, false),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, true),
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn v2(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[ver_cmd, family]);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_tcp6_with_tlvs() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&4242u16.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    body.extend_from_slice(&[0x02, 0, 11]);
    body.extend_from_slice(b"example.com");
    body.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]);
    v2(0x21, 0x21, &body)
}

/// Sends `header` then `payload`, `step` bytes per write; returns the report line and the
/// echoed payload.
fn exchange(addr: SocketAddr, header: &[u8], payload: &[u8], step: usize) -> (String, Vec<u8>) {
    let mut s = connect(addr);
    let all = [header, payload].concat();
    for chunk in all.chunks(step) {
        s.write_all(chunk).unwrap();
        if step == 1 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (out, reset) = read_all(&mut s);
    assert!(!reset, "reset after a valid header");
    let newline = out.iter().position(|&b| b == b'\n').unwrap();
    let line = String::from_utf8(out[..newline].to_vec()).unwrap();
    (line, out[newline + 1..].to_vec())
}

#[test]
fn valid_headers_give_exact_addresses_and_untouched_bytes() {
    let server = start("127.0.0.0/8", Duration::from_secs(3));
    let payload: Vec<u8> = (0..=255u8).chain(b"PROXY \r\n\r\n".iter().copied()).collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            "192.0.2.1:56324",
        ),
        (b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n".to_vec(), "[2001:db8::1]:1"),
        (b"PROXY UNKNOWN\r\n".to_vec(), "real"),
        (
            v2(0x21, 0x11, &[192, 0, 2, 9, 127, 0, 0, 1, 0x1F, 0x90, 0, 80]),
            "192.0.2.9:8080",
        ),
        (v2_tcp6_with_tlvs(), "[2001:db8::7]:4242"),
        (v2(0x20, 0x00, &[]), "real"),
        (v2(0x20, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]), "real"),
        (v2(0x21, 0x00, &[1, 2, 3]), "real"),
    ];
    for (header, want) in &cases {
        for step in [usize::MAX, 7, 1] {
            let (line, echoed) = exchange(server.addr, header, &payload, step);
            let (peer, real) = line.split_once(' ').unwrap();
            assert!(real.starts_with("127.0.0.1:"), "{line}");
            if *want == "real" {
                assert_eq!(peer, real, "{header:02x?}");
            } else {
                assert_eq!(peer, *want, "{header:02x?} step {step}");
            }
            assert_eq!(echoed, payload, "bytes after the header, step {step}");
        }
    }
    assert_eq!(server.built.load(Ordering::SeqCst), cases.len() * 3);
    server.engine.shutdown();
    let total = server.engine.join().unwrap().total();
    assert_eq!(
        (total.proxy_invalid, total.proxy_timeouts, total.proxy_untrusted),
        (0, 0, 0)
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What each open descriptor is, for a failure message.
fn fd_table() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            Some(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path()).ok()?.display()
            ))
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn malformed_headers_are_closed_at_once_without_a_protocol_or_a_leak() {
    let server = start("127.0.0.1", Duration::from_secs(3));
    let mut long_v1 = b"PROXY UNKNOWN ".to_vec();
    long_v1.resize(120, b'x');
    let bad: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        [&V2_SIGNATURE[..11], b"X\x21\x11\x00\x0c"].concat(),
        v2(0x11, 0x11, &[0; 12]),
        v2(0x22, 0x11, &[0; 12]),
        v2(0x21, 0x51, &[0; 12]),
        v2(0x21, 0x11, &[0; 600]),
        long_v1,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
    ];
    // One served connection first: the shard then runs, with its reserved descriptor open.
    let (line, _) = exchange(server.addr, b"PROXY UNKNOWN\r\n", b"", usize::MAX);
    assert!(line.starts_with("127.0.0.1:"));
    let baseline = open_fds();
    let before = fd_table();
    for round in 0..20 {
        for input in &bad {
            let mut s = connect(server.addr);
            let t0 = Instant::now();
            // The server may close while we still write: that is the point.
            let _ = s.write_all(input);
            let (out, _) = read_all(&mut s);
            assert!(out.is_empty(), "round {round}: {input:02x?} got {out:?}");
            assert!(
                t0.elapsed() < Duration::from_millis(1500),
                "{input:02x?} took {:?}",
                t0.elapsed()
            );
        }
    }
    assert_eq!(
        server.built.load(Ordering::SeqCst),
        1,
        "no protocol for a bad header"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while open_fds() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        open_fds() <= baseline,
        "descriptors leaked: {} > {baseline}: before {before:#?}, after {:#?}",
        open_fds(),
        fd_table()
    );
    server.engine.shutdown();
    let total = server.engine.join().unwrap().total();
    assert_eq!(total.proxy_invalid, 20 * 9);
    assert_eq!(total.accepted, 1);
}

#[test]
fn a_stalled_header_is_closed_at_the_deadline() {
    let timeout = Duration::from_millis(400);
    let server = start("127.0.0.1", timeout);
    let truncated = [
        b"PROXY TCP4 192.0.2.1 ".as_slice(),
        &v2(0x21, 0x11, &[0; 12])[..14],
    ];
    for part in truncated {
        for input in [part, b""] {
            let mut s = connect(server.addr);
            let t0 = Instant::now();
            s.write_all(input).unwrap();
            let (out, _) = read_all(&mut s);
            let took = t0.elapsed();
            assert!(out.is_empty());
            assert!(
                took >= timeout - Duration::from_millis(50),
                "closed early: {took:?}"
            );
            assert!(
                took < timeout + Duration::from_millis(1500),
                "closed late: {took:?}"
            );
        }
    }
    assert_eq!(server.built.load(Ordering::SeqCst), 0);
    server.engine.shutdown();
    assert_eq!(server.engine.join().unwrap().total().proxy_timeouts, 4);
}

#[test]
fn an_untrusted_peer_is_closed_before_anything_is_read() {
    let server = start("10.0.0.0/8,::1", Duration::from_secs(3));
    for _ in 0..5 {
        let mut s = connect(server.addr);
        let _ = s.write_all(b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\nhello");
        let (out, _) = read_all(&mut s);
        assert!(out.is_empty());
    }
    assert_eq!(server.built.load(Ordering::SeqCst), 0);
    server.engine.shutdown();
    let total = server.engine.join().unwrap().total();
    assert_eq!(total.proxy_untrusted, 5);
    assert_eq!(total.bytes_in, 0, "nothing was read from an untrusted peer");
}
