//! Sharded services: per-shard state, cross-shard calls with back-pressure, calls from outside
//! the engine, and a shutdown that answers the calls in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use util::connect;
use weft::shard::{self, CallError};
use weft::{Cores, Engine, EngineConfig, Protocol, Transport, factory_fn};

/// A toy key-value store, one per shard.
#[derive(Default)]
struct Store {
    map: RefCell<HashMap<String, u64>>,
    hits: Cell<u64>,
}

fn two_shards() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.cores = Cores::Count(2);
    c.drain_timeout = Duration::from_secs(5);
    c
}

/// Runs `task` on the last shard of an engine of tasks and returns what it sends.
fn on_last_shard<T, F>(config: EngineConfig, task: impl Fn() -> F + Send + Sync + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let engine = Engine::builder(config)
        .shard_state(|_| Store::default())
        .on_each_shard(move |info| {
            let run = (info.index + 1 == info.shards).then(|| (task(), tx.clone()));
            async move {
                if let Some((f, tx)) = run {
                    tx.send(f.await).unwrap();
                }
            }
        })
        .start()
        .unwrap();
    engine.join().unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn calls_reach_the_other_shards_state_and_come_back() {
    let got = on_last_shard(two_shards(), || async {
        let here = shard::current().unwrap().index;
        shard::submit_to(0, |s: &Store| {
            s.map.borrow_mut().insert("a".into(), 7);
        })
        .await
        .unwrap();
        let remote = shard::submit_to(0, |s: &Store| s.map.borrow().get("a").copied()).await;
        let local = shard::state::<Store>().unwrap().map.borrow().get("a").copied();
        let all = shard::invoke_on_all(|s: &Store| s.map.borrow().len()).await;
        let missing = shard::submit_to(5, |_: &Store| ()).await;
        let wrong_type = shard::submit_to(0, |_: &String| ()).await;
        let panicked = shard::submit_to(0, |_: &Store| -> u8 { panic!("boom") }).await;
        let after = shard::submit_to(0, |s: &Store| s.map.borrow().len()).await;
        // The handle and its error are named through `weft::shard`.
        let handle: shard::JoinHandle<u32> = shard::spawn(async { 6 * 7 });
        let joined: Result<u32, shard::Cancelled> = handle.await;
        assert_eq!(joined, Ok(42), "a task's handle resolves to its output");
        (here, remote, local, all, missing, wrong_type, panicked, after)
    });
    let (here, remote, local, all, missing, wrong_type, panicked, after) = got;
    assert_eq!(here, 1);
    assert_eq!(remote, Ok(Some(7)));
    assert_eq!(local, None, "shard 1's own store is apart");
    assert_eq!(all, Ok(vec![1, 0]), "by shard index");
    assert_eq!(missing, Err(CallError::NoSuchShard { shard: 5, shards: 2 }));
    assert!(matches!(wrong_type, Err(CallError::NoState { shard: 0, .. })));
    assert_eq!(panicked, Err(CallError::Panicked(0)));
    assert_eq!(after, Ok(1), "shard 0 carries on after a panicking call");
}

#[test]
fn call_round_trips_are_measured_per_target_shard() {
    let engine = Engine::builder(two_shards())
        .shard_state(|_| Store::default())
        .on_each_shard(|info| {
            let caller = info.index == 1;
            async move {
                if !caller {
                    return;
                }
                for _ in 0..5 {
                    shard::submit_to(0, |_: &Store| ()).await.unwrap();
                }
                for _ in 0..2 {
                    shard::submit_to(1, |_: &Store| ()).await.unwrap();
                }
            }
        })
        .start()
        .unwrap();
    let metrics = engine.metrics().unwrap();
    engine.join().unwrap();
    let text = weft::metrics::render_prometheus(&metrics.snapshot());
    let count = |target: usize| {
        let key = format!("weft_shard_call_seconds_count{{shard=\"1\",target=\"{target}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&key));
        line.map(|l| l[key.len()..].to_string())
    };
    assert_eq!(count(0).as_deref(), Some("5"), "{text}");
    assert_eq!(
        count(1),
        None,
        "a call to its own shard runs in place, unmeasured"
    );
}

#[test]
fn a_full_queue_makes_callers_wait_and_every_call_completes() {
    let mut config = two_shards();
    config.call_queue = 4;
    let total = on_last_shard(config, || async {
        const CALLS: u64 = 2_000;
        let done = Rc::new(Cell::new(0u64));
        for _ in 0..CALLS {
            let done = done.clone();
            shard::spawn(async move {
                shard::submit_to(0, |s: &Store| s.hits.set(s.hits.get() + 1))
                    .await
                    .unwrap();
                done.set(done.get() + 1);
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while done.get() < CALLS && std::time::Instant::now() < deadline {
            shard::sleep(Duration::from_millis(1)).await;
        }
        let counted = shard::submit_to(0, |s: &Store| s.hits.get()).await.unwrap();
        let sent = shard::counters().calls_sent;
        (counted, sent)
    });
    assert_eq!(total, (2_000, 2_001));
}

#[test]
fn outside_threads_call_shards_and_get_an_error_once_it_stopped() {
    let engine = Engine::builder(two_shards())
        .shard_state(|info| Store {
            hits: Cell::new(info.index as u64 * 10),
            ..Store::default()
        })
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap(), |_| {
            weft::protocols::Echo::factory()
        })
        .start()
        .unwrap();
    let shards = engine.shards();
    let from_thread = std::thread::spawn({
        let shards = shards.clone();
        move || shards.call(1, |s: &Store| s.hits.get())
    });
    assert_eq!(from_thread.join().unwrap(), Ok(10));
    assert_eq!(shards.call(0, |s: &Store| s.hits.get()), Ok(0));
    engine.shutdown();
    engine.join().unwrap();
    assert_eq!(
        shards.call(0, |s: &Store| s.hits.get()),
        Err(CallError::ShardStopped(0))
    );
}

#[test]
fn a_key_has_one_owner_everywhere_and_keys_spread_over_the_shards() {
    let engine = Engine::builder(two_shards())
        .shard_state(|_| Store::default())
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap(), |_| {
            weft::protocols::Echo::factory()
        })
        .start()
        .unwrap();
    let outside = engine.shards();
    let keys: Vec<String> = (0..64).map(|i| format!("key{i}")).collect();
    let from_outside: Vec<usize> = keys.iter().map(|k| outside.owner_of(k.as_str())).collect();
    for shard in 0..2 {
        let keys = keys.clone();
        let on_shard = outside.call(shard, move |_: &Store| {
            keys.iter()
                .map(|k| shard::owner_of(k.as_str()))
                .collect::<Vec<_>>()
        });
        assert_eq!(on_shard.as_ref(), Ok(&from_outside), "shard {shard}");
    }
    assert!(
        from_outside.contains(&0) && from_outside.contains(&1),
        "{from_outside:?}"
    );
    assert_eq!(shard::owner_of("key0"), 0, "outside a shard");
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn a_periodic_task_ends_with_the_drain_instead_of_holding_it_up() {
    use std::sync::Arc;
    let mut config = two_shards();
    config.drain_timeout = Duration::from_secs(30);
    let (ticks, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (t, e) = (ticks.clone(), ended.clone());
    let engine = Engine::builder(config)
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap(), |_| {
            weft::protocols::Echo::factory()
        })
        .on_each_shard(move |_| {
            let (t, e) = (t.clone(), e.clone());
            async move {
                // A future that wins is the output; the drain's wait goes with it.
                for _ in 0..1000 {
                    assert_eq!(shard::until_drain(async { 1 }).await, Some(1));
                }
                let mut every = shard::interval(Duration::from_millis(10));
                while shard::until_drain(every.tick()).await.is_some() {
                    t.fetch_add(1, Ordering::SeqCst);
                }
                // Once the drain began, at once.
                assert_eq!(shard::until_drain(async { 1 }).await, None);
                e.fetch_add(1, Ordering::SeqCst);
            }
        })
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    engine.shutdown();
    engine.join().unwrap();
    assert!(ticks.load(Ordering::SeqCst) > 2, "the intervals ticked");
    assert_eq!(ended.load(Ordering::SeqCst), 2, "both tasks ended by themselves");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain waited for its timeout: {:?}",
        started.elapsed()
    );
}

/// Answers each line after asking shard 0 (which holds the counter) for the next number,
/// 200 ms later: a slow cross-shard answer.
struct Ticket;

impl Protocol for Ticket {
    fn data_received(&mut self, _data: &[u8], t: &Transport) {
        let t = t.clone();
        shard::spawn(async move {
            shard::sleep(Duration::from_millis(200)).await;
            let n = shard::submit_to(0, |s: &Store| {
                s.hits.set(s.hits.get() + 1);
                s.hits.get()
            })
            .await;
            t.write(format!("{n:?}\n").as_bytes());
            t.lose_connection();
        });
    }
}

#[test]
fn shutdown_answers_requests_waiting_on_another_shard() {
    let engine = Engine::builder(two_shards())
        .shard_state(|_| Store::default())
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap(), |_| {
            factory_fn(|_| Some(Ticket))
        })
        .start()
        .unwrap();
    let addr = engine.local_addrs()[0];
    let mut clients: Vec<_> = (0..16).map(|_| connect(addr)).collect();
    for c in &mut clients {
        c.write_all(b"next\n").unwrap();
    }
    // The requests are in; shard 0 may have no connection of its own. Stop now.
    std::thread::sleep(Duration::from_millis(50));
    engine.shutdown();
    let mut answers = Vec::new();
    for c in &mut clients {
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        answers.push(s);
    }
    let report = engine.join().unwrap();
    let mut numbers: Vec<u64> = answers
        .iter()
        .map(|a| {
            a.strip_prefix("Ok(")
                .and_then(|r| r.strip_suffix(")\n"))
                .unwrap_or_else(|| panic!("unanswered: {a:?}"))
                .parse()
                .unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=16).collect::<Vec<_>>());
    assert!(
        report.total().calls_received > 0,
        "some went through shard 0's inbox"
    );
}

/// A client protocol that keeps nothing: the test drives it through its transport.
struct Quiet;

impl Protocol for Quiet {
    fn data_received(&mut self, _data: &[u8], _t: &Transport) {}
}

/// Its factory, for `connect_tcp`.
struct Quiets;

impl weft::Factory for Quiets {
    type Protocol = Quiet;
    fn build_protocol(&mut self, _peer: &weft::Address) -> Option<Quiet> {
        Some(Quiet)
    }
}

impl weft::ClientFactory for Quiets {}

#[test]
fn async_code_awaits_a_connection_and_its_end() {
    let (server, addr) = util::engine(1, |_| weft::protocols::Echo::factory());
    let refused: SocketAddr = format!("127.0.0.1:{}", util::free_port()).parse().unwrap();
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    let got = on_last_shard(config, move || async move {
        let options = weft::ConnectOptions::default();
        let c = weft::connect_tcp(addr, Quiets, options.clone());
        let t = c.connected().await.ok().map(|t| t.peer_addr().socket_addr());
        if let Some(up) = c.transport() {
            up.lose_connection();
        }
        let closed = c.closed().await;
        let failed = weft::connect_tcp(refused, Quiets, options)
            .connected()
            .await
            .err();
        (t, closed, failed.map(|e| e.to_string()))
    });
    server.shutdown();
    let (t, closed, failed) = got;
    assert_eq!(t, Some(addr));
    assert_eq!(closed, Some(weft::CloseReason::LocalClose));
    assert!(failed.is_some_and(|e| e.contains("refused")));
}

#[test]
fn a_transport_reports_its_own_end_and_connected_skips_a_closing_one() {
    let (server, addr) = util::engine(1, |_| weft::protocols::Echo::factory());
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    let got = on_last_shard(config, move || async move {
        let policy = weft::ReconnectPolicy::default()
            .with_initial_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(100))
            .with_max_retries(Some(10));
        let options = weft::ConnectOptions::default().with_reconnect(Some(policy));
        let c = weft::connect_tcp(addr, Quiets, options);
        let first = c.connected().await.unwrap();
        first.lose_connection();
        // The first one is closing: connected() waits for the connection that replaces it.
        let second = c.connected().await.unwrap();
        let first_end = first.closed().await;
        let replaced = second.local_addr() != first.local_addr() && second.is_connected();
        c.disconnect();
        let second_end = second.closed().await;
        let _ = c.closed().await;
        (first_end, replaced, second_end, c.is_idle())
    });
    server.shutdown();
    let (first_end, replaced, second_end, idle) = got;
    assert_eq!(first_end, weft::CloseReason::LocalClose);
    assert!(replaced, "connected() answered with a live, new connection");
    assert_eq!(second_end, weft::CloseReason::LocalClose);
    assert!(idle, "disconnected: nothing open, no retry");
}

/// Lines answered by `Answered` after 1 ms each: `QUIT` says BYE and closes, a line over 8
/// bytes gets a last answer from the decode error; pipelined lines answered in order, with at
/// most 2 waiting.
fn answering_engine() -> (Engine, SocketAddr) {
    use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder, LineTooLong};
    util::engine(1, |_| {
        factory_fn(|_peer| {
            let answer = |line: Vec<u8>| async move {
                shard::sleep(Duration::from_millis(1)).await;
                match line.as_slice() {
                    b"QUIT" => Answer::SendAndClose("BYE".to_string()),
                    b"DROP" => Answer::Close,
                    b"SKIP" => Answer::Nothing,
                    _ => Answer::Send(String::from_utf8_lossy(&line).to_uppercase()),
                }
            };
            let answered = Answered::new(LineEncoder::lf(), answer)
                .max_queued(2)
                .on_decode_error(|e: LineTooLong| Some(format!("ERR {e}")))
                .request_timeout(Duration::from_millis(200), || Some("ERR too slow".into()));
            Some(Framed::new(LineDecoder::new(8), answered))
        })
    })
}

/// Sends `input` and reads everything until the server closes.
fn exchange(addr: SocketAddr, input: &str, half_close: bool) -> String {
    let mut s = connect(addr);
    s.write_all(input.as_bytes()).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn answered_requests_come_back_in_order_and_end_as_they_say() {
    let (engine, addr) = answering_engine();
    let lines: String = (0..100).map(|i| format!("l{i}\n")).collect();
    let want: String = (0..100).map(|i| format!("L{i}\n")).collect();
    assert_eq!(
        exchange(addr, &lines, true),
        want,
        "all answered, in order, after the EOF"
    );
    assert_eq!(exchange(addr, "a\nQUIT\nb\n", false), "A\nBYE\n", "b is dropped");
    assert_eq!(exchange(addr, "a\nDROP\nb\n", false), "A\n");
    assert_eq!(exchange(addr, "a\nSKIP\nb\nQUIT\n", false), "A\nB\nBYE\n");
    assert_eq!(
        exchange(addr, "a\nb\nmuch too long\n", false),
        "A\nB\nERR line longer than 8 bytes\n",
        "the answers before the error, then the error's"
    );
    // A request that trickles in: the one before it is answered, then the timeout's answer.
    let started = std::time::Instant::now();
    assert_eq!(exchange(addr, "a\nslo", false), "A\nERR too slow\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // One that completes in time is answered (the timer is stopped with it).
    let mut s = connect(addr);
    s.write_all(b"sl").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"ow\n").unwrap();
    std::thread::sleep(Duration::from_millis(250));
    s.write_all(b"QUIT\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "SLOW\nBYE\n");
    // A drain lets a request that is partly received arrive whole, answers it, and closes.
    let mut s = connect(addr);
    s.write_all(b"par").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    engine.shutdown();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"tial\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "PARTIAL\n");
    engine.join().unwrap();
}

/// A drain that comes while reading is paused (the queue full) and a request is partly
/// received reads on once the queue has room, so that request arrives whole and is answered
/// (the last one taken): the connection closes after its answer, not at the drain timeout.
#[test]
fn a_drain_reads_on_for_a_partial_request_while_the_queue_was_full() {
    use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder};
    let (engine, addr) = util::engine_with(
        1,
        |c| c.drain_timeout = Duration::from_secs(30),
        |_| {
            factory_fn(|_peer| {
                let answer = |line: Vec<u8>| async move {
                    shard::sleep(Duration::from_millis(100)).await;
                    Answer::Send(String::from_utf8_lossy(&line).to_uppercase())
                };
                let answered = Answered::new(LineEncoder::lf(), answer).max_queued(2);
                Some(Framed::new(LineDecoder::new(64), answered))
            })
        },
    );
    let mut s = connect(addr);
    // Two requests fill the queue (reading pauses), and a third is on its way.
    s.write_all(b"a\nb\npar").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    engine.shutdown();
    // It is the last request taken: the one after it is not answered.
    s.write_all(b"tial\nnext\n").unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let end = s.read_to_end(&mut out);
    assert_eq!(String::from_utf8_lossy(&out), "A\nB\nPARTIAL\n", "{end:?}");
    drop(s);
    engine.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed after the last answer, not at the drain timeout: {:?}",
        started.elapsed()
    );
}

/// With `concurrency(n)`, up to n answers are made at once, and still written in order; the
/// default makes one at a time.
#[test]
fn answered_concurrency_overlaps_answers_and_keeps_their_order() {
    use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder};
    for (concurrency, most) in [(None, 1), (Some(4), 4)] {
        // The most answers in the making at once, over the run.
        let peak = Arc::new(AtomicUsize::new(0));
        let seen = peak.clone();
        let (engine, addr) = util::engine(1, move |_| {
            let peak = seen.clone();
            factory_fn(move |_peer| {
                let (peak, running) = (peak.clone(), Rc::new(Cell::new(0usize)));
                let answer = move |line: Vec<u8>| {
                    let (peak, running) = (peak.clone(), running.clone());
                    async move {
                        running.set(running.get() + 1);
                        peak.fetch_max(running.get(), Ordering::Relaxed);
                        // Later lines are quicker: in order only if the answers wait for each other.
                        let n = 10 - line.len().min(10) as u64;
                        shard::sleep(Duration::from_millis(5 * n)).await;
                        running.set(running.get() - 1);
                        match line.as_slice() {
                            b"QUIT" => Answer::SendAndClose("BYE".to_string()),
                            _ => Answer::Send(String::from_utf8_lossy(&line).to_uppercase()),
                        }
                    }
                };
                let answered = Answered::new(LineEncoder::lf(), answer);
                // A small queue: n requests taken at once must not keep reading paused.
                let answered = match concurrency {
                    Some(n) => answered.concurrency(n).max_queued(4),
                    None => answered,
                };
                Some(Framed::new(LineDecoder::new(64), answered))
            })
        });
        let lines: String = (0..12).map(|i| format!("{}\n", "x".repeat(i % 6 + 1))).collect();
        let want: String = (0..12).map(|i| format!("{}\n", "X".repeat(i % 6 + 1))).collect();
        assert_eq!(exchange(addr, &lines, true), want, "in order");
        assert_eq!(peak.load(Ordering::Relaxed), most, "answers made at once");
        // A closing answer drops those after it, even when they were being made.
        assert_eq!(exchange(addr, "a\nQUIT\nb\nc\n", false), "A\nBYE\n");
        // Four lines fill the queue (reading pauses) and are all taken at once: reading
        // resumes for the lines sent later.
        let mut s = connect(addr);
        s.write_all(b"a\nb\nc\nd\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"e\nf\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "A\nB\nC\nD\nE\nF\n");
        engine.shutdown();
        engine.join().unwrap();
    }
}

/// Lines answered with `concurrency(4)`: `SLEEP ms` after a sleep, `FILE n` streamed in its
/// turn (a head line, then n bytes in pieces of 10,000, then a newline), `WAIT` after 10 s
/// (`waits` counts those dropped unanswered), others upper-cased. `peak` is the most output
/// a stream saw queued after one of its writes.
fn streaming_engine(
    cancel_at_eof: bool,
    peak: Arc<AtomicUsize>,
    waits: Arc<AtomicUsize>,
) -> (Engine, SocketAddr) {
    use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder, StreamWriter, Streamed};
    /// Counts a `WAIT` answer dropped before it was made.
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    util::engine(1, move |_| {
        let (peak, waits) = (peak.clone(), waits.clone());
        factory_fn(move |_peer| {
            let (peak, waits) = (peak.clone(), waits.clone());
            let answer = move |line: Vec<u8>, t: &Transport| {
                let (peak, waits, t) = (peak.clone(), waits.clone(), t.clone());
                async move {
                    let line = String::from_utf8_lossy(&line).into_owned();
                    let (word, n) = line.split_once(' ').unwrap_or((&line, "0"));
                    let n: usize = n.parse().unwrap_or(0);
                    match word {
                        "SLEEP" => {
                            shard::sleep(Duration::from_millis(n as u64)).await;
                            Answer::Send(format!("SLEPT {n}"))
                        }
                        "FILE" => Answer::Stream(Streamed::with_head(
                            format!("FILE {n}"),
                            move |mut out: StreamWriter| async move {
                                let piece = [b'f'; 10_000];
                                let mut left = n;
                                while left > 0 {
                                    let k = left.min(piece.len());
                                    out.write(&piece[..k]).await?;
                                    peak.fetch_max(t.buffered(), Ordering::Relaxed);
                                    left -= k;
                                }
                                out.write(b"\n").await?;
                                Ok(())
                            },
                        )),
                        "WAIT" => {
                            let dropped = Dropped(waits);
                            shard::sleep(Duration::from_secs(10)).await;
                            std::mem::forget(dropped);
                            Answer::Send("WAITED".to_string())
                        }
                        _ => Answer::Send(line.to_uppercase()),
                    }
                }
            };
            let answered = Answered::with_transport(LineEncoder::lf(), answer).concurrency(4);
            let answered = if cancel_at_eof {
                answered.cancel_at_eof()
            } else {
                answered
            };
            Some(Framed::new(LineDecoder::new(64), answered))
        })
    })
}

/// A streamed answer waits for the answers before it (even one still sleeping while it is
/// ready), holds back those after it, keeps the connection for them, and writes far more
/// than `max_output` to a client that reads slowly with at most the high-water mark and one
/// piece queued; a drain lets a stream in progress end.
#[test]
fn streamed_answers_come_in_their_turn_and_keep_their_output_bounded() {
    let peak = Arc::new(AtomicUsize::new(0));
    let (engine, addr) = streaming_engine(false, peak.clone(), Arc::default());
    assert_eq!(
        exchange(addr, "SLEEP 200\nFILE 5\na\nFILE 0\nb\n", true),
        "SLEPT 200\nFILE 5\nfffff\nA\nFILE 0\n\nB\n"
    );
    // 20 MB (five times max_output) to a client that reads 16 KiB at a time, pausing.
    const BIG: usize = 20_000_000;
    let mut s = connect(addr);
    s.write_all(format!("FILE {BIG}\nz\n").as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 16 * 1024];
    for i in 0.. {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let head = format!("FILE {BIG}\n");
    assert_eq!(
        got.len(),
        head.len() + BIG + 1 + 2,
        "the whole file, then the next answer"
    );
    assert!(got.starts_with(head.as_bytes()) && got.ends_with(b"f\nZ\n"));
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 64 * 1024 + 10_000, "{peak} bytes queued at most");
    // A drain in the middle of a stream: it ends whole, then the connection closes.
    let mut s = connect(addr);
    s.write_all(format!("FILE {BIG}\n").as_bytes()).unwrap();
    let mut first = [0; 1024];
    s.read_exact(&mut first).unwrap();
    engine.shutdown();
    let rest = util::read_to_end(&mut s).unwrap();
    assert_eq!(first.len() + rest.len(), head.len() + BIG + 1);
    engine.join().unwrap();
}

/// With `cancel_at_eof`, clients that hang up with an answer pending cancel it: the answers
/// are dropped (not made for 10 s) and the connections close; what was answered before the
/// EOF still comes. Without it, the answers are still in the making.
#[test]
fn clients_that_hang_up_cancel_their_answers_with_cancel_at_eof() {
    for cancel in [true, false] {
        let waits = Arc::new(AtomicUsize::new(0));
        let (engine, addr) = streaming_engine(cancel, Arc::default(), waits.clone());
        const CLIENTS: usize = 20;
        for _ in 0..CLIENTS {
            let mut s = connect(addr);
            s.write_all(b"WAIT\n").unwrap();
        }
        let mut s = connect(addr);
        s.write_all(b"a\nSLEEP 50\nWAIT\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while waits.load(Ordering::Relaxed) < CLIENTS + 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if cancel {
            assert_eq!(
                waits.load(Ordering::Relaxed),
                CLIENTS + 1,
                "every pending answer dropped"
            );
            assert_eq!(util::read_to_end(&mut s).unwrap(), b"A\nSLEPT 50\n");
        } else {
            assert_eq!(
                waits.load(Ordering::Relaxed),
                0,
                "the answers are still being made"
            );
        }
        engine.abort();
        engine.join().ok();
    }
}

/// An aborted task (a delayed call cancelled) does not run again, its handle says it was
/// cancelled, and the engine of tasks ends without waiting for its 10 s sleep; aborting a
/// task that has ended changes nothing.
#[test]
fn an_aborted_task_ends_at_once() {
    let mut config = two_shards();
    config.cores = Cores::Count(1);
    let started = std::time::Instant::now();
    let (woke, outcome, done_outcome) = on_last_shard(config, || async {
        let woke = Rc::new(Cell::new(false));
        let flag = woke.clone();
        let delayed = shard::spawn(async move {
            shard::sleep(Duration::from_secs(10)).await;
            flag.set(true);
        });
        shard::sleep(Duration::from_millis(5)).await;
        assert!(!delayed.is_finished());
        delayed.abort();
        assert!(delayed.is_finished());
        let outcome = delayed.await;
        let done = shard::spawn(async { 7 });
        shard::yield_now().await;
        done.abort();
        (woke.get(), outcome, done.await)
    });
    assert!(!woke);
    assert_eq!(outcome, Err(shard::Cancelled));
    assert_eq!(done_outcome, Ok(7));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// One shard's subscribers, for the pub/sub below.
#[derive(Default)]
struct Subscribers(RefCell<Vec<Transport>>);

/// `PUB text`: writes `MSG text` to every subscriber on every shard; answers how many it
/// reached.
async fn publish(line: &[u8]) -> weft::codec::Answer<String> {
    let text = String::from_utf8_lossy(line.strip_prefix(b"PUB ").unwrap_or(line)).into_owned();
    let reached = shard::invoke_on_all(move |s: &Subscribers| {
        let mut subs = s.0.borrow_mut();
        subs.retain(Transport::is_connected);
        for sub in subs.iter() {
            sub.write(format!("MSG {text}\n").as_bytes());
        }
        subs.len()
    })
    .await
    .unwrap();
    weft::codec::Answer::Send(format!("SENT {}", reached.iter().sum::<usize>()))
}

/// A pub/sub over `Answered::with_transport`: `SUB` keeps the connection in its shard's
/// subscribers, `PUB text` writes `text` to the subscribers of every shard and answers how
/// many it reached; answers and messages come in order on each connection.
#[test]
fn answers_that_keep_their_connection_make_a_pub_sub() {
    use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder};
    let engine = Engine::builder(two_shards())
        .shard_state(|_| Subscribers::default())
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap(), |_| {
            factory_fn(|_| {
                let answer = |line: Vec<u8>, t: &Transport| {
                    let t = t.clone();
                    async move {
                        if line == b"SUB" {
                            let subs = shard::state::<Subscribers>().unwrap();
                            subs.0.borrow_mut().push(t);
                            return Answer::Send("OK".to_string());
                        }
                        publish(&line).await
                    }
                };
                Some(Framed::new(
                    LineDecoder::new(64),
                    Answered::with_transport(LineEncoder::lf(), answer),
                ))
            })
        })
        .start()
        .unwrap();
    let addr = engine.local_addrs()[0];
    let read_line = |s: &mut std::net::TcpStream| {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while b[0] != b'\n' {
            s.read_exact(&mut b).unwrap();
            line.push(b[0]);
        }
        String::from_utf8(line).unwrap()
    };
    let mut subscribers: Vec<_> = (0..6).map(|_| connect(addr)).collect();
    for s in &mut subscribers {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"SUB\n").unwrap();
        assert_eq!(read_line(s), "OK\n");
    }
    let mut publisher = connect(addr);
    publisher.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    publisher.write_all(b"PUB one\nPUB two\n").unwrap();
    assert_eq!(read_line(&mut publisher), "SENT 6\n");
    assert_eq!(read_line(&mut publisher), "SENT 6\n");
    for s in &mut subscribers {
        assert_eq!(read_line(s), "MSG one\n");
        assert_eq!(read_line(s), "MSG two\n");
    }
    engine.shutdown();
    engine.join().unwrap();
}

/// A pub/sub for the drain tests: `WHERE` answers the connection's shard, `SUB` subscribes it
/// (a follower of the drain), `PUB text` takes a millisecond and writes `MSG text`
/// to the subscribers of every shard, then answers how many it reached, and `HANG` is never
/// answered (its connection holds the drain until the timeout).
fn draining_pub_sub(shards: usize, drain_timeout: Duration) -> Engine {
    use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder};
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(shards);
    config.drain_timeout = drain_timeout;
    Engine::builder(config)
        .shard_state(|_| Subscribers::default())
        .listen("127.0.0.1:0".parse::<SocketAddr>().unwrap(), |_| {
            factory_fn(|_| {
                let answer = |line: Vec<u8>, t: &Transport| {
                    let t = t.clone();
                    async move {
                        match line.as_slice() {
                            b"WHERE" => return Answer::Send(shard::current().unwrap().index.to_string()),
                            b"HANG" => std::future::pending().await,
                            b"SUB" => {
                                t.follow_drain();
                                shard::state::<Subscribers>().unwrap().0.borrow_mut().push(t);
                                return Answer::Send("OK".to_string());
                            }
                            _ => {}
                        }
                        shard::sleep(Duration::from_millis(1)).await;
                        publish(&line).await
                    }
                };
                Some(Framed::new(
                    LineDecoder::new(64),
                    Answered::with_transport(LineEncoder::lf(), answer),
                ))
            })
        })
        .start()
        .unwrap()
}

/// Asks `s` for `command`'s one-line answer.
fn ask(s: &mut std::io::BufReader<std::net::TcpStream>, command: &str) -> String {
    s.get_mut().write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Connections to `addr` on each shard wanted, in order: `want[i]` is the shard of the i-th.
fn on_shards(addr: SocketAddr, want: &[usize]) -> Vec<std::io::BufReader<std::net::TcpStream>> {
    let mut got: Vec<Option<std::io::BufReader<std::net::TcpStream>>> = want.iter().map(|_| None).collect();
    for _ in 0..500 {
        let mut s = std::io::BufReader::new(connect(addr));
        let index: usize = ask(&mut s, "WHERE").parse().unwrap();
        if let Some(slot) = want
            .iter()
            .zip(got.iter_mut())
            .find_map(|(w, g)| (*w == index && g.is_none()).then_some(g))
        {
            *slot = Some(s);
        }
        if got.iter().all(Option::is_some) {
            return got.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("500 connections did not land on shards {want:?}");
}

/// Subscribers that follow the drain get every message whose PUB was acknowledged, when the
/// engine drains while a publisher on another shard (or, with one shard, the same one)
/// publishes without pause: they are told to drain only once the publisher is done. (Without
/// `follow_drain` they are closed at once and the PUBs answered meanwhile miss them.)
#[test]
fn followers_get_every_acknowledged_publish_before_the_drain_closes_them() {
    const SUBSCRIBERS: usize = 3;
    for shards in [2, 1] {
        let engine = draining_pub_sub(shards, Duration::from_secs(30));
        let addr = engine.local_addrs()[0];
        let mut want = vec![0; SUBSCRIBERS];
        want.push(shards - 1);
        let mut conns = on_shards(addr, &want);
        let mut publisher = conns.pop().unwrap();
        let readers: Vec<_> = conns
            .into_iter()
            .map(|mut s| {
                assert_eq!(ask(&mut s, "SUB"), "OK");
                std::thread::spawn(move || s.lines().map_while(Result::ok).collect::<Vec<_>>())
            })
            .collect();
        let mut writer = publisher.get_ref().try_clone().unwrap();
        let writing = std::thread::spawn(move || {
            for i in 0..20_000 {
                if writer.write_all(format!("PUB {i}\n").as_bytes()).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let mut acks = Vec::new();
        let mut line = String::new();
        while matches!(publisher.read_line(&mut line), Ok(n) if n > 0) {
            acks.push(std::mem::take(&mut line));
            if acks.len() == 50 {
                engine.shutdown();
            }
        }
        let stopping = std::time::Instant::now();
        engine.join().unwrap();
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "the followers were told when the publisher ended, not near the drain timeout ({:?})",
            stopping.elapsed()
        );
        writing.join().unwrap();
        assert!(
            acks.len() > 50,
            "{shards} shards: the drain came while publishing"
        );
        let short: Vec<_> = acks
            .iter()
            .filter(|a| **a != format!("SENT {SUBSCRIBERS}\n"))
            .collect();
        assert!(
            short.is_empty(),
            "{shards} shards: {} of {} PUBs reached fewer subscribers than {SUBSCRIBERS}, as {:?}",
            short.len(),
            acks.len(),
            short[0]
        );
        for reader in readers {
            let got = reader.join().unwrap();
            let missing: Vec<usize> = (0..acks.len())
                .filter(|i| got.get(*i) != Some(&format!("MSG {i}")))
                .collect();
            assert!(
                missing.is_empty(),
                "{shards} shards: {} of {} acknowledged PUBs missing, from PUB {}",
                missing.len(),
                acks.len(),
                missing[0]
            );
        }
    }
}

/// The drain timeout bounds a follower's wait: while a leader never ends, the follower stays
/// open, then it is told with a quarter of the timeout left and closes in order (the leader
/// is aborted at the timeout).
#[test]
fn a_follower_is_told_before_the_drain_timeout_when_a_leader_never_ends() {
    let engine = draining_pub_sub(2, Duration::from_secs(1));
    let addr = engine.local_addrs()[0];
    let mut conns = on_shards(addr, &[0, 1]);
    let mut leader = conns.pop().unwrap();
    let mut follower = conns.pop().unwrap();
    assert_eq!(ask(&mut follower, "SUB"), "OK");
    // Taken with the WHERE that answers first: queued when the drain comes.
    assert_eq!(ask(&mut leader, "WHERE\nHANG"), "1");
    engine.shutdown();
    let mut follower = follower.into_inner();
    follower
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    let early = follower.read(&mut b).map_err(|e| e.kind());
    assert!(
        matches!(
            early,
            Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        ),
        "the follower waits for the leader: {early:?}"
    );
    follower.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        util::read_to_end(&mut follower).unwrap(),
        b"",
        "then it is told, and closes in order"
    );
    drop(follower);
    let report = engine.join().unwrap();
    assert_eq!(
        report.total().closed_for("shutdown"),
        1,
        "the leader alone is aborted"
    );
    let end = leader.get_mut().read(&mut b);
    assert!(matches!(end, Ok(0) | Err(_)), "the leader is aborted: {end:?}");
}
