//! Metrics end to end: exact counters after a scripted session, Prometheus text that
//! promtool accepts, a stalled collector, and the CLI's `--metrics` and `--stats-interval`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::SockRef;
use util::connect;
use weft::metrics::{
    CounterMetric, GaugeMetric, MetricsHandle, MetricsSnapshot, PrometheusExporter, REACTOR_LAG,
};
use weft::protocols::{Echo, Http, http::REQUEST_DURATION};
use weft::{Engine, EngineConfig, Factory, Protocol, ShardInfo, StatsSnapshot, Transport, factory_fn};

const WAIT: Duration = Duration::from_secs(10);

/// An engine on up to two shards whose shards report every `interval`.
fn engine<F, M>(interval: Duration, tweak: impl FnOnce(&mut EngineConfig), make: M) -> (Engine, SocketAddr)
where
    F: Factory,
    M: Fn(&ShardInfo) -> F + Send + Sync + 'static,
{
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    util::engine_with(
        shards,
        |c| {
            c.metrics.interval = interval;
            tweak(c);
        },
        make,
    )
}

/// Polls `metrics` until `done` holds (or the bound runs out); returns the last snapshot.
fn wait_for(metrics: &MetricsHandle, done: impl Fn(&MetricsSnapshot) -> bool) -> MetricsSnapshot {
    let deadline = Instant::now() + WAIT;
    loop {
        let snap = metrics.snapshot();
        if done(&snap) || Instant::now() > deadline {
            return snap;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every field of the shards' counters added up by hand.
fn sum_by_hand(snap: &MetricsSnapshot) -> StatsSnapshot {
    let mut sum = StatsSnapshot::default();
    for s in &snap.shards {
        sum.accepted += s.stats.accepted;
        sum.active += s.stats.active;
        sum.bytes_in += s.stats.bytes_in;
        sum.bytes_out += s.stats.bytes_out;
        for (a, b) in sum.closed.iter_mut().zip(s.stats.closed) {
            *a += b;
        }
    }
    sum
}

#[test]
fn scripted_session_counts_exactly() {
    const N: usize = 24;
    let (engine, addr) = engine(Duration::from_millis(20), |_| {}, |_| Echo::factory());
    let metrics = engine.metrics().unwrap();
    let mut bytes = 0u64;
    let mut resets = 0u64;
    for i in 0..N {
        let mut s = connect(addr);
        let msg = vec![b'a' + (i % 26) as u8; 1000 + 37 * i];
        s.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
        bytes += msg.len() as u64;
        if i % 6 == 0 {
            // SO_LINGER 0: the close sends a reset.
            SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
            resets += 1;
        } else {
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0, "echo closes after our EOF");
        }
    }
    let n = N as u64;
    let snap = wait_for(&metrics, |s| s.total().closed_total() == n);
    let total = snap.total();
    assert_eq!(total.accepted, n);
    assert_eq!(total.active, 0);
    assert_eq!((total.bytes_in, total.bytes_out), (bytes, bytes));
    assert_eq!(total.closed_for("reset"), resets);
    assert_eq!(total.closed_for("eof"), n - resets);
    assert_eq!(total.closed_total(), n);
    let by_hand = sum_by_hand(&snap);
    assert_eq!(
        (
            by_hand.accepted,
            by_hand.active,
            by_hand.bytes_in,
            by_hand.bytes_out,
            by_hand.closed
        ),
        (
            total.accepted,
            total.active,
            total.bytes_in,
            total.bytes_out,
            total.closed
        ),
        "the per-shard values sum to the totals"
    );
    assert!(snap.shards.iter().all(|s| s.reports > 0 && s.age.is_some()));
    let lag = snap
        .latency(REACTOR_LAG.name())
        .expect("every shard probes its reactor lag");
    assert!(!lag.histogram.is_empty());

    engine.shutdown();
    let report = engine.join().unwrap();
    let after = metrics.snapshot();
    for (final_stats, view) in report.shards.iter().zip(&after.shards) {
        assert_eq!(
            *final_stats, view.stats,
            "the collector's view is the shard's final count"
        );
    }
}

/// Sends `per_conn` pipelined `GET /` on each of `conns` connections and reads the answers.
fn http_requests(addr: SocketAddr, conns: usize, per_conn: usize) {
    for _ in 0..conns {
        let mut s = connect(addr);
        s.write_all(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(per_conn))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.windows(13).filter(|w| w == b"Hello, World!").count() < per_conn {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the server closed early");
            got.extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn prometheus_text_passes_promtool_and_bad_requests_are_answered() {
    const REQUESTS: u64 = 40;
    util::require_peer(util::Peer::Program("promtool"));
    let (engine, addr) = engine(Duration::from_millis(20), |_| {}, |_| Http::factory());
    let metrics = engine.metrics().unwrap();
    let exporter = PrometheusExporter::start(SocketAddr::from(([127, 0, 0, 1], 0)), metrics.clone()).unwrap();
    let at = exporter.local_addr();
    http_requests(addr, 4, 10);
    let snap = wait_for(&metrics, |s| {
        s.latency(REQUEST_DURATION.name())
            .is_some_and(|l| l.histogram.len() == REQUESTS)
    });
    let served = snap.latency(REQUEST_DURATION.name()).unwrap();
    assert_eq!(served.histogram.len(), REQUESTS, "one service time per request");

    // Misbehaving scrapers get an answer or a timeout, and the exporter goes on.
    assert!(util::http_exchange(at, b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(util::http_exchange(at, &vec![b'x'; 100 * 1024]).starts_with("HTTP/1.1 431"));
    assert!(util::http_exchange(at, b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(util::http_exchange(at, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let _silent = connect(at);

    let body = util::scrape(at);
    for name in [
        "weft_connections_accepted_total",
        "weft_connections_active",
        "weft_bytes_received_total",
        "weft_bytes_sent_total",
    ] {
        assert!(
            body.contains(&format!("{name}{{shard=\"0\"}} ")),
            "{name} missing:\n{body}"
        );
    }
    // SO_REUSEPORT may put all four client connections on one shard: any shard will do.
    assert!(
        body.contains("weft_http_request_duration_seconds_count{shard=\""),
        "{body}"
    );
    assert!(
        body.contains("weft_reactor_lag_seconds_bucket{shard=\"0\",le=\"+Inf\"}"),
        "{body}"
    );

    util::promtool_check(&body);
    drop(exporter);
}

#[test]
fn stalled_collector_never_blocks_a_shard() {
    let tweak = |c: &mut EngineConfig| {
        c.metrics.queue_per_shard = 1;
        c.metrics.lag_tick = Duration::from_millis(1);
    };
    let (engine, addr) = engine(Duration::from_millis(5), tweak, |_| Echo::factory());
    let metrics = engine.metrics().unwrap();
    let stall = metrics.stall_collector();

    // Far more report intervals pass than the queue holds; every round trip still completes.
    let mut s = connect(addr);
    let started = Instant::now();
    let mut trips = 0u64;
    let mut buf = [0u8; 64];
    while started.elapsed() < Duration::from_millis(400) && trips < 100_000 {
        s.write_all(&[7u8; 64]).unwrap();
        s.read_exact(&mut buf).unwrap();
        trips += 1;
    }
    let stalled = wait_for(&metrics, |s| s.dropped() > 0);
    assert!(
        stalled.dropped() > 0,
        "dropped reports are counted while the collector is stalled"
    );
    drop(stall);

    let bytes = trips * 64;
    let snap = wait_for(&metrics, |s| s.total().bytes_out == bytes);
    assert_eq!((snap.total().bytes_in, snap.total().bytes_out), (bytes, bytes));
    assert!(snap.dropped() >= stalled.dropped());
    assert!(snap.shards.iter().all(|s| s.reports > 0));
    drop(s);
    engine.shutdown();
    engine.join().unwrap();
}

/// Kills the child if the test fails before it stopped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cli_serves_metrics_and_prints_stats_lines() {
    let mut child = Reap(util::weft(&[
        "serve",
        "--proto",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--stats-interval",
        "100ms",
    ]));
    let child = &mut child.0;
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let next_line = |want: &str| -> String {
        let deadline = Instant::now() + WAIT;
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(want) {
                return line;
            }
        }
        panic!("no line with {want:?}");
    };
    let addr_after = |line: &str, marker: &str| -> SocketAddr {
        let rest = &line[line.find(marker).unwrap() + marker.len()..];
        let end = rest.find([' ', '/']).unwrap_or(rest.len());
        rest[..end].parse().unwrap()
    };
    // The side ports are said first; "serving" once everything serves.
    let metrics_at = addr_after(&next_line("metrics at http://"), "metrics at http://");
    let serving = next_line("serving echo on ");
    let echo = addr_after(&serving, "serving echo on ");

    let mut s = connect(echo);
    s.write_all(b"hello").unwrap();
    s.read_exact(&mut [0u8; 5]).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut body = util::scrape(metrics_at);
    while !body.contains("weft_bytes_sent_total{shard=\"0\"} 5\n") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        body = util::scrape(metrics_at);
    }
    assert!(
        body.contains("weft_connections_accepted_total{shard=\"0\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("weft_connections_active{shard=\"0\"} 1\n"),
        "{body}"
    );
    let stats = next_line("conns 1 [1]");
    assert!(stats.contains("| reports dropped 0"), "{stats}");

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    drop(s);
    let status = util::wait_exit(child, WAIT);
    assert!(status.success(), "{status}");
}

#[test]
fn serve_hdr_log_records_every_http_request_for_weft_hist_and_reopens_on_sighup() {
    let dir = util::Scratch::new("serve-hdr-log");
    let log = dir.0.join("server.hlog");
    let addr: SocketAddr = format!("127.0.0.1:{}", util::free_port()).parse().unwrap();
    let mut cmd = util::weft_command(&[
        "serve",
        "--proto",
        "http",
        "--listen",
        &addr.to_string(),
        "--cores",
        "1",
        "--hdr-log",
        log.to_str().unwrap(),
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut server = util::spawn_listening(cmd, addr);
    http_requests(addr, 5, 20);
    // A rotation: the log moved away, then SIGHUP; the server goes on in a new file.
    std::thread::sleep(Duration::from_millis(1500));
    let rotated = dir.0.join("server.hlog.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    http_requests(addr, 5, 10);
    // SAFETY: as above.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert_eq!(util::wait_exit(&mut server, WAIT).code(), Some(0));
    for (file, requests) in [(&rotated, 100), (&log, 50)] {
        let out = util::run_weft(
            &["hist", file.to_str().unwrap(), "--tag", "http_request_duration"],
            WAIT,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("count       {requests} values")),
            "{requests} requests were logged in {}: {text}",
            file.display()
        );
    }
    let untagged = util::run_weft(&["hist", log.to_str().unwrap()], WAIT);
    let err = String::from_utf8_lossy(&untagged.stderr);
    assert!(
        err.contains("http_request_duration") && err.contains("reactor_lag"),
        "{err}"
    );
}

#[test]
fn a_successor_can_bind_the_metrics_address_while_the_old_exporter_serves() {
    let (engine, _addr) = engine(Duration::from_millis(50), |_| {}, |_| Echo::factory());
    let metrics = engine.metrics().unwrap();
    let old = PrometheusExporter::start(SocketAddr::from(([127, 0, 0, 1], 0)), metrics.clone()).unwrap();
    // What a `--takeover` successor does with the same `--metrics ADDR` while `old` drains.
    let new = PrometheusExporter::start(old.local_addr(), metrics).unwrap();
    assert_eq!(new.local_addr(), old.local_addr());
    drop(old);
    assert!(util::scrape(new.local_addr()).contains("weft_connections_active"));
}

/// Bytes received, by whether they were the connection's first read.
static RECEIVED: CounterMetric = CounterMetric::labeled(
    "test_received_bytes",
    "Bytes received, by read.",
    "read",
    &["first", "later"],
);
/// Connections open.
static OPEN: GaugeMetric = GaugeMetric::new("test_open_connections", "Connections open.");

/// Counts what it receives into [`RECEIVED`] and [`OPEN`], and echoes it.
struct Counting {
    reads: u64,
}

impl Protocol for Counting {
    fn connection_made(&mut self, _transport: &Transport) {
        OPEN.add(1);
    }

    fn data_received(&mut self, data: &[u8], transport: &Transport) {
        RECEIVED.add_at(usize::from(self.reads > 0), data.len() as u64);
        self.reads += 1;
        transport.write(data);
    }

    fn connection_lost(&mut self, _reason: &weft::CloseReason) {
        OPEN.add(-1);
    }
}

#[test]
fn protocol_counters_and_gauges_reach_the_snapshot_and_the_text() {
    // Off a shard, recording does nothing.
    RECEIVED.add(5);
    OPEN.set(9);
    let (engine, addr) = engine(
        Duration::from_millis(20),
        |_| {},
        |_| factory_fn(|_| Some(Counting { reads: 0 })),
    );
    let metrics = engine.metrics().unwrap();
    let exporter = PrometheusExporter::start(SocketAddr::from(([127, 0, 0, 1], 0)), metrics.clone()).unwrap();
    let mut open = Vec::new();
    for i in 0..3 {
        let mut s = connect(addr);
        s.write_all(&[b'x'; 10]).unwrap();
        s.read_exact(&mut [0u8; 10]).unwrap();
        if i == 0 {
            s.write_all(&[b'y'; 7]).unwrap();
            s.read_exact(&mut [0u8; 7]).unwrap();
        }
        open.push(s);
    }
    let snap = wait_for(&metrics, |s| {
        s.counter(RECEIVED.name()) == Some(37) && s.gauge(OPEN.name()) == Some(3)
    });
    assert_eq!(snap.counter(RECEIVED.name()), Some(37), "{:?}", snap.shards);
    assert_eq!(snap.counter_with(RECEIVED.name(), "first"), Some(30));
    assert_eq!(snap.counter_with(RECEIVED.name(), "later"), Some(7));
    assert_eq!(snap.gauge(OPEN.name()), Some(3));
    let per_shard: i64 = snap
        .shards
        .iter()
        .flat_map(|s| &s.gauges)
        .filter(|g| g.name == OPEN.name())
        .map(|g| g.value)
        .sum();
    assert_eq!(per_shard, 3, "each shard keeps its own value");

    let body = util::scrape(exporter.local_addr());
    assert!(
        body.contains("# TYPE weft_test_received_bytes_total counter\n"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE weft_test_open_connections gauge\n"),
        "{body}"
    );
    assert_eq!(
        util::scraped(&body, "weft_test_received_bytes_total", "read=\"first\""),
        Some(30.0)
    );
    assert_eq!(util::scraped(&body, "weft_test_open_connections", ""), Some(3.0));

    drop(open);
    let snap = wait_for(&metrics, |s| s.gauge(OPEN.name()) == Some(0));
    assert_eq!(snap.gauge(OPEN.name()), Some(0), "the gauge goes down");
    drop(exporter);
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn exporter_serves_process_series_and_build_info() {
    let (engine, _addr) = engine(Duration::from_millis(50), |_| {}, |_| Echo::factory());
    let exporter =
        PrometheusExporter::start(SocketAddr::from(([127, 0, 0, 1], 0)), engine.metrics().unwrap()).unwrap();
    let body = util::scrape(exporter.local_addr());
    let value =
        |name: &str| util::scraped(&body, name, "").unwrap_or_else(|| panic!("{name} missing:\n{body}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value("process_resident_memory_bytes") > 1_048_576.0, "{body}");
    assert!(value("process_cpu_seconds_total") >= 0.0, "{body}");
    let (open, max) = (value("process_open_fds"), value("process_max_fds"));
    assert!(open >= 3.0 && open <= max, "{body}");
    let started = value("process_start_time_seconds");
    assert!(started > now - 3600.0 && started <= now + 1.0, "{body}");
    assert!(
        body.contains("# TYPE process_cpu_seconds_total counter\n"),
        "{body}"
    );
    let build = format!("weft_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"));
    assert!(body.contains(&build), "{body}");
    drop(exporter);
    engine.shutdown();
    engine.join().unwrap();
}
