//! `client::Pipeline` over real loopback sockets, against line upstreams on threads of their
//! own: pipelined calls matched in order, a killed upstream failing every call in flight and
//! then recovering, timed-out calls whose late replies are dropped, the bound on calls, fail-fast
//! during a reconnect back-off, and the close at an engine's drain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use util::on_executor;
use weft::client::{CallError, Outage, Pipeline, PipelineOptions};
use weft::codec::{LineDecoder, LineEncoder};
use weft::{ConnectError, ConnectOptions, Cores, Engine, EngineConfig, ReconnectPolicy};

type Lines = Pipeline<LineDecoder, LineEncoder>;

/// A pipeline of `\n` lines to `addr`.
fn lines(addr: SocketAddr, options: PipelineOptions) -> Lines {
    Pipeline::connect(addr, || (LineDecoder::new(1024), LineEncoder::lf()), options)
}

/// Options whose reconnect policy waits `delay` between attempts, without jitter.
fn retrying_every(delay: Duration) -> PipelineOptions {
    let policy = ReconnectPolicy::default()
        .with_initial_delay(delay)
        .with_max_delay(delay)
        .with_jitter(0.0);
    let connect = ConnectOptions::default()
        .with_timeout(Duration::from_secs(5))
        .with_reconnect(Some(policy));
    PipelineOptions::default()
        .with_connect(connect)
        .with_call_timeout(Some(Duration::from_secs(10)))
}

/// What a call came to, as text: the reply, or the error's label.
fn text(result: Result<Vec<u8>, CallError>) -> String {
    match result {
        Ok(reply) => String::from_utf8(reply).unwrap(),
        Err(e) => format!("error: {}", e.label()),
    }
}

fn loopback() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A line upstream on a thread: serves `conns` connections one after the other; `answer`
/// gets each line received and returns the lines to write back now (none, or several), or
/// `None` to close the connection and the listener at once (the upstream dies).
fn serve_lines(
    listener: TcpListener,
    conns: usize,
    mut answer: impl FnMut(&str) -> Option<Vec<String>> + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..conns {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let Some(replies) = answer(line.trim_end()) else {
                    return;
                };
                line.clear();
                let out: String = replies.iter().map(|l| format!("{l}\n")).collect();
                if s.write_all(out.as_bytes()).is_err() {
                    break;
                }
            }
        }
    })
}

/// Runs `task` on a one-shard engine whose drain timeout is a minute, shuts the engine down
/// once the upstream read a line (`got`), and returns the engine's report and the task's
/// outcome.
fn drained_once_the_upstream_reads<T, Fut>(
    got: &mpsc::Receiver<()>,
    task: impl Fn() -> Fut + Send + Sync + 'static,
) -> (weft::EngineReport, T)
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    // Held up to its timeout, the drain would take a minute.
    config.drain_timeout = Duration::from_secs(60);
    let (tx, rx) = mpsc::channel();
    let engine = Engine::builder(config)
        .on_each_shard(move |_| {
            let (tx, work) = (tx.clone(), task());
            async move { tx.send(work.await).unwrap() }
        })
        .start()
        .unwrap();
    got.recv().unwrap();
    engine.shutdown();
    let report = engine.join().unwrap();
    (report, rx.recv().unwrap())
}

/// Calls `p` with each line at once, each call in a task of its own: their outcomes, in order.
async fn call_all(p: &Lines, lines: &[&'static str]) -> Vec<Result<Vec<u8>, CallError>> {
    let calls: Vec<_> = lines
        .iter()
        .map(|&l| {
            let p = p.clone();
            weft::shard::spawn(async move { p.call(l).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    outcomes
}

/// Calls `p` with `line` until it answers (bounded), returning the errors seen meanwhile.
async fn until_answered(p: &Lines, line: &str) -> (String, Vec<String>) {
    let end = Instant::now() + Duration::from_secs(10);
    let mut errors = Vec::new();
    while Instant::now() < end {
        match p.call(line).await {
            Ok(reply) => return (String::from_utf8(reply).unwrap(), errors),
            Err(e) => errors.push(e.label().to_owned()),
        }
        weft::shard::sleep(Duration::from_millis(20)).await;
    }
    panic!("no answer within 10 s; errors {errors:?}");
}

#[test]
fn calls_are_pipelined_and_each_gets_its_own_reply() {
    const N: usize = 20;
    let (listener, addr) = loopback();
    // Nothing is answered before all N requests are in: a client that waited for each
    // reply before writing the next request would get none.
    let mut held = Vec::new();
    let server = serve_lines(listener, 1, move |line| {
        held.push(format!("re:{line}"));
        Some(if held.len() == N {
            std::mem::take(&mut held)
        } else {
            Vec::new()
        })
    });
    let replies = on_executor(move || async move {
        let p = lines(addr, PipelineOptions::default());
        let calls: Vec<_> = (0..N)
            .map(|i| {
                let p = p.clone();
                weft::shard::spawn(async move { text(p.call(format!("q{i}")).await) })
            })
            .collect();
        let mut replies = Vec::new();
        for call in calls {
            replies.push(call.await.unwrap());
        }
        assert_eq!(p.calls(), 0);
        replies
    });
    let want: Vec<String> = (0..N).map(|i| format!("re:q{i}")).collect();
    assert_eq!(replies, want);
    server.join().unwrap();
}

#[test]
fn a_killed_upstream_fails_every_call_in_flight_then_calls_recover_after_its_restart() {
    let (listener, addr) = loopback();
    // Answers `ok` lines, holds `hang` ones, and dies at `die`.
    let answer = |line: &str| match line {
        "die" => None,
        l if l.starts_with("hang") => Some(Vec::new()),
        l => Some(vec![format!("re:{l}")]),
    };
    let first = serve_lines(listener, 1, answer);
    let (restart_tx, restart_rx) = mpsc::channel::<()>();
    let client = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let p = lines(addr, retrying_every(Duration::from_millis(300)));
            let before = text(p.call("ok1").await);
            let lost = call_all(&p, &["hang1", "hang2", "hang3", "die"]).await;
            // Right after the loss the policy waits out its back-off: refused at once.
            let refused = p.call("ok2").await;
            restart_tx.send(()).unwrap();
            let (after, meanwhile) = until_answered(&p, "ok3").await;
            (before, lost, refused, after, meanwhile)
        })
        .unwrap();
    restart_rx.recv().unwrap();
    first.join().unwrap();
    // The upstream comes back on the same address.
    let second = serve_lines(TcpListener::bind(addr).unwrap(), 1, answer);
    let (before, lost, refused, after, meanwhile) = client.join().unwrap();
    assert_eq!(before, "re:ok1");
    for call in &lost {
        assert!(
            matches!(call, Err(CallError::ConnectionLost(_))),
            "every call in flight fails with the loss: {lost:?}"
        );
    }
    assert!(
        matches!(refused, Err(CallError::Reconnecting(Outage::Lost(_)))),
        "{refused:?}"
    );
    assert_eq!(after, "re:ok3");
    assert!(
        meanwhile
            .iter()
            .all(|e| e == "reconnecting" || e == "connect_failed"),
        "{meanwhile:?}"
    );
    drop(second);
}

#[test]
fn a_timed_out_calls_reply_is_dropped_and_later_replies_stay_matched() {
    let (listener, addr) = loopback();
    // A `hold` line is answered only when the next line comes, just before that line's answer.
    let mut held: Option<String> = None;
    let server = serve_lines(listener, 1, move |line| {
        if line.starts_with("hold") {
            held = Some(format!("re:{line}"));
            return Some(Vec::new());
        }
        let mut out: Vec<String> = held.take().into_iter().collect();
        out.push(format!("re:{line}"));
        Some(out)
    });
    let (held_call, counted, next, then, after) = on_executor(move || async move {
        let options = PipelineOptions::default().with_call_timeout(Some(Duration::from_millis(200)));
        let p = lines(addr, options);
        let held_call = p.call("hold1").await;
        // Its request is still on the connection: it counts until its reply comes.
        let counted = p.calls();
        let next = text(p.call("next").await);
        let then = text(p.call("then").await);
        (held_call, counted, next, then, p.calls())
    });
    assert!(
        matches!(held_call, Err(CallError::TimedOut(d)) if d == Duration::from_millis(200)),
        "{held_call:?}"
    );
    assert_eq!(counted, 1);
    assert_eq!((next.as_str(), then.as_str()), ("re:next", "re:then"));
    assert_eq!(after, 0);
    server.join().unwrap();
}

#[test]
fn a_reply_that_does_not_decode_fails_every_call_in_flight_and_the_next_connection_serves() {
    let (listener, addr) = loopback();
    // `bad` is answered, once the line after it is in, with a line over the client's limit.
    let (mut holding, mut sent_bad) = (false, false);
    let server = serve_lines(listener, 2, move |line| match line {
        "bad" if !sent_bad => {
            holding = true;
            Some(Vec::new())
        }
        l if holding => {
            (holding, sent_bad) = (false, true);
            Some(vec!["x".repeat(2000), format!("re:{l}")])
        }
        l => Some(vec![format!("re:{l}")]),
    });
    let (failed, after) = on_executor(move || async move {
        let p = lines(addr, retrying_every(Duration::from_millis(50)));
        let failed = call_all(&p, &["bad", "second"]).await;
        (failed, until_answered(&p, "ok").await.0)
    });
    for call in &failed {
        match call {
            Err(e @ CallError::BadReply(_)) => {
                assert!(e.to_string().contains("line longer than 1024 bytes"), "{e}")
            }
            other => panic!("every call in flight fails with the bad reply: {other:?}"),
        }
    }
    assert_eq!(after, "re:ok");
    server.join().unwrap();
}

#[test]
fn calls_past_the_bound_are_refused_at_once() {
    let (listener, addr) = loopback();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // Holds the first three answers until the test releases them, then answers at once.
    let mut held = Vec::new();
    let mut released = false;
    let server = serve_lines(listener, 1, move |line| {
        held.push(format!("re:{line}"));
        if held.len() == 3 && !released {
            release_rx.recv().unwrap();
            released = true;
        }
        Some(if released {
            std::mem::take(&mut held)
        } else {
            Vec::new()
        })
    });
    let (over, replies, after) = on_executor(move || async move {
        let p = lines(addr, PipelineOptions::default().with_max_calls(3));
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let p = p.clone();
                weft::shard::spawn(async move { text(p.call(format!("q{i}")).await) })
            })
            .collect();
        while p.calls() < 3 {
            weft::shard::sleep(Duration::from_millis(2)).await;
        }
        let over = p.call("one too many").await;
        release_tx.send(()).unwrap();
        let mut replies = Vec::new();
        for call in calls {
            replies.push(call.await.unwrap());
        }
        (over, replies, text(p.call("after").await))
    });
    assert!(
        matches!(over, Err(CallError::Overloaded { limit: 3 })),
        "{over:?}"
    );
    assert_eq!(replies, ["re:q0", "re:q1", "re:q2"]);
    assert_eq!(after, "re:after");
    server.join().unwrap();
}

#[test]
fn a_down_upstream_fails_calls_with_the_reason_and_fast_during_the_back_off() {
    let addr = loopback().1; // its listener is dropped: nothing listens there
    let (waited, during, unretried) = on_executor(move || async move {
        // The first call waits for the first attempt; the next one, during the back-off
        // (an hour here), is refused at once.
        let long = retrying_every(Duration::from_secs(3600));
        let p = lines(addr, long);
        let waited = p.call("a").await;
        let started = Instant::now();
        let during = p.call("b").await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not held for the back-off"
        );
        // Without a policy, each call starts an attempt of its own.
        let options = PipelineOptions::default().with_connect(ConnectOptions::default());
        let q = lines(addr, options);
        let unretried = [text(q.call("c").await), text(q.call("d").await)];
        (waited, during, unretried)
    });
    assert!(
        matches!(
            waited,
            Err(CallError::ConnectFailed(ConnectError::Refused { .. }))
        ),
        "{waited:?}"
    );
    let e = during.unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Reconnecting(Outage::ConnectFailed(ConnectError::Refused { .. }))
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("refused"), "{e}");
    assert_eq!(unretried, ["error: connect_failed", "error: connect_failed"]);
}

#[test]
fn the_connection_closes_at_the_drain_once_its_calls_are_answered() {
    let (listener, addr) = loopback();
    let (got_tx, got_rx) = mpsc::channel::<()>();
    // Two connections: the drain closes the first after its reply, and a call made during
    // the drain connects again.
    let server = serve_lines(listener, 2, move |line| {
        let _ = got_tx.send(());
        std::thread::sleep(Duration::from_millis(200));
        Some(vec![format!("re:{line}")])
    });
    let (report, (before, during)) = drained_once_the_upstream_reads(&got_rx, move || async move {
        let p = lines(addr, PipelineOptions::default());
        let before = text(p.call("before").await);
        let during = text(p.call("during").await);
        // Kept alive past the task: only the drain closes its connection.
        std::mem::forget(p);
        (before, during)
    });
    assert_eq!((before.as_str(), during.as_str()), ("re:before", "re:during"));
    // Neither connection was aborted at the drain's timeout: each closed once answered.
    assert_eq!(report.total().closed_for("shutdown"), 0);
    assert_eq!(report.total().closed_for("local"), 2);
    server.join().unwrap();
}

/// An upstream that never answers does not hold the drain: once the only calls in flight
/// have timed out (nobody awaits their replies), the drain aborts the connection instead of
/// waiting for the drain timeout.
#[test]
fn calls_that_timed_out_do_not_hold_the_drain() {
    let (listener, addr) = loopback();
    let (got_tx, got_rx) = mpsc::channel::<()>();
    let server = serve_lines(listener, 1, move |_| {
        let _ = got_tx.send(());
        Some(Vec::new())
    });
    let t0 = Instant::now();
    let (report, outcome) = drained_once_the_upstream_reads(&got_rx, move || async move {
        let options = PipelineOptions::default().with_call_timeout(Some(Duration::from_millis(300)));
        let p = lines(addr, options);
        let outcome = text(p.call("never answered").await);
        std::mem::forget(p);
        outcome
    });
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the drain ended after {:?}",
        t0.elapsed()
    );
    assert_eq!(outcome, "error: timed_out");
    assert_eq!(
        report.total().closed_for("shutdown"),
        0,
        "not aborted at the drain timeout"
    );
    drop(server);
}
