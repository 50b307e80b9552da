//! Drives one connection: read → protocol → flush, until it ends, then `connection_lost`.

use std::future::{Future, poll_fn};
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::shard::ShardCtx;
use crate::proto::close::CloseReason;
use crate::proto::protocol::Protocol;
use crate::proto::transport::Transport;
use crate::stats::ShardStats;

/// One live connection and the protocol instance that serves it.
pub(crate) struct Connection<P: Protocol> {
    /// The socket; taken (and so closed) when the connection finishes.
    stream: Option<TcpStream>,
    protocol: P,
    transport: Transport,
    shard: Rc<ShardCtx>,
    /// The connection's slot in the shard's registry.
    key: usize,
    read_eof: bool,
    write_shut: bool,
    drain_seen: bool,
    /// The reason to report for an orderly close the driver itself started.
    close_reason: Option<CloseReason>,
    timeouts: Timeouts,
    /// Running while an orderly close waits for the peer's EOF.
    linger: Option<Timer>,
    /// `connection_lost` has run.
    finished: bool,
    /// Bytes read before the protocol existed (after a PROXY header), delivered first.
    early: Vec<u8>,
}

/// The idle, write-stall and protocol deadlines, served by one lazily re-armed timer: the
/// timer fires at the earliest deadline known when it was armed, and the deadlines are
/// checked again then, so traffic costs a clock read per wake-up and no timer operations.
struct Timeouts {
    idle: Option<Duration>,
    stall: Option<Duration>,
    /// When a byte was last read or written.
    last_io: Instant,
    /// When queued output last made progress, or became pending.
    last_progress: Instant,
    /// Output was pending at the end of the last poll.
    was_pending: bool,
    /// Output moved during the current poll.
    progressed: bool,
    timer: Option<(Timer, Instant)>,
}

/// The clock, read at most once per poll and only when a deadline needs it: the common
/// path (no idle timeout, output drained at once, no protocol deadline) reads it never.
#[derive(Default)]
struct LazyNow(Option<Instant>);

impl LazyNow {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// What a passed deadline means.
enum Expired {
    Idle,
    Stall,
    Protocol,
}

impl Timeouts {
    fn earliest(&self, output_pending: bool, protocol: Option<Instant>) -> Option<(Instant, Expired)> {
        let idle = self.idle.map(|d| (self.last_io + d, Expired::Idle));
        let stall = self
            .stall
            .filter(|_| output_pending)
            .map(|d| (self.last_progress + d, Expired::Stall));
        let proto = protocol.map(|at| (at, Expired::Protocol));
        [idle, stall, proto]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
}

impl<P: Protocol> Connection<P> {
    pub(crate) fn new(
        stream: TcpStream,
        protocol: P,
        transport: Transport,
        shard: Rc<ShardCtx>,
        key: usize,
    ) -> Self {
        let now = Instant::now();
        let timeouts = Timeouts {
            idle: shard.config.idle_timeout,
            stall: shard.config.write_stall_timeout,
            last_io: now,
            last_progress: now,
            was_pending: false,
            progressed: false,
            timer: None,
        };
        Self {
            stream: Some(stream),
            protocol,
            transport,
            shard,
            key,
            read_eof: false,
            write_shut: false,
            drain_seen: false,
            close_reason: None,
            timeouts,
            linger: None,
            finished: false,
            early: Vec::new(),
        }
    }

    /// Delivers `early` to the protocol as its first read.
    pub(crate) fn with_input(mut self, early: Vec<u8>) -> Self {
        self.early = early;
        self
    }

    /// Serves the connection to its end; returns why it ended.
    pub(crate) async fn run(mut self) -> CloseReason {
        self.protocol.connection_made(&self.transport);
        let reason = poll_fn(|cx| self.poll_io(cx)).await;
        self.finish(reason.clone());
        reason
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        self.transport.set_polling(true, Some(cx.waker()));
        let r = loop {
            let mut now = LazyNow::default();
            match self.poll_once(cx, &mut now) {
                Poll::Ready(reason) => break Poll::Ready(reason),
                Poll::Pending => match self.poll_timeouts(cx, &mut now) {
                    Poll::Ready(Some(reason)) => break Poll::Ready(reason),
                    // A deadline was handled or the timer fired: look again.
                    Poll::Ready(None) => continue,
                    Poll::Pending => break Poll::Pending,
                },
            }
        };
        self.transport.set_polling(false, None);
        r
    }

    /// Moves bytes until nothing more can happen without waiting.
    fn poll_once(&mut self, cx: &mut Context<'_>, now: &mut LazyNow) -> Poll<CloseReason> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(CloseReason::Shutdown);
        };
        let budget = self.shard.config.reads_per_wakeup;
        let mut reads = 0;
        let mut moved = false;
        let result = loop {
            if let Some(reason) = self.transport.forced() {
                break Poll::Ready(reason);
            }
            if !self.drain_seen && self.shard.draining.get() {
                self.drain_seen = true;
                self.protocol.drain_requested(&self.transport);
                continue;
            }
            match flush(stream, &self.transport, &self.shard.stats, cx) {
                Ok(0) => {}
                Ok(_) => {
                    moved = true;
                    self.timeouts.progressed = true;
                }
                Err(reason) => break Poll::Ready(reason),
            }
            self.transport.output_drained();
            if self.transport.out().is_empty() {
                if self.transport.write_closing() && !self.write_shut {
                    self.write_shut = true;
                    shutdown_write(stream);
                    self.protocol.write_connection_lost(&self.transport);
                    if self.read_eof {
                        break Poll::Ready(CloseReason::PeerEof);
                    }
                    continue;
                }
                if self.transport.closing() {
                    if self.read_eof {
                        break Poll::Ready(CloseReason::PeerEof);
                    }
                    if !self.write_shut {
                        self.write_shut = true;
                        shutdown_write(stream);
                    }
                    let linger = self.shard.config.linger;
                    let timer = self.linger.get_or_insert_with(|| Timer::new(linger));
                    break poll_linger(stream, timer, &self.shard, cx).map(|()| CloseReason::LocalClose);
                }
            }
            if self.transport.closing() || self.read_eof || !self.transport.may_read() {
                break Poll::Pending;
            }
            if reads == budget {
                // Fairness: let the shard's other connections run, then come back.
                cx.waker().wake_by_ref();
                break Poll::Pending;
            }
            if !self.early.is_empty() {
                let early = std::mem::take(&mut self.early);
                reads += 1;
                self.protocol.data_received(&early, &self.transport);
                continue;
            }
            let mut buf = self.shard.read_buf.borrow_mut();
            match Pin::new(&mut *stream).poll_read(cx, &mut buf[..]) {
                Poll::Ready(Ok(0)) => {
                    drop(buf);
                    self.read_eof = true;
                    self.protocol.read_connection_lost(&self.transport);
                    if self.write_shut && self.transport.out().is_empty() {
                        break Poll::Ready(CloseReason::PeerEof);
                    }
                }
                Poll::Ready(Ok(n)) => {
                    reads += 1;
                    moved = true;
                    ShardStats::add(&self.shard.stats.bytes_in, n as u64);
                    self.protocol.data_received(&buf[..n], &self.transport);
                }
                Poll::Ready(Err(e)) => break Poll::Ready(CloseReason::from_io(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if moved && self.timeouts.idle.is_some() {
            self.timeouts.last_io = now.get();
        }
        // An orderly close the driver started reports its own reason.
        result.map(|reason| match (&self.close_reason, reason) {
            (Some(own), CloseReason::PeerEof | CloseReason::LocalClose) => own.clone(),
            (_, reason) => reason,
        })
    }

    /// Checks the deadlines: `Ready(Some)` ends the connection, `Ready(None)` means state
    /// changed and the connection must be polled again, `Pending` means the timer is armed.
    fn poll_timeouts(&mut self, cx: &mut Context<'_>, now: &mut LazyNow) -> Poll<Option<CloseReason>> {
        if self.linger.is_some() {
            return Poll::Pending;
        }
        let t = &mut self.timeouts;
        let pending = !self.transport.out().is_empty();
        if pending && t.stall.is_some() && (!t.was_pending || t.progressed) {
            t.last_progress = now.get();
        }
        t.was_pending = pending;
        t.progressed = false;
        let Some((at, what)) = t.earliest(pending, self.transport.deadline()) else {
            t.timer = None;
            return Poll::Pending;
        };
        let now = now.get();
        if at <= now {
            self.timeouts.timer = None;
            return Poll::Ready(match what {
                Expired::Idle => Some(CloseReason::IdleTimeout),
                Expired::Stall => Some(CloseReason::WriteStall),
                Expired::Protocol => {
                    self.transport.clear_deadline();
                    self.close_reason = Some(CloseReason::DeadlineExpired);
                    self.protocol.deadline_expired(&self.transport);
                    self.transport.lose_connection();
                    None
                }
            });
        }
        if self.timeouts.timer.as_ref().is_none_or(|(_, armed)| *armed > at) {
            let wait = at.saturating_duration_since(now);
            self.timeouts.timer = Some((Timer::new(wait), at));
        }
        match self.timeouts.timer.as_mut() {
            Some((timer, _)) => match Pin::new(timer).poll(cx) {
                Poll::Ready(_) => {
                    self.timeouts.timer = None;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }

    /// Closes the socket and tells the protocol, exactly once.
    fn finish(&mut self, reason: CloseReason) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(stream) = self.stream.take() {
            if matches!(
                reason,
                CloseReason::Aborted
                    | CloseReason::Shutdown
                    | CloseReason::OutputLimit
                    | CloseReason::WriteStall
            ) {
                // SO_LINGER 0: the close sends a reset and drops anything unsent.
                let _ = socket2::SockRef::from(&super::borrow_fd(&stream)).set_linger(Some(Duration::ZERO));
            }
            self.transport.mark_disconnected();
            drop(stream);
        }
        self.shard.conns.borrow_mut().try_remove(self.key);
        self.shard.stats.closed(&reason);
        self.protocol.connection_lost(&reason);
    }
}

impl<P: Protocol> Drop for Connection<P> {
    /// A connection dropped before it ended (its shard was torn down) still reports once.
    fn drop(&mut self) {
        self.finish(CloseReason::Shutdown);
    }
}

/// Sends queued bytes until the queue is empty or the socket is full; returns the bytes sent.
fn flush(
    stream: &mut TcpStream,
    transport: &Transport,
    stats: &ShardStats,
    cx: &mut Context<'_>,
) -> Result<usize, CloseReason> {
    let mut out = transport.out();
    let mut sent = 0;
    while !out.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, out.chunk()) {
            Poll::Ready(Ok(0)) => return Err(CloseReason::from_io(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                out.consume(n);
                sent += n;
            }
            Poll::Ready(Err(e)) => return Err(CloseReason::from_io(e)),
            Poll::Pending => break,
        }
    }
    ShardStats::add(&stats.bytes_out, sent as u64);
    Ok(sent)
}

fn shutdown_write(stream: &TcpStream) {
    // The peer may already be gone; the close that follows reports what matters.
    let _ = socket2::SockRef::from(&super::borrow_fd(stream)).shutdown(Shutdown::Write);
}

/// The wait of an orderly close while the peer may still send: after our FIN, read and
/// discard until the peer's EOF or the linger timer, so that the peer reads our last bytes
/// instead of a reset (closing a socket with unread input sends RST).
fn poll_linger(
    stream: &mut TcpStream,
    timer: &mut Timer,
    shard: &ShardCtx,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let mut buf = shard.read_buf.borrow_mut();
    for _ in 0..shard.config.reads_per_wakeup {
        match Pin::new(&mut *stream).poll_read(cx, &mut buf[..]) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(n)) => ShardStats::add(&shard.stats.bytes_in, n as u64),
            Poll::Pending => return Pin::new(timer).poll(cx).map(|_| ()),
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
