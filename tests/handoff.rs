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

/// `weft serve --proto echo` on one core and a free port, serving handoffs at `sock`: the
/// process, once it serves them, and its address.
fn echo_serving_handoffs(sock: &str) -> (Weft, SocketAddr) {
    let mut w = Weft::serve(&[
        "--proto",
        "echo",
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--handoff-socket",
        sock,
    ]);
    let addr = w.ready();
    w.wait_for("handoffs to a successor on", Duration::from_secs(10));
    (w, addr)
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
    let metrics = util::free_addr().to_string();
    let (mut w, addr, health) = echo_with_health(&["--drain-delay", "1s", "--metrics", &metrics]);
    assert!(probe(health).starts_with("HTTP/1.1 200 OK\r\n"));
    let metrics = metrics.parse().unwrap();
    assert!(util::scrape(metrics).contains("\nweft_serving 1\n"));
    w.signal(libc::SIGTERM);
    w.wait_for("health check failing", Duration::from_secs(5));
    assert!(probe(health).starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    assert!(
        util::scrape(metrics).contains("\nweft_serving 0\n"),
        "the gauge follows the health check"
    );
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
    // Nor may it move the health check elsewhere: the balancer probes the old address.
    let elsewhere = util::free_addr().to_string();
    let out = util::run_weft(
        &[&["serve"], &flags[..], &["--health", &elsewhere]].concat(),
        Duration::from_secs(15),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "the running weft serves a health check on {health} and this one would serve it on \
             {elsewhere}: the balancer probes {health}, which stops answering when the running \
             weft exits; repeat --health {health}"
        )),
        "{err}"
    );
    assert!(
        probe(health).ends_with("\r\n\r\nserving\n"),
        "the old one still answers"
    );
    // The refused successors left the handoff socket to the old process: another one reaches
    // it. This one runs another shard count, and says so.
    let health_flag = health.to_string();
    let mut new = Weft::serve(&[
        "--proto",
        "echo",
        "--cores",
        "2",
        "--listen",
        &listen,
        "--takeover",
        sock,
        "--health",
        &health_flag,
    ]);
    new.wait_for(
        "the running weft ran 1 shard and this one runs 2",
        Duration::from_secs(10),
    );
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

/// A handoff socket for the tests that play one side of the conversation themselves.
fn seqpacket() -> socket2::Socket {
    socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap()
}

/// A running weft that hangs up during the handoff (here a stand-in that reads TAKEOVER and
/// closes, as a predecessor SIGKILLed at that moment does) leaves a successor that says what
/// happened and what to do, not a raw OS error.
#[test]
fn a_predecessor_that_goes_away_mid_handoff_is_said_plainly() {
    let path = socket_path("vanished");
    let _ = std::fs::remove_file(&path);
    let listener = seqpacket();
    listener.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(1).unwrap();
    let successor = util::weft(&[
        "serve",
        "--proto",
        "echo",
        "--cores",
        "1",
        "--takeover",
        path.to_str().unwrap(),
    ]);
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no successor connected: {e}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [std::mem::MaybeUninit::new(0u8); 64];
    let n = conn.recv(&mut buf).unwrap();
    // SAFETY: recv initialised the first n bytes.
    let asked: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
    assert!(asked.starts_with(b"TAKEOVER "), "{asked:?}");
    drop(conn);
    let out = util::output_within(successor, Duration::from_secs(15));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "the running weft at {} went away during the handoff (it was stopped or killed, or \
             another successor took over first): nothing was taken over and this one does not \
             serve; check whether a weft still serves (if none does, start this one without \
             --takeover",
            path.display()
        )),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

/// While one successor is being lent the listeners (here a stand-in that takes them and does
/// not say DRAIN yet), a second one is refused with the reason, and the first can still
/// finish or give up.
#[test]
fn a_second_takeover_during_one_is_refused_with_the_reason() {
    let sock = socket_path("two-takeovers");
    let sock_arg = sock.to_str().unwrap();
    let (mut old, addr) = echo_serving_handoffs(sock_arg);
    let first = seqpacket();
    first.connect(&socket2::SockAddr::unix(&sock).unwrap()).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    first.send(b"TAKEOVER 2").unwrap();
    loop {
        let mut buf = [std::mem::MaybeUninit::new(0u8); 512];
        // The descriptors that come with LISTENERS are dropped: no control buffer.
        let n = first.recv(&mut buf).expect("the listeners, then END");
        // SAFETY: recv initialised the first n bytes.
        let got: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        if got == b"END" {
            break;
        }
        assert!(got.starts_with(b"LISTENERS "), "{got:?}");
    }
    let out = util::run_weft(
        &["serve", "--proto", "echo", "--cores", "1", "--takeover", sock_arg],
        Duration::from_secs(15),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "the running weft refused the handoff: another takeover is in progress; once that \
             successor serves, take over from it"
        ),
        "{err}"
    );
    // The first gives up: the old process serves on, alone.
    drop(first);
    old.wait_for("gave up before serving", Duration::from_secs(10));
    let mut client = util::connect(addr);
    client.write_all(b"still").unwrap();
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still");
    old.signal(libc::SIGTERM);
    drop(client);
    assert!(old.wait(Duration::from_secs(10)).success());
}

/// SIGUSR1, SIGUSR2 and SIGQUIT (nginx's and HAProxy's reopen and graceful stops) and SIGPIPE
/// neither kill weft nor leave its handoff socket behind: the first three are logged with what
/// the signals weft knows do; SIGTERM then drains and exits 0 as ever.
#[test]
fn signals_weft_gives_no_meaning_are_logged_not_fatal() {
    let sock = socket_path("signals");
    let sock_arg = sock.to_str().unwrap();
    let (mut w, addr) = echo_serving_handoffs(sock_arg);
    for (signal, name) in [
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGQUIT, "SIGQUIT"),
    ] {
        w.signal(signal);
        let line = w.wait_for(&format!("{name} ignored"), Duration::from_secs(5));
        assert!(
            line.contains("WARN")
                && line.contains(&format!(
                    "{name} ignored: it means nothing to weft (SIGTERM or SIGINT: drain and exit, \
                     a second one aborts; SIGHUP: reload the TLS certificates and reopen the \
                     latency log; a restart is a handoff: --takeover)"
                )),
            "{line}"
        );
    }
    w.signal(libc::SIGPIPE);
    let mut client = util::connect(addr);
    client.write_all(b"alive").unwrap();
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"alive");
    assert!(sock.exists(), "the handoff socket is still served");
    drop(client);
    w.signal(libc::SIGTERM);
    assert!(w.wait(Duration::from_secs(10)).success());
    assert!(!sock.exists(), "a drained weft removes its handoff socket");
}

/// A port in use by a weft that serves handoffs at the path given says how to take it over; a
/// port held by anything else does not suggest --takeover (tests/cli.rs).
#[test]
fn a_port_in_use_suggests_takeover_only_where_a_weft_serves_handoffs() {
    let sock = socket_path("in-use");
    let sock_arg = sock.to_str().unwrap();
    let (mut old, addr) = echo_serving_handoffs(sock_arg);
    let addr = addr.to_string();
    // A second weft on the same port, serving handoffs at `at`: what it says as it exits 1.
    let second = |at: &str| {
        let out = util::run_weft(
            &["serve", "--cores", "1", "--listen", &addr, "--handoff-socket", at],
            Duration::from_secs(15),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        err
    };
    let err = second(sock_arg);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "a weft serves handoffs at {sock_arg}: to replace it without losing a connection, \
             add --takeover {sock_arg}"
        )),
        "{err}"
    );
    // Without a handoff socket at the path given, no such hint.
    let elsewhere = socket_path("in-use-none");
    let err = second(elsewhere.to_str().unwrap());
    assert!(
        err.contains("address in use") && !err.contains("--takeover"),
        "{err}"
    );
    old.signal(libc::SIGTERM);
    assert!(old.wait(Duration::from_secs(10)).success());
}
