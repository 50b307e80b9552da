#![allow(clippy::unwrap_used, clippy::expect_used)]
//! weft behind a real balancer: HAProxy in TCP mode with `send-proxy-v2` in front of two
//! `weft serve --proxy-protocol` instances on loopback, health-checked through `--health`.
//! Load flows through both, whoami names the client's own address (IPv4 and IPv6 clients),
//! and killing one instance leaves traffic flowing. Needs `haproxy` (.ci/install-deps).

mod util;
mod weft_process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use weft_process::{LoadResult, Weft, whoami_once};

/// A free port on [::1], if the host has IPv6 loopback.
fn free_port6() -> Option<u16> {
    TcpListener::bind(("::1", 0))
        .ok()
        .map(|l| l.local_addr().unwrap().port())
}

fn weft_instance() -> (Weft, SocketAddr, SocketAddr) {
    let mut w = Weft::serve(&[
        "--proto",
        "whoami",
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-trusted",
        "127.0.0.1",
        "--health",
        "127.0.0.1:0",
    ]);
    let addr = w.ready();
    let health = w.health_addr();
    (w, addr, health)
}

/// Asks HAProxy's stats socket for `(server, state, total sessions)` of the backend.
fn servers(stats: &Path) -> Vec<(String, String, u64)> {
    let mut s = UnixStream::connect(stats).unwrap();
    s.write_all(b"show stat\n").unwrap();
    let mut csv = String::new();
    s.read_to_string(&mut csv).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (px, sv, status, stot) = (col("pxname"), col("svname"), col("status"), col("stot"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > stot && f[px] == "weft" && f[sv].starts_with('w'))
        .map(|f| (f[sv].to_owned(), f[status].to_owned(), f[stot].parse().unwrap()))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn requests(target: SocketAddr, n: usize) -> LoadResult {
    let mut r = LoadResult::default();
    for _ in 0..n {
        whoami_once(target, &mut r);
    }
    r
}

#[test]
fn haproxy_send_proxy_v2_in_front_of_two_instances() {
    let haproxy = std::env::var("HAPROXY").unwrap_or_else(|_| "haproxy".into());
    util::require_peer(util::Peer::Program(&haproxy));
    let (mut w1, a1, h1) = weft_instance();
    let (w2, a2, h2) = weft_instance();
    let dir = std::env::temp_dir().join(format!("weft-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stats = dir.join("stats.sock");
    let front4 = SocketAddr::from(([127, 0, 0, 1], util::free_port()));
    let front6 = free_port6().map(|p| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p)));
    let binds: Vec<SocketAddr> = std::iter::once(front4).chain(front6).collect();
    let config = util::haproxy::config(
        &format!("    stats socket {} mode 600 level admin\n", stats.display()),
        &binds,
        &[(a1, h1.port()), (a2, h2.port())],
    );
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    let _balancer = util::haproxy::Haproxy::start(&haproxy, &cfg);
    wait_until("HAProxy sees both instances up", Duration::from_secs(10), || {
        stats.exists() && servers(&stats).iter().filter(|s| s.1 == "UP").count() == 2
    });

    // Load flows through both; each client reads its own address back.
    let first = requests(front4, 200);
    assert_eq!(
        first,
        LoadResult {
            ok: 200,
            ..Default::default()
        }
    );
    let served = servers(&stats);
    assert!(
        served.iter().all(|s| s.2 >= 50),
        "both instances take load: {served:?}"
    );
    if let Some(front6) = front6 {
        let mut s = TcpStream::connect(front6).unwrap();
        let me = s.local_addr().unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(
            out,
            format!("[::1]:{}\n", me.port()),
            "an IPv6 client through PROXY v2 TCP6"
        );
    }

    // Kill one instance: traffic keeps flowing through the other. HAProxy retries a refused
    // connect on the other server; only the few milliseconds after the kill, while the kernel
    // still tears down the dead process's io_uring and so its listening socket, can see a
    // connection accepted and then closed.
    w1.signal(libc::SIGKILL);
    let _ = w1.wait(Duration::from_secs(5));
    let after = requests(front4, 200);
    assert!(after.ok >= 190, "after killing w1: {after:?}");
    wait_until("HAProxy marks w1 down", Duration::from_secs(5), || {
        servers(&stats)
            .iter()
            .any(|s| s.0 == "w1" && s.1.starts_with("DOWN"))
    });
    let down = requests(front4, 200);
    assert_eq!(
        down,
        LoadResult {
            ok: 200,
            ..Default::default()
        },
        "with w1 down"
    );
    drop(w2);
    let _ = std::fs::remove_dir_all(&dir);
}
