//! Drives one connection: carries out what its [`ConnState`] decides (read → protocol →
//! flush, shutdowns, callbacks, the timer) until it ends, then `connection_lost`.

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
    pub(crate) async fn run(mut self) -> CloseReason {
        self.protocol.connection_made(&self.transport);
        let reason = poll_fn(|cx| self.poll_io(cx)).await;
        self.finish(reason.clone());
        reason
    }

    /// One wake-up of the connection's task.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        self.transport.set_polling(true, Some(cx.waker()));
        if self.shard.draining.get() {
            self.state.handle_drain();
        }
        let r = self.drive(cx);
        self.transport.set_polling(false, None);
        r
    }

    /// Carries out the machine's actions until it waits or the connection ends. The clock is
    /// read only when the machine asks for it (or the timer fires), at most once a round.
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
                        None => flush(stream, &self.transport, &self.shard.stats, cx),
                        Some(session) => tls::flush(stream, session, &self.transport, &self.shard.stats, cx),
                    };
                    match flushed {
                        Ok(sent) => {
                            self.transport.output_drained();
                            self.state.handle_flushed(sent);
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
                    let mut buf = self.shard.read_buf.borrow_mut();
                    match Pin::new(&mut *stream).poll_read(cx, &mut buf[..]) {
                        Poll::Ready(Ok(0)) => self.state.handle_read_eof(),
                        Poll::Ready(Ok(n)) => {
                            ShardStats::add(&self.shard.stats.bytes_in, n as u64);
                            self.state.handle_read(n);
                            // A lingering close discards what it reads.
                            if action == Action::Read {
                                self.protocol.data_received(&buf[..n], &self.transport);
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
                Action::ReadClock => {
                    let t = Instant::now();
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
    let sent = write_out(stream, &mut transport.out(), cx)?;
    ShardStats::add(&stats.bytes_out, sent as u64);
    Ok(sent)
}

/// Writes `out` to the socket until it is empty or the socket is full; returns the bytes
/// sent.
pub(super) fn write_out(
    stream: &mut TcpStream,
    out: &mut OutBuf,
    cx: &mut Context<'_>,
) -> Result<usize, CloseReason> {
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
    Ok(sent)
}

fn shutdown_write(stream: &TcpStream) {
    // The peer may already be gone; the close that follows reports what matters.
    let _ = socket2::SockRef::from(&super::borrow_fd(stream)).shutdown(Shutdown::Write);
}

/// Arms `timer` for `at` (from `now`, the round's time) unless it is armed for an earlier
/// instant already, and polls it; `Ready` when it fired. No deadline drops the timer.
fn poll_timer(
    timer: &mut Option<(Timer, Instant)>,
    at: Option<Instant>,
    now: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(at) = at else {
        *timer = None;
        return Poll::Pending;
    };
    if timer.as_ref().is_none_or(|(_, armed)| *armed > at) {
        // The machine asked for the time before it named a deadline; read it if not.
        let now = now.unwrap_or_else(Instant::now);
        *timer = Some((Timer::new(at.saturating_duration_since(now)), at));
    }
    let Some((armed, _)) = timer.as_mut() else {
        return Poll::Pending;
    };
    if Pin::new(armed).poll(cx).is_pending() {
        return Poll::Pending;
    }
    *timer = None;
    Poll::Ready(())
}
