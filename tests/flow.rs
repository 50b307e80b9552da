//! Flow control, timeouts and bounded memory per connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use util::{Log, connect, echo_server_command, engine_with, spawn_listening, wait_exit};
use weft::codec::{Answer, Answered, FrameHandler, Framed, LineDecoder, LineEncoder};
use weft::protocols::{Echo, Http};
use weft::{CloseReason, Engine, Protocol, Transport, factory_fn};

#[test]
fn a_client_that_never_reads_cannot_grow_server_memory_or_slow_others() {
    let _serial = util::serial();
    let (cmd, addr) = echo_server_command();
    let mut server = spawn_listening(cmd, addr);
    let pid = server.id();
    std::thread::sleep(Duration::from_millis(100));
    let rss0 = util::rss_kib(pid);

    let writer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let chunk = vec![b'f'; 1 << 20];
        let mut written = 0usize;
        let mut stuck_since: Option<Instant> = None;
        let started = Instant::now();
        while written < 256 << 20 && started.elapsed() < Duration::from_secs(20) {
            match s.write(&chunk) {
                Ok(n) => {
                    written += n;
                    stuck_since = None;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let since = *stuck_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                }
                Err(e) => panic!("writer failed: {e}"),
            }
        }
        (written, s)
    });
    // Meanwhile another client's echo stays fast.
    let mut other = connect(addr);
    let mut lat = Vec::new();
    let mut b = [0u8; 8];
    for _ in 0..200 {
        let t = Instant::now();
        other.write_all(b"pingpong").unwrap();
        other.read_exact(&mut b).unwrap();
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (written, _held) = writer.join().unwrap();
    let growth_mib = util::rss_kib(pid).saturating_sub(rss0) as f64 / 1024.0;
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    assert!(
        written < 256 << 20,
        "back-pressure must stop the writer; it wrote all 256 MiB"
    );
    assert!(
        growth_mib < 16.0,
        "server RSS grew {growth_mib:.1} MiB while a client wrote {written} B"
    );
    assert!(p99 < Duration::from_millis(50), "other client's p99 {p99:?}");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = wait_exit(&mut server, Duration::from_secs(15));
}

/// Echo that records why each connection ended.
struct Recorded {
    log: Log<CloseReason>,
}

impl Protocol for Recorded {
    fn data_received(&mut self, data: &[u8], t: &Transport) {
        t.write(data);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.log.push(reason.clone());
    }
}

#[test]
fn never_reading_clients_are_closed_by_the_write_stall_timeout() {
    let _serial = util::serial();
    let log = Log::<CloseReason>::default();
    let l = log.clone();
    let (_engine, addr) = engine_with(
        1,
        |c| {
            c.connection.write_stall_timeout = Some(Duration::from_secs(1));
            // Small kernel buffers, so that output queues up in the engine quickly.
            c.connection.send_buffer = Some(16 * 1024);
            c.connection.recv_buffer = Some(16 * 1024);
        },
        move |_| {
            let l = l.clone();
            factory_fn(move |_| Some(Recorded { log: l.clone() }))
        },
    );
    let chunk = vec![b's'; 64 * 1024];
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            let sock = socket2::SockRef::from(&s);
            sock.set_recv_buffer_size(4096).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Each writes until its socket is full, and never reads.
    let deadline = Instant::now() + Duration::from_secs(5);
    for mut s in &clients {
        let mut sent = 0;
        while sent < 1 << 20 && Instant::now() < deadline {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    let t0 = Instant::now();
    log.wait_until("200 write stalls", |r| r.len() == 200);
    assert!(
        log.items().iter().all(|r| *r == CloseReason::WriteStall),
        "{:?}",
        log.items()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn slowloris_clients_get_408_at_the_header_deadline_while_good_clients_are_served() {
    let _serial = util::serial();
    let (_engine, addr) = engine_with(1, |_| {}, |_| Http::factory());
    const SLOW: usize = 1000;
    let head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut slow: Vec<(TcpStream, Instant, Option<Duration>, Vec<u8>)> = (0..SLOW)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, Instant::now(), None, Vec::new())
        })
        .collect();
    let good = std::thread::spawn(move || {
        let mut served = 0;
        let mut conns: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
        for _round in 0..20 {
            for c in conns.iter_mut() {
                c.write_all(b"GET / HTTP/1.1\r\nHost: good\r\n\r\n").unwrap();
                let mut buf = [0u8; 512];
                let n = c.read(&mut buf).unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
                served += 1;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        served
    });
    let start = Instant::now();
    let mut sent = 0;
    let mut next_byte = start;
    while slow.iter().any(|c| c.2.is_none()) && start.elapsed() < Duration::from_secs(14) {
        if Instant::now() >= next_byte && sent < head.len() {
            for c in slow.iter_mut().filter(|c| c.2.is_none()) {
                if sent == 0 {
                    c.1 = Instant::now();
                }
                let _ = c.0.write(&head[sent..sent + 1]);
            }
            sent += 1;
            next_byte += Duration::from_secs(2);
        }
        for c in slow.iter_mut().filter(|c| c.2.is_none()) {
            let mut buf = [0u8; 512];
            match c.0.read(&mut buf) {
                Ok(0) => c.2 = Some(c.1.elapsed()),
                Ok(n) => c.3.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => c.2 = Some(c.1.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(good.join().unwrap(), 200, "every good request is served");
    for (i, c) in slow.iter().enumerate() {
        let took =
            c.2.unwrap_or_else(|| panic!("slow client {i} still open after {:?}", start.elapsed()));
        assert!(
            took <= Duration::from_secs(11),
            "slow client {i} closed after {took:?}"
        );
        assert!(
            took >= Duration::from_secs(9),
            "slow client {i} closed early, after {took:?}"
        );
        assert!(
            c.3.starts_with(b"HTTP/1.1 408"),
            "slow client {i} got {:?}",
            String::from_utf8_lossy(&c.3)
        );
    }
}

#[test]
fn idle_timeout_closes_idle_connections_but_not_trickling_ones() {
    let _serial = util::serial();
    let (_engine, addr) = engine_with(
        1,
        |c| c.connection.idle_timeout = Some(Duration::from_millis(300)),
        |_| Echo::factory(),
    );
    let mut idle = connect(addr);
    let mut trickle = connect(addr);
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    for _ in 0..15 {
        trickle.write_all(b"t").unwrap();
        trickle.read_exact(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t0.elapsed() > Duration::from_millis(1400));
    assert_eq!(idle.read(&mut b).unwrap(), 0, "the idle connection was closed");
    trickle.write_all(b"u").unwrap();
    trickle.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"u", "the trickling connection is still served");
}

/// The idle timeout closes a connection between requests, not one whose answer is being
/// made: a long poll (an answer that waits longer than the idle timeout) is answered, and
/// the idle time counts from the answer.
#[test]
fn idle_timeout_waits_for_answers_being_made() {
    let _serial = util::serial();
    let (engine, addr) = engine_with(
        1,
        |c| c.connection.idle_timeout = Some(Duration::from_millis(300)),
        |_| {
            factory_fn(|_| {
                let answer = |line: Vec<u8>| async move {
                    weft::shard::sleep(Duration::from_millis(900)).await;
                    Answer::Send(line)
                };
                Some(Framed::new(
                    LineDecoder::new(64),
                    Answered::new(LineEncoder::lf(), answer),
                ))
            })
        },
    );
    let mut c = connect(addr);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    c.write_all(b"poll\n").unwrap();
    let mut answer = [0u8; 5];
    c.read_exact(&mut answer).unwrap();
    assert_eq!(
        &answer,
        b"poll\n",
        "the slow answer arrives, after {:?}",
        t0.elapsed()
    );
    let answered = Instant::now();
    let mut b = [0u8; 1];
    assert_eq!(c.read(&mut b).unwrap(), 0, "then the idle connection is closed");
    assert!(
        answered.elapsed() >= Duration::from_millis(250),
        "the idle time counts from the answer, closed after {:?}",
        answered.elapsed()
    );
    engine.shutdown();
    engine.join().unwrap();
}

/// At the drain an idle keep-alive connection is not closed under a request its client is
/// sending: a request that comes within the drain grace is answered, with
/// `Connection: close`; a connection that sends nothing is closed after the grace.
#[test]
fn a_request_sent_as_the_drain_begins_is_answered_with_connection_close() {
    let (engine, addr) = engine_with(
        1,
        |c| c.drain_timeout = Duration::from_secs(5),
        |_| Http::factory(),
    );
    let answer = sent_as_the_drain_begins(engine, addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("Connection: close"),
        "{answer:?}"
    );
}

/// As above for a service of its own on `Answered`, with `drain_grace`.
#[test]
fn answered_with_a_drain_grace_answers_a_request_sent_as_the_drain_begins() {
    let (engine, addr) = engine_with(
        1,
        |c| c.drain_timeout = Duration::from_secs(5),
        |_| {
            factory_fn(|_| {
                let answer = |line: Vec<u8>| async move { Answer::Send(line) };
                let answered = Answered::new(LineEncoder::lf(), answer).drain_grace(Duration::from_secs(1));
                Some(Framed::new(LineDecoder::new(64), answered))
            })
        },
    );
    assert_eq!(sent_as_the_drain_begins(engine, addr, b"a\n"), b"a\n");
}

/// With answers made four at a time, a drain answers every request received, in order, and
/// only the last answer is marked as the last (`last_answer`): none made beside it is dropped.
#[test]
fn a_drain_answers_every_request_received_and_marks_only_the_last() {
    let (engine, addr) = engine_with(
        1,
        |c| c.drain_timeout = Duration::from_secs(5),
        |_| {
            factory_fn(|_| {
                let answer = |line: Vec<u8>| async move {
                    weft::shard::sleep(Duration::from_millis(100)).await;
                    Answer::Send(line)
                };
                let answered = Answered::new(LineEncoder::lf(), answer)
                    .concurrency(4)
                    .last_answer(|mut line: Vec<u8>| {
                        line.extend_from_slice(b" last");
                        line
                    });
                Some(Framed::new(LineDecoder::new(64), answered))
            })
        },
    );
    let mut c = connect(addr);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"1\n2\n3\n4\n5\n6\n").unwrap();
    std::thread::sleep(Duration::from_millis(150));
    engine.shutdown();
    let mut answers = String::new();
    c.read_to_string(&mut answers).unwrap();
    assert_eq!(answers, "1\n2\n3\n4\n5\n6 last\n");
    engine.join().unwrap();
}

/// Two keep-alive clients each get an answer to `request`; then the engine drains, and 100 ms
/// later one sends `request` again: what it reads to its EOF. The other, silent, must be
/// closed after the drain grace, well before the drain timeout.
fn sent_as_the_drain_begins(engine: Engine, addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut late = connect(addr);
    let mut silent = connect(addr);
    for c in [&mut late, &mut silent] {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request).unwrap();
        let mut buf = [0u8; 512];
        assert!(c.read(&mut buf).unwrap() > 0, "answered while serving");
    }
    let t0 = Instant::now();
    engine.shutdown();
    std::thread::sleep(Duration::from_millis(100));
    late.write_all(request).unwrap();
    let mut answer = Vec::new();
    late.read_to_end(&mut answer).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(silent.read(&mut b).unwrap(), 0, "the silent one is closed");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "after the grace, not the drain timeout"
    );
    engine.join().unwrap();
    answer
}

/// Streams `left` bytes through a producer written the Twisted way: it writes while the
/// output has room, from `connection_made` and from each `resume_producing` (inline, or in a
/// task the resume spawns), then closes.
struct Stream {
    t: Transport,
    left: std::cell::Cell<usize>,
}

impl Stream {
    fn pump(&self) {
        while self.left.get() > 0 && !self.t.is_output_full() {
            let n = self.left.get().min(64 * 1024);
            self.t.write(&vec![b'x'; n]);
            self.left.set(self.left.get() - n);
        }
        if self.left.get() == 0 {
            self.t.unregister_producer();
            self.t.lose_connection();
        }
    }
}

struct Pump(std::rc::Rc<Stream>, bool);

impl weft::Producer for Pump {
    fn pause_producing(&mut self) {}
    fn resume_producing(&mut self) {
        let (stream, in_task) = (self.0.clone(), self.1);
        if in_task {
            weft::shard::spawn(async move { stream.pump() }).detach();
        } else {
            stream.pump();
        }
    }
}

struct Streaming(usize, bool);

impl Protocol for Streaming {
    fn connection_made(&mut self, t: &Transport) {
        let stream = std::rc::Rc::new(Stream {
            t: t.clone(),
            left: std::cell::Cell::new(self.0),
        });
        t.register_producer(Box::new(Pump(stream.clone(), self.1)));
        stream.pump();
    }
    fn data_received(&mut self, _data: &[u8], _t: &Transport) {}
}

/// A stream far above the output cap reaches a client that reads it, through a producer
/// resumed at the low-water mark, whether it writes from `resume_producing` itself or from
/// a task that the resume spawns (it stalled after the first batch: what a producer wrote
/// inside the resume that followed a flush was never flushed).
#[test]
fn a_producer_streams_far_more_than_the_output_cap() {
    const SIZE: usize = 24 << 20;
    for in_task in [false, true] {
        let (engine, addr) = engine_with(
            1,
            |_| {},
            move |_| factory_fn(move |_| Some(Streaming(SIZE, in_task))),
        );
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => panic!("in_task {in_task}: stalled at {got} of {SIZE} bytes: {e}"),
            }
        }
        assert_eq!(got, SIZE, "in_task {in_task}");
        engine.shutdown();
        engine.join().unwrap();
    }
}

/// Answers each line with `ANSWER` bytes in the read callback, noting the most output queued.
struct BigAnswers(Arc<AtomicUsize>);

const ANSWER: usize = 256 << 10;

impl FrameHandler for BigAnswers {
    type Decoder = LineDecoder;
    fn frame_received(&mut self, _line: Vec<u8>, t: &Transport) {
        t.write(&[b'a'; ANSWER]);
        self.0.fetch_max(t.buffered(), Ordering::Relaxed);
    }
}

/// Pipelines `lines` requests in one write, waits, then reads every answer (`each` bytes).
fn read_late(addr: std::net::SocketAddr, lines: usize, each: usize) {
    let mut s = connect(addr);
    s.write_all(&b"get\n".repeat(lines)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    while got < lines * each {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("{got} of {} bytes, then {e}", lines * each),
        }
    }
    assert_eq!(got, lines * each);
}

/// A client that pipelines requests whose answers add up to far more than the output cap,
/// in one write, and reads them only later, gets every answer: the requests wait undecoded
/// while the output is full, instead of the connection being reset at `max_output`, and the
/// output queued stays near the high-water mark.
#[test]
fn pipelined_requests_wait_while_answers_are_unread() {
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    let (engine, addr) = engine_with(
        1,
        |_| {},
        move |_| {
            let seen = seen.clone();
            factory_fn(move |_| Some(Framed::new(LineDecoder::new(64), BigAnswers(seen.clone()))))
        },
    );
    read_late(addr, 100, ANSWER);
    let most = most.load(Ordering::Relaxed);
    assert!(most <= (64 << 10) + ANSWER, "{most} bytes queued at once");
    engine.shutdown();
    engine.join().unwrap();
}

/// As above, with the answers made in `Answered`'s task: it answers no request while the
/// output is full, and its request timeout (shorter than the wait) does not cut the client
/// off.
#[test]
fn answered_requests_wait_while_answers_are_unread() {
    let (engine, addr) = engine_with(
        1,
        |_| {},
        |_| {
            factory_fn(|_| {
                let answer = |_line: Vec<u8>| async { Answer::Send(vec![b'a'; ANSWER]) };
                let answered = Answered::new(LineEncoder::lf(), answer)
                    .request_timeout(Duration::from_millis(100), || Some(b"slow".to_vec()));
                Some(Framed::new(LineDecoder::new(64), answered))
            })
        },
    );
    read_late(addr, 100, ANSWER + 1);
    engine.shutdown();
    engine.join().unwrap();
}

/// An HTTP client that pipelines far more requests than the output holds and reads the
/// answers only later gets every one: the requests held back while the output is full are
/// not a head that is slow to arrive (they were answered 408 at the header timeout).
#[test]
fn held_back_requests_are_not_a_slow_head() {
    const REQUESTS: usize = 100_000;
    let (engine, addr) = engine_with(1, |_| {}, |_| Http::factory_with(Duration::from_millis(200)));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(REQUESTS));
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut s = s;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut answers, mut late) = (0, 0);
    let mut buf = vec![0u8; 1 << 16];
    let mut carry = Vec::new();
    while answers + late < REQUESTS {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Status lines, counted across reads.
        carry.extend_from_slice(&buf[..n]);
        answers += count(&carry, b"HTTP/1.1 200");
        late += count(&carry, b"HTTP/1.1 408");
        let keep = carry.len().saturating_sub(11);
        carry.drain(..keep);
    }
    sender.join().unwrap();
    assert_eq!((answers, late), (REQUESTS, 0));
    engine.shutdown();
    engine.join().unwrap();
}

/// How often `needle` occurs in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}
