//! Drives one connection: read → protocol → flush, until it ends, then `connection_lost`.

use std::future::{Future, poll_fn};
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::shard::ShardCtx;
use crate::stats::ShardStats;
use crate::{CloseReason, Protocol, Transport};

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
    /// Running while an orderly close waits for the peer's EOF.
    linger: Option<Timer>,
    /// `connection_lost` has run.
    finished: bool,
}

impl<P: Protocol> Connection<P> {
    pub(crate) fn new(
        stream: TcpStream,
        protocol: P,
        transport: Transport,
        shard: Rc<ShardCtx>,
        key: usize,
    ) -> Self {
        Self {
            stream: Some(stream),
            protocol,
            transport,
            shard,
            key,
            read_eof: false,
            write_shut: false,
            drain_seen: false,
            linger: None,
            finished: false,
        }
    }

    /// Serves the connection to its end.
    pub(crate) async fn run(mut self) {
        self.protocol.connection_made(&self.transport);
        let reason = poll_fn(|cx| self.poll_io(cx)).await;
        self.finish(reason);
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        self.transport.set_polling(true, Some(cx.waker()));
        let r = self.poll_inner(cx);
        self.transport.set_polling(false, None);
        r
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(CloseReason::Shutdown);
        };
        let budget = self.shard.config.reads_per_wakeup;
        let mut reads = 0;
        loop {
            if let Some(reason) = self.transport.forced() {
                return Poll::Ready(reason);
            }
            if !self.drain_seen && self.shard.draining.get() {
                self.drain_seen = true;
                self.protocol.drain_requested(&self.transport);
                continue;
            }
            if let Err(reason) = flush(stream, &self.transport, &self.shard.stats, cx) {
                return Poll::Ready(reason);
            }
            if self.transport.out().is_empty() {
                if self.transport.write_closing() && !self.write_shut {
                    self.write_shut = true;
                    shutdown_write(stream);
                    self.protocol.write_connection_lost(&self.transport);
                    if self.read_eof {
                        return Poll::Ready(CloseReason::PeerEof);
                    }
                    continue;
                }
                if self.transport.closing() {
                    if self.read_eof {
                        return Poll::Ready(CloseReason::PeerEof);
                    }
                    if !self.write_shut {
                        self.write_shut = true;
                        shutdown_write(stream);
                    }
                    let linger = self.shard.config.linger;
                    let timer = self.linger.get_or_insert_with(|| Timer::new(linger));
                    return poll_linger(stream, timer, &self.shard, cx).map(|()| CloseReason::LocalClose);
                }
            }
            if self.transport.closing() || self.read_eof || self.transport.is_reading_paused() {
                return Poll::Pending;
            }
            if reads == budget {
                // Fairness: let the shard's other connections run, then come back.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut buf = self.shard.read_buf.borrow_mut();
            match Pin::new(&mut *stream).poll_read(cx, &mut buf[..]) {
                Poll::Ready(Ok(0)) => {
                    drop(buf);
                    self.read_eof = true;
                    self.protocol.read_connection_lost(&self.transport);
                    if self.write_shut && self.transport.out().is_empty() {
                        return Poll::Ready(CloseReason::PeerEof);
                    }
                }
                Poll::Ready(Ok(n)) => {
                    reads += 1;
                    ShardStats::add(&self.shard.stats.bytes_in, n as u64);
                    self.protocol.data_received(&buf[..n], &self.transport);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::from_io(e)),
                Poll::Pending => return Poll::Pending,
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
            if matches!(reason, CloseReason::Aborted | CloseReason::Shutdown) {
                // SO_LINGER 0: the close sends a reset and drops anything unsent.
                let _ = socket2::SockRef::from(&super::borrow_fd(&stream))
                    .set_linger(Some(std::time::Duration::ZERO));
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

/// Sends queued bytes until the queue is empty or the socket is full.
fn flush(
    stream: &mut TcpStream,
    transport: &Transport,
    stats: &ShardStats,
    cx: &mut Context<'_>,
) -> Result<(), CloseReason> {
    let mut out = transport.out();
    while !out.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, out.chunk()) {
            Poll::Ready(Ok(0)) => return Err(CloseReason::from_io(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                out.consume(n);
                ShardStats::add(&stats.bytes_out, n as u64);
            }
            Poll::Ready(Err(e)) => return Err(CloseReason::from_io(e)),
            Poll::Pending => break,
        }
    }
    Ok(())
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
