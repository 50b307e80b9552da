#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Zero-downtime restart end to end: under ~500 connects/s, a successor that takes over the
//! listening sockets loses no connection, while a naive stop-and-start (the control) refuses
//! some. Also the health check: 200 while serving, 503 while draining.

mod util;
mod weft_process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use weft_process::{Weft, whoami_load};

const RATE: u32 = 500;
const LOAD: Duration = Duration::from_millis(2000);
/// When, into the load, the restart begins.
const RESTART_AT: Duration = Duration::from_millis(600);

fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("weft-test-{name}-{}.sock", std::process::id()))
}

#[test]
fn handoff_under_load_loses_no_connection() {
    let sock = socket_path("handoff");
    let sock_arg = sock.to_str().unwrap();
    let common = ["--proto", "whoami", "--cores", "2", "--drain-timeout", "5s"];
    let mut old = Weft::serve(
        &[
            &common[..],
            &["--listen", "127.0.0.1:0", "--handoff-socket", sock_arg],
        ]
        .concat(),
    );
    let addr = old.ready();
    let load = whoami_load(addr, RATE, LOAD);
    std::thread::sleep(RESTART_AT);
    let mut new = Weft::serve(
        &[
            &common[..],
            &["--takeover", sock_arg, "--handoff-socket", sock_arg],
        ]
        .concat(),
    );
    assert_eq!(new.ready(), addr, "the successor serves the same address");
    new.wait_for("took over the listeners", Duration::from_secs(10));
    let status = old.wait(Duration::from_secs(10));
    assert!(status.success(), "the old process drains and exits 0: {status:?}");
    old.wait_for("handed the listeners over", Duration::from_secs(1));
    let result = load.join().unwrap();
    eprintln!("handoff: {result:?}");
    assert_eq!(result.failures(), 0, "{result:?}");
    assert!(
        result.ok >= u64::from(RATE) / 2,
        "too little load ran: {result:?}"
    );
    // The successor serves alone, and can be taken over in turn.
    let mut later = weft_process::LoadResult::default();
    weft_process::whoami_once(addr, &mut later);
    assert_eq!(later.ok, 1);
    let mut third = Weft::serve(&[&common[..], &["--takeover", sock_arg]].concat());
    third.wait_for("took over the listeners", Duration::from_secs(10));
    // Idle, the predecessor exits at once rather than at its 5 s drain timeout: its ports
    // wait for readiness and take no connection, so they stop without losing one.
    let handed = std::time::Instant::now();
    assert!(new.wait(Duration::from_secs(10)).success());
    assert!(
        handed.elapsed() < Duration::from_secs(4),
        "an idle predecessor waited {:?}",
        handed.elapsed()
    );
    weft_process::whoami_once(addr, &mut later);
    assert_eq!(
        later,
        weft_process::LoadResult {
            ok: 2,
            ..Default::default()
        }
    );
    third.signal(libc::SIGTERM);
    assert!(third.wait(Duration::from_secs(10)).success());
}

#[test]
fn naive_stop_and_start_refuses_connections() {
    let common = ["--proto", "whoami", "--cores", "2"];
    let mut old = Weft::serve(&[&common[..], &["--listen", "127.0.0.1:0"]].concat());
    let addr = old.ready();
    let load = whoami_load(addr, RATE, LOAD);
    std::thread::sleep(RESTART_AT);
    old.signal(libc::SIGTERM);
    assert!(old.wait(Duration::from_secs(10)).success());
    let mut new = Weft::serve(&[&common[..], &["--listen", &addr.to_string()]].concat());
    new.ready();
    let result = load.join().unwrap();
    eprintln!("naive restart: {result:?}");
    assert!(
        result.failures() > 0,
        "the control should lose connections: {result:?}"
    );
    assert!(result.ok > 0, "{result:?}");
    new.signal(libc::SIGTERM);
    assert!(new.wait(Duration::from_secs(10)).success());
}

/// `weft serve --proto echo` on one core with a health check and a 5 s drain, plus `extra`;
/// returns it once serving, with its service and health addresses.
fn echo_with_health(extra: &[&str]) -> (Weft, SocketAddr, SocketAddr) {
    let base = [
        "--proto",
        "echo",
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--health",
        "127.0.0.1:0",
        "--drain-timeout",
        "5s",
    ];
    let mut w = Weft::serve(&[&base[..], extra].concat());
    let addr = w.ready();
    let health = w.health_addr();
    (w, addr, health)
}

fn probe(health: SocketAddr) -> String {
    let mut s = TcpStream::connect(health).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: weft\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn health_check_says_serving_then_draining() {
    let (mut w, addr, health) = echo_with_health(&[]);
    assert!(probe(health).starts_with("HTTP/1.1 200 OK\r\n"));
    // A bare TCP check (connect, close) is harmless.
    drop(TcpStream::connect(health).unwrap());
    assert!(probe(health).ends_with("\r\n\r\nserving\n"));
    // An open echo connection keeps the drain going.
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    w.signal(libc::SIGTERM);
    w.wait_for("draining open connections", Duration::from_secs(5));
    let answer = probe(health);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    let refused = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        TcpStream::connect(addr).is_err()
    });
    assert!(
        refused,
        "the listeners close while the health check says draining"
    );
    drop(client);
    assert!(w.wait(Duration::from_secs(5)).success());
}

#[test]
fn usage_and_takeover_errors_are_one_line() {
    let weft = env!("CARGO_BIN_EXE_weft");
    let run = |args: &[&str]| {
        std::process::Command::new(weft)
            .arg("serve")
            .args(args)
            .output()
            .unwrap()
    };
    let no_trust = run(&["--listen", "127.0.0.1:0", "--proxy-protocol"]);
    assert_eq!(no_trust.status.code(), Some(2));
    let bad_cidr = run(&[
        "--listen",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-trusted",
        "10.0.0.0/33",
    ]);
    assert_eq!(bad_cidr.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_cidr.stderr).contains("10.0.0.0/33"));
    let nobody = socket_path("nobody");
    let takeover = run(&["--takeover", nobody.to_str().unwrap()]);
    assert_eq!(takeover.status.code(), Some(1));
    let text = String::from_utf8_lossy(&takeover.stderr);
    assert!(text.contains("cannot reach a running weft at"), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
}

#[test]
fn drain_delay_fails_the_health_check_while_the_service_still_accepts() {
    let (mut w, addr, health) = echo_with_health(&["--drain-delay", "1s"]);
    assert!(probe(health).starts_with("HTTP/1.1 200 OK\r\n"));
    w.signal(libc::SIGTERM);
    w.wait_for("health check failing", Duration::from_secs(5));
    assert!(probe(health).starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    // Still accepting and serving during the delay.
    let mut client = TcpStream::connect(addr).expect("accepts during the drain delay");
    client.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    client.write_all(b"late").unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"late");
    drop(client);
    // Then the listeners close, and the process exits cleanly.
    let refused = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        TcpStream::connect(addr).is_err()
    });
    assert!(refused, "the listeners close after the delay");
    assert!(w.wait(Duration::from_secs(10)).success());
}

/// A successor that would drop the running weft's health check is refused (the old process
/// serves on, its health check too); one that repeats it takes over, health check included.
#[test]
fn a_successor_keeps_the_health_check_or_is_refused() {
    let sock = socket_path("health");
    let sock = sock.to_str().unwrap();
    let (mut old, addr, health) = echo_with_health(&["--handoff-socket", sock]);
    old.wait_for("handoffs to a successor on", Duration::from_secs(10));
    let listen = addr.to_string();
    let flags = [
        "--proto",
        "echo",
        "--cores",
        "1",
        "--listen",
        &listen,
        "--takeover",
        sock,
    ];
    let out = util::run_weft(&[&["serve"], &flags[..]].concat(), Duration::from_secs(15));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the running weft serves a health check on {health} and this one has none"
        )),
        "{err}"
    );
    assert!(
        probe(health).ends_with("\r\n\r\nserving\n"),
        "the old one still answers"
    );
    // The refused successor left the handoff socket to the old process: another one reaches it.
    let health_flag = health.to_string();
    let mut new = Weft::serve(&[&flags[..], &["--health", &health_flag]].concat());
    new.wait_for("took over the listeners", Duration::from_secs(10));
    assert!(
        old.wait(Duration::from_secs(10)).success(),
        "the old one drains and exits"
    );
    assert!(
        probe(health).ends_with("\r\n\r\nserving\n"),
        "the new one answers"
    );
    new.signal(libc::SIGTERM);
    assert!(new.wait(Duration::from_secs(10)).success());
}

/// A prepared handoff socket is not at its path until placed, and leaves nothing when dropped:
/// a successor that dies before it tells its predecessor to drain leaves the predecessor's
/// socket where it was.
#[test]
fn a_prepared_handoff_socket_leaves_the_path_alone_until_placed() {
    use std::os::unix::fs::MetadataExt;
    let path = socket_path("prepared");
    std::fs::write(&path, b"the running weft's socket").unwrap();
    let before = std::fs::metadata(&path).unwrap().ino();
    let prepared = weft::handoff::HandoffServer::prepare(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), before);
    drop(prepared);
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), before);
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&name) && n != name)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_file(&path).unwrap();
}
