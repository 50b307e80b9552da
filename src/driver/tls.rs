//! TLS between the socket and the protocol: the handshake before the protocol exists, then,
//! for a connection's driver, reads that decrypt into `data_received` and flushes that
//! encrypt the transport's queue. The session itself is I/O-free (`proto::tls`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::connection::write_out;
use crate::metrics::{LatencyMetric, Stopwatch};
use crate::proto::close::CloseReason;
use crate::proto::conn_state::ConnState;
use crate::proto::protocol::Protocol;
use crate::proto::tls::{HandshakeResult, TlsFault, TlsSession};
use crate::proto::transport::Transport;
use crate::stats::ShardStats;

/// How long successful TLS handshakes take, from the accept (after any PROXY header) or the
/// connect to the end of the handshake.
pub(crate) static TLS_HANDSHAKE: LatencyMetric = LatencyMetric::new(
    "tls_handshake",
    "Time from the accept (after any PROXY header) or the connect to the end of a successful TLS handshake.",
);

/// Bytes read per socket read during a handshake: a ClientHello fits, and the buffer lives
/// only as long as the handshake.
const HANDSHAKE_READ: usize = 4096;

/// A failed handshake: how it ended, and the detail for the log.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) result: HandshakeResult,
    pub(crate) detail: String,
}

impl Failure {
    fn new(result: HandshakeResult, detail: impl ToString) -> Self {
        Self {
            result,
            detail: detail.to_string(),
        }
    }
}

/// Runs `session`'s handshake on `stream` within `timeout`, starting from `input` (bytes read
/// already, after a PROXY header). Returns the plaintext that arrived with the end of the
/// handshake, for the protocol's first read. Counts the outcome and times a success.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    session: &mut TlsSession,
    input: Vec<u8>,
    timeout: Duration,
    stats: &ShardStats,
) -> Result<Vec<u8>, Failure> {
    let watch = Stopwatch::start();
    let run = drive_handshake(stream, session, input, stats);
    let result = futures_lite::future::or(run, async {
        Timer::new(timeout).await;
        Err(Failure::new(
            HandshakeResult::Timeout,
            format!("not done after {timeout:?}"),
        ))
    })
    .await;
    let outcome = match &result {
        Ok(_) => {
            TLS_HANDSHAKE.record_since(watch);
            session.success()
        }
        Err(f) => f.result,
    };
    stats.tls_handshake(outcome);
    result
}

async fn drive_handshake(
    stream: &mut TcpStream,
    session: &mut TlsSession,
    input: Vec<u8>,
    stats: &ShardStats,
) -> Result<Vec<u8>, Failure> {
    let mut early = Vec::new();
    let mut chunk = vec![0u8; HANDSHAKE_READ];
    let mut received = session.receive(&input, &mut |p| early.extend_from_slice(p));
    loop {
        send_all(stream, session, stats).await;
        if let Err(e) = received {
            return Err(Failure::new(e.result(), e));
        }
        if !session.is_handshaking() {
            return Ok(early);
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Failure::new(HandshakeResult::Io, e))?;
        if n == 0 {
            return Err(Failure::new(
                HandshakeResult::Eof,
                "the peer closed mid-handshake",
            ));
        }
        ShardStats::add(&stats.bytes_in, n as u64);
        received = session.receive(&chunk[..n], &mut |p| early.extend_from_slice(p));
    }
}

/// Sends all the session's ciphertext (handshake messages, an alert); a failure shows up
/// on the next read.
async fn send_all(stream: &mut TcpStream, session: &mut TlsSession, stats: &ShardStats) {
    let out = session.cipher();
    if out.is_empty() {
        return;
    }
    if stream.write_all(out.chunk()).await.is_ok() {
        ShardStats::add(&stats.bytes_out, out.len() as u64);
    }
    out.clear();
}

/// The config a TLS listener's sessions start from, and its deadline.
#[derive(Debug, Clone)]
pub(crate) struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) timeout: Duration,
}

/// [`Action::Flush`](crate::proto::conn_state::Action::Flush) on a TLS connection: sends
/// pending ciphertext, then encrypts the transport's queue step by step while the socket
/// takes it, and queues `close_notify` once the protocol's close has nothing left before it
/// (plaintext written after that is dropped).
/// Returns the ciphertext bytes sent; what the socket did not take counts as the transport's
/// [`buffered`](Transport::buffered) output.
pub(crate) fn flush(
    stream: &mut TcpStream,
    session: &mut TlsSession,
    transport: &Transport,
    stats: &ShardStats,
    cx: &mut Context<'_>,
) -> Result<usize, CloseReason> {
    let mut sent = 0;
    let result = loop {
        match write_out(stream, session.cipher(), None, cx) {
            Ok(n) => sent += n,
            Err(e) => break Err(e),
        }
        if !session.cipher().is_empty() {
            break Ok(sent);
        }
        let mut out = transport.out();
        if out.is_empty() {
            drop(out);
            if (transport.closing() || transport.write_closing()) && session.close() {
                continue;
            }
            break Ok(sent);
        }
        if session.closed() {
            // Written after our close_notify went out: nothing may follow it.
            let n = out.len();
            out.consume(n);
            continue;
        }
        let n = session.send(out.chunk());
        if n == 0 {
            // rustls takes no more (a session that failed): the connection cannot go on.
            let err = io::Error::new(io::ErrorKind::InvalidData, "TLS: the session refuses data");
            break Err(CloseReason::Io(Arc::new(err)));
        }
        out.consume(n);
    };
    ShardStats::add(&stats.bytes_out, sent as u64);
    transport.set_held(session.cipher().len());
    result
}

/// True for the closes that end a TLS session with `close_notify`: the orderly ones and the
/// idle timeout (not errors, resets, aborts or forced closes).
pub(crate) fn orderly(reason: &CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::PeerEof
            | CloseReason::LocalClose
            | CloseReason::DeadlineExpired
            | CloseReason::IdleTimeout
    )
}

/// Before our FIN, or an orderly close, on a TLS connection: sends `close_notify` unless a
/// flush already did (a close with nothing queued). The socket took everything queued before, so the 24-byte
/// alert fits; were the socket full, the rest of it would be dropped with the FIN.
pub(crate) fn close_notify(
    stream: &mut TcpStream,
    session: &mut TlsSession,
    stats: &ShardStats,
    cx: &mut Context<'_>,
) {
    if session.close() {
        let sent = write_out(stream, session.cipher(), None, cx).unwrap_or(0);
        ShardStats::add(&stats.bytes_out, sent as u64);
        session.cipher().clear();
    }
}

/// [`Action::Read`](crate::proto::conn_state::Action::Read) on a TLS connection: reads
/// ciphertext into `buf`, hands the plaintext to the protocol, and reports to `state`. The
/// peer's `close_notify` is the EOF, reported on the read after it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read<P: Protocol>(
    stream: &mut TcpStream,
    session: &mut TlsSession,
    buf: &mut [u8],
    state: &mut ConnState,
    protocol: &mut P,
    transport: &Transport,
    stats: &ShardStats,
    cx: &mut Context<'_>,
) {
    if session.peer_closed() {
        state.handle_read_eof();
        return;
    }
    match Pin::new(&mut *stream).poll_read(cx, buf) {
        Poll::Ready(Ok(0)) => state.handle_read_eof(),
        Poll::Ready(Ok(n)) => {
            ShardStats::add(&stats.bytes_in, n as u64);
            state.handle_read(n);
            let received = session.receive(&buf[..n], &mut |plain| protocol.data_received(plain, transport));
            // What rustls answers by itself (a TLS 1.3 KeyUpdate) goes out with the next flush.
            transport.set_held(session.cipher().len());
            if let Err(e) = received {
                // Best effort: the alert rustls queued, then the close.
                let _ = write_out(stream, session.cipher(), None, cx);
                if let TlsFault::Renegotiation = e {
                    stats.tls_handshake(HandshakeResult::Renegotiation);
                }
                ShardStats::add(&stats.tls_errors, 1);
                tracing::debug!(peer = %transport.peer_addr(), "TLS error: {e}");
                let err = io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"));
                transport.force_close(CloseReason::Io(Arc::new(err)));
            }
        }
        Poll::Ready(Err(e)) => state.handle_read_error(CloseReason::from_io(e)),
        Poll::Pending => state.handle_read_blocked(),
    }
}
