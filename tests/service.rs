//! The library's lifecycle and listeners: one engine serving two protocols on two ports (one
//! behind the PROXY protocol), and an example service stopped by SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use util::{connect, example_command, free_addr, read_to_end, sigterm, wait_exit, wait_listening};
use weft::protocols::{Echo, Whoami};
use weft::proxy::{Cidr, ProxyConfig};
use weft::{Cores, Engine, EngineConfig, EngineError, ListenerConfig};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn each_listener_speaks_its_own_protocol() {
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(2);
    config.drain_timeout = Duration::from_millis(200);
    let balancer = ProxyConfig::trusting(Cidr::parse_list("127.0.0.1/32").unwrap());
    let engine = Engine::builder(config)
        .listen(loopback(), |_| Echo::factory())
        .listen(ListenerConfig::new(loopback()).proxy(balancer), |_| {
            Whoami::factory()
        })
        .start()
        .unwrap();
    let (echo, whoami) = (engine.local_addrs()[0], engine.local_addrs()[1]);
    assert_ne!(echo.port(), whoami.port());

    // The echo port expects no header: a PROXY line is just data, echoed back.
    let header = b"PROXY TCP4 192.0.2.7 192.0.2.1 4242 80\r\n";
    let mut s = connect(echo);
    s.write_all(header).unwrap();
    let mut back = vec![0u8; header.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, header);

    // The whoami port requires the header and answers with the client it names.
    let mut s = connect(whoami);
    s.write_all(header).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap(), b"192.0.2.7:4242\n");

    // Without a header, the whoami port closes the connection unanswered.
    let mut s = connect(whoami);
    s.write_all(b"hello\r\n").unwrap();
    assert!(read_to_end(&mut s).map_or(true, |b| b.is_empty()));

    engine.shutdown();
    let report = engine.join().unwrap();
    assert_eq!(
        report.total().accepted,
        2,
        "the header-less connection never reached a protocol"
    );
}

/// Echoes, and panics on `boom`.
struct Fragile;

impl weft::Protocol for Fragile {
    fn data_received(&mut self, data: &[u8], t: &weft::Transport) {
        assert!(!data.starts_with(b"boom"), "the protocol was told to panic");
        t.write(data);
    }
}

/// A panic in a protocol callback resets that connection alone: the shard goes on serving
/// its other connections and new ones, and the engine still stops (with metrics on, which
/// used to wait forever for the panicked shard).
#[test]
fn a_panicking_protocol_loses_its_connection_not_the_shard() {
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    config.drain_timeout = Duration::from_millis(200);
    assert!(config.metrics.enabled);
    let child_failed = Arc::new(AtomicBool::new(false));
    let seen = child_failed.clone();
    let engine = Engine::builder(config)
        .listen(loopback(), |_| weft::factory_fn(|_peer| Some(Fragile)))
        .on_each_shard(move |_| {
            let seen = seen.clone();
            async move {
                // A task that panics ends alone; its handle says it did not finish.
                let child = weft::shard::spawn(async { panic!("a task was told to panic") });
                seen.store(child.await.is_err(), Ordering::Relaxed);
            }
        })
        .start()
        .unwrap();
    let addr = engine.local_addrs()[0];
    let echo = |s: &mut std::net::TcpStream| {
        s.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
    };
    let mut bystander = connect(addr);
    echo(&mut bystander);
    let mut doomed = connect(addr);
    doomed.write_all(b"boom").unwrap();
    let mut rest = Vec::new();
    let ended = doomed.read_to_end(&mut rest);
    assert!(ended.is_err() || rest.is_empty(), "{ended:?} {rest:?}");
    echo(&mut bystander);
    echo(&mut connect(addr));
    // The shard's task saw its panicking child end as not finished.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !child_failed.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child_failed.load(Ordering::Relaxed));
    echo(&mut bystander);
    engine.shutdown();
    let report = engine.join().unwrap();
    assert_eq!(report.total().closed_for("panic"), 1);
}

/// Panics when its connection attempt fails.
struct FailingClient;

impl weft::Factory for FailingClient {
    type Protocol = Fragile;

    fn build_protocol(&mut self, _peer: &weft::Address) -> Option<Fragile> {
        Some(Fragile)
    }
}

impl weft::ClientFactory for FailingClient {
    fn client_connection_failed(&mut self, _c: &weft::Connector, _reason: &weft::ConnectError) {
        panic!("the client factory was told to panic");
    }
}

/// A panic that ends a shard (here in a client factory's callback, which runs in the
/// connector's own task) stops the engine: the other shard shuts down and `join` reports the
/// failure, instead of serving on with one shard while the dead one's listener takes new
/// connections that nobody accepts.
#[test]
fn a_shard_that_fails_stops_the_engine() {
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(2);
    config.drain_timeout = Duration::from_millis(200);
    let closed = free_addr();
    let engine = Engine::builder(config)
        .listen(loopback(), |_| weft::factory_fn(|_peer| Some(Fragile)))
        .on_each_shard(move |shard| {
            let first = shard.index == 0;
            async move {
                if first {
                    let _ = weft::connect_tcp(closed, FailingClient, weft::ConnectOptions::default());
                }
            }
        })
        .start()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(engine.join().map(|_| ()));
    });
    let joined = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("join returns by itself");
    assert!(
        matches!(joined, Err(EngineError::Shard { shard: 0, .. })),
        "{joined:?}"
    );
}

/// A factory that panics refuses that connection; the next one is served.
#[test]
fn a_panicking_factory_refuses_one_connection() {
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    config.drain_timeout = Duration::from_millis(200);
    let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = built.clone();
    let engine = Engine::builder(config)
        .listen(loopback(), move |_| {
            let count = count.clone();
            weft::factory_fn(move |_peer| {
                let n = count.fetch_add(1, Ordering::Relaxed);
                assert!(n > 0, "the first connection's factory panics");
                Some(Fragile)
            })
        })
        .start()
        .unwrap();
    let addr = engine.local_addrs()[0];
    let mut refused = connect(addr);
    let mut rest = Vec::new();
    assert!(refused.read_to_end(&mut rest).map_or(true, |_| rest.is_empty()));
    let mut served = connect(addr);
    served.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    served.read_exact(&mut back).unwrap();
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn the_same_address_twice_is_refused() {
    let addr = free_addr();
    let err = Engine::builder(EngineConfig::default())
        .listen(addr, |_| Echo::factory())
        .listen(addr, |_| Whoami::factory())
        .start()
        .unwrap_err();
    assert!(matches!(err, EngineError::DuplicateListener(_)), "{err}");
}

#[test]
fn an_address_another_engine_listens_on_is_refused_unless_shared() {
    for ip in ["127.0.0.1", "[::1]"] {
        let addr: SocketAddr = format!("{ip}:{}", util::free_port()).parse().unwrap();
        let mut config = EngineConfig::default();
        config.cores = Cores::Count(1);
        config.drain_timeout = Duration::from_millis(200);
        let first = Engine::builder(config.clone())
            .listen(addr, |_| Echo::factory())
            .start()
            .unwrap();
        let err = Engine::builder(config.clone())
            .listen(addr, |_| Whoami::factory())
            .start()
            .unwrap_err();
        assert!(matches!(err, EngineError::AddressInUse(_)), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");

        // Shared on purpose, both serve: every connection reaches one of the two.
        let second = Engine::builder(config)
            .listen(ListenerConfig::new(addr).share_port(true), |_| Echo::factory())
            .start()
            .unwrap();
        assert_eq!(second.local_addrs(), [addr]);
        let mut c = connect(addr);
        c.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        drop(c);
        for engine in [first, second] {
            engine.control().shutdown();
            engine.join().unwrap();
        }
    }
}

#[test]
fn an_engine_of_tasks_stops_when_its_tasks_are_done() {
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(2);
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Engine::builder(config)
        .on_each_shard(move |shard| {
            let (tx, index) = (tx.clone(), shard.index);
            async move {
                assert_eq!(weft::shard::current().map(|s| s.index), Some(index));
                weft::shard::sleep(Duration::from_millis(20)).await;
                tx.send(index).unwrap();
            }
        })
        .start()
        .unwrap();
    engine.join().unwrap();
    let mut done: Vec<usize> = rx.try_iter().collect();
    done.sort();
    assert_eq!(done, vec![0, 1]);
}

#[test]
fn the_example_service_drains_on_sigterm_and_exits_0() {
    let (addr, health) = (free_addr(), free_addr());
    let mut child = example_command("service", &[addr.to_string(), health.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the example is built by cargo test (cargo build --release --examples)");
    wait_listening(addr, &mut child);
    let mut s = connect(addr);
    s.write_all(b"abc\n").unwrap();
    let mut line = [0u8; 4];
    s.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"ABC\n");

    sigterm(&child);
    // The open connection is asked to drain; the protocol closes it.
    assert_eq!(read_to_end(&mut s).unwrap(), b"");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    // The readiness probe of `wait_listening` was served too.
    assert!(out.contains("served 2 connections"), "{out}");
    // weft::logging::init: the service's own lines on stderr.
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains("serving shout on") && err.contains("SIGTERM: health check failing"),
        "{err}"
    );
}

#[test]
fn a_drain_waits_for_shard_tasks_then_cancels_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    config.drain_timeout = Duration::from_millis(300);
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let engine = Engine::builder(config)
        .listen(loopback(), |_| Echo::factory())
        .on_each_shard(move |_| {
            let f = f.clone();
            async move {
                // A short task the drain waits for, and one that never ends by itself.
                let quick = f.clone();
                weft::shard::spawn(async move {
                    weft::shard::sleep(Duration::from_millis(100)).await;
                    quick.fetch_add(1, Ordering::SeqCst);
                });
                weft::shard::sleep(Duration::from_secs(3600)).await;
                f.fetch_add(100, Ordering::SeqCst);
            }
        })
        .start()
        .unwrap();
    let started = std::time::Instant::now();
    engine.shutdown();
    engine.join().unwrap();
    let took = started.elapsed();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the quick task ran, the endless one was dropped"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
}
