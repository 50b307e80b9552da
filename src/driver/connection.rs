//! Drives one connection: carries out what its [`ConnState`] decides (read → protocol →
//! flush, shutdowns, callbacks, the timer) until it ends, then `connection_lost`.

use std::cell::RefMut;
use std::future::{Future, poll_fn};
use std::io;
use std::net::Shutdown;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{ProvidedBuf, SendThen, TcpStream};
use glommio::timer::Timer;

use super::panic_message;
use super::shard::ShardCtx;
use super::tls;
use crate::proto::close::CloseReason;
use crate::proto::conn_state::{Action, ConnState};
use crate::proto::outbuf::OutBuf;
use crate::proto::protocol::Protocol;
use crate::proto::tls::TlsSession;
use crate::proto::transport::Transport;
use crate::stats::ShardStats;

/// One live connection and the protocol instance that serves it.
///
/// A thin driver: [`ConnState`] decides what happens (reads, flushes, shutdowns, callbacks,
/// deadlines, the close reason) and this carries its actions out on the socket.
pub(crate) struct Connection<P: Protocol> {
    /// The socket; taken (and so closed) when the connection finishes.
    stream: Option<TcpStream>,
    protocol: P,
    transport: Transport,
    shard: Rc<ShardCtx>,
    /// The connection's slot in the shard's registry.
    key: usize,
    /// The connection's life: what to do next, and when.
    state: ConnState,
    /// The one timer for every deadline, with the instant it was armed for. Re-armed only
    /// for an earlier deadline: one armed late fires early, and the machine ignores it.
    timer: Option<(Timer, Instant)>,
    /// `connection_lost` has run.
    finished: bool,
    /// A protocol callback panicked: the protocol is not called again.
    poisoned: bool,
    /// Bytes read before the protocol existed (after a PROXY header, or plaintext that came
    /// with the end of a TLS handshake), delivered first.
    early: Vec<u8>,
    /// The TLS session between the socket and the protocol, on a TLS connection.
    tls: Option<Box<TlsSession>>,
}

impl<P: Protocol> Connection<P> {
    pub(crate) fn new(
        stream: TcpStream,
        protocol: P,
        transport: Transport,
        shard: Rc<ShardCtx>,
        key: usize,
    ) -> Self {
        let state = ConnState::new(&shard.config, Instant::now());
        Self {
            stream: Some(stream),
            protocol,
            transport,
            shard,
            key,
            state,
            timer: None,
            finished: false,
            poisoned: false,
            early: Vec::new(),
            tls: None,
        }
    }

    /// Speaks TLS through `session`, whose handshake is done.
    pub(crate) fn with_tls(mut self, session: TlsSession) -> Self {
        self.transport.set_alpn(session.alpn());
        self.tls = Some(Box::new(session));
        self
    }

    /// Delivers `early` to the protocol as its first read.
    pub(crate) fn with_input(mut self, early: Vec<u8>) -> Self {
        self.early = early;
        self
    }

    /// Serves the connection to its end; returns why it ended.
    ///
    /// A plain future that owns the connection, not an `async fn`: an `async fn` keeps its
    /// argument and the local it moves into apart, which doubled every idle connection's
    /// task (848 B against 424).
    ///
    /// A panic in a protocol callback ends this connection alone, with a reset and
    /// [`CloseReason::Panicked`]: the protocol is not called again, and the shard goes on.
    pub(crate) fn run(mut self) -> impl Future<Output = CloseReason> {
        let mut made = false;
        poll_fn(move |cx| {
            let polled = panic::catch_unwind(AssertUnwindSafe(|| {
                if !made {
                    made = true;
                    self.protocol.connection_made(&self.transport);
                }
                let reason = std::task::ready!(self.poll_io(cx));
                self.finish(reason.clone());
                Poll::Ready(reason)
            }));
            polled.unwrap_or_else(|payload| {
                tracing::error!(
                    peer = %self.transport.peer_addr(),
                    "a protocol callback panicked ({}): its connection is reset, the shard goes on",
                    panic_message(payload.as_ref())
                );
                self.transport.set_polling(false, None);
                self.poisoned = true;
                self.finish(CloseReason::Panicked);
                Poll::Ready(CloseReason::Panicked)
            })
        })
    }

    /// One wake-up of the connection's task.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        self.transport.set_polling(true, Some(cx.waker()));
        if self.shard.drains(&self.transport) {
            self.state.handle_drain();
        }
        let r = self.drive(cx);
        self.transport.set_polling(false, None);
        r
    }

    /// Carries out the machine's actions until it waits or the connection ends. The time is
    /// taken only when the machine asks for it, at most once a round, and then from the
    /// executor's recent time; the clock itself is read only for the timer (when it fires, or
    /// is armed in a round that took no time).
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(CloseReason::Shutdown);
        };
        // The round's time, once read.
        let mut now = None;
        loop {
            match self.state.poll(&self.transport) {
                Action::Flush => {
                    let flushed = match self.tls.as_deref_mut() {
                        None => {
                            // Through the ring, a send after which the connection only
                            // reads need not wake it promptly.
                            let ring = self.shard.ring_sends.then(|| {
                                if self.state.reads_on(&self.transport) {
                                    SendThen::Idle
                                } else {
                                    SendThen::Continue
                                }
                            });
                            flush(stream, &self.transport, &self.shard.stats, ring, cx)
                        }
                        Some(session) => tls::flush(stream, session, &self.transport, &self.shard.stats, cx),
                    };
                    match flushed {
                        Ok(sent) => {
                            let resumed = self.transport.output_drained();
                            self.state.handle_flushed(sent);
                            if resumed {
                                self.state.handle_resumed();
                                self.protocol.output_drained(&self.transport);
                            }
                        }
                        Err(reason) => self.state.handle_write_error(reason),
                    }
                }
                Action::Read if !self.early.is_empty() => {
                    let early = std::mem::take(&mut self.early);
                    self.state.handle_read(early.len());
                    self.protocol.data_received(&early, &self.transport);
                }
                Action::Read if let Some(session) = self.tls.as_deref_mut() => tls::read(
                    stream,
                    session,
                    &mut self.shard.read_buf.borrow_mut()[..],
                    &mut self.state,
                    &mut self.protocol,
                    &self.transport,
                    &self.shard.stats,
                    cx,
                ),
                action @ (Action::Read | Action::Linger) => {
                    let read = match recv_provided(stream, &self.shard, cx) {
                        Some(read) => read,
                        None => {
                            let mut buf = self.shard.read_buf.borrow_mut();
                            Pin::new(&mut *stream)
                                .poll_read(cx, &mut buf[..])
                                .map_ok(|n| Received::Shared(buf, n))
                        }
                    };
                    match read {
                        Poll::Ready(Ok(received)) if received.is_empty() => self.state.handle_read_eof(),
                        Poll::Ready(Ok(received)) => {
                            let n = received.len();
                            ShardStats::add(&self.shard.stats.bytes_in, n as u64);
                            self.state.handle_read(n);
                            // A lingering close discards what it reads.
                            if action == Action::Read {
                                self.protocol.data_received(&received, &self.transport);
                            }
                        }
                        Poll::Ready(Err(e)) => self.state.handle_read_error(CloseReason::from_io(e)),
                        Poll::Pending => self.state.handle_read_blocked(),
                    }
                }
                Action::ShutdownWrite => {
                    if let Some(session) = self.tls.as_deref_mut() {
                        tls::close_notify(stream, session, &self.shard.stats, cx);
                    }
                    shutdown_write(stream)
                }
                Action::CallDrainRequested => self.protocol.drain_requested(&self.transport),
                Action::CallReadConnectionLost => self.protocol.read_connection_lost(&self.transport),
                Action::CallWriteConnectionLost => self.protocol.write_connection_lost(&self.transport),
                Action::CallDeadlineExpired => self.protocol.deadline_expired(&self.transport),
                // The executor's recent time, not a clock read: it lags by at most a few
                // task polls, which the idle, stall and linger deadlines tolerate (a read per
                // request was 5% of the shard's user time with ring sends pending).
                Action::ReadClock => {
                    let t = glommio::executor().recent_time();
                    now = Some(t);
                    self.state.handle_now(t);
                }
                // Fairness: let the shard's other connections run, then come back.
                Action::Yield => cx.waker().wake_by_ref(),
                Action::Wait => match poll_timer(&mut self.timer, self.state.poll_timeout(), now, cx) {
                    Poll::Ready(()) => {
                        let t = Instant::now();
                        now = Some(t);
                        self.state.handle_timeout(t);
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Action::Close(reason) => {
                    if let Some(session) = self.tls.as_deref_mut()
                        && tls::orderly(&reason)
                    {
                        tls::close_notify(stream, session, &self.shard.stats, cx);
                    }
                    return Poll::Ready(reason);
                }
            }
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
                    | CloseReason::Panicked
            ) {
                // SO_LINGER 0: the close sends a reset and drops anything unsent.
                let _ = socket2::SockRef::from(&super::borrow_fd(&stream)).set_linger(Some(Duration::ZERO));
            }
            self.transport.mark_disconnected();
            drop(stream);
        }
        self.shard.conns.borrow_mut().try_remove(self.key);
        self.shard.stats.closed(&reason);
        match reason {
            CloseReason::OutputLimit => self.log_output_reset(),
            CloseReason::WriteStall => self.log_stall_reset(),
            _ => {}
        }
        self.transport.mark_lost(&reason);
        if !self.poisoned {
            self.protocol.connection_lost(&reason);
        }
    }
}

impl<P: Protocol> Connection<P> {
    /// Says at INFO, at most once a second per shard, that connections were reset for their
    /// output, and what to do: a protocol that writes more than its peer reads is missing
    /// flow control, which the metrics alone would not tell.
    fn log_output_reset(&self) {
        let Some(s) = self.shard.output_resets.borrow_mut().record(Instant::now()) else {
            return;
        };
        tracing::info!(
            "shard {}: {} reset{}: queued output passed max_output ({} bytes); the last to {}. \
             The protocol wrote more than its peer read: register a producer \
             (Transport::register_producer) or stop writing while Transport::is_output_full, \
             or raise max_output (FlowConfig, --max-output) for bursts that large",
            self.shard.info.index,
            s.counted("connection"),
            s.window(),
            self.transport.max_output(),
            self.transport.peer_addr()
        );
    }

    /// Says at INFO, at most once a second per shard, that connections were reset because
    /// their peers read nothing for the write-stall timeout.
    fn log_stall_reset(&self) {
        let Some(s) = self.shard.stall_resets.borrow_mut().record(Instant::now()) else {
            return;
        };
        tracing::info!(
            "shard {}: {} reset{}: the peer read none of its queued output for the write-stall \
             timeout; the last to {}. Stuck or very slow clients; if real clients read that \
             slowly, raise --write-stall-timeout (ConnectionConfig::write_stall_timeout)",
            self.shard.info.index,
            s.counted("connection"),
            s.window(),
            self.transport.peer_addr()
        );
    }
}

impl<P: Protocol> Drop for Connection<P> {
    /// A connection dropped before it ended (its shard was torn down) still reports once.
    fn drop(&mut self) {
        self.finish(CloseReason::Shutdown);
    }
}

/// What one read brought: bytes in the shard's read buffer, or in a provided buffer of the
/// ring (given back when this is dropped).
enum Received<'a> {
    Shared(RefMut<'a, Box<[u8]>>, usize),
    Provided(ProvidedBuf),
}

impl Deref for Received<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Received::Shared(buf, n) => &buf[..*n],
            Received::Provided(buf) => buf,
        }
    }
}

/// Receives into a provided buffer where the shard has them; `None` to read into the shard's
/// buffer instead (the shard has none, or every one is in use right now).
fn recv_provided(
    stream: &mut TcpStream,
    shard: &ShardCtx,
    cx: &mut Context<'_>,
) -> Option<Poll<io::Result<Received<'static>>>> {
    if !shard.provided {
        return None;
    }
    match stream.poll_recv_provided(cx) {
        Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => None,
        read => Some(read.map_ok(Received::Provided)),
    }
}

/// Sends queued bytes until the queue is empty or the socket is full (or, through the ring,
/// until a send is in flight: see [`write_out`]); returns the bytes sent.
fn flush(
    stream: &mut TcpStream,
    transport: &Transport,
    stats: &ShardStats,
    ring: Option<SendThen>,
    cx: &mut Context<'_>,
) -> Result<usize, CloseReason> {
    let sent = write_out(stream, &mut transport.out(), ring, cx)?;
    ShardStats::add(&stats.bytes_out, sent as u64);
    Ok(sent)
}

/// Writes `out` to the socket until it is empty or the socket is full; returns the bytes
/// sent. With `ring`, through the ring until a send is in flight, saying what the connection
/// does once `out` is sent (a send that carries only part of `out` is `Continue`). Bytes stay
/// in `out` until their send completes, so nothing after them (a shutdown, a close) overtakes
/// them.
pub(super) fn write_out(
    stream: &mut TcpStream,
    out: &mut OutBuf,
    ring: Option<SendThen>,
    cx: &mut Context<'_>,
) -> Result<usize, CloseReason> {
    let mut sent = 0;
    while !out.is_empty() {
        let written = match ring {
            Some(then) => {
                let then = if out.chunk().len() == out.len() {
                    then
                } else {
                    SendThen::Continue
                };
                stream.poll_write_ring(cx, out.chunk(), then)
            }
            None => Pin::new(&mut *stream).poll_write(cx, out.chunk()),
        };
        match written {
            Poll::Ready(Ok(0)) => return Err(CloseReason::from_io(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                out.consume(n);
                sent += n;
            }
            Poll::Ready(Err(e)) => return Err(CloseReason::from_io(e)),
            Poll::Pending => break,
        }
    }
    Ok(sent)
}

fn shutdown_write(stream: &TcpStream) {
    // The peer may already be gone; the close that follows reports what matters.
    let _ = socket2::SockRef::from(&super::borrow_fd(stream)).shutdown(Shutdown::Write);
}

/// The connection's one timer against the machine's next deadline `at`; `Ready` when a
/// deadline may have passed (the caller starts a round at the time, and the machine ignores
/// one that has not).
///
/// glommio's `Timer` reads the clock and re-files itself in the reactor's timer tree on
/// every poll, so it is polled once, when armed: that registers this task's waker, which
/// the reactor wakes when it is due. After that the round's time tells whether it is due.
/// It is re-armed only for an earlier deadline, and with no deadline it is kept rather than
/// cancelled (a connection whose sends go through the ring has output pending between
/// rounds, and would otherwise arm and cancel a timer every request).
fn poll_timer(
    timer: &mut Option<(Timer, Instant)>,
    at: Option<Instant>,
    now: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(at) = at else {
        return Poll::Pending;
    };
    // The machine read the time before it named a deadline; read it if not.
    let now = now.unwrap_or_else(Instant::now);
    match timer {
        // Due, whether its wake-up came or is on its way.
        Some((_, armed)) if *armed <= now => {
            *timer = None;
            Poll::Ready(())
        }
        // Armed for this deadline or an earlier one: it wakes the task in time.
        Some((_, armed)) if *armed <= at => Poll::Pending,
        _ => {
            let mut armed = Timer::new(at.saturating_duration_since(now));
            if Pin::new(&mut armed).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            *timer = Some((armed, at));
            Poll::Pending
        }
    }
}
