//! The accept path under overload: EMFILE with the reserved descriptor, accept storms,
//! per-shard caps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use util::{connect, echo_server_command, engine, engine_with, spawn_listening, wait_exit};
use weft::protocols::Echo;
use weft::{CloseReason, Protocol, Transport, factory_fn};

/// What one client saw within its deadline.
#[derive(Debug, PartialEq)]
enum Outcome {
    Served,
    Closed,
    Hung,
}

/// Connects, pings, and classifies the answer; keeps the socket if served.
fn ping(addr: SocketAddr, limit: Duration) -> (Outcome, Option<TcpStream>) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, limit) else {
        return (Outcome::Closed, None);
    };
    s.set_read_timeout(Some(limit)).unwrap();
    if s.write_all(b"p").is_err() {
        return (Outcome::Closed, None);
    }
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => (Outcome::Served, Some(s)),
        Ok(_) => (Outcome::Closed, None),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => (Outcome::Hung, None),
        Err(_) => (Outcome::Closed, None),
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// User plus system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Sets the child's RLIMIT_NOFILE (soft and hard, as `ulimit -n` does) to `n`.
fn limit_descriptors(cmd: &mut Command, n: libc::rlim_t) {
    // SAFETY: setrlimit is async-signal-safe; the closure runs in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn emfile_clients_are_closed_fast_without_spinning_and_fds_return_to_baseline() {
    let _serial = util::serial();
    let (mut cmd, addr) = echo_server_command();
    cmd.stdout(Stdio::null());
    limit_descriptors(&mut cmd, 64);
    let mut server = spawn_listening(cmd, addr);
    let pid = server.id();
    std::thread::sleep(Duration::from_millis(100));
    let baseline = open_fds(pid);

    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let limit = Duration::from_millis(1500);
    let mut held = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let (outcome, sock) = ping(addr, limit);
        assert!(
            started.elapsed() <= limit + Duration::from_millis(200),
            "a client waited too long"
        );
        outcomes.push(outcome);
        held.extend(sock);
    }
    // Hold the table full for a moment: a spinning accept loop would burn CPU now.
    std::thread::sleep(Duration::from_secs(1));
    let busy = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    let served = outcomes.iter().filter(|o| **o == Outcome::Served).count();
    let closed = outcomes.iter().filter(|o| **o == Outcome::Closed).count();
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Hung).count(),
        0,
        "no client may hang"
    );
    assert!(served > 0 && closed > 0, "served {served}, closed {closed}");
    assert!(
        busy < 0.10,
        "server used {:.1}% of a core while saturated",
        busy * 100.0
    );

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(3);
    while open_fds(pid) != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open_fds(pid), baseline, "descriptors leaked");
    for _ in 0..20 {
        assert_eq!(
            ping(addr, limit).0,
            Outcome::Served,
            "new clients are served again"
        );
    }

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut server, Duration::from_secs(15)).code(), Some(0));
    let mut log = String::new();
    server.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(
        log.contains("EMFILE"),
        "the EMFILE recovery is logged by errno name: {log}"
    );
    assert!(
        log.lines().filter(|l| l.contains("EMFILE")).count() <= 4,
        "rate-limited: {log}"
    );
}

/// The report's race: two shards free their reserved descriptors into one table, and the one
/// whose freed slot the other won kept no slot to recover with, so its queued clients were
/// neither served nor closed while the table stayed full. Every client must now be answered
/// or closed, round after round, with the table held full by the clients served before.
#[test]
fn emfile_with_two_shards_racing_for_freed_slots_leaves_no_client_hanging() {
    const CLIENTS: usize = 300;
    let _serial = util::serial();
    let (mut cmd, addr) = util::serve_command("2", &["--proto", "kv"]);
    cmd.stdout(Stdio::null());
    limit_descriptors(&mut cmd, 80);
    let mut server = KilledOnDrop(spawn_listening(cmd, addr));
    let mut held = Vec::new();
    for round in 0..3 {
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            // Refused or reset at connect counts as closed.
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                && s.write_all(b"INCR {a}n\r\n").is_ok()
            {
                clients.push(s);
            }
        }
        let refused = CLIENTS - clients.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut answered, mut closed, mut hung) = (0, refused, 0);
        for mut s in clients {
            let left = deadline.saturating_duration_since(Instant::now());
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut b = [0u8; 16];
            match s.read(&mut b) {
                Ok(n) if n > 0 => {
                    assert_eq!(b[0], b':', "an INCR answer: {:?}", &b[..n]);
                    answered += 1;
                    held.push(s);
                }
                Ok(_) => closed += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => hung += 1,
                Err(_) => closed += 1,
            }
        }
        assert_eq!(
            hung, 0,
            "round {round}: every client is answered or closed within 10 s (answered \
             {answered}, closed {closed}, hung {hung})"
        );
        assert!(
            closed > 0,
            "round {round}: the table was full: answered {answered}"
        );
        assert!(round > 0 || answered > 0, "the first clients are served");
    }
    drop(held);
    // Served again once the clients leave: the reserved descriptors came back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer = Vec::new();
    for _ in 0..100 {
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"INCR {a}n\r\n").unwrap();
        answer.resize(16, 0);
        if matches!(s.read(&mut answer), Ok(n) if n > 0) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answer[0], b':', "served again: {answer:?}");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut server.0, Duration::from_secs(15)).code(), Some(0));
}

/// A server killed if the test fails before it stops it.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn accept_storm_keeps_established_clients_fast() {
    let _serial = util::serial();
    let (engine, addr) = engine(1, |_| Echo::factory());
    let stop = Arc::new(AtomicUsize::new(0));
    let pingers: Vec<_> = (0..50)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let mut lat = Vec::new();
                let mut b = [0u8; 1];
                while stop.load(Ordering::Relaxed) == 0 && lat.len() < 5000 {
                    let t = Instant::now();
                    s.write_all(b"x").unwrap();
                    s.read_exact(&mut b).unwrap();
                    lat.push(t.elapsed());
                    std::thread::sleep(Duration::from_millis(5));
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let outcomes = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let t0 = Instant::now();
    let stormers: Vec<_> = (0..10)
        .map(|_| {
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    let i = match ping(addr, Duration::from_secs(2)).0 {
                        Outcome::Served => 0,
                        Outcome::Closed => 1,
                        Outcome::Hung => 2,
                    };
                    outcomes[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for s in stormers {
        s.join().unwrap();
    }
    let storm = t0.elapsed();
    stop.store(1, Ordering::Relaxed);
    let mut lat: Vec<Duration> = pingers.into_iter().flat_map(|p| p.join().unwrap()).collect();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    let [served, closed, hung] = [0, 1, 2].map(|i| outcomes[i].load(Ordering::Relaxed));
    assert_eq!(
        served + closed,
        5000,
        "every storm connection is served or closed"
    );
    assert_eq!(hung, 0);
    assert!(
        p99 < Duration::from_millis(50),
        "established p99 {p99:?} during a {storm:?} storm"
    );
    engine.shutdown();
    let total = engine.join().unwrap().total();
    assert_eq!(total.accepted, 5050);
}

/// Counts live connections per shard and remembers the highest count.
struct Counted {
    live: Arc<[AtomicUsize; 2]>,
    peak: Arc<[AtomicUsize; 2]>,
    shard: usize,
}

impl Protocol for Counted {
    fn connection_made(&mut self, _: &Transport) {
        let now = self.live[self.shard].fetch_add(1, Ordering::SeqCst) + 1;
        self.peak[self.shard].fetch_max(now, Ordering::SeqCst);
    }
    fn data_received(&mut self, data: &[u8], t: &Transport) {
        t.write(data);
    }
    fn connection_lost(&mut self, _: &CloseReason) {
        self.live[self.shard].fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn per_shard_cap_is_never_exceeded() {
    let _serial = util::serial();
    let live = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let peak = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let (l, p) = (live.clone(), peak.clone());
    let (engine, addr) = engine_with(
        2,
        |c| c.accept.max_conns_per_shard = Some(100),
        move |shard| {
            let (live, peak, shard) = (l.clone(), p.clone(), shard.index);
            factory_fn(move |_| {
                Some(Counted {
                    live: live.clone(),
                    peak: peak.clone(),
                    shard,
                })
            })
        },
    );
    let mut held = Vec::new();
    let mut shed = 0;
    for _ in 0..400 {
        match ping(addr, Duration::from_secs(1)) {
            (Outcome::Served, Some(s)) => held.push(s),
            (Outcome::Hung, _) => panic!("a client over the cap must be closed, not left hanging"),
            _ => shed += 1,
        }
    }
    assert!(held.len() <= 200);
    assert_eq!(held.len() + shed, 400);
    for shard in 0..2 {
        assert!(
            peak[shard].load(Ordering::SeqCst) <= 100,
            "shard {shard} went over its cap"
        );
    }
    drop(held);
    engine.shutdown();
    let total = engine.join().unwrap().total();
    assert_eq!(total.shed, shed as u64);
}

/// A client over the cap of `weft serve --proto http` reads a 503 (the factory's overload
/// answer), not a reset, even when it sent its request before the server saw it; a Redis
/// client of `--proto kv`, redis's `-ERR max number of clients reached`.
#[test]
fn a_client_over_the_cap_reads_why() {
    let _serial = util::serial();
    let (cmd, addr) = util::serve_command("1", &["--proto", "kv", "--max-conns-per-core", "1"]);
    let mut server = spawn_listening(cmd, addr);
    let mut held = connect(addr);
    held.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    held.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let mut over = connect(addr);
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    over.write_all(b"PING\r\n").unwrap();
    let mut answer = String::new();
    over.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "-ERR max number of clients reached\r\n");
    server.kill().unwrap();
    let _ = server.wait();

    let (cmd, addr) = util::serve_command("1", &["--proto", "http", "--max-conns-per-core", "2"]);
    let mut server = spawn_listening(cmd, addr);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
            s
        })
        .collect();
    for _ in 0..3 {
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Sent at once, before the server accepted and refused the connection.
        s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer:?}"
        );
        assert!(answer.ends_with("\r\n\r\nserver overloaded\n"), "{answer:?}");
    }
    drop(held);
    server.kill().unwrap();
    let _ = server.wait();
}
