//! The client side over real loopback sockets: connect failures and their reasons, the
//! connect timeout, stop_connecting, reconnecting with back-off, IPv6 and scoped literals,
//! bind addresses, clients inside an engine shard, and interop with Twisted peers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use util::on_executor;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Socket, Type};
use weft::protocols::Echo;
use weft::{
    Address, ClientFactory, CloseReason, ConnectError, ConnectOptions, Connector, ConnectorState, Cores,
    Destination, Engine, EngineConfig, Factory, Keepalive, Protocol, ReconnectPolicy, ShardInfo, Transport,
    connect_tcp, resolve,
};

/// What the recording factory and protocol saw.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    FactoryStart,
    Started,
    Failed(&'static str),
    Built,
    Made,
    Data,
    Drain,
    WriteLost,
    ReadLost,
    ProtoLost(&'static str),
    Lost(&'static str),
    GaveUp,
    FactoryStop,
}

/// A shared event log, readable from any thread.
#[derive(Clone, Default)]
struct Log {
    events: util::Log<(Instant, Ev)>,
    received: Arc<Mutex<Vec<u8>>>,
    errors: Arc<Mutex<Vec<ConnectError>>>,
    ends: Arc<Mutex<Vec<(Address, Address)>>>,
    /// TCP_NODELAY and SO_KEEPALIVE of each connection.
    options: Arc<Mutex<Vec<(bool, bool)>>>,
}

impl Log {
    fn push(&self, ev: Ev) {
        self.events.push((Instant::now(), ev));
    }

    fn events(&self) -> Vec<Ev> {
        self.timed().into_iter().map(|(_, e)| e).collect()
    }

    fn timed(&self) -> Vec<(Instant, Ev)> {
        self.events.items()
    }

    fn count(&self, ev: &Ev) -> usize {
        count(&self.timed(), ev)
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    fn last_error(&self) -> ConnectError {
        let errors = self.errors.lock().unwrap();
        errors.last().cloned().expect("a connect error")
    }

    /// Waits (bounded) until `pred` holds, from inside an executor (where the blocking
    /// `util::Log::wait_until` would stall the reactor).
    async fn until(&self, limit: Duration, pred: impl Fn(&Log) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if pred(self) {
                return true;
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        pred(self)
    }
}

/// How many times `ev` was logged.
fn count(items: &[(Instant, Ev)], ev: &Ev) -> usize {
    items.iter().filter(|(_, e)| e == ev).count()
}

/// A client factory that records everything and, optionally, connects again from its
/// failure callback (Twisted's test_reconnect).
struct Rec {
    log: Log,
    greeting: Vec<u8>,
    /// Close once this many bytes came back.
    expect: usize,
    reconnects_left: usize,
}

impl Rec {
    fn new(log: &Log) -> Self {
        Self {
            log: log.clone(),
            greeting: Vec::new(),
            expect: usize::MAX,
            reconnects_left: 0,
        }
    }

    fn sending(mut self, data: Vec<u8>, close_after: usize) -> Self {
        self.greeting = data;
        self.expect = close_after;
        self
    }
}

impl Factory for Rec {
    type Protocol = RecProto;

    fn start(&mut self, _shard: &ShardInfo) {
        self.log.push(Ev::FactoryStart);
    }

    fn stop(&mut self) {
        self.log.push(Ev::FactoryStop);
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<RecProto> {
        self.log.push(Ev::Built);
        Some(RecProto {
            log: self.log.clone(),
            greeting: self.greeting.clone(),
            expect: self.expect,
            got: 0,
        })
    }
}

impl ClientFactory for Rec {
    fn started_connecting(&mut self, connector: &Connector) {
        // Disconnected when the attempt was stopped in the turn that started it.
        assert_ne!(connector.state(), ConnectorState::Connected);
        self.log.push(Ev::Started);
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: &ConnectError) {
        self.log.push(Ev::Failed(reason.label()));
        self.log.errors.lock().unwrap().push(reason.clone());
        assert_eq!(connector.state(), ConnectorState::Disconnected);
        if self.reconnects_left > 0 {
            self.reconnects_left -= 1;
            connector.connect().unwrap();
        }
    }

    fn client_connection_lost(&mut self, connector: &Connector, reason: &CloseReason) {
        assert_eq!(connector.state(), ConnectorState::Disconnected);
        self.log.push(Ev::Lost(reason.label()));
    }

    fn client_gave_up(&mut self, connector: &Connector) {
        assert!(connector.is_idle());
        self.log.push(Ev::GaveUp);
    }
}

struct RecProto {
    log: Log,
    greeting: Vec<u8>,
    expect: usize,
    got: usize,
}

impl Protocol for RecProto {
    fn connection_made(&mut self, t: &Transport) {
        self.log.push(Ev::Made);
        self.log
            .ends
            .lock()
            .unwrap()
            .push((t.local_addr(), t.peer_addr()));
        let options = (t.nodelay().unwrap(), t.keepalive().unwrap());
        self.log.options.lock().unwrap().push(options);
        t.write(&self.greeting);
    }

    fn data_received(&mut self, data: &[u8], t: &Transport) {
        // The bytes first: a test that waits for the event then reads them must find them.
        self.log.received.lock().unwrap().extend_from_slice(data);
        self.log.push(Ev::Data);
        self.got += data.len();
        if self.got >= self.expect {
            t.lose_connection();
        }
    }

    fn drain_requested(&mut self, _t: &Transport) {
        self.log.push(Ev::Drain);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.push(Ev::ProtoLost(reason.label()));
    }
}

async fn sleep_ms(ms: u64) {
    glommio::timer::sleep(Duration::from_millis(ms)).await;
}

/// A loopback port on which nothing listens.
fn closed_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A listener whose accept queue is full, so that the kernel drops new SYNs and connects
/// hang: backlog 0 holds one connection, which the returned stream keeps.
fn full_backlog() -> (Socket, StdStream, SocketAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let held = StdStream::connect(addr).unwrap();
    let probe = StdStream::connect_timeout(&addr, Duration::from_millis(200));
    assert!(
        probe.is_err(),
        "precondition: a connect to a full accept queue should hang on this kernel"
    );
    (l, held, addr)
}

fn echo_engine(listen: SocketAddr) -> Engine {
    let tweak = |c: &mut EngineConfig| c.drain_timeout = Duration::from_millis(50);
    util::engine_at(1, listen, tweak, |_| Echo::factory()).0
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

/// A factory's events for three refused attempts, then `then`, then its stop.
fn three_refusals(then: &[Ev]) -> Vec<Ev> {
    let mut events = vec![Ev::FactoryStart];
    for _ in 0..3 {
        events.extend([Ev::Started, Ev::Failed("refused")]);
    }
    events.extend_from_slice(then);
    events.push(Ev::FactoryStop);
    events
}

#[test]
fn refused_is_reported_once_per_attempt_on_a_later_turn() {
    let addr = closed_port();
    let log = Log::default();
    let l = log.clone();
    on_executor(move || async move {
        let mut rec = Rec::new(&l);
        rec.reconnects_left = 2;
        let c = connect_tcp(addr, rec, ConnectOptions::default());
        // Nothing is reported inside the call.
        assert!(l.events().is_empty());
        assert_eq!(c.state(), ConnectorState::Connecting);
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::Failed("refused")) == 3)
                .await
        );
        sleep_ms(100).await;
        assert_eq!(c.state(), ConnectorState::Disconnected);
        assert_eq!(c.destination(), &Destination::from(addr));
    });
    assert_eq!(log.events(), three_refusals(&[]));
    let e = log.last_error();
    assert_eq!(e.os_error(), Some(libc::ECONNREFUSED));
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

/// A policy with two retries: three refusals, then the factory hears that it gave up, and
/// `connected()` answers at once on the idle connector.
#[test]
fn a_policy_out_of_retries_says_it_gave_up() {
    let addr = closed_port();
    let log = Log::default();
    let l = log.clone();
    on_executor(move || async move {
        let policy = ReconnectPolicy::default()
            .with_initial_delay(Duration::from_millis(5))
            .with_jitter(0.0)
            .with_max_retries(Some(2));
        let options = ConnectOptions::default().with_reconnect(Some(policy));
        let c = connect_tcp(addr, Rec::new(&l), options);
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::GaveUp) == 1)
                .await
        );
        assert!(c.is_idle());
        assert!(c.connected().await.is_err(), "an idle connector answers at once");
    });
    assert_eq!(log.events(), three_refusals(&[Ev::GaveUp]));
}

#[test]
fn connect_timeout_against_a_full_backlog() {
    let (_listener, _held, addr) = full_backlog();
    let log = Log::default();
    let l = log.clone();
    let timeout = Duration::from_millis(300);
    let elapsed = on_executor(move || async move {
        let start = Instant::now();
        let options = ConnectOptions::default().with_timeout(timeout);
        let _c = connect_tcp(addr, Rec::new(&l), options);
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::Failed("timed_out")) == 1)
                .await
        );
        let (at, _) = l
            .timed()
            .into_iter()
            .find(|(_, e)| *e == Ev::Failed("timed_out"))
            .unwrap();
        at - start
    });
    assert!(
        elapsed >= timeout && elapsed <= timeout + Duration::from_millis(100),
        "timed out after {elapsed:?}"
    );
    match log.last_error() {
        ConnectError::TimedOut { after } => assert!(after >= timeout, "{after:?}"),
        other => panic!("expected a timeout, got {other}"),
    }
    assert_eq!(
        log.events(),
        [
            Ev::FactoryStart,
            Ev::Started,
            Ev::Failed("timed_out"),
            Ev::FactoryStop
        ]
    );
}

#[test]
fn stop_connecting_gives_cancelled_and_nothing_else() {
    let (_listener, _held, addr) = full_backlog();
    let log = Log::default();
    let l = log.clone();
    on_executor(move || async move {
        let options = ConnectOptions::default()
            .with_timeout(Duration::from_secs(10))
            .with_reconnect(Some(
                ReconnectPolicy::default().with_initial_delay(Duration::from_millis(10)),
            ));
        let c = connect_tcp(addr, Rec::new(&l), options);
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::Started) == 1)
                .await
        );
        sleep_ms(50).await;
        c.stop_connecting().unwrap();
        assert_eq!(c.state(), ConnectorState::Disconnected);
        let again = c.stop_connecting().unwrap_err();
        assert_eq!(again.state(), ConnectorState::Disconnected);
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::Failed("cancelled")) == 1)
                .await
        );
        // Nothing else comes: no timeout, no retry, no connection.
        sleep_ms(300).await;
    });
    assert_eq!(
        log.events(),
        [
            Ev::FactoryStart,
            Ev::Started,
            Ev::Failed("cancelled"),
            Ev::FactoryStop
        ]
    );
}

#[test]
fn stop_in_the_same_turn_then_connect_again_then_disconnect() {
    // A listener that never accepts still completes handshakes into its queue.
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let l = log.clone();
    on_executor(move || async move {
        let c = connect_tcp(addr, Rec::new(&l), ConnectOptions::default());
        c.stop_connecting().unwrap();
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::FactoryStop) == 1)
                .await
        );
        sleep_ms(50).await;
        assert_eq!(
            l.events(),
            [
                Ev::FactoryStart,
                Ev::Started,
                Ev::Failed("cancelled"),
                Ev::FactoryStop
            ]
        );
        // The same connector connects again, and this time the connection is made.
        c.connect().unwrap();
        assert!(c.connect().is_err(), "already connecting");
        assert!(l.until(Duration::from_secs(5), |l| l.count(&Ev::Made) == 1).await);
        assert_eq!(c.state(), ConnectorState::Connected);
        assert!(c.transport().unwrap().is_connected());
        assert!(c.stop_connecting().is_err(), "connected, not connecting");
        c.disconnect();
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::FactoryStop) == 2)
                .await
        );
        assert_eq!(c.state(), ConnectorState::Disconnected);
        assert!(c.transport().is_none());
    });
    drop(listener);
    // The protocol hears of the loss before the factory (Twisted's test_loseOrder).
    assert_eq!(
        log.events()[4..],
        [
            Ev::FactoryStart,
            Ev::Started,
            Ev::Built,
            Ev::Made,
            Ev::ProtoLost("local"),
            Ev::Lost("local"),
            Ev::FactoryStop,
        ]
    );
}

#[test]
fn reconnects_with_backoff_after_the_server_restarts() {
    let engine = echo_engine("127.0.0.1:0".parse().unwrap());
    let addr = engine.local_addrs()[0];
    let log = Log::default();
    let stop = Arc::new(AtomicBool::new(false));
    let delays = [100u64, 200, 400, 800];
    let client = {
        let (l, stop) = (log.clone(), stop.clone());
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let policy = ReconnectPolicy::default()
                    .with_initial_delay(Duration::from_millis(100))
                    .with_factor(2.0)
                    .with_max_delay(Duration::from_millis(800))
                    .with_jitter(0.0)
                    .with_max_retries(Some(50));
                let options = ConnectOptions::default().with_reconnect(Some(policy));
                let c = connect_tcp(addr, Rec::new(&l).sending(b"ping".to_vec(), usize::MAX), options);
                let end = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    sleep_ms(5).await;
                }
                c.disconnect();
                l.until(Duration::from_secs(2), |l| l.count(&Ev::FactoryStop) == 1)
                    .await
            })
            .unwrap()
    };
    log.events
        .wait_until("the first echo", |e| count(e, &Ev::Data) >= 1);

    // The server goes away: the connection is lost, then retries are refused.
    engine.shutdown();
    engine.join().unwrap();
    log.events
        .wait_until("three refusals", |e| count(e, &Ev::Failed("refused")) >= 3);

    // It comes back on the same address: the client reconnects and resumes.
    let engine = echo_engine(addr);
    log.events.wait_until("the second echo", |e| {
        count(e, &Ev::Made) == 2 && count(e, &Ev::Data) >= 2
    });
    assert_eq!(log.received(), b"pingping");
    stop.store(true, Ordering::Relaxed);
    assert!(client.join().unwrap(), "the factory stops after disconnect");
    engine.shutdown();
    engine.join().unwrap();

    // Each retry waited its back-off: 100, 200, 400, 800 ms (no jitter), measured from the
    // end of the previous attempt.
    let timed = log.timed();
    let lost_at = timed.iter().position(|(_, e)| matches!(e, Ev::Lost(_))).unwrap();
    let mut ends = Vec::new();
    let mut starts = Vec::new();
    for (at, e) in &timed[lost_at..] {
        match e {
            Ev::Lost(_) | Ev::Failed(_) => ends.push(*at),
            Ev::Started => starts.push(*at),
            _ => {}
        }
    }
    assert!(starts.len() >= 4, "{:?}", log.events());
    for (k, (end, start)) in ends.iter().zip(&starts).enumerate() {
        let want = Duration::from_millis(delays[k.min(delays.len() - 1)]);
        let waited = *start - *end;
        assert!(waited >= want, "retry {} waited {waited:?}, want {want:?}", k + 1);
    }
    let events = log.events();
    assert_eq!(events.iter().filter(|e| **e == Ev::FactoryStart).count(), 1);
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Ev::Failed(r) if *r != "refused")),
        "{events:?}"
    );
}

#[test]
fn ipv6_loopback_and_scoped_link_local_literals() {
    let engine = echo_engine("[::1]:0".parse().unwrap());
    let addr = engine.local_addrs()[0];
    let log = Log::default();
    let l = log.clone();
    on_executor(move || async move {
        let dest: Destination = format!("[::1]:{}", addr.port()).parse().unwrap();
        assert_eq!(resolve(&dest).await.unwrap(), vec![Address::from(addr)]);
        let _c = connect_tcp(
            dest,
            Rec::new(&l).sending(b"six".to_vec(), 3),
            ConnectOptions::default(),
        );
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::Lost("local")) == 1)
                .await
        );

        // A scoped link-local literal resolves numerically: no lookup, scope id from the name.
        let scoped: Destination = "[fe80::1%lo]:7000".parse().unwrap();
        let got = resolve(&scoped).await.unwrap();
        // SAFETY: a NUL-terminated string, as the call needs.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ip(), "fe80::1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(
            (got[0].port(), got[0].flowinfo(), got[0].scope_id()),
            (7000, 0, lo)
        );
        assert_eq!(got[0].to_string(), "[fe80::1%lo]:7000");
        assert_eq!(scoped.to_string(), "[fe80::1%lo]:7000");
        // Connecting uses the scope: nothing has that address on lo, so the kernel answers
        // "unreachable" (without the scope it would be an invalid-argument error).
        let _c = connect_tcp(scoped, Rec::new(&l), ConnectOptions::default());
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::FactoryStop) == 2)
                .await
        );
        let label = l.last_error().label();
        assert!(["unreachable", "refused"].contains(&label), "{}", l.last_error());

        // A name resolves off the reactor thread, to loopback addresses here.
        let local = resolve(&"localhost:7000".parse().unwrap()).await.unwrap();
        assert!(
            !local.is_empty() && local.iter().all(|a| a.ip().is_loopback()),
            "{local:?}"
        );
    });
    engine.shutdown();
    engine.join().unwrap();
    assert_eq!(log.received(), b"six");
    assert_eq!(
        log.options.lock().unwrap()[0],
        (true, false),
        "defaults: nodelay on, keepalive off"
    );
    let (local, peer) = log.ends.lock().unwrap()[0];
    assert_eq!(peer, Address::from(addr));
    assert_eq!(local.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    for bad in ["[fe80::1%lo]:http", "[fe80::zz%lo]:7000", "fe80::1%lo:7000"] {
        let e = bad.parse::<Destination>().unwrap_err().to_string();
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn a_name_that_does_not_resolve_fails_with_resolution() {
    let log = Log::default();
    let l = log.clone();
    on_executor(move || async move {
        let dest: Destination = "no-such-host.invalid:80".parse().unwrap();
        let options = ConnectOptions::default().with_timeout(Duration::from_secs(20));
        let _c = connect_tcp(dest, Rec::new(&l), options);
        assert!(
            l.until(Duration::from_secs(25), |l| l.count(&Ev::FactoryStop) == 1)
                .await
        );
    });
    assert_eq!(
        log.events(),
        [
            Ev::FactoryStart,
            Ev::Started,
            Ev::Failed("resolution"),
            Ev::FactoryStop
        ]
    );
    let e = log.last_error().to_string();
    assert!(e.contains("no-such-host.invalid"), "{e}");
}

#[test]
fn bind_address_and_bind_errors() {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let l = log.clone();
    on_executor(move || async move {
        // Bound to another loopback address, the connection comes from it.
        let bound = ConnectOptions::default()
            .with_bind(Some("127.0.0.2:0".parse().unwrap()))
            .with_nodelay(false)
            .with_keepalive(Some(Keepalive::new(
                Duration::from_secs(30),
                Duration::from_secs(5),
                3,
            )));
        let c = connect_tcp(addr, Rec::new(&l), bound);
        assert!(l.until(Duration::from_secs(5), |l| l.count(&Ev::Made) == 1).await);
        c.disconnect();
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::FactoryStop) == 1)
                .await
        );

        // The listener's own address is in use: a bind error, not a connect error.
        let busy = ConnectOptions::default().with_bind(Some(addr.into()));
        let _c = connect_tcp(addr, Rec::new(&l), busy);
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::Failed("bind")) == 1)
                .await
        );
        let e = l.last_error();
        assert_eq!(e.os_error(), Some(libc::EADDRINUSE));
        assert!(e.to_string().contains(&addr.to_string()), "{e}");

        // A bind address of the other family cannot reach the destination.
        let v6 = ConnectOptions::default().with_bind(Some("[::1]:0".parse().unwrap()));
        let _c = connect_tcp(addr, Rec::new(&l), v6);
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::Failed("bind")) == 2)
                .await
        );
    });
    drop(listener);
    let (local, peer) = log.ends.lock().unwrap()[0];
    assert_eq!(
        log.options.lock().unwrap()[0],
        (false, true),
        "nodelay off, keepalive on"
    );
    assert_eq!(local.ip(), "127.0.0.2".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(peer, Address::from(addr));
}

/// Sends its payload and half-closes (or aborts at once), through the client transport.
struct HalfClose {
    log: Log,
    payload: Vec<u8>,
    abort: bool,
}

impl Protocol for HalfClose {
    fn connection_made(&mut self, t: &Transport) {
        t.write(&self.payload);
        if self.abort {
            t.abort_connection();
            return;
        }
        t.lose_write_connection();
        t.write(b"dropped: the write side is shut");
    }

    fn data_received(&mut self, data: &[u8], _t: &Transport) {
        self.log.received.lock().unwrap().extend_from_slice(data);
    }

    fn write_connection_lost(&mut self, _t: &Transport) {
        self.log.push(Ev::WriteLost);
    }

    fn read_connection_lost(&mut self, t: &Transport) {
        self.log.push(Ev::ReadLost);
        t.lose_connection();
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.push(Ev::ProtoLost(reason.label()));
    }
}

#[test]
fn the_client_transport_half_closes_and_aborts_like_the_servers() {
    let engine = echo_engine("127.0.0.1:0".parse().unwrap());
    let addr = engine.local_addrs()[0];
    let payload = pattern(200_000);
    let log = Log::default();
    let (l, p) = (log.clone(), payload.clone());
    on_executor(move || async move {
        // Any `factory_fn` factory is a client factory.
        let half = (l.clone(), p);
        let factory = weft::factory_fn(move |_| {
            Some(HalfClose {
                log: half.0.clone(),
                payload: half.1.clone(),
                abort: false,
            })
        });
        let _c = connect_tcp(addr, factory, ConnectOptions::default());
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::ProtoLost("eof")) == 1)
                .await
        );
        let aborting = l.clone();
        let factory = weft::factory_fn(move |_| {
            Some(HalfClose {
                log: aborting.clone(),
                payload: b"x".to_vec(),
                abort: true,
            })
        });
        let _c = connect_tcp(addr, factory, ConnectOptions::default());
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::ProtoLost("aborted"))
                == 1)
                .await
        );
    });
    engine.shutdown();
    engine.join().unwrap();
    assert!(log.received() == payload, "{} bytes echoed", log.received().len());
    assert_eq!(
        log.events(),
        [
            Ev::WriteLost,
            Ev::ReadLost,
            Ev::ProtoLost("eof"),
            Ev::ProtoLost("aborted")
        ]
    );
}

/// An engine whose shard dials out from `Factory::start`.
struct Dialer {
    target: SocketAddr,
    log: Log,
    connector: Option<Connector>,
}

impl Factory for Dialer {
    type Protocol = Echo;

    fn start(&mut self, _shard: &ShardInfo) {
        let options = ConnectOptions::default().with_reconnect(Some(
            ReconnectPolicy::default().with_initial_delay(Duration::from_millis(10)),
        ));
        self.connector = Some(connect_tcp(self.target, Rec::new(&self.log), options));
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Echo> {
        Some(Echo)
    }
}

#[test]
fn a_client_inside_a_shard_drains_and_aborts_with_the_engine() {
    let upstream = echo_engine("127.0.0.1:0".parse().unwrap());
    let target = upstream.local_addrs()[0];
    let log = Log::default();
    let l = log.clone();
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    config.drain_timeout = Duration::from_millis(100);
    let dialer = Engine::builder(config)
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap(), move |_| Dialer {
            target,
            log: l.clone(),
            connector: None,
        })
        .start()
        .unwrap();
    log.events
        .wait_until("the connection", |e| count(e, &Ev::Made) == 1);
    dialer.shutdown();
    let report = dialer.join().unwrap();
    upstream.shutdown();
    upstream.join().unwrap();
    // The client connection was the shard's: asked to drain, then aborted at the timeout,
    // and not retried after the engine's shutdown.
    assert_eq!(report.total().closed_for("shutdown"), 1);
    assert_eq!(
        log.events(),
        [
            Ev::FactoryStart,
            Ev::Started,
            Ev::Built,
            Ev::Made,
            Ev::Drain,
            Ev::ProtoLost("shutdown"),
            Ev::Lost("shutdown"),
            Ev::FactoryStop,
        ]
    );
}

// ---- interop with Twisted ----

/// A child process killed when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn interop_script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn weft_client_against_a_twisted_echo_server() {
    util::require_peer(util::Peer::Python("twisted"));
    let mut server = Reaped(
        Command::new("python3")
            .arg(interop_script("twisted_echo_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the server prints its port");
    let payload = pattern(300_000);
    let log = Log::default();
    let (l, p) = (log.clone(), payload.clone());
    on_executor(move || async move {
        let n = p.len();
        let dest = Destination::new("127.0.0.1", port).unwrap();
        let _c = connect_tcp(dest, Rec::new(&l).sending(p, n), ConnectOptions::default());
        assert!(
            l.until(Duration::from_secs(20), |l| l.count(&Ev::FactoryStop) == 1)
                .await
        );
    });
    // Closing its standard input stops the server.
    drop(server.0.stdin.take());
    assert!(
        log.received() == payload,
        "the echo differs ({} bytes back)",
        log.received().len()
    );
    let events = log.events();
    assert_eq!(events.last(), Some(&Ev::FactoryStop));
    assert!(
        events.contains(&Ev::ProtoLost("local")) && events.contains(&Ev::Lost("local")),
        "{events:?}"
    );
}

#[test]
fn twisted_client_against_weft_serve() {
    util::require_peer(util::Peer::Python("twisted"));
    let (command, addr) = util::echo_server_command();
    let _server = Reaped(util::spawn_listening(command, addr));
    let port = addr.port();
    let size = 300_000;
    let mut client = Reaped(
        Command::new("python3")
            .args([
                interop_script("twisted_echo_client.py"),
                port.to_string(),
                size.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut echoed = Vec::new();
    client.0.stdout.take().unwrap().read_to_end(&mut echoed).unwrap();
    let status = client.0.wait().unwrap();
    let mut err = String::new();
    client.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "twisted client failed: {err}");
    assert!(
        echoed == pattern(size),
        "the echo differs ({} bytes back)",
        echoed.len()
    );
    // The server is still serving after the client left.
    let mut s = util::connect(addr);
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
}

#[test]
fn refused_connector_state_errors_read_well() {
    // The rules for calls in the wrong state, as a program sees them.
    let addr = closed_port();
    let log = Log::default();
    let l = log.clone();
    let messages = on_executor(move || async move {
        let c = connect_tcp(addr, Rec::new(&l), ConnectOptions::default());
        let connecting = c.connect().unwrap_err().to_string();
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::FactoryStop) == 1)
                .await
        );
        let stopped = c.stop_connecting().unwrap_err().to_string();
        (connecting, stopped)
    });
    assert_eq!(
        messages.0,
        "cannot connect while the connector is connecting: wait for the attempt to end, or call \
         stop_connecting first"
    );
    assert_eq!(
        messages.1,
        "cannot stop connecting while the connector is disconnected: only an attempt in progress can \
         be stopped"
    );
}

#[test]
fn a_call_given_up_by_a_timeout_takes_its_connection_with_it() {
    // A server that accepts and never answers.
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let l = log.clone();
    let (elapsed, quick) = on_executor(move || async move {
        // Connected, a request written, then no answer: the timeout drops the call.
        let call = async {
            let conn = connect_tcp(addr, Rec::new(&l), ConnectOptions::default()).abort_on_drop();
            let t = conn.connected().await.unwrap();
            t.write(b"question\n");
            std::future::pending::<()>().await;
        };
        let elapsed = weft::shard::timeout(Duration::from_millis(200), call).await;
        // The connection went with the call's future: reset at once, not left open.
        assert!(
            l.until(Duration::from_secs(5), |l| l.count(&Ev::ProtoLost("aborted"))
                == 1)
                .await
        );
        // A future that finishes in time is not cut.
        let quick = weft::shard::timeout(Duration::from_secs(5), async { 7 }).await;
        (elapsed, quick)
    });
    assert_eq!(elapsed, Err(weft::shard::Elapsed(Duration::from_millis(200))));
    assert_eq!(quick, Ok(7));
    assert_eq!(elapsed.unwrap_err().to_string(), "no result within 200ms");
    // The server's side sees the reset (after the question, unless the reset dropped it).
    let (mut server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let end = server.read_to_end(&mut got);
    assert!(got.is_empty() || got == b"question\n", "{got:?}");
    assert_eq!(end.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
}
